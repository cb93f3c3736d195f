"""Self-training: a teacher labels unlabelled pairs, a student learns from them and the gold pairs.

:func:`teacher_passes` asks a fitted learner for what a method needs (its deterministic
probabilities; stochastic passes with dropout on, or an ensemble's members; the embeddings its last
layer reads), :func:`pseudo_label` turns them into labels (:mod:`sizewise.selftrain.editing`), and
:func:`student_data` joins the kept pseudo-labelled pairs to the gold ones (with the teacher's
probabilities, softened by :func:`soften`, as targets for soft distillation). The pool's gold labels,
where a set has them, never pass through here: they are compared with the pseudo-labels afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.selftrain.editing import Passes, PseudoLabels, confidence, plain, simple, vote

Method = Literal["plain", "confidence", "vote", "simple"]


class PseudoLabelSettings(BaseModel):
    """How a teacher's predictions become pseudo-labels."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "simple",
        description="plain: the teacher's labels; confidence: those above threshold; vote: majority of stochastic "
        "passes; simple: the vote after SimPLE's editing of uncertain passes.",
    )
    threshold: float = Field(0.9, gt=0.0, le=1.0, description="confidence: the least top probability kept.")
    passes: int = Field(7, ge=2, description="vote, simple: stochastic passes with dropout on (T).")
    k: int = Field(9, ge=1, description="simple: neighbours of each pass in the graph.")
    uncertain_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="simple: share of passes, by cut z-score, left out of the vote."
    )


def teacher_passes(teacher: Any, pool: PairData, settings: PseudoLabelSettings, seed: int) -> Passes:
    """What ``settings.method`` needs of the fitted ``teacher`` on ``pool``. ``vote`` with an ensemble
    uses its members as the passes; otherwise the passes are the learner's ``predict_passes``
    (dropout on), which every torch learner and ensemble of them has."""
    deterministic = teacher.predict_proba(pool)
    if settings.method in ("plain", "confidence"):
        return Passes(deterministic)
    if settings.method == "vote" and hasattr(teacher, "member_probas"):
        return Passes(deterministic, teacher.member_probas(pool))
    if not hasattr(teacher, "predict_passes"):
        raise ConfigError(
            "selftrain",
            [f"method {settings.method}: a {teacher.kind} teacher makes no stochastic passes; use plain or confidence"],
        )
    stochastic, embeddings = teacher.predict_passes(
        pool, settings.passes, seed=seed, embeddings=settings.method == "simple"
    )
    return Passes(deterministic, stochastic, embeddings)


def pseudo_label(passes: Passes, settings: PseudoLabelSettings) -> PseudoLabels:
    """The pseudo-labels of ``settings.method``."""
    if settings.method == "plain":
        return plain(passes)
    if settings.method == "confidence":
        return confidence(passes, settings.threshold)
    if settings.method == "vote":
        return vote(passes)
    return simple(passes, k=settings.k, uncertain_fraction=settings.uncertain_fraction)


@dataclass
class StudentData:
    """What a student fits on: the gold pairs followed by the kept pseudo-labelled ones, their loss
    weights (None: all 1) and, for soft distillation, target probabilities per pair (None: hard labels)."""

    train: PairData
    sample_weight: np.ndarray | None = None
    soft_labels: np.ndarray | None = None

    def fit_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the student's ``fit`` beyond train and dev."""
        out: dict[str, Any] = {}
        if self.sample_weight is not None:
            out["sample_weight"] = self.sample_weight
        if self.soft_labels is not None:
            out["soft_labels"] = self.soft_labels
        return out


def soften(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at ``temperature``: ``softmax(log p / T)`` (T > 1 flattens them, T < 1 sharpens)."""
    logp = np.log(np.clip(proba, 1e-12, None)) / temperature
    logp -= logp.max(1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(1, keepdims=True)


def student_data(
    train: PairData,
    pool: PairData,
    pseudo: PseudoLabels,
    weight: float = 1.0,
    soft: np.ndarray | None = None,
) -> StudentData:
    """The gold training pairs followed by the kept pool pairs with their pseudo-labels, the loss
    weights (None when every pair weighs 1) and, given ``soft`` (the teacher's probabilities on the
    pool), soft targets: one-hot for gold pairs, ``soft`` for the kept pool pairs."""
    kept = np.flatnonzero(pseudo.kept)
    joined = PairData(
        premises=[*train.premises, *(pool.premises[i] for i in kept)],
        hypotheses=[*train.hypotheses, *(pool.hypotheses[i] for i in kept)],
        labels=np.concatenate([train.labels, pseudo.labels[kept]]),
        scheme=train.scheme,
        source=f"{train.source} + {len(kept):,} pseudo-labelled pairs of {pool.source}",
    )
    weights = None if weight == 1.0 else np.concatenate([np.ones(len(train)), np.full(len(kept), weight)])
    targets = None
    if soft is not None:
        gold = np.eye(train.scheme.num_labels)[train.labels]
        targets = np.concatenate([gold, soft[kept]])
    return StudentData(joined, weights, targets)


def pseudo_label_accuracy(labels: np.ndarray, mask: np.ndarray, gold: np.ndarray) -> float | None:
    """Accuracy of ``labels[mask]`` against the hidden gold labels (pairs without gold left out); None
    when no such pair has gold."""
    scored = mask & (gold >= 0)
    if not scored.any():
        return None
    return float((labels[scored] == gold[scored]).mean())
