"""Tasks: what a prediction means and how it is judged, for every kind of target.

Three kinds of target blocks reach the models (one block per modality or outcome):

============== =================================== ==============================================
kind           block                               prediction (``model.predict`` per block)
============== =================================== ==============================================
regression     :class:`~histoviz.data.targets.TargetBlock` ``(n, m)`` values in target space
classification :class:`~histoviz.data.outcomes.ClassBlock` ``(n, K)`` class probabilities
survival       :class:`~histoviz.data.outcomes.SurvivalBlock` ``(n, B)`` survival ``S_k`` at the end of each time bin
============== =================================== ==============================================

The scalar survival risk is ``-sum_k S_k`` (MCAT / PathGen): in ``[-B, 0]``, higher = worse,
and ``-b`` is the risk of a patient whose event falls in bin ``b``.

Each :class:`Task` owns, for its kind:

- :meth:`Task.metrics`: long-format metric rows of one fold (``target, metric, value, n,
  axis, subset``); regression: Pearson / Spearman per target and per patient; classification:
  per-class and macro / micro AUC, balanced accuracy, accuracy; survival: Harrell's and Uno's
  c-index and the log-rank p of a median split of predicted risk;
- :meth:`Task.heldout`: the held-out prediction table of one fold;
- :meth:`Task.scores` / :meth:`Task.regions`: the split-conformal nonconformity score and the
  prediction sets or intervals a threshold gives, with their coverage rows;
- :meth:`Task.patch_outputs`: the registry outputs (:mod:`histoviz.outputs`) a per-patch
  prediction becomes in a prediction AnnData.

Models declare the kinds they serve (``tasks = ("classification", "survival")``); evaluation,
comparison, prediction and the dashboard ask :func:`get_task` and never branch on a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from histoviz.errors import DataError
from histoviz.evaluation.metrics import PRIMARY_METRIC
from histoviz.task_kinds import OUTCOME_KINDS, TaskKind, kind_of

__all__ = [
    "OUTCOME_KINDS",
    "TASK_KINDS",
    "ClassificationTask",
    "ConformalSettings",
    "RegressionTask",
    "SurvivalTask",
    "Task",
    "TaskKind",
    "block_kind",
    "bin_end_labels",
    "get_task",
    "risk_from_survival",
    "survival_reference",
]

TASK_KINDS = tuple(TaskKind)


def block_kind(block: Any) -> TaskKind:
    """Task kind of a target block (``TargetBlock`` -> regression)."""
    return kind_of(block)


def risk_from_survival(surv: np.ndarray) -> np.ndarray:
    """``-sum_k S_k`` of ``(..., B)`` survival functions."""
    return -np.asarray(surv, np.float64).sum(axis=-1)


@dataclass(frozen=True)
class ConformalSettings:
    """Split-conformal settings (``evaluation.conformal`` in a config).

    Attributes
    ----------
    alpha
        Miscoverage (PathGen: 0.1).
    class_score
        ``"lac"`` (``1 - p_true``, PathGen) or ``"aps"``.
    empty_sets
        ``"keep"``, ``"all"`` (PathGen) or ``"argmax"`` for empty grade sets.
    survival
        ``"interval"`` (default): a lower predictive bound of the survival time in the data's
        unit (the interval ``[L, tau]`` of survival truncated at the horizon ``tau``), calibrated
        with censored patients too (:mod:`histoviz.evaluation.survival_conformal`);
        ``"risk_bins"``: PathGen's interval on the risk scale ``[-B, 0]`` of the time bins.
    censored
        ``survival: risk_bins`` only: ``"exclude"`` calibrates and covers on patients with an
        observed event (their risk target ``-b`` is known); ``"observed_bin"`` treats a
        censored patient's bin as its event bin (PathGen; optimistic for censored patients).
    group
        Cohort column whose groups get their own coverage rows (and, with ``mondrian``, their
        own threshold); ``None``: none.
    mondrian
        Calibrate each group of ``group`` separately (group-conditional coverage); ``False``:
        one marginal threshold, coverage still reported per group.
    """

    alpha: float = 0.1
    class_score: str = "lac"
    empty_sets: str = "keep"
    censored: str = "exclude"
    group: str | None = None
    survival: str = "interval"
    mondrian: bool = True


class Task:
    """Base class; see the module docstring."""

    kind: ClassVar[TaskKind]
    primary: ClassVar[str] = ""

    def metrics(self, blk: Any, pred: np.ndarray, *, min_n: int = 3, train: Any = None,
                patients: Sequence[str] = ()) -> pd.DataFrame:
        """Metric rows of one fold's held-out patients."""
        raise NotImplementedError

    def heldout(self, blk: Any, pred: np.ndarray, *, patients: Sequence[str], slide_ids: Sequence[str]) -> pd.DataFrame:
        """Held-out prediction table of one fold."""
        raise NotImplementedError

    def scores(self, blk: Any, pred: np.ndarray, cs: ConformalSettings) -> np.ndarray:
        """Nonconformity scores (NaN where a patient does not count)."""
        raise NotImplementedError

    def calibrate(self, blk: Any, pred: np.ndarray, cs: ConformalSettings, *, reference: Any = None,
                  where: str = "calibration split") -> dict[str, Any]:
        """Threshold (``qhat``) and sizes from calibration patients' blocks and predictions;
        ``reference`` is the fold's training block (every patient not held out), for tasks whose
        calibration needs it. The dict is what :meth:`regions` and :meth:`coverage` get back
        as ``info``."""
        from histoviz.evaluation.conformal import conformal_quantile

        sc = self.scores(blk, pred, cs)
        n = int(np.isfinite(sc).any(axis=-1).sum() if sc.ndim == 2 else np.isfinite(sc).sum())
        return {"qhat": np.asarray(conformal_quantile(sc, cs.alpha, where=where)).tolist(), "n_cal": n}

    def with_regions(self, h: pd.DataFrame, blk: Any, reg: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """The held-out table ``h`` (present patients) with its prediction sets / intervals."""
        raise NotImplementedError

    def regions(self, pred: np.ndarray, qhat: Any, cs: ConformalSettings, *,
                info: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Prediction sets / intervals of ``pred`` for threshold(s) ``qhat``."""
        raise NotImplementedError

    def coverage(self, blk: Any, pred: np.ndarray, reg: Mapping[str, np.ndarray], cs: ConformalSettings, *,
                 info: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Coverage and size rows of the regions of held-out patients."""
        raise NotImplementedError

    def patch_outputs(self, name: str, values: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Per-patch registry outputs (``output name -> values``) of one block."""
        raise NotImplementedError

    def slide_summary(self, name: str, value: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """JSON-able slide-level prediction of one block (``uns["slide_prediction"]``)."""
        raise NotImplementedError


def _rows(target: Any, metric: str, value: float, n: int, *, axis: str = "per-target",
          subset: str = "all") -> dict[str, Any]:
    return {"target": str(target), "metric": metric, "value": float(value) if value is not None else np.nan,
            "n": int(n), "axis": axis, "subset": subset}


# ------------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------------
class RegressionTask(Task):
    """Omics targets (and spots): per-target correlation across patients."""

    kind = TaskKind.REGRESSION
    primary = PRIMARY_METRIC[TaskKind.REGRESSION]

    def metrics(self, blk: Any, pred: np.ndarray, *, min_n: int = 3, train: Any = None,
                patients: Sequence[str] = ()) -> pd.DataFrame:
        """Per-target Pearson/Spearman across the present patients; per-patient correlation
        across targets (``center``: the training means, when ``train`` values are given)."""
        from histoviz.evaluation.metrics import per_sample_correlation, per_target_correlation

        pres = blk.present
        y = np.asarray(blk.values, np.float64)[pres]
        p = np.asarray(pred, np.float64)[pres]
        rows: list[dict[str, Any]] = []
        if not pres.any():
            return pd.DataFrame(rows)
        pt = per_target_correlation(y, p, targets=blk.targets, min_n=min_n)
        for t, pe, sp, n in pt[["target", "pearson", "spearman", "n"]].itertuples(index=False):
            rows.append(_rows(t, "pearson", pe, n))
            rows.append(_rows(t, "spearman", sp, n))
        pids = [patients[i] for i in np.flatnonzero(pres)] if len(patients) else None
        center = None
        if train is not None:
            with np.errstate(all="ignore"):
                center = np.nan_to_num(np.nanmean(np.asarray(train, np.float64), axis=0))
        ps = per_sample_correlation(y, p, samples=pids, center=center, min_n=min_n)
        for r in ps.itertuples(index=False):
            rows.append(_rows(r.sample, "pearson", r.pearson, r.n_targets, axis="per-patient"))
            rows.append(_rows(r.sample, "spearman", r.spearman, r.n_targets, axis="per-patient"))
            if center is not None:
                rows.append(_rows(r.sample, "pearson_centered", r.pearson_centered, r.n_targets, axis="per-patient"))
        return pd.DataFrame(rows)

    def heldout(self, blk: Any, pred: np.ndarray, *, patients: Sequence[str], slide_ids: Sequence[str]) -> pd.DataFrame:
        """Long table ``patient_id, slide_ids, target, y_true, y_pred``."""
        pres = blk.present
        n, m = int(pres.sum()), len(blk.targets)
        return pd.DataFrame({
            "patient_id": np.repeat(np.asarray(patients, dtype=object)[pres], m),
            "slide_ids": np.repeat(np.asarray(slide_ids, dtype=object)[pres], m),
            "target": np.tile(np.asarray(blk.targets, dtype=object), n),
            "y_true": np.asarray(blk.values, np.float64)[pres].reshape(-1),
            "y_pred": np.asarray(pred, np.float64)[pres].reshape(-1),
        })

    def scores(self, blk: Any, pred: np.ndarray, cs: ConformalSettings) -> np.ndarray:
        """``|y - y_hat|`` per target (NaN for absent patients / values)."""
        s = np.abs(np.asarray(blk.values, np.float64) - np.asarray(pred, np.float64))
        s[~blk.present] = np.nan
        return s

    def regions(self, pred: np.ndarray, qhat: Any, cs: ConformalSettings, *,
                info: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``lo, hi = y_hat -+ q_hat`` per target."""
        p = np.asarray(pred, np.float64)
        q = np.asarray(qhat, np.float64)
        q = q if q.ndim == 2 else np.broadcast_to(q, p.shape)
        return {"lo": p - q, "hi": p + q}

    def coverage(self, blk: Any, pred: np.ndarray, reg: Mapping[str, np.ndarray], cs: ConformalSettings, *,
                 info: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Per-target coverage and interval width of the held-out patients."""
        pres = blk.present
        y = np.asarray(blk.values, np.float64)[pres]
        lo, hi = reg["lo"][pres], reg["hi"][pres]
        ok = np.isfinite(y)
        cov = np.where(ok, (y >= lo) & (y <= hi), np.nan)
        rows = []
        for j, t in enumerate(blk.targets):
            n = int(ok[:, j].sum())
            if n:
                rows.append(_rows(t, "coverage", np.nanmean(cov[:, j]), n))
                rows.append(_rows(t, "interval_width", float(np.mean(hi[:, j] - lo[:, j])), n))
        return pd.DataFrame(rows)

    def with_regions(self, h: pd.DataFrame, blk: Any, reg: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """``lo`` / ``hi`` per long row."""
        h["lo"] = reg["lo"][blk.present].reshape(-1)
        h["hi"] = reg["hi"][blk.present].reshape(-1)
        return h

    def patch_outputs(self, name: str, values: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``pred:<block>`` -> a DataFrame (the writer puts the main modality into ``X``)."""
        return {f"pred:{name}": pd.DataFrame(np.asarray(values, np.float32), columns=[str(t) for t in targets])}

    def slide_summary(self, name: str, value: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Slide values (and conformal bounds when calibrated)."""
        v = np.asarray(value, np.float64)
        out: dict[str, Any] = {"kind": self.kind.value, "targets": np.asarray(targets, dtype=str), "values": v}
        if conformal and conformal.get("qhat") is not None:
            q = np.asarray(conformal["qhat"], np.float64)
            out["lo"], out["hi"] = v - q, v + q
            out["alpha"] = float(conformal.get("alpha", np.nan))
        return out


# ------------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------------
def _output_names(name: str) -> dict[str, str]:
    """Registry names of a classification block's outputs (``grade`` has built-in ones)."""
    if name == "grade":
        return {"proba": "grade_proba", "pred": "grade_class", "set_size": "grade_set_size",
                "uncertainty": "grade_uncertainty"}
    return {"proba": f"{name}_proba", "pred": f"{name}_class", "set_size": f"{name}_set_size",
            "uncertainty": f"{name}_uncertainty"}


def declare_class_outputs(name: str) -> dict[str, str]:
    """Register the outputs of a classification block named ``name`` (no-op for ``grade``)."""
    from histoviz.outputs import OutputSpec, register_output

    names = _output_names(name)
    if name != "grade":
        label = name.replace("_", " ")
        register_output(OutputSpec(names["proba"], f"{label.capitalize()} probability", kind="probability",
                                   store="obsm", key=names["proba"], colormap="plasma", limits=(0.0, 1.0), order=44,
                                   key_label=f"P({label} = {{key}})"))
        register_output(OutputSpec(names["pred"], f"Predicted {label}", kind="categorical", store="obs_category",
                                   key=f"{name}_pred", source=names["proba"], order=45))
        register_output(OutputSpec(names["set_size"], f"{label.capitalize()} set size (conformal)", kind="count",
                                   store="obs", colormap="cividis", unit="classes", order=46))
        register_output(OutputSpec(names["uncertainty"], f"{label.capitalize()} uncertainty", kind="interval",
                                   store="obs", colormap="cividis", limits=(0.0, 1.0), order=47))
    return names


class ClassificationTask(Task):
    """Grade (or any class label): AUC, balanced accuracy, conformal sets."""

    kind = TaskKind.CLASSIFICATION
    primary = PRIMARY_METRIC[TaskKind.CLASSIFICATION]

    def metrics(self, blk: Any, pred: np.ndarray, *, min_n: int = 3, train: Any = None,
                patients: Sequence[str] = ()) -> pd.DataFrame:
        """Per-class one-vs-rest AUC; macro and micro AUC, balanced accuracy and accuracy."""
        from histoviz.evaluation.classification import classification_metrics

        pres = blk.present
        rows = []
        if pres.sum() < min_n:
            return pd.DataFrame(rows)
        m = classification_metrics(blk.codes[pres], np.asarray(pred, np.float64)[pres], blk.classes)
        n = int(pres.sum())
        for c in blk.classes:
            rows.append(_rows(c, "auc", m["auc_per_class"].get(c, np.nan), int((blk.codes[pres] == blk.classes.index(c)).sum())))
        for k in ("auc_macro", "auc_micro", "balanced_accuracy", "accuracy"):
            rows.append(_rows("all", k, m[k], n))
        return pd.DataFrame(rows)

    def heldout(self, blk: Any, pred: np.ndarray, *, patients: Sequence[str], slide_ids: Sequence[str]) -> pd.DataFrame:
        """``patient_id, slide_ids, y_true, y_pred, p_<class>...``."""
        pres = blk.present
        p = np.asarray(pred, np.float64)[pres]
        cls = np.asarray(blk.classes, dtype=object)
        df = pd.DataFrame({
            "patient_id": np.asarray(patients, dtype=object)[pres],
            "slide_ids": np.asarray(slide_ids, dtype=object)[pres],
            "y_true": cls[blk.codes[pres]],
            "y_pred": cls[np.argmax(p, axis=1)] if len(p) else np.array([], dtype=object),
        })
        for j, c in enumerate(blk.classes):
            df[f"p_{c}"] = p[:, j]
        return df

    def scores(self, blk: Any, pred: np.ndarray, cs: ConformalSettings) -> np.ndarray:
        """LAC or APS score of the true class."""
        from histoviz.evaluation.conformal import class_scores

        codes = np.where(blk.present, blk.codes, -1)
        return class_scores(pred, codes, method=cs.class_score)

    def regions(self, pred: np.ndarray, qhat: Any, cs: ConformalSettings, *,
                info: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``sets (n, K)``, ``set_size``, ``uncertainty`` (PathGen Eq. 10)."""
        from histoviz.evaluation.conformal import class_sets, grade_uncertainty

        sets = class_sets(pred, qhat, method=cs.class_score, empty=cs.empty_sets)
        return {"sets": sets, "set_size": sets.sum(axis=1).astype(np.float64), "uncertainty": grade_uncertainty(sets)}

    def coverage(self, blk: Any, pred: np.ndarray, reg: Mapping[str, np.ndarray], cs: ConformalSettings, *,
                 info: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Coverage and mean set size overall (``target="all"``) and per true class
        (``class_coverage`` / ``class_set_size``)."""
        pres = blk.present
        codes = blk.codes[pres]
        sets = reg["sets"][pres]
        covered = sets[np.arange(len(codes)), codes] if len(codes) else np.zeros(0, bool)
        size = reg["set_size"][pres]
        rows = []
        if len(codes):
            rows += [_rows("all", "coverage", covered.mean(), len(codes)),
                     _rows("all", "set_size", size.mean(), len(codes)),
                     _rows("all", "uncertainty", reg["uncertainty"][pres].mean(), len(codes))]
        for j, c in enumerate(blk.classes):
            sel = codes == j
            if sel.any():  # class-conditional view (the marginal guarantee does not hold per class)
                rows.append(_rows(c, "class_coverage", covered[sel].mean(), int(sel.sum())))
                rows.append(_rows(c, "class_set_size", size[sel].mean(), int(sel.sum())))
        return pd.DataFrame(rows)

    def with_regions(self, h: pd.DataFrame, blk: Any, reg: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """``set`` (classes joined by ``|``), ``set_size``, ``covered``, ``uncertainty``."""
        pres = blk.present
        sets = reg["sets"][pres]
        h["set"] = ["|".join(c for c, s in zip(blk.classes, row) if s) for row in sets]
        h["set_size"] = reg["set_size"][pres]
        h["covered"] = sets[np.arange(len(sets)), blk.codes[pres]] if len(sets) else []
        h["uncertainty"] = reg["uncertainty"][pres]
        return h

    def patch_outputs(self, name: str, values: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Class probabilities, predicted class and (calibrated) set size / uncertainty."""
        names = declare_class_outputs(name)
        p = np.asarray(values, np.float64)
        cls = [str(t) for t in targets]
        out: dict[str, Any] = {
            names["proba"]: pd.DataFrame(p.astype(np.float32), columns=cls),
            names["pred"]: pd.Categorical(np.asarray(cls, dtype=object)[np.argmax(p, axis=1)], categories=cls),
        }
        if conformal and conformal.get("qhat") is not None:
            reg = self.regions(p, conformal["qhat"], _settings(conformal))
            out[names["set_size"]] = reg["set_size"].astype(np.float32)
            out[names["uncertainty"]] = reg["uncertainty"].astype(np.float32)
        return out

    def slide_summary(self, name: str, value: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Probabilities, predicted class and the conformal set."""
        p = np.asarray(value, np.float64)
        cls = [str(t) for t in targets]
        out: dict[str, Any] = {"kind": self.kind.value, "targets": np.asarray(cls, dtype=str), "values": p,
                               "predicted": cls[int(np.argmax(p))]}
        if conformal and conformal.get("qhat") is not None:
            reg = self.regions(p[None, :], conformal["qhat"], _settings(conformal))
            out["set"] = np.asarray([c for c, s in zip(cls, reg["sets"][0]) if s], dtype=str)
            out["uncertainty"] = float(reg["uncertainty"][0])
            out["alpha"] = float(conformal.get("alpha", np.nan))
        return out


# ------------------------------------------------------------------------------------------------
# survival
# ------------------------------------------------------------------------------------------------
def _risk_names(name: str) -> dict[str, str]:
    base = {"risk": "risk", "width": "risk_width", "uncertainty": "risk_uncertainty",
            "probability": "survival_probability", "function": "survival_function",
            "median": "median_survival", "percentile": "risk_percentile"}
    return base if name == "survival" else {k: f"{name}_{v}" for k, v in base.items()}


def declare_survival_outputs(name: str) -> dict[str, str]:
    """Register the outputs of a survival block named ``name`` (no-op for ``survival``)."""
    from histoviz.outputs import OutputSpec, register_output

    names = _risk_names(name)
    if name != "survival":
        label = name.replace("_", " ")
        register_output(OutputSpec(names["risk"], f"{label.capitalize()} risk", store="obs", colormap="magma",
                                   unit="-sum S (higher = worse)", order=53))
        register_output(OutputSpec(names["width"], f"{label.capitalize()} survival bound width", kind="interval",
                                   store="obs", colormap="cividis", order=54))
        register_output(OutputSpec(names["uncertainty"], f"{label.capitalize()} survival uncertainty", kind="interval",
                                   store="obs", colormap="cividis", limits=(0.0, 1.0), order=55))
        register_output(OutputSpec(names["probability"], f"{label.capitalize()} survival probability",
                                   kind="probability", store="obsm", colormap="viridis", limits=(0.0, 1.0),
                                   unit="probability", order=53, key_label=f"{label} survival at {{key}}"))
        register_output(OutputSpec(names["percentile"], f"{label.capitalize()} risk percentile", store="obs",
                                   colormap="magma", limits=(0.0, 100.0), order=53,
                                   unit="percentile of the training cohort's held-out risks"))
        register_output(OutputSpec(names["median"], f"{label.capitalize()} median survival", store="obs",
                                   colormap="viridis", order=53))
        register_output(OutputSpec(names["function"], f"{label.capitalize()} survival function", kind="probability",
                                   store="obsm", colormap="viridis", limits=(0.0, 1.0), unit="probability",
                                   order=53, key_label=f"{label} S({{key}})"))
    return names


def survival_reference(edges: Any, time_unit: str, *, cohort_risk: Any = None,
                       horizons: Any = None, horizon_labels: Sequence[str] | None = None) -> dict[str, Any]:
    """What turns a survival block's ``S_k`` into clinical units: the bin ``edges`` and
    ``time_unit`` of the training data, the horizons to read it at (default
    :func:`~histoviz.evaluation.survival.default_horizons`) and the training cohort's held-out
    risks (for percentiles). Passed as ``reference=`` to :meth:`SurvivalTask.patch_outputs` and
    :meth:`SurvivalTask.slide_summary`; stored in ``uns["survival"][block]`` of a prediction."""
    from histoviz.evaluation.survival import default_horizons

    e = np.asarray(edges, np.float64)
    e = np.where(e >= np.finfo(np.float64).max / 2, np.inf, e)
    if horizons is None:
        horizons, horizon_labels = default_horizons(e, time_unit)
    h = np.asarray(horizons, np.float64).reshape(-1)
    labels = list(horizon_labels) if horizon_labels is not None else [f"{v:.3g} {time_unit}" for v in h]
    if len(labels) != len(h):
        raise DataError(f"{len(labels)} horizon labels for {len(h)} horizons")
    ref = None if cohort_risk is None else np.sort(np.asarray(cohort_risk, np.float64).reshape(-1))
    return {"edges": e, "time_unit": str(time_unit), "horizons": h, "horizon_labels": labels,
            "cohort_risk": ref[np.isfinite(ref)] if ref is not None else None}


def bin_end_labels(edges: Any, time_unit: str) -> list[str]:
    """Names of the finite bin ends (``"10.5 months"``), the keys of a survival function map."""
    e = np.asarray(edges, np.float64)
    return [f"{v:.3g} {time_unit}" for v in e[1:-1]]


class SurvivalTask(Task):
    """Censored survival: c-index, KM / log-rank of risk groups, conformal risk intervals."""

    kind = TaskKind.SURVIVAL
    primary = PRIMARY_METRIC[TaskKind.SURVIVAL]

    def metrics(self, blk: Any, pred: np.ndarray, *, min_n: int = 3, train: Any = None,
                patients: Sequence[str] = ()) -> pd.DataFrame:
        """Harrell's and Uno's c-index (Uno's truncated at the largest training follow-up time,
        ``c_index_uno_tau``); log-rank p of a median split of the predicted risk."""
        from histoviz.evaluation.survival import (
            concordance_index,
            logrank,
            risk_groups,
            uno_concordance_index,
            uno_truncation,
        )

        pres = blk.present
        n = int(pres.sum())
        rows = []
        if n < min_n or blk.event[pres].sum() == 0:
            return pd.DataFrame(rows)
        t, e = blk.time[pres], blk.event[pres]
        r = risk_from_survival(np.asarray(pred)[pres])
        rows.append(_rows("risk", "c_index", concordance_index(t, r, e), n))
        tt = te = None
        if train is not None:
            tt, te = train.time[train.present], train.event[train.present]
        rows.append(_rows("risk", "c_index_uno", uno_concordance_index(t, r, e, train_time=tt, train_event=te), n))
        rows.append(_rows("risk", "c_index_uno_tau", uno_truncation(t if tt is None else tt), n))
        g = risk_groups(r, n_groups=2)
        if len(set(g)) == 2:
            lr = logrank(pd.DataFrame({"time": t, "event": e, "g": g}), "g", unit=None)
            rows.append(_rows("risk", "logrank_p", lr["p_value"], n))
        rows.append(_rows("risk", "events", float(e.sum()), n))
        return pd.DataFrame(rows)

    def heldout(self, blk: Any, pred: np.ndarray, *, patients: Sequence[str], slide_ids: Sequence[str]) -> pd.DataFrame:
        """``patient_id, slide_ids, time, event, bin, risk, S_0..S_{B-1}, end_0..end_{B-1}``
        (``S_k`` = P(T > ``end_k``), the end of this fold's bin ``k``; the last is ``inf``)."""
        pres = blk.present
        s = np.asarray(pred, np.float64)[pres]
        df = pd.DataFrame({
            "patient_id": np.asarray(patients, dtype=object)[pres],
            "slide_ids": np.asarray(slide_ids, dtype=object)[pres],
            "time": blk.time[pres], "event": blk.event[pres], "bin": blk.bins[pres],
            "risk": risk_from_survival(s),
        })
        for k in range(s.shape[1] if s.ndim == 2 else 0):
            df[f"S_{k}"] = s[:, k]
        edges = getattr(blk, "edges", None)
        if edges is not None and s.ndim == 2 and len(edges) == s.shape[1] + 1:
            for k in range(s.shape[1]):
                df[f"end_{k}"] = float(edges[k + 1])
        return df

    def calibrate(self, blk: Any, pred: np.ndarray, cs: ConformalSettings, *, reference: Any = None,
                  where: str = "calibration split") -> dict[str, Any]:
        """``survival: interval``: the time-unit interval's threshold, horizon, bin edges,
        censoring estimate (from ``reference``, the fold's training patients) and calibration
        sizes (:func:`~histoviz.evaluation.survival_conformal.calibrate_survival`);
        ``risk_bins``: the risk-scale threshold."""
        if cs.survival != "interval":
            return super().calibrate(blk, pred, cs, reference=reference, where=where)
        from histoviz.evaluation.survival_conformal import calibrate_survival

        if blk.edges is None:
            raise DataError(f"{where}: survival intervals need the fold's time bins")
        ref = blk if reference is None else reference
        pres, rp = blk.present, ref.present
        cal = calibrate_survival(blk.time[pres], blk.event[pres], np.asarray(pred, np.float64)[pres], blk.edges,
                                 cs.alpha, train_time=ref.time[rp], train_event=ref.event[rp], where=where)
        return {**cal.to_dict(), "time_unit": blk.time_unit}

    def scores(self, blk: Any, pred: np.ndarray, cs: ConformalSettings) -> np.ndarray:
        """``|(-bin) - risk|``; censored patients NaN unless ``censored="observed_bin"``."""
        r = risk_from_survival(pred)
        s = np.abs(-blk.bins.astype(np.float64) - r)
        use = blk.present & (blk.bins >= 0)
        if cs.censored == "exclude":
            use &= blk.event == 1
        s[~use] = np.nan
        return s

    def regions(self, pred: np.ndarray, qhat: Any, cs: ConformalSettings, *,
                info: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """``survival: interval``: ``centre`` (the model's ``alpha``-quantile of survival), the
        lower predictive bound ``lo`` and ``hi = tau`` (time unit; beyond the horizon),
        ``width = tau - lo`` and ``uncertainty = width / tau``; needs ``info`` (:meth:`calibrate`'s
        dict).
        ``risk_bins``: ``lo, hi`` (clipped to ``[-B, 0]``), width, bins in the set,
        uncertainty (PathGen Eq. 12)."""
        from histoviz.evaluation.conformal import risk_uncertainty

        if cs.survival == "interval":
            from histoviz.evaluation.survival_conformal import survival_intervals

            if not info or "edges" not in info:
                raise DataError("survival intervals need the calibration's time bins (retrain the run)")
            reg = survival_intervals(pred, _edges(info), qhat, float(info["alpha"]), float(info["tau"]))
            return {"risk": risk_from_survival(pred), **reg}
        s = np.asarray(pred, np.float64)
        nb = s.shape[-1]
        r = risk_from_survival(s)
        q = np.asarray(qhat, np.float64)
        lo = np.clip(r - q, -nb, 0.0)
        hi = np.clip(r + q, -nb, 0.0)
        unc, size = risk_uncertainty(lo, hi, nb)
        return {"risk": r, "lo": lo, "hi": hi, "width": hi - lo, "n_bins_in_set": size.astype(np.float64),
                "uncertainty": unc}

    def coverage(self, blk: Any, pred: np.ndarray, reg: Mapping[str, np.ndarray], cs: ConformalSettings, *,
                 info: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """``survival: interval``: censoring-weighted coverage of ``T ^ tau`` (``n``: patients whose
        ``T ^ tau`` is known), mean width and lower end (time unit), uncertainty, and the
        coverage of patients with an event (biased to short survivors; for comparison).
        ``risk_bins``: coverage on patients with an event (risk target ``-bin``), the
        censored-consistent rate (``lo <= -bin``: the interval allows surviving past the
        censoring bin) and the width."""
        if cs.survival == "interval":
            return self._interval_coverage(blk, reg, info)
        ok = blk.present & (blk.bins >= 0)
        ev = ok & (blk.event == 1)
        ce = ok & (blk.event == 0)
        target = -blk.bins.astype(np.float64)
        rows = []
        cov_rows = ev if cs.censored == "exclude" else ok
        if cov_rows.any():
            c = (target[cov_rows] >= reg["lo"][cov_rows] - 1e-9) & (target[cov_rows] <= reg["hi"][cov_rows] + 1e-9)
            rows.append(_rows("risk", "coverage", c.mean(), int(cov_rows.sum())))
        if ce.any():
            rows.append(_rows("risk", "coverage_censored_consistent",
                              float((reg["lo"][ce] <= target[ce] + 1e-9).mean()), int(ce.sum())))
        if ok.any():
            rows.append(_rows("risk", "interval_width", float(reg["width"][ok].mean()), int(ok.sum())))
            rows.append(_rows("risk", "uncertainty", float(reg["uncertainty"][ok].mean()), int(ok.sum())))
        return pd.DataFrame(rows)

    def _interval_coverage(self, blk: Any, reg: Mapping[str, np.ndarray], info: Mapping[str, Any] | None
                           ) -> pd.DataFrame:
        from histoviz.evaluation.survival_conformal import weighted_coverage

        pres = blk.present
        rows: list[dict[str, Any]] = []
        if not pres.any() or not info:
            return pd.DataFrame(rows)
        km = (np.asarray(info["censoring_km"]["time"]), np.asarray(info["censoring_km"]["G"]))
        cov, w = weighted_coverage(blk.time[pres], blk.event[pres], reg["lo"][pres], reg["hi"][pres],
                                   float(info["tau"]), km)
        known = w > 0
        n = int(pres.sum())
        if known.any():
            rows.append(_rows("time", "coverage", float(np.nansum(cov * w) / w[known].sum()), int(known.sum())))
        ev = blk.event[pres] == 1
        if ev.any():
            t, lo, hi = blk.time[pres][ev], reg["lo"][pres][ev], reg["hi"][pres][ev]
            tt = np.minimum(t, float(info["tau"]))
            rows.append(_rows("time", "coverage_events", float(((tt >= lo - 1e-9) & (tt <= hi + 1e-9)).mean()),
                              int(ev.sum())))
        rows += [_rows("time", "interval_width", float(reg["width"][pres].mean()), n),
                 _rows("time", "lower_bound", float(reg["lo"][pres].mean()), n),
                 _rows("time", "uncertainty", float(reg["uncertainty"][pres].mean()), n)]
        return pd.DataFrame(rows)

    def with_regions(self, h: pd.DataFrame, blk: Any, reg: Mapping[str, np.ndarray]) -> pd.DataFrame:
        """Time-unit intervals: ``centre``, ``lo``, ``hi``, ``width``, ``uncertainty``; risk bins:
        ``risk_lo``, ``risk_hi``, ``width``, ``uncertainty``, ``covered`` (events only)."""
        pres = blk.present
        if "centre" in reg:
            for k in ("centre", "lo", "hi", "width", "uncertainty"):
                h[k] = reg[k][pres]
            return h
        for k in ("lo", "hi", "width", "uncertainty"):
            h[f"risk_{k}" if k in ("lo", "hi") else k] = reg[k][pres]
        tgt = -blk.bins[pres].astype(float)
        h["covered"] = np.where(blk.event[pres] == 1, (tgt >= h["risk_lo"] - 1e-9) & (tgt <= h["risk_hi"] + 1e-9),
                                np.nan)
        return h

    def patch_outputs(self, name: str, values: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Per-patch risk (and conformal interval width / uncertainty when calibrated); with a
        :func:`survival_reference`, also in clinical units: the survival function at the bin
        ends, survival probability at the horizons, median survival and the risk's percentile
        among the training cohort's held-out risks."""
        from histoviz.evaluation.survival import (
            median_survival,
            percentile_of,
            survival_probability,
        )

        names = declare_survival_outputs(name)
        s = np.asarray(values, np.float64)
        risk = risk_from_survival(s)
        out: dict[str, Any] = {names["risk"]: risk.astype(np.float32)}
        if conformal and conformal.get("qhat") is not None:
            reg = self.regions(s, conformal["qhat"], _settings(conformal), info=conformal)
            out[names["width"]] = reg["width"].astype(np.float32)
            out[names["uncertainty"]] = reg["uncertainty"].astype(np.float32)
        if reference is not None:
            e, unit = reference["edges"], reference["time_unit"]
            ends = bin_end_labels(e, unit)
            out[names["function"]] = pd.DataFrame(s[:, : len(ends)].astype(np.float32), columns=ends)
            h = reference["horizons"]
            if len(h):
                out[names["probability"]] = pd.DataFrame(
                    survival_probability(s, e, h).astype(np.float32), columns=list(reference["horizon_labels"]))
            out[names["median"]] = median_survival(s, e).astype(np.float32)
            if reference.get("cohort_risk") is not None and len(reference["cohort_risk"]):
                out[names["percentile"]] = percentile_of(risk, reference["cohort_risk"]).astype(np.float32)
        return out

    def slide_summary(self, name: str, value: np.ndarray, targets: Sequence[str], *,
                      conformal: Mapping[str, Any] | None = None,
                      reference: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Risk, survival function per bin and the conformal interval; with a
        :func:`survival_reference`, survival at the horizons (``survival_at``), the median
        (NaN: beyond the last bin end), the risk's cohort ``percentile`` and the event-time
        range of the conformal interval (``time_lo``, ``time_hi``; ``inf``: open-ended)."""
        from histoviz.evaluation.survival import (
            median_survival,
            percentile_of,
            survival_probability,
        )

        s = np.asarray(value, np.float64)
        out: dict[str, Any] = {"kind": self.kind.value, "targets": np.asarray(targets, dtype=str), "values": s,
                               "risk": float(risk_from_survival(s))}
        if conformal and conformal.get("qhat") is not None:
            reg = self.regions(s[None, :], conformal["qhat"], _settings(conformal), info=conformal)
            out["lo"], out["hi"] = float(reg["lo"][0]), float(reg["hi"][0])
            out["uncertainty"] = float(reg["uncertainty"][0])
            out["alpha"] = float(conformal.get("alpha", np.nan))
            if "centre" in reg:
                out["interval"] = "time"
                out["time_unit"] = str(conformal.get("time_unit", ""))
                out["tau"] = float(conformal["tau"])
        if reference is not None:
            e = np.asarray(reference["edges"], np.float64)
            out["time_unit"] = str(reference["time_unit"])
            out["edges"] = e
            out["horizons"] = np.asarray(reference["horizons"], np.float64)
            out["horizon_labels"] = np.asarray(reference["horizon_labels"], dtype=str)
            out["survival_at"] = np.atleast_1d(survival_probability(s, e, out["horizons"]))
            out["median"] = float(median_survival(s, e))
            if reference.get("cohort_risk") is not None and len(reference["cohort_risk"]):
                out["percentile"] = float(percentile_of(out["risk"], reference["cohort_risk"]))
                out["n_cohort"] = int(len(reference["cohort_risk"]))
            if "lo" in out and out.get("interval") == "time":  # the conformal lower bound of survival
                out["time_lo"], out["time_hi"] = out["lo"], float("inf")
            elif "lo" in out:
                # risk target -b is an event in bin b: the interval holds bins ceil(-hi)..floor(-lo)
                b0 = int(np.ceil(-out["hi"] - 1e-9))
                b1 = int(np.floor(-out["lo"] + 1e-9))
                if b1 >= b0:
                    out["time_lo"] = float(e[max(b0, 0)])
                    out["time_hi"] = float(e[min(b1, len(e) - 2) + 1])
        return out


def _edges(info: Mapping[str, Any]) -> np.ndarray:
    return np.asarray([np.inf if e is None else float(e) for e in info["edges"]], np.float64)


def _settings(conformal: Mapping[str, Any]) -> ConformalSettings:
    keys = ("alpha", "class_score", "empty_sets", "censored", "survival")
    kw = {k: conformal[k] for k in keys if k in conformal}
    kw.setdefault("survival", "interval" if "tau" in conformal else "risk_bins")  # runs written before intervals
    return ConformalSettings(**kw)


_TASKS: dict[TaskKind, Task] = {t.kind: t for t in (RegressionTask(), ClassificationTask(), SurvivalTask())}


def get_task(kind_or_block: str | Any) -> Task:
    """The :class:`Task` of a kind (a :class:`TaskKind` or its name) or of a target block."""
    kind = TaskKind.parse(kind_or_block) if isinstance(kind_or_block, str) else kind_of(kind_or_block)
    return _TASKS[kind]
