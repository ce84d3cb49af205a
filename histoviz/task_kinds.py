"""The three kinds of prediction target, as one enum.

:class:`TaskKind` is a ``str``-valued enum: ``TaskKind.SURVIVAL == "survival"``, it hashes as
its value, formats as its value and is written to JSON, YAML and parquet as the plain string, so
run folders, checkpoints and metric tables written before it existed read the same. Code
compares against the members, never against the strings; :mod:`histoviz.tasks` owns what each
kind means (metrics, held-out table, conformal score, per-patch outputs).

This module sits on the ground floor so that the I/O layer (a run folder's block kinds), the
data layer (target blocks) and evaluation can name a kind without importing the tasks.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from histoviz.errors import DataError

__all__ = ["OUTCOME_KINDS", "TaskKind", "kind_of"]


class TaskKind(str, Enum):
    """Kind of a target block: ``regression`` (omics, spots), ``classification`` (grade),
    ``survival`` (time-to-event)."""

    REGRESSION = "regression"
    CLASSIFICATION = "classification"
    SURVIVAL = "survival"

    # read as the plain string everywhere a user sees it (messages, tables, lists of kinds)
    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__

    @classmethod
    def parse(cls, value: Any) -> TaskKind:
        """The member named by ``value`` (a member or its string); :class:`DataError` otherwise."""
        try:
            return cls(str(value))
        except ValueError:
            msg = f"unknown task kind {value!r}; known: {', '.join(k.value for k in cls)}"
            raise DataError(msg) from None

    @property
    def is_outcome(self) -> bool:
        """True for the patient-level outcome kinds (classification, survival)."""
        return self is not TaskKind.REGRESSION


#: the kinds an outcome block can have (``outcomes:`` in a config)
OUTCOME_KINDS = (TaskKind.CLASSIFICATION, TaskKind.SURVIVAL)


def kind_of(block: Any) -> TaskKind:
    """Task kind of a target block (a block without a ``kind`` is regression)."""
    return TaskKind.parse(getattr(block, "kind", TaskKind.REGRESSION))


def _register_yaml() -> None:
    # PyYAML's safe dumper refuses str subclasses; write a kind as its plain string.
    import yaml

    for dumper in (yaml.SafeDumper, yaml.Dumper):
        dumper.add_representer(TaskKind, lambda d, v: d.represent_str(v.value))


_register_yaml()
