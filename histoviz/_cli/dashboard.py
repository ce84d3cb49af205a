"""``histoviz dashboard ROOT``: serve the Streamlit dashboard over one results folder."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["register", "streamlit_command"]

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the dashboard subcommand."""
    p = sub.add_parser("dashboard", help="serve the dashboard over a results folder (localhost only by default)")
    p.add_argument("root", nargs="?", default=".", type=Path,
                   help="results folder: the dashboard reads nothing outside it (default: .)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="localhost",
                   help="address to bind (default localhost; any other address serves the results to the network)")
    p.add_argument("--print-command", action="store_true", help="print the command and environment, do not start")
    p.set_defaults(func=_dashboard)


def streamlit_command(root: str | os.PathLike, *, port: int = 8501, host: str = "localhost") -> tuple[list[str], dict[str, str]]:
    """The ``streamlit run`` command line and the environment that serve ``root``
    (the script is :data:`histoviz.dashboard.APP`, inside the installed package).

    Raises
    ------
    ConfigError
        ``root`` is not a folder, or the port is out of range.
    """
    from histoviz.dashboard import APP
    from histoviz.errors import ConfigError
    from histoviz.viz.results import RESULTS_ROOT_ENV

    r = Path(root).resolve()
    if not r.is_dir():
        raise ConfigError(f"{root}: not a folder; give the folder that holds the runs (e.g. demo_out)")
    if not 0 < int(port) < 65536:
        raise ConfigError(f"--port {port}: use 1-65535")
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", str(host),
           "--server.port", str(int(port)), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    return cmd, {RESULTS_ROOT_ENV: str(r)}


def _dashboard(a: argparse.Namespace) -> int:
    cmd, env = streamlit_command(a.root, port=a.port, host=a.host)
    if a.host not in LOCAL_HOSTS:
        where = "every network interface" if a.host in ("0.0.0.0", "::", "") else a.host
        print(f"histoviz dashboard: warning: --host {a.host} serves to the network ({where}, no password): anyone "
              f"who reaches this machine's port {a.port} can read the results under {env['HISTOVIZ_RESULTS_ROOT']}; "
              "use the default (localhost) and an SSH tunnel to share it safely", file=sys.stderr)
    if a.print_command:
        print(" ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd))
        return 0
    print(f"histoviz dashboard: {env['HISTOVIZ_RESULTS_ROOT']} at http://{a.host}:{a.port}", flush=True)
    if os.name == "posix":  # become the server: one process to stop, no orphan
        os.execve(cmd[0], cmd, {**os.environ, **env})
    return subprocess.run(cmd, env={**os.environ, **env}, check=False).returncode
