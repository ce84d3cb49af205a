"""Classification metrics (scikit-learn): per-class and macro / micro AUC, balanced accuracy,
accuracy and the confusion matrix.

- per-class AUC is one-vs-rest; a class absent from (or alone in) the held-out patients has no
  AUC (NaN);
- ``auc_macro`` is the mean of the defined per-class AUCs (scikit-learn's
  ``roc_auc_score(multi_class="ovr", average="macro")`` when every class is present);
- ``auc_micro`` is PathGen's micro-average: one ROC over the flattened one-hot labels and
  probabilities;
- for two classes every AUC is the AUC of the second class's probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["classification_metrics", "confusion_table"]


def classification_metrics(codes: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics of class codes ``(n,)`` against probabilities ``(n, K)``.

    Returns
    -------
    dict with ``auc_per_class`` {class: auc}, ``auc_macro``, ``auc_micro``,
    ``balanced_accuracy``, ``accuracy``.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    y = np.asarray(codes, np.int64)
    p = np.asarray(proba, np.float64)
    k = len(classes)
    per: dict[str, float] = {}
    for j, c in enumerate(classes):
        pos = y == j
        if pos.all() or not pos.any():
            per[str(c)] = float("nan")
        else:
            per[str(c)] = float(roc_auc_score(pos.astype(int), p[:, j]))
    vals = [v for v in per.values() if np.isfinite(v)]
    onehot = np.zeros((len(y), k))
    onehot[np.arange(len(y)), y] = 1.0
    micro = float(roc_auc_score(onehot.ravel(), p.ravel())) if 0 < onehot.sum() < onehot.size else float("nan")
    pred = np.argmax(p, axis=1)
    return {
        "auc_per_class": per,
        "auc_macro": float(np.mean(vals)) if vals else float("nan"),
        "auc_micro": micro,
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(set(y.tolist())) > 1 else float("nan"),
        "accuracy": float(accuracy_score(y, pred)),
    }


def confusion_table(y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]) -> pd.DataFrame:
    """Confusion matrix as a DataFrame (rows: true class, columns: predicted class)."""
    from sklearn.metrics import confusion_matrix

    cls = [str(c) for c in classes]
    m = confusion_matrix([str(v) for v in y_true], [str(v) for v in y_pred], labels=cls)
    return pd.DataFrame(m, index=pd.Index(cls, name="true"), columns=pd.Index(cls, name="predicted"))
