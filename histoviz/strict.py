"""Strict reading of a config mapping into a dataclass: the one place unknown keys are refused.

Every section of a config (and every spec inside one: omics, outcomes, spots, spot evaluation,
patches) is a frozen dataclass built from a mapping read from YAML. :func:`strict_keys` checks
that the mapping is one and names no field the dataclass lacks; :func:`build_strict` also calls
the constructor and puts the section's path in front of what its validation says::

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Patch:
    ...     size_um: float = 112.0
    >>> build_strict(Patch, {"size_um": 56}, "data.spots.patch")
    Patch(size_um=56)
    >>> build_strict(Patch, {"size": 56}, "data.spots.patch")
    Traceback (most recent call last):
    ...
    histoviz.errors.ConfigError: data.spots.patch: unknown key(s) ['size']; known: ['size_um']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

from histoviz.errors import ConfigError

__all__ = ["build_strict", "strict_keys"]

T = TypeVar("T")


def strict_keys(cls: type, d: Any, where: str, *, expected: str = "a mapping") -> dict[str, Any]:
    """``d`` as a new dict, after checking it is a mapping of fields of dataclass ``cls``.

    ``None`` reads as an empty mapping (a section left out).

    Raises
    ------
    ConfigError
        ``d`` is not a mapping (the message says what was ``expected``), or it has keys that are
        no field of ``cls`` (all of them named, with the known ones).
    """
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: expected {expected}, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted((k for k in d if k not in known), key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    return dict(d)


def build_strict(cls: type[T], d: Any, where: str, *, expected: str = "a mapping", **values: Any) -> T:
    """``cls(**d, **values)`` with :func:`strict_keys`; a :class:`ConfigError` or ``TypeError``
    of the constructor is raised again as a :class:`ConfigError` prefixed with ``where``.

    ``values`` replace entries of ``d`` (converted or resolved values: tuples, absolute paths).
    """
    kw = {**strict_keys(cls, d, where, expected=expected), **values}
    try:
        return cls(**kw)
    except (TypeError, ConfigError) as e:
        raise ConfigError(f"{where}: {e}") from None
