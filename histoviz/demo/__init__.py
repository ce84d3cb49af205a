"""``histoviz demo`` and the napari samples: the shipped YAML configs run on generated data.

- :mod:`~histoviz.demo.run`: :func:`run_demo`, the demo end to end (what ``histoviz demo`` and
  ``make demo`` call);
- :mod:`~histoviz.demo.configs`: the demo's runs, each a shipped config of ``training/configs/``
  with its stated overrides;
- :mod:`~histoviz.demo.omics`, :mod:`~histoviz.demo.outcomes`, :mod:`~histoviz.demo.spots`: the
  model steps;
- :mod:`~histoviz.demo.results`: what a run produced, and its ``results.json`` (the README's
  demo tables are generated from it);
- :mod:`~histoviz.demo.samples`: the napari samples, built in a fresh process and cached;
- :mod:`~histoviz.demo.simulated`: simulated maps for a real slide no model here is trained for.

The demo sits above training and prediction and below the front ends: nothing in histoviz
imports it except the command line and the napari sample adapter.
"""

from __future__ import annotations

from histoviz.demo.results import DemoResult
from histoviz.demo.run import run_demo

__all__ = ["DemoResult", "run_demo"]
