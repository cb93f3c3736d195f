"""Uncertainty of a metric and tests between two models on the same rows.

Bootstraps are vectorised: one [n_resamples, n] index matrix is drawn, every resample's confusion
matrix comes from a single ``np.bincount``, and the metrics are computed from those counts. All
results are deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from sizewise.errors import ConfigError
from sizewise.evaluation.metrics import class_indices

IntArray = NDArray[np.int64]


def _accuracy_from_counts(cm: NDArray[np.int64]) -> NDArray[np.float64]:
    """Accuracy of each confusion matrix in a stack [..., k, k]."""
    total = cm.sum(axis=(-2, -1))
    return np.diagonal(cm, axis1=-2, axis2=-1).sum(axis=-1) / total


def _f1_macro_from_counts(cm: NDArray[np.int64]) -> NDArray[np.float64]:
    """Macro F1 of each confusion matrix in a stack [..., k, k], over the classes it contains.

    A class with no true and no predicted rows in a resample is left out of that resample's mean,
    as scikit-learn's ``f1_score(average="macro")`` does without ``labels``; otherwise a small set
    that happens to miss a class would be scored as if the model had failed on it. Where every
    class occurs in the full set this equals ``compute_metrics``'s ``f1_macro``.
    """
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    denom = cm.sum(axis=-1) + cm.sum(axis=-2)  # 2tp + fp + fn
    present = denom > 0
    f1 = np.divide(2.0 * tp, denom, out=np.zeros_like(tp), where=present)
    return f1.sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)


_METRICS: dict[str, Callable[[NDArray[np.int64]], NDArray[np.float64]]] = {
    "accuracy": _accuracy_from_counts,
    "f1_macro": _f1_macro_from_counts,
}


def _check_level(level: float, n_resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")


def _pair(y_true: ArrayLike, y_pred: ArrayLike, k: int, what: str = "y_pred") -> tuple[IntArray, IntArray]:
    y = class_indices(y_true, k)
    pred = class_indices(y_pred, k, what)
    if y.shape != pred.shape:
        raise ValueError(f"y_true has {y.shape[0]} rows but {what} has {pred.shape[0]}")
    if y.shape[0] == 0:
        raise ValueError("cannot bootstrap zero rows")
    return y, pred


def _resample_index(n: int, n_resamples: int, seed: int) -> NDArray[np.integer]:
    """The [n_resamples, n] matrix of row indices drawn with replacement; int32 to halve memory."""
    rng = np.random.default_rng(seed)
    dtype = np.int32 if n < 2**31 else np.int64
    return rng.integers(0, n, size=(n_resamples, n), dtype=dtype)


def _resampled_counts(codes: IntArray, index: NDArray[np.integer], cells: int) -> NDArray[np.int64]:
    """Per-resample counts of each cell code, [n_resamples, cells], from one bincount."""
    r = index.shape[0]
    offsets = (np.arange(r, dtype=np.int64) * cells)[:, None]
    flat = (codes[index] + offsets).ravel()
    return np.bincount(flat, minlength=r * cells).reshape(r, cells)


def _percentile(values: NDArray[np.float64], level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def bootstrap_intervals(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_labels: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of ``accuracy`` and ``f1_macro`` at confidence ``level``."""
    _check_level(level, n_resamples)
    k = int(num_labels)
    y, pred = _pair(y_true, y_pred, k)
    index = _resample_index(y.shape[0], n_resamples, seed)
    cm = _resampled_counts(y * k + pred, index, k * k).reshape(n_resamples, k, k)
    return {name: _percentile(fn(cm), level) for name, fn in _METRICS.items()}


def mcnemar_exact(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike) -> dict[str, Any]:
    """Exact McNemar test of two models on the same rows.

    ``a_only`` counts rows A gets right and B wrong, ``b_only`` the reverse; ``p_value`` is the
    exact two-sided binomial test (p = 1/2) on those discordant rows, 1.0 when there are none.
    """
    y = np.asarray(y_true).reshape(-1)
    a = np.asarray(pred_a).reshape(-1)
    b = np.asarray(pred_b).reshape(-1)
    if not (y.shape == a.shape == b.shape):
        raise ValueError(f"y_true, pred_a and pred_b differ in length: {y.size}, {a.size}, {b.size}")
    right_a = a == y
    right_b = b == y
    a_only = int(np.sum(right_a & ~right_b))
    b_only = int(np.sum(~right_a & right_b))
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(sps.binomtest(a_only, discordant, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "p_value": min(p, 1.0)}


def paired_bootstrap(
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    num_labels: int,
    *,
    metric: str = "accuracy",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap of ``metric`` (``accuracy`` or ``f1_macro``) of A minus B on the same rows.

    Returns ``difference`` (A - B on the full set), ``interval`` (percentile interval of the
    resampled differences) and ``p_value``: two-sided, twice the share of resamples whose
    difference has the opposite sign to (or equals zero against) the observed one, counted as
    (count + 1) / (n_resamples + 1) and capped at 1; 1.0 when the observed difference is 0.
    """
    if metric not in _METRICS:
        raise ConfigError("paired bootstrap", [f"unknown metric {metric!r}; choose one of {', '.join(_METRICS)}"])
    _check_level(level, n_resamples)
    k = int(num_labels)
    y, a = _pair(y_true, pred_a, k, "pred_a")
    _, b = _pair(y, pred_b, k, "pred_b")
    fn = _METRICS[metric]
    full_a = np.bincount(y * k + a, minlength=k * k).reshape(k, k)
    full_b = np.bincount(y * k + b, minlength=k * k).reshape(k, k)
    difference = float(fn(full_a) - fn(full_b))

    index = _resample_index(y.shape[0], n_resamples, seed)
    cm_a = _resampled_counts(y * k + a, index, k * k).reshape(n_resamples, k, k)
    cm_b = _resampled_counts(y * k + b, index, k * k).reshape(n_resamples, k, k)
    diffs = fn(cm_a) - fn(cm_b)

    if difference == 0.0:
        p_value = 1.0
    else:
        flipped = int(np.sum(diffs <= 0.0)) if difference > 0 else int(np.sum(diffs >= 0.0))
        p_value = min(1.0, 2.0 * (flipped + 1) / (n_resamples + 1))
    return {"difference": difference, "interval": _percentile(diffs, level), "p_value": p_value}
