"""Pseudo-labels from a teacher's predictions on unlabelled pairs: plain, confidence, vote and SimPLE.

Every method takes the teacher's :class:`Passes` on the pool and returns a :class:`PseudoLabels`:
one label per pair and which pairs are kept for the student.

* ``plain`` — the teacher's deterministic label (dropout off) for every pair.
* ``confidence`` — the deterministic label where its probability reaches ``threshold``; the rest is
  left out.
* ``vote`` — the majority label of T stochastic passes (dropout on; an ensemble's members), the
  deterministic label on a tie.
* ``simple`` — the vote after pseudo-label editing (SimPLE; Ge, Luo, Kim and Glass, 2023, "Entailment
  as Robust Self-Learner"): each pass of each pair is a node with a label and an embedding (the
  input of the network's last layer); every node is linked to its k nearest nodes (Euclidean distance,
  weight 1 / (1 + distance)); a node's cut statistic is the z-score of the weight of its neighbours
  that disagree with it, against the null hypothesis that a neighbour's label is drawn from the
  label frequencies of all nodes (:func:`cut_zscores`); the ``uncertain_fraction`` of nodes with
  the highest z-scores leave the vote, and the vote of the rest decides each pair, the deterministic
  label deciding a tie or a pair with no vote left.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Passes:
    """A teacher's predictions on N pool pairs: the deterministic probabilities ``[N, K]``, and T
    stochastic passes ``[T, N, K]`` with, where asked for, each pass's embeddings ``[T, N, D]``."""

    deterministic: np.ndarray
    stochastic: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    @property
    def labels(self) -> np.ndarray:
        """The deterministic labels ``[N]``."""
        return self.deterministic.argmax(1)


@dataclass
class PseudoLabels:
    """Labels of the N pool pairs, the mask of those the student trains on, and what decided them
    (``by_vote``: pairs whose label a vote decided rather than the deterministic fallback)."""

    labels: np.ndarray
    kept: np.ndarray
    by_vote: np.ndarray | None = None
    info: dict[str, float] = field(default_factory=dict)

    @property
    def kept_fraction(self) -> float:
        """The share of the pool the student trains on."""
        return float(self.kept.mean()) if len(self.kept) else 0.0


def plain(passes: Passes) -> PseudoLabels:
    """The deterministic label of every pair, all kept."""
    labels = passes.labels
    return PseudoLabels(labels, np.ones(len(labels), dtype=bool))


def confidence(passes: Passes, threshold: float) -> PseudoLabels:
    """The deterministic labels whose probability is at least ``threshold``."""
    top = passes.deterministic.max(1)
    return PseudoLabels(passes.labels, top >= threshold)


def majority_vote(
    votes: np.ndarray, valid: np.ndarray, fallback: np.ndarray, num_labels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair, the most frequent label among its valid votes (``votes`` and ``valid`` are ``[T, N]``);
    ``fallback`` where the top count is shared or no vote is valid. Returns the labels and the mask of
    pairs a vote decided."""
    counts = np.zeros((votes.shape[1], num_labels), dtype=np.int64)
    for t in range(votes.shape[0]):
        np.add.at(counts, (np.arange(votes.shape[1])[valid[t]], votes[t][valid[t]]), 1)
    top = counts.max(1)
    decided = (top > 0) & ((counts == top[:, None]).sum(1) == 1)
    return np.where(decided, counts.argmax(1), fallback), decided


def vote(passes: Passes) -> PseudoLabels:
    """The majority of the stochastic passes' labels, the deterministic label on a tie; all kept."""
    if passes.stochastic is None:
        raise ValueError("the vote needs stochastic passes")
    votes = passes.stochastic.argmax(2)
    labels, decided = majority_vote(
        votes, np.ones_like(votes, dtype=bool), passes.labels, passes.deterministic.shape[1]
    )
    return PseudoLabels(labels, np.ones(len(labels), dtype=bool), decided)


def knn_graph(embeddings: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other nodes of every node (rows of ``embeddings``, Euclidean distance): their
    indices and distances ``[M, k]``, nearest first. Computed a chunk of rows at a time, so memory
    grows with ``chunk * M``, not ``M * M``."""
    m = len(embeddings)
    if m <= k:
        raise ValueError(f"a {k}-nearest-neighbour graph needs more than {k} nodes, not {m}")
    x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    sq = (x * x).sum(1)
    indices = np.empty((m, k), dtype=np.int64)
    distances = np.empty((m, k), dtype=np.float64)
    for start in range(0, m, chunk):
        rows = slice(start, min(start + chunk, m))
        d2 = (sq[rows, None] + sq[None, :] - 2.0 * (x[rows] @ x.T)).clamp_min_(0.0)
        d2[torch.arange(d2.shape[0]), torch.arange(rows.start, rows.stop)] = float("inf")  # not its own neighbour
        near, idx = torch.topk(d2, k, dim=1, largest=False)
        indices[rows] = idx.numpy()
        distances[rows] = near.sqrt().double().numpy()
    return indices, distances


def cut_zscores(labels: np.ndarray, neighbours: np.ndarray, weights: np.ndarray, num_labels: int) -> np.ndarray:
    """The cut statistic of every node: with ``J`` the summed weight of its neighbours whose label
    differs from its own, and ``p`` the frequency of its own label over all nodes, the z-score
    ``(J - (1 - p) Σw) / sqrt(p (1 - p) Σw²)`` (each neighbour disagrees with probability 1 - p under
    the null). Large values: a node whose neighbourhood disagrees more than chance would. A node whose
    label every node carries has z = 0."""
    labels = np.asarray(labels)
    freq = np.bincount(labels, minlength=num_labels) / len(labels)
    p = freq[labels]
    disagree = labels[neighbours] != labels[:, None]
    j = (weights * disagree).sum(1)
    mean = (1.0 - p) * weights.sum(1)
    sd = np.sqrt(p * (1.0 - p) * (weights**2).sum(1))
    z = np.zeros(len(labels), dtype=np.float64)
    ok = sd > 0
    z[ok] = (j[ok] - mean[ok]) / sd[ok]
    return z


def simple(passes: Passes, k: int = 9, uncertain_fraction: float = 0.2) -> PseudoLabels:
    """SimPLE's edited vote (see the module text): all pairs kept, ``by_vote`` marks those a vote of
    certain nodes decided."""
    if passes.stochastic is None or passes.embeddings is None:
        raise ValueError("SimPLE needs stochastic passes with embeddings")
    t, n, num_labels = passes.stochastic.shape
    votes = passes.stochastic.argmax(2)  # [T, N]
    node_labels = votes.reshape(-1)
    emb = passes.embeddings.reshape(t * n, -1)
    neighbours, distances = knn_graph(emb, min(k, t * n - 1))
    z = cut_zscores(node_labels, neighbours, 1.0 / (1.0 + distances), num_labels)
    n_uncertain = int(round(uncertain_fraction * len(z)))
    certain = np.ones(len(z), dtype=bool)
    if n_uncertain:
        certain[np.argsort(-z, kind="stable")[:n_uncertain]] = False
    labels, decided = majority_vote(votes, certain.reshape(t, n), passes.labels, num_labels)
    info = {"uncertain_nodes": float(n_uncertain), "decided_by_vote": float(decided.mean())}
    return PseudoLabels(labels, np.ones(n, dtype=bool), decided, info)
