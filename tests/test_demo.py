"""The demo runs the shipped configs: every run is its YAML plus the overrides it states, nothing
re-typed; its results file carries no machine path; nothing below the demo imports it."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import yaml

from histoviz.demo.configs import OMICS_RUNS, OUTCOME_RUNS, PATHGEN_RUNS, SPOT_RUN, demo_config
from histoviz.training.config import apply_overrides, config_to_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
RUNS = [*OMICS_RUNS, *OUTCOME_RUNS, *PATHGEN_RUNS, SPOT_RUN]
DATA = {"data/synth": "demo_out/power", "data/outcomes": "demo_out/power", "data/pathgen": "demo_out/pathgen"}
SETS = ["data.features=demo_out/power/features/efficientnet-lite0", "data.embed.encoder=efficientnet-lite0"]


def _flat(d: dict, p: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{p}{k}."))
        else:
            out[f"{p}{k}"] = v
    return out


def _sets(run) -> list[str]:
    return SETS if run is not SPOT_RUN else []


@pytest.mark.parametrize("run", RUNS, ids=lambda r: r.name)
def test_a_demo_run_is_its_shipped_config_plus_the_stated_overrides(run):
    """The validated demo config equals ``histoviz train <yaml> --set ...`` on the same data: it
    differs from the YAML only in the keys its overrides name (and the mapped data paths), and
    each override changes the YAML (none re-types a value the YAML already has)."""
    raw = yaml.safe_load((ROOT / "training" / "configs" / run.config).read_text())
    got = _flat(config_to_dict(demo_config(run, DATA, _sets(run))))
    want = _flat(config_to_dict(load_config(apply_overrides(raw, [*run.sets, *_sets(run)]))))
    plain = _flat(config_to_dict(load_config(raw)))
    changed = {k for k in got if got[k] != want.get(k)}
    assert all(str(got[k]).startswith(tuple(DATA.values())) or "demo_out" in str(got[k]) for k in changed), changed
    assert not any(isinstance(v, str) and f"{k}/" in v for v in got.values() for k in DATA)
    for s in run.sets:
        key, _, value = s.partition("=")
        if key == "name":
            continue
        assert plain.get(key, "<absent>") != yaml.safe_load(value), f"{run.name}: {s} re-types the YAML"
    assert got["name"] == (run.name if any(s.startswith("name=") for s in run.sets) else raw["name"])


def test_the_drift_the_demo_had_is_gone():
    """CPNN trained with patience 20 in the old demo and 30 in cpnn.yaml; now it is the YAML's."""
    cfg = config_to_dict(demo_config(OMICS_RUNS[2], DATA, SETS))
    assert cfg["model"]["name"] == "cpnn" and cfg["training"]["patience"] == 30


def test_results_file_names_no_path_of_this_machine(tmp_path):
    from histoviz.demo.results import DemoResult

    out = tmp_path / "demo_out"
    res = DemoResult(out)
    res.log += [f"[3/8] cohort -> {out.resolve()}/power", f"  cache {Path.home()}/.cache/histoviz"]
    res.records("t", [{"a": float("nan"), "b": 1.5, "p": out.resolve() / "x"}])
    res.runs["r"] = {"paths": {"data/synth": str(out.resolve() / "power")}}
    p = res.write()
    text = p.read_text()
    assert str(tmp_path) not in text and str(Path.home()) not in text
    d = json.loads(text)
    assert d["log"] == ["[3/8] cohort -> demo_out/power", "  cache ~/.cache/histoviz"]
    assert d["tables"]["t"] == [{"a": None, "b": 1.5, "p": "demo_out/x"}] and d["runs"]["r"]["paths"]["data/synth"] == \
        "demo_out/power"
    assert not any(isinstance(v, float) and math.isnan(v) for v in d["tables"]["t"][0].values())


def test_nothing_below_the_demo_imports_it():
    """demo sits above training and prediction; only the command line and napari's sample adapter use it."""
    allowed = {ROOT / "histoviz" / "_cli" / "demo.py", ROOT / "napari_plugin" / "_sample_data.py"}
    for f in [*(ROOT / "histoviz").rglob("*.py"), *(ROOT / "napari_plugin").rglob("*.py")]:
        if "demo" in f.relative_to(ROOT).parts or f in allowed:
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "histoviz.demo" or n.startswith("histoviz.demo.") for n in names), f


def test_without_the_shipped_configs_the_demo_stops_before_it_starts(tmp_path, monkeypatch):
    """An installed wheel has no training/configs: one error naming what to set, nothing written."""
    from histoviz.demo import run_demo
    from histoviz.errors import DataError

    monkeypatch.delenv("HISTOVIZ_CONFIGS", raising=False)
    monkeypatch.setattr("histoviz.datasets._REPO", tmp_path / "wheel")
    with pytest.raises(DataError, match="HISTOVIZ_CONFIGS"):
        run_demo(tmp_path / "out", progress=False, echo=lambda s: None)
    assert not (tmp_path / "out").exists()
