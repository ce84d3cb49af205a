"""``run_sweep``: one paper's claim along a generator knob, from a YAML file.

A sweep file (``training/sweeps/*.yaml``) names a :class:`~histoviz.data.synthetic.SyntheticConfig`
knob and its levels, the base cohort, the oracle that checks the knob works
(:mod:`histoviz.data.synthetic.oracles`), the shipped experiment configs to compare (with stated
overrides, never re-typed) and the tasks and metrics to compare them on. For every level and
repeat (an independent cohort: ``cohort.seed + repeat``; the levels of one repeat share the
seed, so they differ only by the knob) the sweep

1. generates the cohort and embeds it (``embed``);
2. runs the oracle;
3. cross-validates every model on the same patient folds (the configs' seed), with the data
   paths rebased onto the cohort (cohort table, features, omics, scRNA reference, gene groups,
   spots), and records each task's per-fold paired difference ``a - b`` with the folds' sizes
   (spot sweeps: one run whose comparison models are compared per held-out sample).

Each cell (level x repeat) is kept under ``<out>/cells/<level>-r<repeat>/`` with ``cell.json``
(its settings' fingerprint) and ``rows.parquet``; a rerun reuses a finished cell with the same
fingerprint and recomputes any other. The sweep's own outputs are written atomically:
``table.parquet`` (long format: ``kind`` = oracle | model | difference), ``summary.csv``
(:func:`~histoviz.evaluation.sweeps.summarise_sweep`), ``sweep.png`` and ``results.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from histoviz.errors import ConfigError, DataError

__all__ = ["SweepResult", "SweepSpec", "load_sweep", "publish_results", "run_sweep"]

log = logging.getLogger(__name__)

_TOP_KEYS = {"name", "title", "claim", "knob", "repeats", "cohort", "embed", "oracle", "oracle_label", "models",
             "compare", "tasks", "level", "evaluation", "training", "spot_subset"}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file (see the module docstring and ``training/sweeps/README.md``)."""

    name: str
    title: str
    claim: str
    knob_label: str
    levels: tuple[dict[str, Any], ...]  # {"label": str, "x": float, "fields": {field: value}}
    log_x: bool
    repeats: int
    cohort: dict[str, Any]
    embed: dict[str, Any] | None
    oracle: str
    oracle_label: str
    models: dict[str, dict[str, Any]]  # label -> {"config": Path, "set": [..]}
    compare: tuple[tuple[str, str], ...]
    tasks: dict[str, str]
    level: str = "slide"
    evaluation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    spot_subset: str = "all"
    source: Path | None = None

    def fingerprint(self) -> str:
        """Hash of everything that decides the numbers."""
        d = {k: getattr(self, k) for k in ("levels", "repeats", "cohort", "embed", "oracle", "compare", "tasks",
                                           "level", "evaluation", "training", "spot_subset")}
        d["models"] = {k: {"config": _read_text(v["config"]), "set": v["set"]} for k, v in self.models.items()}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_text(p: Path) -> str:
    return Path(p).read_text()


def _need(d: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise ConfigError(f"{where}: missing {key!r}")
    v = d[key]
    if not isinstance(v, kind):
        raise ConfigError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(v).__name__}")
    return v


def _resolve(p: str, spec_path: Path) -> Path:
    cand = [Path(p)]
    if not Path(p).is_absolute():
        cand += [spec_path.parent / p] + [q / p for q in spec_path.resolve().parents if (q / "training").is_dir()][:1]
    for c in cand:
        if c.exists():
            return c.resolve()
    raise ConfigError(f"{spec_path}: model config {p!r} not found (relative to the current folder or the repository)")


def load_sweep(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep file.

    Raises
    ------
    ConfigError
        Unreadable file, unknown keys, a knob that is not a generator field, unknown models in
        ``compare``, or an unknown oracle.
    """
    from histoviz.data.synthetic import SyntheticConfig
    from histoviz.data.synthetic.oracles import ORACLES
    from histoviz.training.config import read_yaml_mapping

    p = Path(path)
    raw = read_yaml_mapping(p, "sweep")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{p}: unknown keys {unknown}; known: {sorted(_TOP_KEYS)}")
    where = str(p)
    name = str(_need(raw, "name", str, where))
    knob = _need(raw, "knob", dict, where)
    fields_known = set(SyntheticConfig.__dataclass_fields__)
    levels = []
    for i, lv in enumerate(_need(knob, "levels", list, f"{where}.knob")):
        if isinstance(lv, dict):
            lab = str(lv.get("label", i))
            flds = {k: v for k, v in lv.items() if k not in ("label", "x")}
            x = float(lv.get("x", i))
        else:
            f = _need(knob, "field", str, f"{where}.knob")
            flds, lab, x = {f: lv}, str(lv), float(lv)
        bad = sorted(set(flds) - fields_known)
        if bad:
            raise ConfigError(f"{where}.knob.levels[{i}]: {bad} are not generator fields (SyntheticConfig)")
        levels.append({"label": lab, "x": x, "fields": flds})
    if len(levels) < 2:
        raise ConfigError(f"{where}.knob.levels: a sweep needs at least two levels")
    cohort = dict(_need(raw, "cohort", dict, where))
    bad = sorted(set(cohort) - fields_known)
    if bad:
        raise ConfigError(f"{where}.cohort: {bad} are not generator fields (SyntheticConfig)")
    for lv in levels:
        SyntheticConfig(**{**cohort, **lv["fields"]})  # every level must be a valid cohort
    oracle = str(_need(raw, "oracle", str, where))
    if oracle not in ORACLES:
        raise ConfigError(f"{where}.oracle: unknown {oracle!r}; known: {', '.join(ORACLES)}")
    models = {}
    for lab, m in _need(raw, "models", dict, where).items():
        if not isinstance(m, dict) or "config" not in m:
            raise ConfigError(f"{where}.models.{lab}: expected {{config: PATH, set: [key=value, ...]}}")
        sets = m.get("set", [])
        if isinstance(sets, dict):
            sets = [f"{k}={json.dumps(v)}" for k, v in sets.items()]
        models[str(lab)] = {"config": _resolve(str(m["config"]), p), "set": [str(s) for s in sets]}
    level = str(raw.get("level", "slide"))
    if level not in ("slide", "spot"):
        raise ConfigError(f"{where}.level: slide or spot, got {level!r}")
    compare = []
    for pair in _need(raw, "compare", list, where):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ConfigError(f"{where}.compare: pairs [a, b] expected, got {pair!r}")
        if level == "slide" and any(x not in models for x in pair):
            raise ConfigError(f"{where}.compare: {pair} names a model not under models ({sorted(models)})")
        compare.append((str(pair[0]), str(pair[1])))
    if level == "spot" and len(models) != 1:
        raise ConfigError(f"{where}: a spot sweep runs one spot config; compare its models by label")
    repeats = int(raw.get("repeats", 2))
    if repeats < 1:
        raise ConfigError(f"{where}.repeats: must be >= 1")
    embed = raw.get("embed")
    if embed is not None and not isinstance(embed, dict):
        raise ConfigError(f"{where}.embed: a mapping (encoder, tile_size, mpp, input_size) or nothing")
    return SweepSpec(
        name=name, title=str(raw.get("title", name)), claim=str(raw.get("claim", "")),
        knob_label=str(knob.get("label", knob.get("field", "knob"))), levels=tuple(levels),
        log_x=bool(knob.get("log", False)), repeats=repeats, cohort=cohort, embed=embed, oracle=oracle,
        oracle_label=str(raw.get("oracle_label", oracle)), models=models, compare=tuple(compare),
        tasks={str(k): str(v) for k, v in _need(raw, "tasks", dict, where).items()}, level=level,
        evaluation=dict(raw.get("evaluation") or {}), training=dict(raw.get("training") or {}),
        spot_subset=str(raw.get("spot_subset", "all")), source=p)


@dataclass
class SweepResult:
    """What :func:`run_sweep` wrote, plus the tables."""

    out_dir: Path
    table: pd.DataFrame
    summary: pd.DataFrame
    figure: Path
    results: dict[str, Any]
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------------
# one cell
# ------------------------------------------------------------------------------------------------
def _flat(prefix: str, d: dict[str, Any]) -> list[str]:
    return [f"{prefix}.{k}={json.dumps(v)}" for k, v in d.items()]


def _experiment_config(spec: SweepSpec, label: str, cohort: Any, features: Path, cell: Path) -> Any:
    """The model's shipped config with its data rebased onto the cell's cohort and the stated
    overrides."""
    import yaml

    from histoviz.training.config import apply_overrides, load_config

    m = spec.models[label]
    raw = yaml.safe_load(Path(m["config"]).read_text()) or {}
    raw["name"] = label
    data = dict(raw.get("data") or {})
    root = Path(cohort.root)
    if spec.level == "slide":
        data["cohort"] = str(root / "cohort.csv")
        data["features"] = str(features)
        data["embed"] = None
        for mod, s in (data.get("omics") or {}).items():
            data["omics"][mod] = {**s, "path": str(root / "omics" / f"{mod}.h5ad")}
    else:
        spots = dict(data.get("spots") or {})
        spots["samples"] = str(root / "spatial")
        spots["features"] = str(cell / "spot_features")
        data["spots"] = spots
    raw["data"] = data
    params = dict((raw.get("model") or {}).get("params") or {})
    if "reference" in params:
        params["reference"] = str(cohort.reference)
    if "gene_groups" in params and params["gene_groups"] != "mcat":
        params["gene_groups"] = str(cohort.gene_groups_csv)
    raw.setdefault("model", {})["params"] = params
    sets = _flat("evaluation", spec.evaluation) + _flat("training", spec.training) + list(m["set"])
    return load_config(apply_overrides(raw, sets))


def _slide_rows(spec: SweepSpec, runs: dict[str, Path]) -> list[dict[str, Any]]:
    from histoviz.evaluation.paired import compare_paired

    rows = []
    for a, b in spec.compare:
        for task, metric in spec.tasks.items():
            [pc] = compare_paired(runs[a], runs[b], metric=metric, task=task, n_boot=0, labels=(a, b))
            pu = pc.per_unit
            n_all = float(pu["n_patients"].sum()) if "repeat" not in pu.columns else None
            for r in pu.itertuples(index=False):
                nt = float(r.n_patients)
                total = n_all if n_all is not None else float(pu.loc[pu["repeat"] == r.repeat, "n_patients"].sum())
                rows.append({"kind": "difference", "comparison": f"{a} − {b}", "a": a, "b": b, "task": task,
                             "metric": metric, "fold": int(r.fold), "value_a": float(r.mean_a),
                             "value_b": float(r.mean_b), "difference": float(r.difference), "n_test": nt,
                             "n_train": total - nt})
    return rows


def _spot_rows(spec: SweepSpec, run: Path) -> list[dict[str, Any]]:
    from histoviz.evaluation.spots import per_sample
    from histoviz.io.rundir import RunDir

    rows = []
    for task, metric in spec.tasks.items():
        ps = per_sample(RunDir(run).metrics(), metric)
        ps = ps[ps["subset"] == spec.spot_subset]
        wide = ps.pivot_table(index="fold", columns="model", values="value", aggfunc="first")
        n = len(wide)
        for a, b in spec.compare:
            if a not in wide.columns or b not in wide.columns:
                raise DataError(f"{run}: no spot model labelled {a if a not in wide.columns else b!r} "
                                f"(labels: {sorted(wide.columns)})")
            for fold, va, vb in zip(wide.index, wide[a], wide[b]):
                rows.append({"kind": "difference", "comparison": f"{a} − {b}", "a": a, "b": b, "task": task,
                             "metric": f"{metric} ({spec.spot_subset})", "fold": int(fold), "value_a": float(va),
                             "value_b": float(vb), "difference": float(va - vb), "n_test": 1.0,
                             "n_train": float(n - 1)})
    return rows


def _run_cell(spec: SweepSpec, level: dict[str, Any], repeat: int, cell: Path) -> list[dict[str, Any]]:
    from histoviz.data.cohort import read_cohort
    from histoviz.data.synthetic import make_synthetic_cohort
    from histoviz.data.synthetic.oracles import run_oracle
    from histoviz.training.runner import run_experiment

    kw = {**spec.cohort, **level["fields"]}
    kw["seed"] = int(kw.get("seed", 0)) + repeat
    cohort = make_synthetic_cohort(cell / "cohort", **kw)
    features = cell / "features"
    if spec.level == "slide" and spec.embed is not None:
        from histoviz.features.cohort import embed_cohort

        e = dict(spec.embed)
        enc = str(e.pop("encoder", "morphology"))
        ekw = {"input_size": int(e.pop("input_size"))} if "input_size" in e else {}
        res = embed_cohort(read_cohort(cohort.cohort_csv), features, encoder=enc, encoder_kwargs=ekw,
                           tiling=e, workers=0, progress=False)
        if res.failed:
            raise DataError(f"{cell}: embedding failed: {res.summary()}")
    rows: list[dict[str, Any]] = []
    for k, v in run_oracle(spec.oracle, cohort, features if features.exists() else None).items():
        rows.append({"kind": "oracle", "metric": k, "value": v})
    runs = {}
    for label in spec.models:
        cfg = _experiment_config(spec, label, cohort, features, cell)
        t0 = time.perf_counter()
        if spec.level == "spot":
            from histoviz.training.spots import run_spot_experiment

            run_spot_experiment(cfg, cell / "runs" / label)
        else:
            run_experiment(cfg, cell / "runs" / label)
        runs[label] = cell / "runs" / label
        rows.append({"kind": "model", "comparison": label, "metric": "seconds", "value": time.perf_counter() - t0})
    rows += _slide_rows(spec, runs) if spec.level == "slide" else _spot_rows(spec, next(iter(runs.values())))
    return rows


def _cell_key(spec: SweepSpec, level: dict[str, Any], repeat: int) -> str:
    d = {"sweep": spec.fingerprint(), "level": level, "repeat": repeat}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------
# the sweep
# ------------------------------------------------------------------------------------------------
def run_sweep(
    spec: SweepSpec | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    levels: list[str] | None = None,
    repeats: int | None = None,
    progress: bool = False,
    command: str | None = None,
) -> SweepResult:
    """Run (or resume) a sweep and write its outputs (module docstring).

    Parameters
    ----------
    spec
        A :class:`SweepSpec` or a sweep file.
    out_dir
        Output folder.
    levels
        Only these level labels (default: all).
    repeats
        Override the number of cohorts per level.
    progress
        A progress bar over the cells.
    command
        The command line to record in ``results.json``.
    """
    from histoviz._atomic import atomic_path, atomic_write_text
    from histoviz.evaluation.sweeps import summarise_sweep, sweep_figure, sweep_results

    spec = load_sweep(spec) if not isinstance(spec, SweepSpec) else spec
    out = Path(out_dir)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    chosen = [lv for lv in spec.levels if levels is None or lv["label"] in levels]
    if not chosen:
        raise ConfigError(f"--levels {levels}: none of the sweep's levels {[lv['label'] for lv in spec.levels]}")
    n_rep = spec.repeats if repeats is None else int(repeats)
    cells = [(lv, r) for r in range(n_rep) for lv in chosen]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(cells), desc=f"sweep {spec.name}", unit="cell")
    parts = []
    for lv, r in cells:
        cell = out / "cells" / f"{lv['label']}-r{r}"
        key = _cell_key(spec, lv, r)
        meta_p, rows_p = cell / "cell.json", cell / "rows.parquet"
        meta = json.loads(meta_p.read_text()) if meta_p.exists() else {}
        if not (meta.get("key") == key and meta.get("done") and rows_p.exists()):
            if cell.exists() and meta.get("key") != key:  # other settings, or unknown: never mixed
                log.warning("%s: made with other settings; recomputing it", cell)
                shutil.rmtree(cell)
            cell.mkdir(parents=True, exist_ok=True)  # same settings, unfinished: its runs resume
            info = {"key": key, "level": lv, "repeat": r, "done": False}
            atomic_write_text(meta_p, json.dumps(info, default=str) + "\n")
            rows = pd.DataFrame(_run_cell(spec, lv, r, cell))
            with atomic_path(rows_p) as tmp:
                rows.to_parquet(tmp, index=False)
            atomic_write_text(meta_p, json.dumps({**info, "done": True}, default=str) + "\n")
        rows = pd.read_parquet(rows_p)
        rows.insert(0, "repeat", r)
        rows.insert(0, "level_label", lv["label"])
        rows.insert(0, "level", lv["x"])
        rows.insert(0, "sweep", spec.name)
        parts.append(rows)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    table = pd.concat(parts, ignore_index=True)
    with atomic_path(out / "table.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    summary = summarise_sweep(table)
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    fig = sweep_figure(table, out / "sweep.png", knob_label=spec.knob_label, log_x=spec.log_x,
                       title=f"{spec.title}: {spec.claim}" if spec.claim and len(spec.claim) < 90 else spec.title)
    meta = {"title": spec.title, "claim": spec.claim, "oracle_label": spec.oracle_label,
            "knob": {"label": spec.knob_label, "levels": [lv["label"] for lv in chosen]},
            "repeats": n_rep, "models": {k: {"config": _rel(v["config"]), "set": v["set"]} for k, v in spec.models.items()},
            "command": command or f"histoviz sweep {_rel(spec.source) if spec.source else spec.name} --out {out}"}
    results = sweep_results(table, meta)
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    return SweepResult(out, table, summary, fig, results, time.perf_counter() - t0)


def _rel(p: Path | None) -> str:
    if p is None:
        return ""
    try:
        return str(Path(p).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def publish_results(result: SweepResult, results_file: str | os.PathLike, figure_dir: str | os.PathLike,
                    name: str) -> Path:
    """Merge a sweep's results into a results file (``docs/results/sweeps.json``) and copy its
    figure to ``figure_dir/sweep_<name>.png`` (both atomically)."""
    from histoviz._atomic import atomic_path, atomic_write_text

    rf = Path(results_file)
    data = json.loads(rf.read_text()) if rf.exists() else {}
    fig = Path(figure_dir) / f"sweep_{name}.png"
    fig.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(fig) as tmp:
        shutil.copyfile(result.figure, tmp)
    entry = dict(result.results)
    entry["figure"] = os.path.relpath(fig)  # relative to where the command runs (the repository root)
    data[name] = entry
    rf.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(rf, json.dumps(data, indent=1, sort_keys=True) + "\n")
    return rf

