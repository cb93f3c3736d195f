"""Uncertainty of a metric and tests between two models on the same rows.

Bootstraps are vectorised: one [n_resamples, n] index matrix of test rows is drawn and turned into
per-resample row counts, every resample's confusion matrix (per training seed) comes from one matrix
product with the rows' one-hot cells, and the metrics are computed from those counts. The one-level
bootstraps over test rows are the two-level ones over training seeds and test rows with one seed.
All results are deterministic given ``seed``.
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

#: Below this many test pairs a percentile bootstrap says little (a handful of distinct resamples):
#: the intervals are still computed, and flagged where they are shown (:func:`few_pairs_note`).
FEW_PAIRS = 30


def few_pairs_note(n: int) -> str | None:
    """A warning for intervals from ``n`` test pairs when that is under :data:`FEW_PAIRS`, else None."""
    if n >= FEW_PAIRS:
        return None
    return f"only {n:,} test pair{'s' if n != 1 else ''}: the intervals are rough (a bootstrap needs {FEW_PAIRS}+)"


def _accuracy_from_counts(cm: NDArray[np.int64]) -> NDArray[np.float64]:
    """Accuracy of each confusion matrix in a stack [..., k, k]."""
    total = cm.sum(axis=(-2, -1))
    return np.diagonal(cm, axis1=-2, axis2=-1).sum(axis=-1) / total


def _f1_macro_from_counts(cm: NDArray[np.int64]) -> NDArray[np.float64]:
    """Macro F1 of each confusion matrix in a stack [..., k, k], over the classes it contains.

    A class with no true and no predicted rows in a resample is left out of that resample's mean,
    as scikit-learn's ``f1_score(average="macro")`` does without ``labels``; otherwise a small set
    that happens to miss a class would be scored as if the model had failed on it. ``compute_metrics``
    averages its ``f1_macro`` the same way, so an estimate and its interval measure the same thing.
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


def _resample_index(n: int, n_resamples: int, seed: int) -> NDArray[np.integer]:
    """The [n_resamples, n] matrix of row indices drawn with replacement; int32 to halve memory."""
    rng = np.random.default_rng(seed)
    dtype = np.int32 if n < 2**31 else np.int64
    return rng.integers(0, n, size=(n_resamples, n), dtype=dtype)


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
    """Percentile bootstrap intervals of ``accuracy`` and ``f1_macro`` at confidence ``level``: the
    two-level bootstrap (:func:`seed_bootstrap_intervals`) of one seed, which resamples the rows only."""
    return seed_bootstrap_intervals(y_true, y_pred, num_labels, n_resamples=n_resamples, seed=seed, level=level)


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
    (count + 1) / (n_resamples + 1) and capped at 1; 1.0 when the observed difference is 0. It is
    the two-level paired bootstrap (:func:`paired_seed_bootstrap`) of one seed.
    """
    return paired_seed_bootstrap(
        y_true, pred_a, pred_b, num_labels, metric=metric, n_resamples=n_resamples, seed=seed, level=level
    )


def _seed_rows(y: IntArray, preds: ArrayLike, k: int, what: str) -> IntArray:
    """Predictions of several training seeds as an [S, n] int64 array; a 1-d array is one seed."""
    arr = np.asarray(preds)
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be [seeds, rows], got {arr.ndim} dimensions")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} holds no seeds")
    if arr.shape[1] != y.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} rows but {what} has {arr.shape[1]} per seed")
    return class_indices(arr, k, what).reshape(arr.shape)


def _labels(y_true: ArrayLike, k: int) -> IntArray:
    y = class_indices(y_true, k)
    if y.shape[0] == 0:
        raise ValueError("cannot bootstrap zero rows")
    return y


def _pair_weights(n: int, n_resamples: int, seed: int) -> NDArray[np.floating]:
    """How often each row is drawn in each resample, [n_resamples, n], from the index matrix.

    The draws are ``_resample_index``'s, so they are the ones ``bootstrap_intervals`` and
    ``paired_bootstrap`` use with the same seed. Float32 holds every count (and every sum of counts
    over n rows) exactly while n < 2**24, and halves the memory of float64.
    """
    index = _resample_index(n, n_resamples, seed)
    flat = index.astype(np.int64)
    del index
    flat += (np.arange(n_resamples, dtype=np.int64) * n)[:, None]
    counts = np.bincount(flat.ravel(), minlength=n_resamples * n)
    del flat
    dtype = np.float32 if n < 2**24 else np.float64
    return counts.astype(dtype).reshape(n_resamples, n)


def _seed_counts(codes: IntArray, weights: NDArray[np.floating], k: int) -> NDArray[np.int64]:
    """Per-resample, per-seed confusion counts [n_resamples, S, k, k] from one matrix product.

    ``codes`` [S, n] holds each row's cell ``true * k + predicted`` under each seed; the one-hot
    matrix [n, S * k * k] has a 1 in column ``s * k * k + code``, so ``weights @ one_hot`` counts
    the drawn rows falling in each seed's cells.
    """
    s, n = codes.shape
    cells = k * k
    one_hot = np.zeros((n, s * cells), dtype=weights.dtype)
    one_hot[np.arange(n)[:, None], codes.T + np.arange(s) * cells] = 1.0
    counts = np.rint(weights @ one_hot).astype(np.int64)
    return counts.reshape(weights.shape[0], s, k, k)


def _seed_draws(n_seeds: int, n_resamples: int, seed: int) -> NDArray[np.int64]:
    """Which seed rows each resample uses, [n_resamples, S], drawn with replacement.

    A generator separate from the pairs' (``[seed, 1]``) so the pair draws stay those of the
    one-level bootstraps; with one seed every draw is row 0.
    """
    rng = np.random.default_rng([seed, 1])
    return rng.integers(0, n_seeds, size=(n_resamples, n_seeds))


def _mean_over_drawn_seeds(per_seed: NDArray[np.float64], draws: NDArray[np.int64]) -> NDArray[np.float64]:
    """Mean of ``per_seed`` [B, S] over the seed rows drawn for each resample, [B]."""
    return np.take_along_axis(per_seed, draws, axis=1).mean(axis=1)


def seed_bootstrap_intervals(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    num_labels: int,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Two-level percentile bootstrap intervals of ``accuracy`` and ``f1_macro`` over seeds and pairs.

    ``y_pred`` [S, n] holds one row of predictions per training seed (a 1-d array is one seed).
    Each resample draws S seed rows with replacement and n test pairs with replacement, the same
    pairs for every drawn seed; its statistic is the mean over the drawn seeds of the metric on
    the drawn pairs. The interval therefore covers both the test-set sampling and the spread
    between training runs. The pair draws are ``bootstrap_intervals``'s for the same ``seed`` and
    the seed draws come from a separate generator, so with one seed the result equals
    ``bootstrap_intervals(y_true, y_pred[0], ...)`` exactly.
    """
    _check_level(level, n_resamples)
    k = int(num_labels)
    y = _labels(y_true, k)
    pred = _seed_rows(y, y_pred, k, "y_pred")
    weights = _pair_weights(y.shape[0], n_resamples, seed)
    cm = _seed_counts(y * k + pred, weights, k)
    draws = _seed_draws(pred.shape[0], n_resamples, seed)
    return {name: _percentile(_mean_over_drawn_seeds(fn(cm), draws), level) for name, fn in _METRICS.items()}


def paired_seed_bootstrap(
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
    """Two-level paired bootstrap of ``metric`` of A minus B, over training seeds and test pairs.

    ``pred_a`` and ``pred_b`` are [S, n], one row per training seed, paired by row: row s of A
    and row s of B were trained with the same seed and data, so each resample draws one set of S
    seed rows (with replacement) for both arms, and one set of n test pairs for all of them.

    Returns the keys of ``paired_bootstrap``: ``difference`` (mean over seeds of A's metric minus
    B's on the full set), ``interval`` (percentile interval of the resampled mean differences)
    and ``p_value`` by the same rule: twice the share of resamples whose difference has the
    opposite sign to (or equals zero against) the observed one, counted as
    (count + 1) / (n_resamples + 1) and capped at 1; 1.0 when the observed difference is 0. With
    one seed the result equals ``paired_bootstrap`` exactly.
    """
    if metric not in _METRICS:
        raise ConfigError("paired bootstrap", [f"unknown metric {metric!r}; choose one of {', '.join(_METRICS)}"])
    _check_level(level, n_resamples)
    k = int(num_labels)
    y = _labels(y_true, k)
    a = _seed_rows(y, pred_a, k, "pred_a")
    b = _seed_rows(y, pred_b, k, "pred_b")
    if a.shape != b.shape:
        raise ValueError(f"pred_a has {a.shape[0]} seeds but pred_b has {b.shape[0]}")
    fn = _METRICS[metric]
    s = a.shape[0]
    codes = np.concatenate([y * k + a, y * k + b])  # [2S, n]: A's seeds, then B's

    offsets = (np.arange(2 * s, dtype=np.int64) * (k * k))[:, None]
    full = np.bincount((codes + offsets).ravel(), minlength=2 * s * k * k).reshape(2 * s, k, k)
    full_metric = fn(full)
    difference = float(np.mean(full_metric[:s] - full_metric[s:]))

    weights = _pair_weights(y.shape[0], n_resamples, seed)
    per_seed = fn(_seed_counts(codes, weights, k))  # [B, 2S]
    draws = _seed_draws(s, n_resamples, seed)
    diffs = _mean_over_drawn_seeds(per_seed[:, :s] - per_seed[:, s:], draws)

    if difference == 0.0:
        p_value = 1.0
    else:
        flipped = int(np.sum(diffs <= 0.0)) if difference > 0 else int(np.sum(diffs >= 0.0))
        p_value = min(1.0, 2.0 * (flipped + 1) / (n_resamples + 1))
    return {"difference": difference, "interval": _percentile(diffs, level), "p_value": p_value}


def seed_spread(values: ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1) of one metric over training seeds.

    The standard deviation is 0.0 for a single value; an empty input raises ``ValueError``.
    """
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("seed_spread needs at least one value")
    sd = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    return float(np.mean(arr)), sd
