"""Two-level bootstraps over training seeds and test pairs, and the spread of a metric over seeds."""

from __future__ import annotations

import math
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from sizewise.errors import ConfigError
from sizewise.evaluation.stats import (
    _resample_index,
    bootstrap_intervals,
    paired_bootstrap,
    paired_seed_bootstrap,
    seed_bootstrap_intervals,
    seed_spread,
)
from sizewise.result import ArmResult

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _seeds(n: int, k: int, rights: list[float], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels [n] and one row of predictions per training seed [S, n], row s right about rights[s]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    rows = [np.where(rng.random(n) < r, y, rng.integers(0, k, size=n)) for r in rights]
    return y, np.stack(rows)


def _sk_metric(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    """The metric by scikit-learn; macro F1 over the classes present, as the bootstrap scores it."""
    if name == "accuracy":
        return float(skm.accuracy_score(y, pred))
    return float(skm.f1_score(y, pred, average="macro", zero_division=0))


def _draws(n: int, n_seeds: int, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The documented draws: pairs as bootstrap_intervals draws them, seeds from rng([seed, 1])."""
    pairs = _resample_index(n, n_resamples, seed)
    seeds = np.random.default_rng([seed, 1]).integers(0, n_seeds, size=(n_resamples, n_seeds))
    return pairs, seeds


def _quantiles(values: list[float], level: float) -> tuple[float, float]:
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _reference_interval(
    y: np.ndarray, preds: np.ndarray, name: str, n_resamples: int, seed: int, level: float
) -> tuple[float, float]:
    """The two-level statistic by a plain double loop: resamples, then the drawn seeds."""
    pairs, seeds = _draws(y.size, preds.shape[0], n_resamples, seed)
    stats = []
    for b in range(n_resamples):
        rows = pairs[b]
        values = [_sk_metric(name, y[rows], preds[s][rows]) for s in seeds[b]]
        stats.append(sum(values) / len(values))
    return _quantiles(stats, level)


def _reference_paired(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, name: str, n_resamples: int, seed: int, level: float
) -> dict[str, object]:
    """The paired two-level bootstrap by a plain double loop, with paired_bootstrap's p-value rule."""
    s_count = a.shape[0]
    difference = sum(_sk_metric(name, y, a[s]) - _sk_metric(name, y, b[s]) for s in range(s_count)) / s_count
    pairs, seeds = _draws(y.size, s_count, n_resamples, seed)
    diffs = []
    for r in range(n_resamples):
        rows = pairs[r]
        values = [_sk_metric(name, y[rows], a[s][rows]) - _sk_metric(name, y[rows], b[s][rows]) for s in seeds[r]]
        diffs.append(sum(values) / len(values))
    flipped = sum(d <= 0 for d in diffs) if difference > 0 else sum(d >= 0 for d in diffs)
    p_value = 1.0 if difference == 0 else min(1.0, 2 * (flipped + 1) / (n_resamples + 1))
    return {"difference": difference, "interval": _quantiles(diffs, level), "p_value": p_value}


# --- seed_bootstrap_intervals ----------------------------------------------------------------------


def test_matches_a_plain_double_loop_on_a_toy() -> None:
    # S = 2 seeds, n = 4 pairs, 2 classes: small enough that resamples often miss a class.
    y = np.array([0, 1, 1, 0])
    preds = np.array([[0, 1, 0, 0], [1, 1, 1, 0]])
    got = seed_bootstrap_intervals(y, preds, 2, n_resamples=60, seed=3, level=0.8)
    assert set(got) == {"accuracy", "f1_macro"}
    for name in got:
        assert got[name] == pytest.approx(_reference_interval(y, preds, name, 60, 3, 0.8), abs=1e-12), name


def test_matches_a_plain_double_loop_with_three_classes() -> None:
    y, preds = _seeds(9, 3, [0.4, 0.7, 0.9], seed=5)
    got = seed_bootstrap_intervals(y, preds, 3, n_resamples=80, seed=11, level=0.9)
    for name in got:
        assert got[name] == pytest.approx(_reference_interval(y, preds, name, 80, 11, 0.9), abs=1e-12), name


@pytest.mark.parametrize("seed", [0, 7])
def test_one_seed_is_the_bootstrap_over_pairs(seed: int) -> None:
    y, preds = _seeds(120, 3, [0.7], seed=2)
    for name in ("accuracy", "f1_macro"):
        expected = _reference_interval(y, preds, name, 200, seed, 0.9)  # S = 1: rows resampled only
        assert bootstrap_intervals(y, preds[0], 3, n_resamples=200, seed=seed, level=0.9)[name] == pytest.approx(
            expected, abs=1e-12
        )
        assert seed_bootstrap_intervals(y, preds, 3, n_resamples=200, seed=seed, level=0.9)[name] == pytest.approx(
            expected, abs=1e-12
        )


def test_shipped_results_keep_their_intervals() -> None:
    """The intervals in the benchmark result files (computed by earlier code) are computed again exactly."""
    for path in sorted(RESULTS.glob("*/*/result.json"))[:6]:
        r = ArmResult.read(path)
        got = bootstrap_intervals(
            r.predictions.y_true,
            r.predictions.y_pred,
            len(r.data.labels),
            n_resamples=r.intervals.resamples,
            seed=r.config.seed,
            level=r.intervals.level,
        )
        assert [round(v, 6) for v in got["accuracy"]] == list(r.intervals.accuracy), path
        assert [round(v, 6) for v in got["f1_macro"]] == list(r.intervals.f1_macro), path


def test_all_correct_gives_one_one() -> None:
    y = np.array([0, 1, 2, 1])
    got = seed_bootstrap_intervals(y, np.stack([y, y, y]), 3, n_resamples=200)
    assert got == {"accuracy": (1.0, 1.0), "f1_macro": (1.0, 1.0)}


def test_one_seed_right_one_wrong_by_hand() -> None:
    # Seed 0 is right on every pair and seed 1 wrong on every pair, so on any pair draw the metric
    # (accuracy or macro F1) is 1 for seed 0 and 0 for seed 1, and the statistic is the share of
    # seed 0 among the two seeds drawn: 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4.
    # Its alpha-quantile is 0 for alpha < 1/4, 1/2 for 1/4 < alpha < 3/4 and 1 above, so
    # level 0.4 (quantiles 0.3, 0.7) gives (1/2, 1/2) and level 0.6 (0.2, 0.8) gives (0, 1).
    y = np.array([0, 1, 0, 1])
    preds = np.stack([y, 1 - y])
    narrow = seed_bootstrap_intervals(y, preds, 2, n_resamples=4000, level=0.4)
    wide = seed_bootstrap_intervals(y, preds, 2, n_resamples=4000, level=0.6)
    assert narrow == {"accuracy": (0.5, 0.5), "f1_macro": (0.5, 0.5)}
    assert wide == {"accuracy": (0.0, 1.0), "f1_macro": (0.0, 1.0)}
    # Over the pairs alone each seed is certain: (1, 1) and (0, 0).
    assert bootstrap_intervals(y, preds[0], 2, n_resamples=100)["accuracy"] == (1.0, 1.0)
    assert bootstrap_intervals(y, preds[1], 2, n_resamples=100)["accuracy"] == (0.0, 0.0)


def test_seeds_that_agree_give_the_one_level_interval() -> None:
    y, preds = _seeds(400, 3, [0.75], seed=4)
    same = np.repeat(preds, 4, axis=0)
    got = seed_bootstrap_intervals(y, same, 3, n_resamples=300, seed=2)
    expected = bootstrap_intervals(y, preds[0], 3, n_resamples=300, seed=2)
    for name in got:
        assert got[name] == pytest.approx(expected[name], abs=1e-12)


def test_disagreeing_seeds_widen_the_interval() -> None:
    y, preds = _seeds(2000, 3, [0.55, 0.65, 0.75, 0.85, 0.95], seed=6)
    n_resamples, level = 1000, 0.95
    two_level = seed_bootstrap_intervals(y, preds, 3, n_resamples=n_resamples, seed=0, level=level)["accuracy"]
    # Test pairs only: the mean over all five seeds on each pair draw, no seed resampling.
    pairs = _resample_index(y.size, n_resamples, 0)
    right = preds == y  # [S, n]
    pairs_only = _quantiles(list(right[:, pairs].mean(axis=2).mean(axis=0)), level)
    width = two_level[1] - two_level[0]
    assert width > 3 * (pairs_only[1] - pairs_only[0])
    for row in preds:
        lo, hi = bootstrap_intervals(y, row, 3, n_resamples=n_resamples, seed=0, level=level)["accuracy"]
        assert width > 3 * (hi - lo)
    mean_acc = float(right.mean())
    assert two_level[0] < mean_acc < two_level[1]


def test_seed_bootstrap_is_deterministic_and_checks_input() -> None:
    y, preds = _seeds(200, 3, [0.6, 0.7], seed=8)
    assert seed_bootstrap_intervals(y, preds, 3, seed=4) == seed_bootstrap_intervals(y, preds, 3, seed=4)
    assert seed_bootstrap_intervals(y, preds, 3, seed=4) != seed_bootstrap_intervals(y, preds, 3, seed=5)
    with pytest.raises(ValueError, match="rows"):
        seed_bootstrap_intervals(y, preds[:, :-1], 3)
    with pytest.raises(ValueError, match="dimensions"):
        seed_bootstrap_intervals(y, preds[None], 3)
    with pytest.raises(ValueError, match="no seeds"):
        seed_bootstrap_intervals(y, preds[:0], 3)
    with pytest.raises(ValueError, match="zero rows"):
        seed_bootstrap_intervals([], np.zeros((2, 0), dtype=int), 3)
    with pytest.raises(ValueError, match="class indices"):
        seed_bootstrap_intervals(y, preds + 3, 3)
    with pytest.raises(ValueError, match="level"):
        seed_bootstrap_intervals(y, preds, 3, level=1.0)


def test_seed_bootstrap_at_full_size_is_fast_and_small() -> None:
    # n = 10,000 pairs, S = 10 seeds, 1,000 resamples: the largest case the studies need.
    y, preds = _seeds(10_000, 3, [0.8] * 10, seed=0)
    seed_bootstrap_intervals(y, preds, 3, n_resamples=10)  # warm up imports and allocator
    tracemalloc.start()
    try:
        start = time.perf_counter()
        paired_seed_bootstrap(y, preds, preds[::-1], 3)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 400 * 2**20
    assert seconds < 10.0  # about 0.2 s untraced; tracing slows numpy's allocations a little


# --- paired_seed_bootstrap -------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro"])
def test_paired_matches_a_plain_double_loop_on_a_toy(metric: str) -> None:
    y = np.array([0, 1, 1, 0])
    a = np.array([[0, 1, 1, 1], [0, 1, 0, 0]])
    b = np.array([[1, 1, 0, 0], [0, 0, 0, 0]])
    got = paired_seed_bootstrap(y, a, b, 2, metric=metric, n_resamples=60, seed=3, level=0.8)
    expected = _reference_paired(y, a, b, metric, 60, 3, 0.8)
    assert got["difference"] == pytest.approx(expected["difference"], abs=1e-12)
    assert got["interval"] == pytest.approx(expected["interval"], abs=1e-12)
    assert got["p_value"] == pytest.approx(expected["p_value"], abs=1e-12)


@pytest.mark.parametrize("metric", ["accuracy", "f1_macro"])
def test_paired_one_seed_is_the_paired_bootstrap_over_pairs(metric: str) -> None:
    y, preds = _seeds(100, 3, [0.75, 0.7], seed=9)
    expected = _reference_paired(y, preds[:1], preds[1:], metric, 200, 3, 0.95)
    for got in (
        paired_bootstrap(y, preds[0], preds[1], 3, metric=metric, n_resamples=200, seed=3),
        paired_seed_bootstrap(y, preds[:1], preds[1:], 3, metric=metric, n_resamples=200, seed=3),
    ):
        assert got["difference"] == pytest.approx(expected["difference"], abs=1e-12)
        assert got["interval"] == pytest.approx(expected["interval"], abs=1e-12)
        assert got["p_value"] == pytest.approx(expected["p_value"], abs=1e-12)


def test_paired_seed_disagreement_by_hand() -> None:
    # A is right everywhere under both seeds; B is wrong everywhere under seed 0 and right under
    # seed 1. Per seed, A - B is 1 (seed 0) and 0 (seed 1) on any pair draw, so the difference is
    # 1/2 and the resampled difference is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4: about a
    # quarter of resamples reach 0, and the p-value is about 2 * 1/4 = 1/2.
    y = np.array([0, 1, 0, 1, 1])
    a = np.stack([y, y])
    b = np.stack([1 - y, y])
    got = paired_seed_bootstrap(y, a, b, 2, n_resamples=4000, level=0.4)
    assert got["difference"] == 0.5
    assert got["interval"] == (0.5, 0.5)
    assert got["p_value"] == pytest.approx(0.5, abs=0.05)
    assert paired_seed_bootstrap(y, a, b, 2, n_resamples=4000, level=0.6)["interval"] == (0.0, 1.0)
    # Seed 0 alone, over the pairs only, is as certain as a bootstrap can be.
    alone = paired_bootstrap(y, a[0], b[0], 2, n_resamples=4000)
    assert alone["difference"] == 1.0
    assert alone["p_value"] == pytest.approx(2 / 4001)


def test_paired_identical_arms() -> None:
    y, preds = _seeds(300, 3, [0.6, 0.8], seed=10)
    got = paired_seed_bootstrap(y, preds, preds.copy(), 3)
    assert got == {"difference": 0.0, "interval": (0.0, 0.0), "p_value": 1.0}


def test_paired_finds_a_clearly_better_arm_over_seeds() -> None:
    rng = np.random.default_rng(12)
    y = rng.integers(0, 3, size=600)
    a = np.where(rng.random((3, 600)) < [[0.9], [0.88], [0.92]], y, (y + 1) % 3)
    b = np.where(rng.random((3, 600)) < [[0.6], [0.62], [0.58]], y, (y + 1) % 3)
    got = paired_seed_bootstrap(y, a, b, 3)
    expected = float(np.mean((a == y).mean(axis=1) - (b == y).mean(axis=1)))
    assert got["difference"] == pytest.approx(expected, abs=1e-12)
    lo, hi = got["interval"]
    assert 0 < lo < got["difference"] < hi
    assert got["p_value"] == pytest.approx(2 / 1001)
    reverse = paired_seed_bootstrap(y, b, a, 3)
    assert reverse["difference"] == pytest.approx(-got["difference"])
    assert reverse["p_value"] == pytest.approx(got["p_value"])


def test_paired_checks_input() -> None:
    y, preds = _seeds(100, 3, [0.6, 0.7, 0.8], seed=14)
    with pytest.raises(ConfigError, match="f1_macro"):
        paired_seed_bootstrap(y, preds, preds, 3, metric="auc")
    with pytest.raises(ValueError, match="seeds"):
        paired_seed_bootstrap(y, preds, preds[:2], 3)
    with pytest.raises(ValueError, match="rows"):
        paired_seed_bootstrap(y, preds, preds[:, 1:], 3)
    assert paired_seed_bootstrap(y, preds, preds[::-1], 3, seed=2) == paired_seed_bootstrap(
        y, preds, preds[::-1], 3, seed=2
    )


# --- seed_spread -----------------------------------------------------------------------------------


def test_seed_spread_by_hand() -> None:
    assert seed_spread([0.8]) == (0.8, 0.0)
    mean, sd = seed_spread([0.7, 0.9])
    assert mean == pytest.approx(0.8)
    assert sd == pytest.approx(math.sqrt(0.02))  # (0.1**2 + 0.1**2) / (2 - 1)
    mean, sd = seed_spread(np.array([1.0, 2.0, 3.0, 4.0]))
    assert mean == 2.5
    assert sd == pytest.approx(math.sqrt(5 / 3))  # (2.25 + 0.25 + 0.25 + 2.25) / 3
    with pytest.raises(ValueError, match="at least one"):
        seed_spread([])


def test_mean_fields_keep_whole_counts_whole() -> None:
    from sizewise.seeds import _mean_fields

    records = [
        {"weights": [1.0, 0.5], "epochs": [4, 8], "train_seconds": [2.0, 3.0], "n": 3, "name": "a"},
        {"weights": [1.0, 1.5], "epochs": [5, 8], "train_seconds": [4.0, 5.0], "n": 4, "name": "b"},
        {"weights": [1.0, 1.0], "epochs": [7, 6], "train_seconds": [3.0, 4.0], "n": 4, "name": "c"},
    ]
    out = _mean_fields(records)
    assert out["epochs"] == [5, 7] and all(isinstance(e, int) for e in out["epochs"])  # 5.33 -> 5, 7.33 -> 7
    assert out["weights"] == [1.0, 1.0] and out["train_seconds"] == [3.0, 4.0]
    assert out["n"] == 4 and out["name"] == "a"  # mean 3.67 rounds to 4; text from the first record
