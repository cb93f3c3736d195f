"""The training loop every torch learner shares: the ``bilstm`` and ``transformer`` fits and
compression's ``recover`` step.

:func:`train_epochs` owns what an epoch does around the optimizer: the batches, the history record,
dev scoring, monitor probabilities, patience, the best epoch's weights, sample weights, the progress
bar and one log line per epoch with quality and cost (``loss 0.41 · acc 0.83 · 640 pairs/s``). What
one batch does (forward, loss, backward, optimizer) is the caller's ``step``: :func:`gradient_step`
for a plain update, or the learner's own (the transformer's mixed precision, gradient accumulation
and data-parallel synchronisation).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.learners.network import EncodedPairs, NetworkLearner
from sizewise.progress import progress_bar

logger = logging.getLogger(__name__)


def resolve_device(name: str, kind: str) -> torch.device:
    """The device of a ``device`` setting of learner ``kind``: ``auto`` picks a GPU if one is visible."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(kind, ["device: 'cuda' was asked for but no GPU is visible"])
    return torch.device(name)


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, order: str = "random"
) -> list[np.ndarray]:
    """Shuffle, sort by length within pools of 50 batches, cut into batches, then order the batches.

    Pairs of similar length share a batch, so little compute goes to padding, while every epoch
    still sees a different order. ``order="random"`` shuffles the batches of all pools together;
    ``order="longest_first"`` keeps the pools (random subsets) in turn and runs each pool's batches
    from the longest to the shortest, as transformers.Trainer's ``group_by_length`` runs its
    mega-batches (consecutive batches then have similar shapes).
    """
    if order not in ("random", "longest_first"):
        raise ValueError(f"order must be 'random' or 'longest_first', not {order!r}")
    perm = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(perm), pool):
        chunk = perm[start : start + pool]
        key = lengths[chunk] if order == "random" else -lengths[chunk]
        chunk = chunk[np.argsort(key, kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if order == "random":
        rng.shuffle(batches)
    return batches


def batches_per_epoch(n: int, batch_size: int) -> int:
    """How many batches :func:`length_bucketed_batches` cuts ``n`` pairs into (it cuts per pool)."""
    pool = batch_size * 50
    full, rest = divmod(n, pool)
    return full * 50 + math.ceil(rest / batch_size)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The batch's mean cross-entropy; with ``weights``, its weighted mean ``sum(w * loss) / sum(w)``.
    ``targets`` are class indices ``[batch]``, or probabilities ``[batch, num_labels]`` (soft labels: the
    loss of a pair is ``-sum(p * log softmax(logits))``)."""
    if weights is None:
        return F.cross_entropy(logits, targets)
    return (F.cross_entropy(logits, targets, reduction="none") * weights).sum() / weights.sum()


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in float32 when they came out of a half-precision pass; float32 and float64 unchanged."""
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


@dataclass(frozen=True)
class Batch:
    """One training batch: its pairs' network inputs, labels and loss weights (None: unweighted) on the
    training device, and its place in the epoch (``number`` from 1 to ``count``); ``soft`` holds target
    probabilities ``[batch, num_labels]`` when the learner trains on soft labels."""

    indices: np.ndarray
    inputs: Any
    labels: torch.Tensor
    weights: torch.Tensor | None
    number: int
    count: int
    soft: torch.Tensor | None = None

    @property
    def last(self) -> bool:
        """Whether this is the epoch's last batch."""
        return self.number == self.count

    @property
    def targets(self) -> torch.Tensor:
        """What the loss compares the logits with: the soft labels if any, else the class labels."""
        return self.soft if self.soft is not None else self.labels


#: What the caller does with one batch; returns the batch's loss (unscaled) and logits.
StepFunction = Callable[[Batch], tuple[torch.Tensor, torch.Tensor]]


def gradient_step(
    logits: Callable[[Any], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    max_grad_norm: float,
    after_step: Callable[[], None] | None = None,
) -> StepFunction:
    """A plain update per batch: the (weighted) cross-entropy of ``logits(batch.inputs)``, gradients
    clipped to ``max_grad_norm``, one optimizer step; then ``after_step()`` (compression's recover
    sets the pruned weights back to zero there)."""

    def step(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = at_least_float32(logits(batch.inputs))
        loss = cross_entropy(out, batch.targets, batch.weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step()
        return loss, out

    return step


@dataclass
class TrainingRun:
    """What :func:`train_epochs` learned besides the weights: one record per epoch, the monitor
    probabilities after each epoch, and the epoch whose weights the network ends with."""

    history: list[dict[str, float]]
    monitor_probas: list[np.ndarray]
    best_epoch: int


def train_epochs(
    learner: NetworkLearner,
    train: PairData,
    step: StepFunction,
    batches: Callable[[EncodedPairs], list[np.ndarray]],
    *,
    epochs: int,
    device: torch.device,
    dev: PairData | None = None,
    monitor: PairData | None = None,
    sample_weight: np.ndarray | None = None,
    soft_labels: np.ndarray | None = None,
    patience: int = 0,
    restore_best: bool = True,
    network: nn.Module | None = None,
    stop: Callable[[], bool] | None = None,
    epoch_fields: Callable[[], dict[str, float]] | None = None,
    name: str | None = None,
) -> TrainingRun:
    """Train ``learner``'s network on ``train`` for up to ``epochs``, returning the history.

    Each epoch runs ``step`` on every batch of ``batches(train encoded)`` and records the epoch's
    loss, accuracy and speed (plus ``epoch_fields()``); ``dev`` is then scored (accuracy) and
    ``monitor`` predicted (probabilities, for epoch curves, never for selection). Training stops after
    ``patience`` epochs without a better dev accuracy (0: never) or once ``stop()`` is true (checked
    after every batch); with ``restore_best`` the trained parameters end as they were after the best
    dev epoch. ``sample_weight`` weights each training pair's loss; ``soft_labels`` (``[len(train),
    num_labels]`` probabilities) replace the class labels as the loss's targets (accuracy is still
    counted against ``train.labels``); ``network`` is the module that
    trains (``learner.network_`` or a data-parallel wrapper of it); ``name`` labels the bar and log.
    """
    name = name or learner.kind
    network = network if network is not None else learner.network_
    encoded = learner.encode(train)
    enc_dev = learner.encode(dev) if dev is not None and len(dev) else None
    enc_monitor = learner.encode(monitor) if monitor is not None else None
    labels = torch.from_numpy(train.labels)
    weights = _loss_weights(sample_weight, len(train))
    soft = _soft_targets(soft_labels, len(train), train.scheme.num_labels)
    trained = [(n, p) for n, p in network.named_parameters() if p.requires_grad]
    history: list[dict[str, float]] = []
    monitor_probas: list[np.ndarray] = []
    best_dev, best_state, since_best, best_epoch = -1.0, None, 0, 0
    with progress_bar() as bar:
        for epoch in range(1, epochs + 1):
            order = batches(encoded)
            task = bar.add_task(f"{name} epoch {epoch}/{epochs}", total=len(order), info="")
            network.train()
            start, seen, loss_sum, correct, stopped = time.perf_counter(), 0, 0.0, 0, False
            for number, idx in enumerate(order, start=1):
                batch = Batch(
                    indices=idx,
                    inputs=encoded.batch(idx, device),
                    labels=labels[idx].to(device),
                    weights=None if weights is None else weights[idx].to(device),
                    number=number,
                    count=len(order),
                    soft=None if soft is None else soft[idx].to(device),
                )
                loss, logits = step(batch)
                seen += len(idx)
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == batch.labels).sum())
                stopped = stop is not None and stop()
                if number % 10 == 0 or batch.last or stopped:
                    rate = seen / max(time.perf_counter() - start, 1e-9)
                    info = f"loss {loss_sum / seen:.3f} · acc {correct / seen:.3f} · {rate:,.0f} pairs/s"
                    bar.update(task, completed=number, info=info)
                if stopped:
                    break
            bar.remove_task(task)
            seconds = time.perf_counter() - start
            record = {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "train_accuracy": correct / seen,
                "seconds": seconds,
                "pairs_per_s": seen / max(seconds, 1e-9),
                **(epoch_fields() if epoch_fields is not None else {}),
            }
            if enc_dev is not None:
                record["dev_accuracy"] = float((learner.predict_encoded(enc_dev).argmax(1) == enc_dev.labels).mean())
            if enc_monitor is not None:
                monitor_probas.append(learner.predict_encoded(enc_monitor))
            history.append(record)
            logger.info("%s", _epoch_line(name, epochs, record))
            if enc_dev is not None:
                if record["dev_accuracy"] > best_dev:
                    best_dev, since_best, best_epoch = record["dev_accuracy"], 0, epoch
                    if restore_best:
                        # Only trained weights change, so only they are kept (on the CPU, off the GPU's memory).
                        best_state = {n: p.detach().to("cpu", copy=True) for n, p in trained}
                else:
                    since_best += 1
                    if patience and since_best >= patience and epoch < epochs:
                        logger.info("early stop after epoch %d (best dev acc %.3f)", epoch, best_dev)
                        stopped = True
            if stopped or (stop is not None and stop()):
                break
    if best_state is not None and best_epoch != len(history):
        with torch.no_grad():
            for n, p in trained:
                p.copy_(best_state[n])
        logger.info("kept the weights of epoch %d (best dev acc %.3f)", best_epoch, best_dev)
    return TrainingRun(history, monitor_probas, best_epoch if best_state is not None else len(history))


def fine_tune(
    learner: NetworkLearner,
    train: PairData,
    *,
    epochs: int,
    learning_rate: float,
    dev: PairData | None = None,
    batch_size: int | None = None,
    patience: int = 0,
    restore_best: bool = True,
    after_step: Callable[[], None] | None = None,
    sample_weight: np.ndarray | None = None,
    soft_labels: np.ndarray | None = None,
    name: str = "fine-tune",
) -> TrainingRun:
    """Go on training a fitted learner's network on ``train`` (Adam at ``learning_rate``, the learner's
    own batch size unless given, its clipping and seed), early-stopping on ``dev`` if given; compression's
    recover step, transfer to a new task and a student that starts from its teacher all run here.
    ``after_step`` runs after every update; ``sample_weight`` and ``soft_labels`` as in :func:`train_epochs`."""
    learner.prepare_to_train()
    params = [p for p in learner.network_.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(name, [f"the {learner.kind} network has no trainable weights"])
    optimizer = torch.optim.Adam(params, lr=learning_rate)
    rng = np.random.default_rng(learner.seed)
    torch.manual_seed(learner.seed)
    size = batch_size or learner.batch_size
    return train_epochs(
        learner,
        train,
        gradient_step(learner.logits, optimizer, params, learner.max_grad_norm, after_step=after_step),
        lambda encoded: length_bucketed_batches(encoded.lengths, size, rng),
        epochs=epochs,
        device=learner.device,
        dev=dev,
        sample_weight=sample_weight,
        soft_labels=soft_labels,
        patience=patience,
        restore_best=restore_best,
        name=name,
    )


def _loss_weights(sample_weight: np.ndarray | None, n: int) -> torch.Tensor | None:
    if sample_weight is None:
        return None
    weights = torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
    if len(weights) != n:
        raise ValueError("sample_weight must have one weight per training pair")
    return weights


def _soft_targets(soft_labels: np.ndarray | None, n: int, k: int) -> torch.Tensor | None:
    if soft_labels is None:
        return None
    soft = torch.as_tensor(np.asarray(soft_labels, dtype=np.float32))
    if soft.shape != (n, k):
        raise ValueError(
            f"soft_labels must be [{n}, {k}] (one probability row per training pair), not {list(soft.shape)}"
        )
    return soft


def _epoch_line(name: str, epochs: int, record: dict[str, float]) -> str:
    dev = f" · dev acc {record['dev_accuracy']:.3f}" if "dev_accuracy" in record else ""
    return (
        f"{name} epoch {record['epoch']}/{epochs} · loss {record['train_loss']:.3f} · "
        f"acc {record['train_accuracy']:.3f}{dev} · {record['pairs_per_s']:,.0f} pairs/s · {record['seconds']:.1f} s"
    )
