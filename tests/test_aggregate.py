"""Aggregators: hand-checked numbers, safety at p = 0, the diversity identity and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from sizewise.ensembles import (
    AGGREGATORS,
    diversity_decomposition,
    geometric_mean,
    get_aggregator,
    mean,
    register_aggregator,
    vote,
)
from sizewise.errors import ConfigError

# Two members, one row: [0.5, 0.5] and [0.9, 0.1].
TWO = [np.array([[0.5, 0.5]]), np.array([[0.9, 0.1]])]


def test_geometric_mean_by_hand() -> None:
    # sqrt(0.5 * 0.9) = sqrt(0.45) = 0.67082, sqrt(0.5 * 0.1) = sqrt(0.05) = 0.22361;
    # sum 0.89443, so 0.67082 / 0.89443 = 0.75 and 0.22361 / 0.89443 = 0.25 (ratio sqrt(9) = 3).
    np.testing.assert_allclose(geometric_mean(TWO), [[0.75, 0.25]], rtol=1e-12)
    # The same members as one [m, n, k] array give the same answer.
    np.testing.assert_allclose(geometric_mean(np.stack(TWO)), [[0.75, 0.25]], rtol=1e-12)


def test_geometric_mean_weighted_by_hand() -> None:
    # Weights [1, 3] -> [0.25, 0.75]: q0 / q1 = (0.9 / 0.1) ** 0.75 = 9 ** 0.75 = 5.19615,
    # so q0 = 5.19615 / 6.19615 = 0.838621.
    ratio = 9**0.75
    np.testing.assert_allclose(geometric_mean(TWO, weights=[1, 3]), [[ratio / (1 + ratio), 1 / (1 + ratio)]])
    # Weights are normalised: [2, 2] is the unweighted mean; [0, 1] is the second member alone.
    np.testing.assert_allclose(geometric_mean(TWO, weights=[2, 2]), [[0.75, 0.25]], rtol=1e-12)
    np.testing.assert_allclose(geometric_mean(TWO, weights=[0, 1]), [[0.9, 0.1]], rtol=1e-12)


def test_geometric_mean_is_safe_at_zero() -> None:
    members = [
        np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]),
        np.array([[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [0.0, 1.0, 0.0]]),
    ]
    q = geometric_mean(members)
    assert not np.any(np.isnan(q))
    np.testing.assert_allclose(q.sum(axis=1), 1.0)
    # Row 0: one member's 0 for class 1 drives it to ~0; class 2 is 0 in every member -> ~0.
    np.testing.assert_allclose(q[0], [1.0, 0.0, 0.0], atol=1e-100)
    # Row 1: class 2 is 0 in both; sqrt(0.1) = 0.31623 and sqrt(0.4) = 0.63246 -> 1/3 and 2/3.
    np.testing.assert_allclose(q[1], [1 / 3, 2 / 3, 0.0], atol=1e-12)
    # Row 2: the members disagree completely; classes 0 and 1 tie at ~0 before renormalising.
    np.testing.assert_allclose(q[2], [0.5, 0.5, 0.0], atol=1e-12)


def test_mean_by_hand() -> None:
    # (0.5 + 0.9) / 2 = 0.7, (0.5 + 0.1) / 2 = 0.3.
    np.testing.assert_allclose(mean(TWO), [[0.7, 0.3]])
    # Weights [1, 3]: 0.25 * 0.5 + 0.75 * 0.9 = 0.8 and 0.25 * 0.5 + 0.75 * 0.1 = 0.2.
    np.testing.assert_allclose(mean(TWO, weights=[1, 3]), [[0.8, 0.2]])


def test_vote_by_hand() -> None:
    members = [
        np.array([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]]),
        np.array([[0.2, 0.5, 0.3], [0.5, 0.4, 0.1]]),
        np.array([[0.1, 0.2, 0.7], [0.1, 0.8, 0.1]]),
    ]
    # Row 0: argmaxes 0, 1, 2 -> one vote each; row 1: argmaxes 0, 0, 1 -> 2/3, 1/3, 0.
    np.testing.assert_allclose(vote(members), [[1 / 3, 1 / 3, 1 / 3], [2 / 3, 1 / 3, 0.0]])
    # Weights [1, 1, 2] -> [0.25, 0.25, 0.5]: row 0 -> 0.25, 0.25, 0.5; row 1 -> 0.5, 0.5, 0.
    np.testing.assert_allclose(vote(members, weights=[1, 1, 2]), [[0.25, 0.25, 0.5], [0.5, 0.5, 0.0]])


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_every_aggregator_returns_distributions(name: str) -> None:
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.ones(3), size=(4, 12))  # 4 members, 12 rows, 3 classes
    for weights in (None, rng.random(4)):
        q = get_aggregator(name)(probas, weights=weights)
        assert q.shape == (12, 3)
        assert q.dtype == np.float64
        assert np.all(q >= 0)
        np.testing.assert_allclose(q.sum(axis=1), 1.0)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="weights"):
        mean(TWO, weights=[1, 2, 3])
    with pytest.raises(ValueError, match="not all be zero"):
        mean(TWO, weights=[0, 0])
    with pytest.raises(ValueError, match="non-negative"):
        mean(TWO, weights=[-1, 2])
    with pytest.raises(ValueError, match="differ in shape"):
        mean([np.ones((2, 3)) / 3, np.ones((3, 3)) / 3])


@pytest.mark.parametrize("weighted", [False, True])
def test_diversity_identity_holds(weighted: bool) -> None:
    rng = np.random.default_rng(7)
    m, n, k = 5, 200, 3
    probas = rng.dirichlet(np.full(k, 0.7), size=(m, n))
    y = rng.integers(0, k, size=n)
    weights = rng.random(m) if weighted else None
    d = diversity_decomposition(probas, y, weights=weights)
    assert abs(d["ensemble_ce"] - (d["member_ce"] - d["diversity"])) < 1e-10
    assert d["diversity"] >= 0
    q = geometric_mean(probas, weights=weights)
    assert d["ensemble_ce"] == pytest.approx(-np.log(q[np.arange(n), y]).mean(), rel=1e-12)
    expected_members = [-np.log(p[np.arange(n), y]).mean() for p in probas]
    np.testing.assert_allclose(d["per_member_ce"], expected_members, rtol=1e-12)
    w = np.full(m, 1 / m) if weights is None else weights / weights.sum()
    assert d["member_ce"] == pytest.approx(float(w @ expected_members), rel=1e-12)


def test_diversity_identity_holds_with_zeros() -> None:
    probas = np.array([[[1.0, 0.0], [0.3, 0.7]], [[0.5, 0.5], [0.0, 1.0]]])
    y = np.array([1, 0])  # the true class gets 0 from some member in both rows
    d = diversity_decomposition(probas, y)
    assert all(np.isfinite(v) for v in (d["ensemble_ce"], d["member_ce"], d["diversity"]))
    assert abs(d["ensemble_ce"] - (d["member_ce"] - d["diversity"])) < 1e-10 * d["member_ce"]


def test_identical_members_have_no_diversity() -> None:
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    d = diversity_decomposition([p, p, p], np.array([1, 0]))
    assert d["diversity"] == pytest.approx(0.0, abs=1e-15)
    assert d["ensemble_ce"] == pytest.approx(d["member_ce"], rel=1e-12)


def test_registry_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_aggregator("mean")
        def another_mean(probas, weights=None):  # type: ignore[no-untyped-def]
            return mean(probas, weights)

    assert AGGREGATORS["mean"] is mean


def test_registry_registers_new_names() -> None:
    @register_aggregator("test_first_member")
    def first_member(probas, weights=None):  # type: ignore[no-untyped-def]
        return np.asarray(probas[0], dtype=np.float64)

    try:
        assert get_aggregator("test_first_member") is first_member
    finally:
        del AGGREGATORS["test_first_member"]


def test_get_aggregator_lists_known_names() -> None:
    assert get_aggregator("geometric_mean") is geometric_mean
    with pytest.raises(ConfigError, match="median") as info:
        get_aggregator("median")
    for name in ("geometric_mean", "mean", "vote"):
        assert name in str(info.value)
