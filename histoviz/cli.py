"""``histoviz`` command line: a thin adapter over the library.

Subcommands live in ``histoviz/_cli/<area>.py``; each module exposes
``register(subparsers)`` and its handlers call one histoviz function each.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from histoviz._version import __version__
from histoviz.errors import HistovizError

__all__ = ["build_parser", "main"]

_COMMAND_MODULES = (
    "histoviz._cli.core",  # info, encoders, synth, tile, embed
    "histoviz._cli.models",  # train, evaluate, predict
    "histoviz._cli.sweep",  # sweep
    "histoviz._cli.spatial",  # st-import
    "histoviz._cli.cohort",  # import
    "histoviz._cli.demo",  # demo, bench
    "histoviz._cli.dashboard",  # dashboard
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all registered subcommands)."""
    parser = argparse.ArgumentParser(
        prog="histoviz",
        description="Predict molecular profiles from H&E whole-slide images.",
    )
    parser.add_argument("--version", action="version", version=f"histoviz {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in _COMMAND_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (1 with a one-line message on bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except HistovizError as e:
        msg = " ".join(ln.strip() for ln in str(e).splitlines() if ln.strip())  # always one line
        print(f"histoviz {args.command}: error: {msg}", file=sys.stderr)
        return 1
    except OSError as e:  # a full, quota-limited or read-only disk met by a writer not wrapped yet: still one line
        from histoviz._atomic import storage_error

        err = storage_error(e.filename or "output", e, write_only=True)
        if err is None:
            raise
        print(f"histoviz {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"histoviz {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
