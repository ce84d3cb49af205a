"""The multi-omics paper's analyses, done honestly: survival association of predicted targets
(median split within folds, log-rank, Benjamini-Hochberg) and named gene panels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from histoviz.errors import DataError
from histoviz.evaluation.association import read_panel, survival_association


def _toy(seed: int = 0, n: int = 160, folds: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    t_ev = rng.exponential(np.exp(-1.2 * risk))
    t_c = rng.exponential(2.0, n)
    out = pd.DataFrame({"patient_id": [f"P{i}" for i in range(n)], "time": np.minimum(t_ev, t_c),
                        "event": (t_ev <= t_c).astype(int)})
    rows = []
    for i in range(n):
        for t, true, pred in (("PROLIF", risk[i], risk[i] + rng.normal(0, 0.5)),
                              ("NOISE", rng.normal(), rng.normal())):
            rows.append({"fold": i % folds, "patient_id": f"P{i}", "task": "gene", "target": t,
                         "y_true": true, "y_pred": pred})
    return pd.DataFrame(rows), out


def test_survival_association_finds_the_prognostic_target_and_equals_lifelines():
    from lifelines.statistics import logrank_test
    from scipy.stats import false_discovery_control

    pred, out = _toy()
    res = survival_association(pred, out).set_index("target")
    assert res.loc["PROLIF", "q_predicted"] < 0.01 and res.loc["PROLIF", "worse_group"] == "high"
    assert res.loc["NOISE", "q_predicted"] > 0.05
    # p equals lifelines on the same within-fold median split; q equals scipy's BH
    g = pred[pred["target"] == "PROLIF"].merge(out, on="patient_id")
    high = g["y_pred"] > g.groupby("fold")["y_pred"].transform("median")
    ref = logrank_test(g["time"][high], g["time"][~high], g["event"][high], g["event"][~high]).p_value
    assert res.loc["PROLIF", "p_predicted"] == pytest.approx(ref, rel=1e-9)
    q = false_discovery_control(res["p_predicted"].to_numpy(), method="bh")
    np.testing.assert_allclose(res["q_predicted"].to_numpy(), q)
    with pytest.raises(DataError, match="no held-out patient"):
        survival_association(pred, out.assign(patient_id="X"))


def test_gene_panels(tmp_path):
    name, genes = read_panel("pam50")
    assert name == "pam50" and len(genes) == 50 and {"ESR1", "ERBB2", "MKI67"} <= set(genes)
    f = tmp_path / "mine.txt"
    f.write_text("MKI67, CD3E\nNOTAGENE\n")
    assert read_panel(f) == ("mine", ["MKI67", "CD3E", "NOTAGENE"])
    with pytest.raises(DataError, match="no such file or shipped panel"):
        read_panel("pam51")
    from histoviz.evaluation.compare import summarise_metrics

    m = pd.DataFrame({"model": "m", "fold": [0, 0, 1, 1], "task": "gene", "kind": "regression",
                      "target": ["MKI67", "CD3E", "MKI67", "CD3E"], "metric": "pearson",
                      "value": [0.5, 0.1, 0.7, 0.3], "n": 8, "axis": "per-target", "subset": "all"})
    t = summarise_metrics(m, topk=(), panels={"mine": ["MKI67", "NOTAGENE"]})
    row = t[t["subset"] == "panel:mine"].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and "1/2 genes found; missing NOTAGENE" in row["selection"]
