"""Subsets and resamples of pair data: pure functions of labels / sizes and a seed or Generator.

Every function takes either an ``int`` seed or a ``numpy.random.Generator``; the same seed always
gives the same indices.
"""

from __future__ import annotations

import numpy as np

from sizewise.data.pairs import PairData
from sizewise.errors import DataError

#: A seed or a ready random generator.
Seed = int | np.random.Generator


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def stratified_quotas(counts: np.ndarray, n: int) -> np.ndarray:
    """How many of ``n`` rows each class gets, proportional to ``counts`` (largest remainder).

    Remainder ties go to the larger class, then to the lower class index, so the result is exact and
    deterministic: counts (6, 3, 1) and n = 5 give (3, 2, 0).
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if n >= total:
        return counts.copy()
    exact = counts * n / total
    quotas = np.floor(exact).astype(np.int64)
    left = n - int(quotas.sum())
    order = sorted(range(len(counts)), key=lambda c: (-(exact[c] - quotas[c]), -counts[c], c))
    for c in order[:left]:
        quotas[c] += 1
    return quotas


def subset_indices(labels: np.ndarray, n: int, seed: Seed, stratify: bool = True) -> np.ndarray:
    """Indices of ``n`` distinct rows, in a shuffled order; all rows (shuffled) when ``n >= len``.

    With ``stratify`` each label value (unlabelled -1 included) gets its proportional share, as in
    :func:`stratified_quotas`.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    rng = _rng(seed)
    if n >= total or not stratify:
        return rng.permutation(total)[: min(n, total)]
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quotas = stratified_quotas(counts, n)
    chosen = [
        rng.choice(np.flatnonzero(inverse == c), size=int(q), replace=False) for c, q in enumerate(quotas) if q > 0
    ]
    picked = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return rng.permutation(picked)


def sample_subset(data: PairData, n: int, seed: Seed, stratify: bool = True) -> PairData:
    """A subset of ``n`` rows of ``data`` (see :func:`subset_indices`); all rows when ``n >= len``."""
    idx = subset_indices(data.labels, n, seed, stratify=stratify)
    out = data.subset(idx)
    out.meta = {**data.meta, "subset_of": data.source, "subset_size": len(idx)}
    if isinstance(seed, int):
        out.meta["subset_seed"] = seed
    return out


def bootstrap_indices(n: int, rng: Seed) -> np.ndarray:
    """``n`` indices drawn uniformly with replacement from ``range(n)`` (one bootstrap sample)."""
    return _rng(rng).integers(0, n, size=n)


def fraction_indices(n: int, fraction: float, rng: Seed) -> np.ndarray:
    """``round(fraction * n)`` distinct indices (at least one) from ``range(n)``, in ascending order."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    size = min(n, max(1, round(fraction * n))) if n > 0 else 0
    return np.sort(_rng(rng).choice(n, size=size, replace=False))


def k_shot_indices(labels: np.ndarray, k: int, seed: Seed) -> np.ndarray:
    """``k`` distinct rows of every label present (unlabelled rows ignored), in a shuffled order.

    Raises DataError when a label has fewer than ``k`` rows.
    """
    labels = np.asarray(labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    rng = _rng(seed)
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    short = [f"label {c} has {m}" for c, m in zip(classes.tolist(), counts.tolist(), strict=True) if m < k]
    if short:
        raise DataError(f"cannot take {k} examples per label: " + ", ".join(short))
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c in classes]
    picked = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
    return rng.permutation(picked)


def weighted_resample_indices(weights: np.ndarray, rng: Seed, size: int | None = None) -> np.ndarray:
    """``size`` (default ``len(weights)``) indices drawn with replacement, with probability ∝ weight.

    Used by boosting to resample the training set by example weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be a 1-D array of finite, non-negative numbers with a positive sum")
    return _rng(rng).choice(len(w), size=len(w) if size is None else size, replace=True, p=w / w.sum())


def mixture_counts(sizes: dict[str, int], weights: dict[str, float], total: int) -> dict[str, int]:
    """How many of ``total`` pairs each set gives to a mixture, in proportion to ``weights`` (largest
    remainders get the pairs that rounding down leaves)."""
    names = list(sizes)
    w = np.array([weights[name] for name in names], dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - int(counts.sum())]:
        counts[i] += 1
    return {name: int(c) for name, c in zip(names, counts)}


def mixture_weights(
    sizes: dict[str, int], sampling: str, temperature: float = 1.0, fixed: dict[str, float] | None = None
) -> dict[str, float]:
    """The sampling weight of each set: its size (``proportional``), its size to the power 1/T
    (``temperature``), or the given weights (``fixed``)."""
    if sampling == "proportional":
        return {name: float(n) for name, n in sizes.items()}
    if sampling == "temperature":
        return {name: float(n) ** (1.0 / temperature) for name, n in sizes.items()}
    if sampling == "fixed" and fixed is not None:
        return {name: float(fixed[name]) for name in sizes}
    raise ValueError(f"unknown mixture sampling {sampling!r} (or fixed without weights)")


def draw_with_repeats(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` row indices of ``n`` rows: a random subset when ``count <= n``; else every row as often
    as it fits and a random subset for the rest."""
    whole, rest = divmod(count, n)
    return np.concatenate([np.tile(np.arange(n), whole), rng.choice(n, size=rest, replace=False)]).astype(np.int64)
