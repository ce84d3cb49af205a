"""README "When each method helps": the mechanism sweeps, from ``docs/results/sweeps.json`` (written
by ``histoviz sweep training/sweeps/NAME.yaml --out runs/sweep-NAME --results docs/results/sweeps.json``)."""

from __future__ import annotations

from typing import Any


def render(data: dict[str, Any]) -> str:
    """Per sweep: the claim, the knob and its oracle check, the paired differences with their 95%
    intervals at each level, the plot and the command that reproduces it."""
    from histoviz.evaluation.sweeps import sweeps_markdown

    return sweeps_markdown(data).rstrip("\n")
