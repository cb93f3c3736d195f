"""Quality metrics of one model on one labelled set: the six columns of the poster's Table 1."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn import metrics as skm

#: The metrics ``compute_metrics`` returns, in the poster's column order.
METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "f1_macro",
    "f1_weighted",
    "precision_macro",
    "recall_macro",
    "roc_auc_macro",
)


def class_indices(y: ArrayLike, num_labels: int, what: str = "y_true") -> NDArray[np.int64]:
    """Class indices as a 1-d int64 array, checked to lie in [0, num_labels)."""
    arr = np.asarray(y).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if np.any((arr < 0) | (arr >= num_labels)):
        raise ValueError(f"{what} must hold class indices in [0, {num_labels})")
    return arr


def _roc_auc_macro(y_true: NDArray[np.int64], proba: NDArray[np.float64], k: int) -> float | None:
    """Binary: ROC-AUC of column 1 (the positive class); k > 2: one-vs-rest macro; None if undefined."""
    present = np.unique(y_true)
    if present.size < k:
        return None  # some class has no true rows, so its ROC curve does not exist
    if k == 2:
        return float(skm.roc_auc_score(y_true, proba[:, 1]))
    # sklearn insists that multiclass scores sum to 1; renormalise so rounding never trips it.
    total = proba.sum(axis=1, keepdims=True)
    scores = np.divide(proba, total, out=np.full_like(proba, 1.0 / k), where=total > 0)
    return float(skm.roc_auc_score(y_true, scores, multi_class="ovr", average="macro", labels=list(range(k))))


def compute_metrics(y_true: ArrayLike, proba: ArrayLike, num_labels: int) -> dict[str, float | None]:
    """The poster's six metrics of predicted probabilities ``proba`` [n, k] against ``y_true`` [n].

    Predictions are the argmax of each row. Macro averages run over the classes that occur in the
    set, as true or as predicted labels: a class that is never predicted (or never true) scores 0
    rather than raising, and a class that is neither is left out, as it is in every resample of
    :func:`~sizewise.evaluation.stats.bootstrap_intervals` (so the estimate and its interval measure
    the same thing; on a set with every class, the classes are all ``num_labels``). ``roc_auc_macro``
    is ``None`` where it is undefined: a class absent from ``y_true``.
    """
    k = int(num_labels)
    if k < 2:
        raise ValueError(f"num_labels must be at least 2, got {num_labels}")
    p = np.asarray(proba, dtype=np.float64)
    y = class_indices(y_true, k)
    if p.ndim != 2 or p.shape != (y.shape[0], k):
        raise ValueError(f"expected probabilities of shape ({y.shape[0]}, {k}), got {p.shape}")
    if y.shape[0] == 0:
        raise ValueError("cannot compute metrics on zero rows")
    pred = p.argmax(axis=1)
    labels = sorted({*y.tolist(), *pred.tolist()})
    prf = {"labels": labels, "zero_division": 0}
    return {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1_macro": float(skm.f1_score(y, pred, average="macro", **prf)),
        "f1_weighted": float(skm.f1_score(y, pred, average="weighted", **prf)),
        "precision_macro": float(skm.precision_score(y, pred, average="macro", **prf)),
        "recall_macro": float(skm.recall_score(y, pred, average="macro", **prf)),
        "roc_auc_macro": _roc_auc_macro(y, p, k),
    }


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_labels: int) -> list[list[int]]:
    """Counts of (true, predicted) pairs as a k x k list of lists: rows true, columns predicted."""
    k = int(num_labels)
    y = class_indices(y_true, k)
    pred = class_indices(y_pred, k, "y_pred")
    if y.shape != pred.shape:
        raise ValueError(f"y_true has {y.shape[0]} rows but y_pred has {pred.shape[0]}")
    counts = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    return counts.tolist()
