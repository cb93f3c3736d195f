"""The shared training loop (``sizewise.learners.training``) on a tiny network: a linear layer over
three keyword features, wrapped as a network learner."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import KEYWORDS, keyword_pairs
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.learners.network import NetworkLearner
from sizewise.learners.training import (
    Batch,
    TrainingRun,
    batches_per_epoch,
    cross_entropy,
    gradient_step,
    length_bucketed_batches,
    resolve_device,
    train_epochs,
)


class KeywordFeatures:
    """Which of the keywords yes / maybe / no each hypothesis holds."""

    def __init__(self, data: PairData) -> None:
        words = list(KEYWORDS.values())
        self.x = np.array([[float(w in h.split()) for w in words] for h in data.hypotheses], dtype=np.float32)
        self.labels = data.labels
        self.lengths = np.ones(len(data), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(self.x[idx]).to(device)


class KeywordLearner(NetworkLearner):
    """A linear layer over :class:`KeywordFeatures`; ``dev_accuracies`` (if given) replaces the dev
    scores with a script, and every dev scoring keeps a copy of the weights."""

    kind = "keyword"

    def __init__(self, dev_accuracies: list[float] | None = None) -> None:
        self.config = SimpleNamespace(eval_batch_size=8, batch_size=4, seed=0, learning_rate=0.5, max_grad_norm=5.0)
        self.dev_accuracies = list(dev_accuracies or [])
        self.snapshots: list[dict[str, torch.Tensor]] = []

    def encode(self, data: PairData) -> KeywordFeatures:
        return KeywordFeatures(data)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.network_(inputs)

    def predict_encoded(self, encoded: Any) -> np.ndarray:
        if len(encoded) != len(DEV) or not self.dev_accuracies:
            return super().predict_encoded(encoded)
        self.snapshots.append({n: p.detach().clone() for n, p in self.network_.named_parameters()})
        labels = encoded.labels
        wrong = int(round((1 - self.dev_accuracies.pop(0)) * len(labels)))
        picked = labels.copy()
        picked[:wrong] = (labels[:wrong] + 1) % 3
        return np.eye(3)[picked]


TRAIN, DEV, MONITOR = keyword_pairs(24, seed=0), keyword_pairs(8, seed=1), keyword_pairs(6, seed=2)


def _train(learner: KeywordLearner, epochs: int = 6, **kwargs: Any) -> TrainingRun:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    learner.scheme_ = TRAIN.scheme
    learner.network_ = nn.Linear(3, 3)
    params = list(learner.network_.parameters())
    optimizer = torch.optim.SGD(params, lr=learner.learning_rate)
    return train_epochs(
        learner,
        TRAIN,
        gradient_step(learner.logits, optimizer, params, learner.max_grad_norm),
        lambda encoded: length_bucketed_batches(encoded.lengths, learner.batch_size, rng),
        epochs=epochs,
        device=torch.device("cpu"),
        **kwargs,
    )


def test_every_epoch_is_recorded_and_the_keywords_are_learned() -> None:
    learner = KeywordLearner()
    run = _train(learner, epochs=8, monitor=MONITOR)
    assert [r["epoch"] for r in run.history] == list(range(1, 9))
    assert {"train_loss", "train_accuracy", "seconds", "pairs_per_s"} <= set(run.history[0])
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert run.best_epoch == 8  # no dev data: the last epoch is kept
    assert len(run.monitor_probas) == 8 and run.monitor_probas[0].shape == (6, 3)
    assert (learner.predict_proba(TRAIN).argmax(1) == TRAIN.labels).mean() == 1.0


def test_patience_stops_training_and_the_best_epoch_is_restored() -> None:
    learner = KeywordLearner(dev_accuracies=[0.25, 0.75, 0.5, 0.5, 1.0, 1.0])
    run = _train(learner, dev=DEV, patience=2)
    assert [r["dev_accuracy"] for r in run.history] == [0.25, 0.75, 0.5, 0.5]  # two epochs without gain: stop
    assert run.best_epoch == 2
    for name, p in learner.network_.named_parameters():
        torch.testing.assert_close(p.detach(), learner.snapshots[1][name], rtol=0, atol=0)


def test_without_restore_best_the_last_epoch_is_kept() -> None:
    learner = KeywordLearner(dev_accuracies=[0.25, 0.75, 0.5])
    run = _train(learner, epochs=3, dev=DEV, restore_best=False)
    assert len(run.history) == 3 and run.best_epoch == 3
    assert not torch.equal(learner.network_.weight.detach(), learner.snapshots[1]["weight"])
    torch.testing.assert_close(learner.network_.weight.detach(), learner.snapshots[2]["weight"], rtol=0, atol=0)


def test_patience_zero_never_stops_early() -> None:
    run = _train(KeywordLearner(dev_accuracies=[0.75, 0.5, 0.5, 0.5]), epochs=4, dev=DEV, patience=0)
    assert len(run.history) == 4 and run.best_epoch == 1


def test_stop_ends_training_after_the_batch_that_says_so() -> None:
    learner = KeywordLearner()
    learner.scheme_, learner.network_ = TRAIN.scheme, nn.Linear(3, 3)
    steps: list[int] = []

    def counting_step(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        steps.append(batch.number)
        logits = learner.logits(batch.inputs)
        return cross_entropy(logits, batch.labels), logits

    run = train_epochs(
        learner,
        TRAIN,
        counting_step,
        lambda encoded: length_bucketed_batches(encoded.lengths, 4, np.random.default_rng(0)),
        epochs=5,
        device=torch.device("cpu"),
        stop=lambda: len(steps) >= 3,
        epoch_fields=lambda: {"steps": len(steps)},
    )
    assert steps == [1, 2, 3]  # of the epoch's 6 batches
    assert len(run.history) == 1 and run.history[0]["steps"] == 3


def test_sample_weights_decide_what_is_learned() -> None:
    # All the weight on the entailment pairs: the others teach nothing, so everything is entailment.
    weights = (TRAIN.labels == 0).astype(float)
    learner = KeywordLearner()
    _train(learner, epochs=10, sample_weight=weights)
    assert set(learner.predict_proba(TRAIN).argmax(1)) == {0}
    with pytest.raises(ValueError, match="one weight per training pair"):
        _train(KeywordLearner(), sample_weight=np.ones(3))


def test_weighted_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = torch.tensor([0, 0])
    # Losses: ln 2 (p = 1/2) and ln 4/3 (p = 3/4).
    assert cross_entropy(logits, targets).item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)
    weighted = cross_entropy(logits, targets, torch.tensor([1.0, 3.0])).item()
    assert weighted == pytest.approx((math.log(2) + 3 * math.log(4 / 3)) / 4)


def test_gradient_step_runs_its_hook_after_each_update() -> None:
    learner = KeywordLearner()
    calls = []
    learner.scheme_, learner.network_ = TRAIN.scheme, nn.Linear(3, 3)
    params = list(learner.network_.parameters())

    def zero_first_row() -> None:
        calls.append(1)
        with torch.no_grad():
            learner.network_.weight[0].zero_()

    step = gradient_step(learner.logits, torch.optim.SGD(params, lr=1.0), params, 1.0, after_step=zero_first_row)
    encoded = learner.encode(TRAIN)
    idx = np.arange(4)
    batch = Batch(idx, encoded.batch(idx, torch.device("cpu")), torch.from_numpy(TRAIN.labels[idx]), None, 1, 1)
    loss, logits = step(batch)
    assert calls == [1] and logits.shape == (4, 3) and loss.ndim == 0
    assert torch.count_nonzero(learner.network_.weight[0]) == 0


@pytest.mark.parametrize("n", [1, 7, 64, 199, 200, 201, 1234])
def test_batches_per_epoch_counts_what_length_bucketing_cuts(n: int) -> None:
    lengths = np.random.default_rng(n).integers(1, 30, n)
    assert batches_per_epoch(n, 4) == len(length_bucketed_batches(lengths, 4, np.random.default_rng(0)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_is_a_config_error() -> None:
    assert resolve_device("auto", "bilstm") == torch.device("cpu")
    with pytest.raises(ConfigError, match="bilstm: device: 'cuda' was asked for but no GPU is visible"):
        resolve_device("cuda", "bilstm")
