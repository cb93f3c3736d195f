"""Pseudo-label methods: the cut statistic and SimPLE's edited vote on hand-built graphs."""

from __future__ import annotations

import numpy as np
import pytest

from sizewise.selftrain.editing import (
    Passes,
    confidence,
    cut_zscores,
    knn_graph,
    majority_vote,
    plain,
    simple,
    vote,
)


def test_cut_zscores_by_hand() -> None:
    # Labels 0, 0, 0, 1: p(0) = 0.75, p(1) = 0.25.
    labels = np.array([0, 0, 0, 1])
    neighbours = np.array([[1, 3], [0, 2], [1, 0], [0, 1]])
    weights = np.array([[1.0, 0.5], [1.0, 1.0], [0.5, 0.5], [1.0, 1.0]])
    z = cut_zscores(labels, neighbours, weights, 2)
    # node 0: J = 0.5, mean = 0.25 * 1.5 = 0.375, sd = sqrt(0.75 * 0.25 * 1.25) = 0.484123
    # node 1: J = 0, mean = 0.25 * 2 = 0.5, sd = sqrt(0.1875 * 2) = 0.612372
    # node 2: J = 0, mean = 0.25 * 1 = 0.25, sd = sqrt(0.1875 * 0.5) = 0.306186
    # node 3 (label 1): J = 2, mean = 0.75 * 2 = 1.5, sd = sqrt(0.1875 * 2) = 0.612372
    assert z == pytest.approx([0.258199, -0.816497, -0.816497, 0.816497], abs=1e-6)


def test_cut_zscore_is_zero_when_every_node_agrees() -> None:
    z = cut_zscores(np.zeros(3, dtype=int), np.array([[1, 2], [0, 2], [0, 1]]), np.ones((3, 2)), 3)
    assert z.tolist() == [0.0, 0.0, 0.0]


def test_knn_graph_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4))
    idx, dist = knn_graph(x, 5, chunk=7)
    full = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.fill_diagonal(full, np.inf)
    expected = np.argsort(full, axis=1)[:, :5]
    assert (idx == expected).all()
    assert dist == pytest.approx(np.take_along_axis(full, expected, 1), abs=1e-4)
    with pytest.raises(ValueError, match="more than 5 nodes"):
        knn_graph(x[:5], 5)


def test_majority_vote_ties_and_empty_votes_fall_back() -> None:
    votes = np.array([[0, 1, 2, 1], [0, 2, 2, 1], [1, 1, 0, 1]])
    valid = np.ones_like(votes, dtype=bool)
    valid[:, 3] = False  # pair 3 has no vote left
    valid[2, 2] = False  # pair 2: votes 2, 2
    labels, decided = majority_vote(votes, valid, np.array([9, 9, 9, 9]), 3)
    assert labels.tolist() == [0, 1, 2, 9]
    assert decided.tolist() == [True, True, True, False]
    tie = majority_vote(np.array([[0], [1]]), np.ones((2, 1), dtype=bool), np.array([7]), 2)
    assert tie[0].tolist() == [7] and tie[1].tolist() == [False]


def _proba(labels: list[list[int]], k: int = 2, p: float = 0.9) -> np.ndarray:
    out = np.full((*np.shape(labels), k), (1 - p) / (k - 1))
    np.put_along_axis(out, np.asarray(labels)[..., None], p, axis=-1)
    return out


def test_plain_confidence_and_vote() -> None:
    det = np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8]])
    passes = Passes(det, _proba([[0, 1, 1], [0, 1, 1], [1, 0, 1]]))
    assert plain(passes).labels.tolist() == [0, 0, 1] and plain(passes).kept_fraction == 1.0
    conf = confidence(passes, 0.75)
    assert conf.kept.tolist() == [True, False, True] and conf.kept_fraction == pytest.approx(2 / 3)
    voted = vote(passes)
    assert voted.labels.tolist() == [0, 1, 1] and voted.by_vote is not None and voted.by_vote.all()


def test_simple_edits_votes_whose_neighbourhood_disagrees() -> None:
    # Two clusters of embeddings: label 0 near the origin, label 1 near (10, 10). Pair 1's first two
    # passes vote 1 from inside the label-0 cluster; its third pass votes 0. A plain vote says 1;
    # editing removes the two out-of-place votes and the remaining one decides 0.
    rng = np.random.default_rng(1)
    n, t = 6, 3
    votes = np.array([[0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 1, 0], [0, 0, 0, 1, 1, 0]])
    centre = {0: np.zeros(2), 1: np.full(2, 10.0)}
    truth = [0, 0, 0, 1, 1, 0]  # where each pair's embeddings lie
    emb = np.stack([[centre[truth[i]] + rng.normal(scale=0.3, size=2) for i in range(n)] for _ in range(t)])
    det = _proba([[0, 1, 0, 1, 1, 0]])[0]
    passes = Passes(det, _proba(votes.tolist()), emb)
    assert vote(passes).labels[1] == 1
    z = cut_zscores(votes.reshape(-1), *_graph(emb.reshape(t * n, -1), 4), 2)
    top2 = set(np.argsort(-z)[:2].tolist())
    assert top2 == {0 * n + 1, 1 * n + 1}  # the two out-of-place nodes are the least certain
    edited = simple(passes, k=4, uncertain_fraction=2 / 18)
    assert edited.labels.tolist() == [0, 0, 0, 1, 1, 0]
    assert edited.kept.all() and edited.info["uncertain_nodes"] == 2


def _graph(emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    idx, dist = knn_graph(emb, k)
    return idx, 1.0 / (1.0 + dist)


def test_simple_falls_back_to_the_deterministic_label_when_no_vote_is_left() -> None:
    votes = np.array([[0, 1], [0, 1]])
    emb = np.array([[[0.0], [1.0]], [[0.1], [1.1]]])
    passes = Passes(_proba([[0, 0]])[0], _proba(votes.tolist()), emb)
    edited = simple(passes, k=2, uncertain_fraction=1.0)
    assert edited.labels.tolist() == [0, 0] and edited.by_vote is not None and not edited.by_vote.any()
