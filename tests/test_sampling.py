"""Sampling: determinism, stratification and hand-checked sizes."""

from __future__ import annotations

import numpy as np
import pytest

from sizewise.data import NLI3, PairData
from sizewise.data.sampling import (
    bootstrap_indices,
    fraction_indices,
    k_shot_indices,
    sample_subset,
    stratified_quotas,
    subset_indices,
    weighted_resample_indices,
)
from sizewise.errors import DataError

# 6 entailment, 3 neutral, 1 contradiction
LABELS = np.array([0, 1, 0, 2, 0, 1, 0, 0, 1, 0])


def _data(labels: np.ndarray) -> PairData:
    n = len(labels)
    return PairData([f"p{i}" for i in range(n)], [f"h{i}" for i in range(n)], labels, NLI3, source="toy")


def test_stratified_quotas_hand_checked() -> None:
    # exact shares 3.0, 1.5, 0.5 -> floors 3, 1, 0; one left over, tie on .5 goes to the larger class
    assert stratified_quotas(np.array([6, 3, 1]), 5).tolist() == [3, 2, 0]
    # exact shares 4.2, 2.1, 0.7 -> floors 4, 2, 0; one left over goes to the largest remainder (0.7)
    assert stratified_quotas(np.array([6, 3, 1]), 7).tolist() == [4, 2, 1]
    assert stratified_quotas(np.array([6, 3, 1]), 10).tolist() == [6, 3, 1]
    assert stratified_quotas(np.array([6, 3, 1]), 0).tolist() == [0, 0, 0]


def test_subset_is_stratified_distinct_and_deterministic() -> None:
    idx = subset_indices(LABELS, 5, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 5
    assert np.bincount(LABELS[idx], minlength=3).tolist() == [3, 2, 0]
    assert subset_indices(LABELS, 5, seed=0).tolist() == idx.tolist()
    assert subset_indices(LABELS, 5, seed=np.random.default_rng(0)).tolist() == idx.tolist()
    others = {tuple(subset_indices(LABELS, 5, seed=s).tolist()) for s in range(1, 8)}
    assert len(others) > 1


def test_subset_unstratified_and_whole_set() -> None:
    idx = subset_indices(LABELS, 4, seed=3, stratify=False)
    assert len(set(idx.tolist())) == 4
    whole = subset_indices(LABELS, 50, seed=3)
    assert sorted(whole.tolist()) == list(range(10))
    assert subset_indices(LABELS, 50, seed=3).tolist() == whole.tolist()
    assert subset_indices(LABELS, 0, seed=3).tolist() == []
    with pytest.raises(ValueError):
        subset_indices(LABELS, -1, seed=3)


def test_stratified_on_larger_sample() -> None:
    labels = np.repeat([0, 1, 2], [500, 300, 200])
    idx = subset_indices(labels, 100, seed=42)
    assert np.bincount(labels[idx]).tolist() == [50, 30, 20]


def test_sample_subset_returns_pair_data() -> None:
    data = _data(LABELS)
    sub = sample_subset(data, 5, seed=1)
    assert len(sub) == 5
    assert sub.label_counts() == {"entailment": 3, "neutral": 2, "contradiction": 0}
    assert sub.meta["subset_of"] == "toy" and sub.meta["subset_seed"] == 1
    for p, h in zip(sub.premises, sub.hypotheses, strict=True):
        assert p[1:] == h[1:]  # rows stay whole
    assert sample_subset(data, 5, seed=1).premises == sub.premises
    assert len(sample_subset(data, 100, seed=1)) == 10


def test_bootstrap_indices() -> None:
    a = bootstrap_indices(1000, np.random.default_rng(7))
    assert len(a) == 1000 and a.min() >= 0 and a.max() < 1000
    assert a.tolist() == bootstrap_indices(1000, 7).tolist()
    # a bootstrap sample holds about 1 - 1/e = 63.2% distinct rows
    assert 0.60 < len(np.unique(a)) / 1000 < 0.67


def test_fraction_indices() -> None:
    idx = fraction_indices(10, 0.3, rng=0)
    assert len(idx) == 3 and len(set(idx.tolist())) == 3
    assert idx.tolist() == sorted(idx.tolist())
    assert fraction_indices(10, 0.01, rng=0).size == 1  # at least one row
    assert fraction_indices(10, 1.0, rng=0).tolist() == list(range(10))
    assert fraction_indices(10, 0.3, rng=0).tolist() == idx.tolist()
    with pytest.raises(ValueError):
        fraction_indices(10, 0.0, rng=0)
    with pytest.raises(ValueError):
        fraction_indices(10, 1.5, rng=0)


def test_k_shot_indices() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, -1, 0])
    idx = k_shot_indices(labels, 2, seed=5)
    assert len(idx) == 6
    assert np.bincount(labels[idx]).tolist() == [2, 2, 2]
    assert k_shot_indices(labels, 2, seed=5).tolist() == idx.tolist()
    assert 9 not in idx.tolist()  # unlabelled rows are never picked
    with pytest.raises(DataError, match="cannot take 4 examples per label: label 1 has 3, label 2 has 3"):
        k_shot_indices(labels, 4, seed=5)


def test_weighted_resample_indices() -> None:
    w = np.array([0.0, 1.0, 3.0, 0.0])
    idx = weighted_resample_indices(w, np.random.default_rng(0), size=4000)
    counts = np.bincount(idx, minlength=4)
    assert counts[0] == counts[3] == 0
    assert 0.70 < counts[2] / 4000 < 0.80  # expected 0.75
    assert len(weighted_resample_indices(w, 0)) == 4
    assert weighted_resample_indices(w, 0).tolist() == weighted_resample_indices(w, 0).tolist()
    for bad in ([0.0, 0.0], [1.0, -1.0], [np.nan, 1.0]):
        with pytest.raises(ValueError):
            weighted_resample_indices(np.array(bad), 0)
