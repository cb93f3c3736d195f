"""Aggregation: pure functions that turn m members' class probabilities into one distribution.

Every aggregator takes ``probas`` (a sequence of m arrays of shape [n, k], or one array of shape
[m, n, k]) and optional non-negative member ``weights`` (length m; normalised here, so boosting can
pass raw member weights) and returns a float64 array of shape [n, k] whose rows sum to 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sizewise.errors import ConfigError

#: An aggregator: ``fn(probas, weights=None) -> ndarray[n, k]``.
Aggregator = Callable[..., NDArray[np.float64]]
_F = TypeVar("_F", bound=Aggregator)

#: Every registered aggregator by name; ``geometric_mean`` is the default of an ensemble.
AGGREGATORS: dict[str, Aggregator] = {}

# The smallest positive normal float64: clipping here keeps log finite (about -708) at p = 0.
_TINY = np.finfo(np.float64).tiny


def register_aggregator(name: str) -> Callable[[_F], _F]:
    """Decorator that registers an aggregator under ``name``; a duplicate name is a ValueError."""

    def decorate(fn: _F) -> _F:
        if name in AGGREGATORS:
            raise ValueError(f"aggregator {name!r} is already registered (by {AGGREGATORS[name].__qualname__})")
        AGGREGATORS[name] = fn
        return fn

    return decorate


def get_aggregator(name: str) -> Aggregator:
    """Look up a registered aggregator by name; an unknown name is a ConfigError listing the known."""
    try:
        return AGGREGATORS[name]
    except KeyError:
        known = ", ".join(sorted(AGGREGATORS))
        raise ConfigError("aggregator", [f"unknown aggregator {name!r}; choose one of {known}"]) from None


def _stack(probas: Sequence[ArrayLike] | ArrayLike) -> NDArray[np.float64]:
    """The members' probabilities as one float64 array [m, n, k], checked for shape and sign."""
    if isinstance(probas, np.ndarray):
        arr = probas.astype(np.float64, copy=False)
    else:
        members = [np.asarray(p, dtype=np.float64) for p in probas]
        if not members:
            raise ValueError("cannot aggregate zero members")
        shapes = {m.shape for m in members}
        if len(shapes) != 1:
            raise ValueError(f"members' probability arrays differ in shape: {sorted(shapes)}")
        arr = np.stack(members)
    if arr.ndim != 3:
        raise ValueError(f"expected probabilities of shape [m, n, k], got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("cannot aggregate zero members")
    if arr.shape[2] == 0:
        raise ValueError("probabilities have zero classes")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("probabilities must be finite and non-negative")
    return arr


def _weights(weights: ArrayLike | None, m: int) -> NDArray[np.float64]:
    """Member weights as a float64 vector of length m summing to 1 (uniform when ``None``)."""
    if weights is None:
        return np.full(m, 1.0 / m)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != m:
        raise ValueError(f"got {w.shape[0]} weights for {m} members")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights must not all be zero")
    return w / total


def _log_geometric_mean(arr: NDArray[np.float64], w: NDArray[np.float64]) -> NDArray[np.float64]:
    """Log of the normalized geometric mean, [n, k]; normalised in log space so nothing is 0/0."""
    log_p = np.log(np.clip(arr, _TINY, None))
    log_q = np.tensordot(w, log_p, axes=1)  # weighted mean log-probability, [n, k]
    shift = log_q.max(axis=1, keepdims=True)
    log_z = shift + np.log(np.exp(log_q - shift).sum(axis=1, keepdims=True))
    return log_q - log_z


@register_aggregator("geometric_mean")
def geometric_mean(probas: Sequence[ArrayLike] | ArrayLike, weights: ArrayLike | None = None) -> NDArray[np.float64]:
    """Normalized (weighted) geometric mean: exp of the mean log-probability, rows renormalised to 1.

    A class that every member gives probability 0 gets (about) 0; one member's 0 pulls the class
    down hard but never produces nan.
    """
    arr = _stack(probas)
    q = np.exp(_log_geometric_mean(arr, _weights(weights, arr.shape[0])))
    return q / q.sum(axis=1, keepdims=True)


@register_aggregator("mean")
def mean(probas: Sequence[ArrayLike] | ArrayLike, weights: ArrayLike | None = None) -> NDArray[np.float64]:
    """(Weighted) arithmetic mean of the members' probabilities."""
    arr = _stack(probas)
    q = np.tensordot(_weights(weights, arr.shape[0]), arr, axes=1)
    total = q.sum(axis=1, keepdims=True)
    # Members' rows should already sum to 1; dividing guards against rounding and unnormalised input.
    return np.divide(q, total, out=np.full_like(q, 1.0 / q.shape[1]), where=total > 0)


@register_aggregator("vote")
def vote(probas: Sequence[ArrayLike] | ArrayLike, weights: ArrayLike | None = None) -> NDArray[np.float64]:
    """(Weighted) share of members whose argmax is each class; a tie goes to the lowest class index."""
    arr = _stack(probas)
    m, n, k = arr.shape
    votes = np.zeros((n, k))
    winners = arr.argmax(axis=2)  # [m, n]
    w = _weights(weights, m)
    rows = np.arange(n)
    for i in range(m):
        votes[rows, winners[i]] += w[i]
    return votes / votes.sum(axis=1, keepdims=True)


def diversity_decomposition(
    probas: Sequence[ArrayLike] | ArrayLike, y_true: ArrayLike, weights: ArrayLike | None = None
) -> dict[str, Any]:
    """Split the cross-entropy of the normalized geometric mean into member loss minus diversity.

    Returns ``ensemble_ce`` (mean cross-entropy of the geometric-mean ensemble), ``member_ce``
    (weighted mean of the members' mean cross-entropies), ``diversity`` (weighted mean over members
    of mean_n KL(q_bar || q_i)) and ``per_member_ce``. For this aggregator the identity
    ``ensemble_ce = member_ce - diversity`` is exact (Wood et al., "A Unified Theory of Diversity
    in Ensemble Learning", JMLR 2023). Probabilities are clipped at the smallest positive float, so
    every term is finite and the identity holds even where a member gives the true class 0.
    """
    arr = _stack(probas)
    m, n, k = arr.shape
    y = np.asarray(y_true).reshape(-1)
    if y.shape[0] != n:
        raise ValueError(f"got {y.shape[0]} labels for {n} rows of probabilities")
    if n == 0:
        raise ValueError("cannot decompose the loss of zero rows")
    if not np.issubdtype(y.dtype, np.integer) or np.any((y < 0) | (y >= k)):
        raise ValueError(f"labels must be integers in [0, {k})")
    w = _weights(weights, m)
    log_p = np.log(np.clip(arr, _TINY, None))  # [m, n, k]
    log_q = _log_geometric_mean(arr, w)  # [n, k]
    rows = np.arange(n)
    per_member = -log_p[:, rows, y].mean(axis=1)  # [m]
    q = np.exp(log_q)
    kl = (q[None] * (log_q[None] - log_p)).sum(axis=2).mean(axis=1)  # [m]
    return {
        "ensemble_ce": float(-log_q[rows, y].mean()),
        "member_ce": float(w @ per_member),
        "diversity": float(w @ kl),
        "per_member_ce": [float(v) for v in per_member],
    }
