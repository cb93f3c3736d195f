"""Bootstrap intervals, McNemar's exact test and the paired bootstrap."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import fastest_seconds
from sizewise.errors import ConfigError
from sizewise.evaluation import bootstrap_intervals, compute_metrics, mcnemar_exact, paired_bootstrap
from sizewise.evaluation.stats import _f1_macro_from_counts


def _noisy(n: int, k: int, right: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions that are right about ``right`` of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    pred = np.where(rng.random(n) < right, y, rng.integers(0, k, size=n))
    return y, pred


def _one_hot(pred: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[pred]


def test_interval_contains_point_estimate() -> None:
    y, pred = _noisy(500, 3, 0.7, seed=1)
    point = compute_metrics(y, _one_hot(pred, 3), 3)
    got = bootstrap_intervals(y, pred, 3)
    assert set(got) == {"accuracy", "f1_macro"}
    for name, (lo, hi) in got.items():
        assert lo < point[name] < hi, name
        assert 0.0 <= lo <= hi <= 1.0


def test_interval_narrows_with_n() -> None:
    small = bootstrap_intervals(*_noisy(200, 3, 0.7, seed=2), 3)
    large = bootstrap_intervals(*_noisy(5000, 3, 0.7, seed=2), 3)
    for name in ("accuracy", "f1_macro"):
        assert large[name][1] - large[name][0] < (small[name][1] - small[name][0]) / 2


def test_interval_is_deterministic_per_seed() -> None:
    y, pred = _noisy(300, 3, 0.6, seed=3)
    assert bootstrap_intervals(y, pred, 3, seed=5) == bootstrap_intervals(y, pred, 3, seed=5)
    assert bootstrap_intervals(y, pred, 3, seed=5) != bootstrap_intervals(y, pred, 3, seed=6)


def test_all_correct_gives_one_one() -> None:
    # Small enough that many resamples miss a class; a missing class must not count as F1 = 0.
    y = np.array([0, 1, 2, 1, 0, 2, 2])
    got = bootstrap_intervals(y, y, 3, n_resamples=200)
    assert got == {"accuracy": (1.0, 1.0), "f1_macro": (1.0, 1.0)}


def test_f1_from_counts_matches_scikit_learn() -> None:
    # Tiny sets over 4 classes, so some miss a class entirely, as bootstrap resamples do.
    rng = np.random.default_rng(4)
    for _ in range(50):
        y = rng.integers(0, 4, size=5)
        pred = rng.integers(0, 4, size=5)
        cm = skm.confusion_matrix(y, pred, labels=[0, 1, 2, 3])
        expected = skm.f1_score(y, pred, average="macro", zero_division=0)
        assert _f1_macro_from_counts(cm) == pytest.approx(expected, abs=1e-12)


def test_bootstrap_is_fast() -> None:
    y, pred = _noisy(10_000, 3, 0.8, seed=0)
    bootstrap_intervals(y, pred, 3, n_resamples=10)  # warm up imports and allocator
    seconds, _ = fastest_seconds(lambda: bootstrap_intervals(y, pred, 3, n_resamples=1000))
    assert seconds < 1.0


def test_mcnemar_by_hand() -> None:
    # 8 rows only A gets right, 2 rows only B gets right, 5 both right, 3 both wrong.
    y = np.zeros(18, dtype=int)
    a = np.array([0] * 8 + [1] * 2 + [0] * 5 + [1] * 3)
    b = np.array([1] * 8 + [0] * 2 + [0] * 5 + [2] * 3)
    # Exact two-sided binomial test on 10 discordant rows at p = 1/2:
    # 2 * (C(10,0) + C(10,1) + C(10,2)) / 2**10 = 2 * (1 + 10 + 45) / 1024 = 112 / 1024 = 0.109375.
    expected = 2 * sum(comb(10, i) for i in range(3)) / 2**10
    assert expected == 0.109375
    got = mcnemar_exact(y, a, b)
    assert got["a_only"] == 8
    assert got["b_only"] == 2
    assert got["p_value"] == pytest.approx(0.109375, rel=1e-12)
    swapped = mcnemar_exact(y, b, a)
    assert (swapped["a_only"], swapped["b_only"]) == (2, 8)
    assert swapped["p_value"] == pytest.approx(got["p_value"], rel=1e-12)


def test_mcnemar_without_discordant_pairs() -> None:
    y = np.array([0, 1, 2, 1])
    got = mcnemar_exact(y, [0, 1, 0, 0], [0, 1, 1, 2])
    assert got == {"a_only": 0, "b_only": 0, "p_value": 1.0}


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro"])
def test_paired_bootstrap_finds_a_clearly_better_model(metric: str) -> None:
    rng = np.random.default_rng(8)
    n = 600
    y = rng.integers(0, 3, size=n)
    a = np.where(rng.random(n) < 0.9, y, (y + 1) % 3)
    b = np.where(rng.random(n) < 0.6, y, (y + 1) % 3)
    got = paired_bootstrap(y, a, b, 3, metric=metric)
    point_a = compute_metrics(y, _one_hot(a, 3), 3)[metric]
    point_b = compute_metrics(y, _one_hot(b, 3), 3)[metric]
    assert got["difference"] == pytest.approx(point_a - point_b, abs=1e-12)
    lo, hi = got["interval"]
    assert 0 < lo < got["difference"] < hi
    # No resample flips the sign: the floor of the (count + 1) / (n + 1) convention, times 2.
    assert got["p_value"] == pytest.approx(2 / 1001)
    reverse = paired_bootstrap(y, b, a, 3, metric=metric)
    assert reverse["difference"] == pytest.approx(-got["difference"])
    assert reverse["p_value"] == pytest.approx(got["p_value"])


def test_paired_bootstrap_of_identical_models() -> None:
    y, pred = _noisy(400, 3, 0.7, seed=9)
    got = paired_bootstrap(y, pred, pred.copy(), 3)
    assert got == {"difference": 0.0, "interval": (0.0, 0.0), "p_value": 1.0}


def test_paired_bootstrap_of_near_equal_models_is_not_significant() -> None:
    rng = np.random.default_rng(10)
    n = 400
    y = rng.integers(0, 3, size=n)
    a = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
    b = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
    got = paired_bootstrap(y, a, b, 3)
    lo, hi = got["interval"]
    if got["difference"] != 0.0:
        assert got["p_value"] > 0.05
        assert lo < 0 < hi


def test_paired_bootstrap_is_deterministic_and_checks_metric() -> None:
    y, a = _noisy(300, 3, 0.7, seed=11)
    _, b = _noisy(300, 3, 0.65, seed=12)
    assert paired_bootstrap(y, a, b, 3, seed=1) == paired_bootstrap(y, a, b, 3, seed=1)
    with pytest.raises(ConfigError, match="f1_macro"):
        paired_bootstrap(y, a, b, 3, metric="auc")


@pytest.mark.parametrize("k", [2, 3])
def test_point_estimate_lies_in_its_interval_on_small_sets(k: int) -> None:
    # A property over many random small test sets (1 to 12 rows, classes often missing): the metric
    # compute_metrics reports must lie inside the interval bootstrapped for it.
    rng = np.random.default_rng(20 + k)
    for case in range(300):
        n = int(rng.integers(1, 13))
        y = rng.integers(0, k, size=n)
        pred = np.where(rng.random(n) < rng.random(), y, rng.integers(0, k, size=n))
        point = compute_metrics(y, _one_hot(pred, k), k)
        got = bootstrap_intervals(y, pred, k, n_resamples=200, seed=case)
        for name, (lo, hi) in got.items():
            assert lo - 1e-12 <= point[name] <= hi + 1e-12, (name, y.tolist(), pred.tolist(), point[name], lo, hi)


def test_one_row_macro_f1_matches_its_interval() -> None:
    # One pair, predicted right: the macro-F1 over the classes present is 1, and so is its interval.
    point = compute_metrics([0], _one_hot(np.array([0]), 3), 3)
    assert point["f1_macro"] == 1.0
    assert bootstrap_intervals([0], [0], 3, n_resamples=100)["f1_macro"] == (1.0, 1.0)
