"""README blocks from ``docs/results/demo.json`` (written by ``histoviz demo``; see docs/gen_readme.py).

Every number here is read from the results file; the sentences around the numbers are chosen by
the numbers (a difference whose interval holds 0 is "within noise", whichever way it leans).
"""

from __future__ import annotations

from pathlib import Path

from gen_readme import md_table, pm

SCHEMA = 1
MODALITIES = (("gene", "gene"), ("protein", "protein"), ("mirna", "miRNA"), ("pathway", "pathway"))
OMICS_MODELS = (("mtl", "multi-task ABMIL"), ("stl", "single-task ABMIL"), ("cpnn", "CPNN"),
                ("ridge", "mean-pool ridge"), ("mtl-shuffled", "multi-task, shuffled labels"))
OUTCOME_MODELS = (("pca-outcomes", "PCA + logistic / Cox"), ("abmil-grade-survival", "ABMIL grade + survival"),
                  ("abmil-shuffled", "ABMIL, shuffled labels"))
SPOT_NAMES = {"cmrcnet-50": "CMRCNet-50", "bleep-50": "BLEEP-50", "ridge": "ridge (PCA-256)", "cpnn-spot": "CPNN-spot",
              "knn-spot": "kNN", "mean": "training mean", "spot-mean": "training mean", "cmrcnet-shuffled-50": "CMRCNet, shuffled",
              "cmrcnet-shuffled": "CMRCNet, shuffled"}


def _d(data: dict) -> dict:
    if data.get("schema") != SCHEMA:
        raise ValueError(f"results schema {data.get('schema')!r}, this renderer reads {SCHEMA}")
    return data


def _row(rows: list[dict], **match) -> dict | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _f(v: float | None, digits: int = 3, sign: bool = False) -> str:
    if v is None:
        return "undefined"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _log_between(log: list[str], start: str, stop: tuple[str, ...]) -> list[str]:
    out, on = [], False
    for line in log:
        if line.startswith(start):
            on = True
        elif on and line.startswith(stop):
            break
        if on:
            out.append(line)
    return out


# ----------------------------------------------------------------------------------------------
# "What make demo does and prints"
# ----------------------------------------------------------------------------------------------
def render_output(data: dict) -> str:
    """The demo's printed report, abbreviated (every line kept is as printed): the step lines, the
    gene rows of the omics table, the gene paired comparisons, the outcome table, PathGen's AUC and
    c-index lines, the spot table, the sample's truth line."""
    import re

    log = _d(data)["log"]
    keep: list[str] = []
    section, paired_task = "", ""
    for line in log:
        s = line.strip()
        head = re.match(r"^(\w+) \((regression|classification|survival)\):", s)
        if head:
            paired_task = head.group(1)
        if line.startswith("["):
            section = line[1:4]
            keep.append(line)
        elif line.startswith("done in"):
            keep.append(line)
        elif section == "5/8":
            table_row = s.startswith("task ") or (s.startswith("gene ") and "±" in s)
            paired = paired_task == "gene" and (head or (" - " in s and " = " in s) or s.startswith("verdict"))
            if table_row or paired:
                keep.append(line)
        elif section == "6/8":
            if (s.startswith("task ") or s.split(" ")[0] in ("grade", "survival")) and ("±" in s or "task" in s) \
                    or s.startswith(("PathGen settings", "grade AUC (macro):", "c-index (Harrell):")) \
                    or "synthesised gene groups vs measured" in s:
                keep.append(line)
        elif section == "7/8" and s.startswith("paired differences"):
            section = "7/8 paired"  # the spot table's paired rows: the README's spot table has them
        elif section == "7/8" and ("±" in line or " pearson" in line) and not s.startswith("mean ±"):
            keep.append(line)
        elif section == "8/8" and s.startswith("synthetic sample"):
            keep.append(line)
    return "```\n" + "\n".join(keep) + "\n```"


def render_runs(data: dict) -> str:
    """The demo's runs in the order they ran: shipped config, overrides beyond the data paths and
    features (overrides every run of one config shares are listed once, under the table)."""
    runs = _d(data)["runs"]
    order = sorted(runs, key=lambda k: runs[k].get("order", 0))

    def own(name: str) -> list[str]:
        return [s for s in runs[name]["sets"] if not s.startswith(("data.features=", "data.embed.encoder=", "name="))]

    by_config: dict[str, list[str]] = {}
    for name in order:
        by_config.setdefault(runs[name]["config"], []).append(name)
    shared = {c: [s for s in own(ns[0]) if all(s in own(n) for n in ns)] for c, ns in by_config.items() if len(ns) > 2}
    rows, notes = [], []
    for name in order:
        r = runs[name]
        common = shared.get(r["config"], [])
        sets = [f"`{s}`" for s in own(name) if s not in common] + ([f"the {Path(r['config']).stem} sizing below"]
                                                                   if common else [])
        rows.append((f"`{name}`", f"`{r['config']}`", "; ".join(sets) or "none", r.get("why", "")))
    for config, common in shared.items():
        if common:
            notes.append(f"{Path(config).stem} sizing (every `{Path(config).stem}` run): "
                         + "; ".join(f"`{s}`" for s in common) + ".")
    return md_table(["run", "config", "overrides", "why"], rows) + ("\n\n" + "\n".join(notes) if notes else "")


def render_intro(data: dict) -> str:
    d = _d(data)
    n = d["numbers"]
    done = next((int(w) for line in d["log"] if line.startswith("done in") for w in line.split()[2:3]), None)
    took = f" This run took {done / 60:.0f} minutes on a machine with {n['cpu_count']} CPU cores" if done else ""
    return ("`histoviz demo --out demo_out` (what `make demo` calls) runs the main job offline on the data shipped "
            "in `sample_data/` and on synthetic cohorts it generates. The headline numbers come from the pretrained "
            "**EfficientNet-Lite0 (ImageNet)** encoder, not from the hand-made `morphology` features (whose colour "
            f"statistics are tuned to the generator's stains), on the **\"power\"** cohort: {n['power_patients']} "
            f"patients ({n['power_slides']} slides, {n['power_deaths']} deaths), so a comparison has about "
            f"{n['power_patients'] // 5} held-out patients per fold.{took}" + ("." if took else ""))


# ----------------------------------------------------------------------------------------------
# omics
# ----------------------------------------------------------------------------------------------
def _omics(data: dict, model: str, task: str, subset: str = "all") -> dict | None:
    return _row(data["tables"]["omics"], model=model, task=task, subset=subset, metric="pearson")


def render_omics(data: dict) -> str:
    """Held-out per-target Pearson, model x modality."""
    d = _d(data)
    head = ["model"]
    for task, label in MODALITIES:
        r = next((_omics(d, m, task) for m, _ in OMICS_MODELS if _omics(d, m, task)), None)
        head.append(f"{label} ({int(r['n_targets'])})" if r else label)
    rows = []
    for m, label in OMICS_MODELS:
        cells = [pm(r["mean"], r["std"]) if (r := _omics(d, m, t)) else "-" for t, _ in MODALITIES]
        rows.append([label, *cells])
    return md_table(head, rows)


def render_omics_top(data: dict) -> str:
    d = _d(data)
    top = [(lab, _omics(d, m, "gene", "top50_variance")) for m, lab in
           (("mtl", "MTL"), ("stl", "STL"), ("cpnn", "CPNN"), ("ridge", "ridge"))]
    best = [r["mean"] for m, _ in OMICS_MODELS[:4] if (r := _omics(d, m, "gene", "best50_predicted"))]
    text = "Top 50 genes by training variance: " + ", ".join(f"{lab} {r['mean']:.2f}" for lab, r in top if r)
    if best:
        text += (f"; the papers' \"best 50 predicted\" view of the same runs reads {min(best):.2f}-{max(best):.2f}, "
                 "which is what selecting on the test set buys.")
    return text + " " + _mtl_vs_stl_sentence(d)


def _paired(d: dict, a: str, b: str, task: str) -> dict | None:
    return _row(d["tables"]["paired"], run_a=a, run_b=b, task=task)


def _within(p: dict) -> bool:
    lo, hi = p.get("ci_low"), p.get("ci_high")
    return lo is not None and hi is not None and lo <= 0 <= hi


def _diff(p: dict) -> str:
    ci = f" [{_f(p['ci_low'], sign=True)}, {_f(p['ci_high'], sign=True)}]" if p.get("ci_low") is not None else ""
    return f"{_f(p['difference'], sign=True)}{ci}"


def _mtl_vs_stl_sentence(d: dict) -> str:
    ps = [(lab, p) for t, lab in MODALITIES if (p := _paired(d, "mtl", "stl", t))]
    noise = [lab for lab, p in ps if _within(p)]
    if len(noise) == len(ps):
        return (f"MTL minus STL is within noise on every modality ({_interval_words(ps)}); "
                "the seed paper's multi-task gain does not appear on these data.")
    won = [lab for lab, p in ps if not _within(p) and p["difference"] > 0]
    lost = [lab for lab, p in ps if not _within(p) and p["difference"] < 0]
    parts = ([f"MTL beats STL on {', '.join(won)}"] if won else []) + \
        ([f"STL beats MTL on {', '.join(lost)}"] if lost else []) + \
        ([f"within noise on {', '.join(noise)}"] if noise else [])
    return "; ".join(parts) + f" ({_interval_words(ps)})."


def _interval_words(ps: list) -> str:
    """What the intervals are, from the method the comparison recorded."""
    how = {str(p.get("interval_method", "")) for _, p in ps}
    if any(h.startswith("Nadeau-Bengio") for h in how):
        return "95% intervals from the Nadeau-Bengio corrected resampled t over folds, which includes training variance"
    return "95% bootstrap intervals over held-out patients and targets, which hold the fitted models fixed"


def render_findings(data: dict) -> str:
    """The "what this says" bullets, numbers and verdict words from the results."""
    d = _d(data)
    out = []
    ps = [(lab, p) for t, lab in MODALITIES if (p := _paired(d, "mtl", "stl", t))]
    within = all(_within(p) for _, p in ps)
    ridge = _paired(d, "mtl", "ridge", "gene")
    out.append("- **Multi-task vs single-task.** The multi-task model's gain over single-task models, the "
               "multi-omics paper's claim, is " + ("**within noise** here on every modality" if within else
                                                    "mixed here") + " (" + "; ".join(
                   f"{lab} {_diff(p)}" for lab, p in ps) + "; " + _interval_words(ps) + ")." + (
                   f" Multi-task {'beats' if ridge['difference'] > 0 and not _within(ridge) else 'does not clearly beat'}"
                   f" the HEST ridge baseline (gene {_diff(ridge)})." if ridge else ""))
    cp, rg = _omics(d, "cpnn", "gene"), _omics(d, "ridge", "gene")
    comp = [r for r in d["tables"].get("composition", []) if r.get("metric") == "tv_distance"
            and r.get("cell_type") == "all" and r.get("value") is not None]
    tv = {e: sum(r["value"] for r in comp if r["estimator"] == e) / sum(r["estimator"] == e for r in comp)
          for e in dict.fromkeys(r["estimator"] for r in comp)}  # mean over folds
    tv_m = [v for k, v in tv.items() if k != "supervised ridge"]
    line = (f"- **CPNN** {'does not beat' if cp['mean'] <= rg['mean'] else 'beats'} ridge with these features "
            f"({cp['mean']:.3f} vs {rg['mean']:.3f} on genes)")
    if tv_m and "supervised ridge" in tv:
        line += (f", and its per-patch composition weights recover the true composition "
                 f"{'poorly' if tv_m[0] > 1.5 * tv['supervised ridge'] else 'about as well as a supervised read-out'}"
                 f" (mean total-variation distance {tv_m[0]:.2f} against {tv['supervised ridge']:.2f} for a supervised "
                 "ridge ceiling on the same features; `histoviz evaluate` prints this whenever the truth exists)")
    out.append(line + ".")
    o = {(r["model"], r["task"], r["metric"]): r for r in d["tables"]["outcomes"]}

    def m(model: str, task: str, metric: str) -> float | None:
        r = o.get((model, task, metric))
        return None if r is None else r["mean"]

    auc_p, auc_a = m("pca-outcomes", "grade", "auc_macro"), m("abmil-grade-survival", "grade", "auc_macro")
    c_p, c_a = m("pca-outcomes", "survival", "c_index"), m("abmil-grade-survival", "survival", "c_index")
    gcov = [r["mean"] for (mod, t, met), r in o.items() if t == "grade" and met == "coverage" and not mod.endswith("shuffled")]
    sh = [m("abmil-shuffled", "grade", "auc_macro"), m("abmil-shuffled", "survival", "c_index")]
    close = abs(auc_p - auc_a) < 0.05 and abs(c_p - c_a) < 0.03
    line = (f"- **Outcomes.** The PCA + logistic / Cox baselines {'match' if close else 'differ from'} the ABMIL "
            f"models (grade AUC {auc_p:.3f} vs {auc_a:.3f}; c-index {c_p:.3f} vs {c_a:.3f}); the shuffled "
            f"control reads AUC {_f(sh[0])} and c-index {_f(sh[1])}. Grade sets cover {min(gcov):.3f}-"
            f"{max(gcov):.3f} (promised 0.90).")
    lb_a, lb_s = m("abmil-grade-survival", "survival", "lower_bound"), m("abmil-shuffled", "survival", "lower_bound")
    if lb_a is not None and lb_s is not None:  # survival: a conformal lower bound of survival time
        scov = [r["mean"] for (mod, t, met), r in o.items() if t == "survival" and met == "coverage"
                and not mod.endswith("shuffled")]
        w_a, w_s = m("abmil-grade-survival", "survival", "interval_width"), m("abmil-shuffled", "survival",
                                                                             "interval_width")
        line += (f" Survival is a conformal lower bound of each patient's survival time, calibrated with censored "
                 f"patients too: it covers {min(scov):.3f}-{max(scov):.3f} (censoring-weighted; promised 0.90); "
                 f"the ABMIL model's bound averages {lb_a:.1f} months (the generator's unit) against the shuffled control's "
                 f"{lb_s:.1f} (the interval from it to the horizon {w_a:.1f} vs {w_s:.1f} wide): "
                 + ("the model narrows it only a little on these data, and the interval says so."
                    if w_s - w_a < 0.25 * w_s else "the model narrows it clearly."))
    else:  # runs written with risk-bin intervals
        widths = [r["mean"] for (mod, t, met), r in o.items() if met == "interval_width" and not mod.endswith("shuffled")]
        line += (f" Risk intervals span {min(widths):.1f}-{max(widths):.1f} of the 4-unit risk range: on these "
                 "data a single patient's survival bin is hard to pin down, and the intervals say so.")
    out.append(line)
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# spots
# ----------------------------------------------------------------------------------------------
def render_spots(data: dict) -> str:
    d = _d(data)
    rows_p = d["tables"]["spots"]
    order = list(dict.fromkeys(r["model"] for r in rows_p))
    subsets = [s for s in ("hvg50", "heg50", "markers") if any(r["subset"] == s for r in rows_p)]
    if not subsets:
        subsets = list(dict.fromkeys(r["subset"] for r in rows_p))[:3]
    ref = order[0]
    hv = subsets[0]
    rows = []
    for m in order:
        cells = [pm(r["mean"], r["std"]) if (r := _row(rows_p, model=m, subset=s)) else "-" for s in subsets]
        mse = _row(d["tables"]["spots_mse"], model=m, subset=hv)
        pdiff = _row(d["tables"]["spots_paired"], model=m, reference=ref, subset=hv)
        vs = (f"{pm(pdiff['mean_diff'], pdiff['std_diff'])} ({pdiff['n_better']}/{pdiff['n_samples']} better)"
              if pdiff and pdiff.get("mean_diff") is not None else "")
        rows.append([SPOT_NAMES.get(m, m), *cells, pm(mse["mean"], mse["std"]) if mse else "-", vs])
    def label(s: str) -> str:
        return s.upper().replace("HVG", "HVG-").replace("HEG", "HEG-") if s != "markers" else s

    return md_table(["model", *map(label, subsets), f"MSE ({label(hv)})", f"vs {SPOT_NAMES.get(ref, ref)} ({label(hv)})"],
                    rows)


def render_spots_intro(data: dict) -> str:
    d = _d(data)
    n = max(int(r["n_samples"]) for r in d["tables"]["spots"])
    return (f"Held-out Pearson on the demo's {n} synthetic spatial samples (`make demo`, spot patches embedded "
            "with the hand-made `morphology` features, which favour the synthetic stains: read the numbers as a "
            "comparison of models, not of encoders; mean ± std over held-out samples; paired difference per "
            "held-out sample against the first row):")


# ----------------------------------------------------------------------------------------------
# the napari sample
# ----------------------------------------------------------------------------------------------
def _sample(data: dict) -> dict:
    return _d(data)["tables"]["sample"][0]


def render_caption(data: dict) -> str:
    s = _sample(data)
    return (f"*napari, File > Open Sample > histoviz > synthetic: per-patch risk from the joint ABMIL grade + "
            f"survival model (trained here on {s['training_patients']} synthetic patients, split-conformal alpha "
            f"0.1) over a synthetic slide of a patient outside its training cohort ({s['patient_id']}). On this "
            f"slide the risk map follows the generator's true tumour content (Spearman {s['risk_spearman']:.2f} "
            f"over {s['n_patches']} patches).*")


def render_sample(data: dict) -> str:
    s = _sample(data)
    cv = s["cv"]
    ct = s["cell_type_pearson"]
    n = s["n_patches"]
    weak = [f"{k} {v:.2f}" for k, v in ct.items() if v < 0.5]
    cal = s.get("calibration_patients") or []
    cal_txt = f" ({'/'.join(map(str, cal))}-patient calibration splits)" if cal else ""
    agree = s["dominant_agree"]

    def g(key: str) -> str:
        return _f(cv.get(key), 2)

    comp = (f"CPNN's per-patch cell-type weights follow the true composition (Pearson per type "
            f"{min(ct.values()):.2f}-{max(ct.values()):.2f}" + (f"; weakest: {', '.join(weak)}" if weak else "")
            + f") and the dominant type agrees with the truth on {agree} of {n} patches")
    if agree < n / 2:
        comp += ", so read its dominant-type map as what the model does, not as cell types"
    return (
        f"Against that slide's known truth ({n} patches): predicted MKI67 r = {s['mki67_pearson']:.2f} "
        f"with true expression (median over {s['n_genes']} genes {s['gene_pearson_median']:.2f}); risk and "
        f"P(grade 4) follow true tumour content (Spearman {s['risk_spearman']:.2f} and {s['p_grade4_spearman']:.2f}); "
        f"{comp}. Held out in the sample runs' own 2-fold CV ({s['training_patients']} patients): grade macro AUC "
        f"{g('grade-survival:grade:auc_macro')}, grade-set coverage {g('grade-survival:grade:coverage')} for a "
        f"promised 0.90{cal_txt}, survival c-index {g('grade-survival:survival:c_index')}, interval coverage "
        f"{g('grade-survival:survival:coverage')}."
    )


def render_mki67_caption(data: dict) -> str:
    s = _sample(data)
    return (f"*CPNN's predicted MKI67 over the sample slide {s['slide_id']} (r = {s['mki67_pearson']:.2f} with the "
            f"slide's true expression over {s['n_patches']} patches).*")


def render_spots_findings(data: dict) -> str:
    """What the spot table says: CMRCNet against BLEEP (its reconstruction branch) and ridge."""
    d = _d(data)
    rows = d["tables"]["spots"]
    ref = rows[0]["model"]
    hv = next((s for s in ("hvg50",) if _row(rows, subset=s)), rows[0]["subset"])

    def vs(model: str) -> dict | None:
        return _row(d["tables"]["spots_paired"], model=model, reference=ref, subset=hv)

    parts = []
    for model, what in (("bleep-50", "BLEEP-50 (no reconstruction branch)"), ("ridge", "ridge on the same features")):
        p = vs(model)
        if p is None or p.get("mean_diff") is None:
            continue
        lo, hi = p["mean_diff"] - p["std_diff"], p["mean_diff"] + p["std_diff"]
        verdict = ("below" if hi < 0 else "above" if lo > 0 else "level with")
        parts.append(f"{what} is {verdict} {SPOT_NAMES.get(ref, ref)} ({_f(p['mean_diff'], sign=True)} ± "
                     f"{p['std_diff']:.3f} per sample, better on {p['n_better']} of {p['n_samples']} samples)")
    return ("On these data " + "; ".join(parts) + " (HVG-50 Pearson, mean ± std of the per-sample difference).") \
        if parts else ""


def render_pathgen(data: dict) -> str:
    """The demo's PathGen settings report (three settings on the same folds), as printed."""
    d = _d(data)
    lines = [r["line"] for r in d["tables"].get("pathgen_report", []) if "gene groups matched" not in r["line"]]
    runs = sorted(k for k, r in d.get("runs", {}).items() if str(r.get("config", "")).endswith("/pathgen.yaml"))
    head = (f"`make demo` trains `pathgen.yaml` in its settings ({', '.join(f'`{r}`' for r in runs)}) on the "
            "demo's PathGen cohort, on the same folds; `histoviz evaluate` of those runs prints:")
    return head + "\n\n```\n" + "\n".join(lines) + "\n```"
