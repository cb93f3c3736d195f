"""The ``recover`` transform: a short fine-tuning after pruning, on the training pairs, in the shared
training loop; the weights pruning set to zero stay zero."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from sizewise.compress.transforms import Step, register_transform
from sizewise.compress.unstructured import prunable_weights
from sizewise.data.pairs import PairData
from sizewise.data.sampling import sample_subset
from sizewise.errors import ConfigError
from sizewise.learners.base import check_scheme
from sizewise.learners.network import NetworkLearner
from sizewise.learners.training import fine_tune


class RecoverStep(Step):
    """Short fine-tuning after pruning on the training pairs; pruned weights stay zero."""

    transform: Literal["recover"] = Field("recover", description="The transform: fine-tuning after pruning.")
    epochs: int = Field(1, ge=1, description="Passes over the training pairs.")
    pairs: int | None = Field(
        None, ge=1, description="Fine-tune on a stratified random subset of this many training pairs (None: all)."
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Adam learning rate; None: the base learner's own (bilstm 1e-3, full fine-tune 5e-5)."
    )


@register_transform("recover", RecoverStep, label=lambda step: f"recover {step.epochs} ep")
def recover_weights(learner: NetworkLearner, step: RecoverStep, train: PairData | None) -> dict[str, Any]:
    """Fine-tune every float weight for ``step.epochs`` on ``train`` (Adam, the base learner's batch
    size, clipping and seed) in the shared training loop; after each update the pruned weights are
    set back to zero. The network runs as in :meth:`~NetworkLearner.logits`, outside the learner's
    ``forward_context``."""
    if train is None or len(train) == 0 or not train.has_labels:
        raise ConfigError("recover", ["needs labelled training pairs (compress(..., train=pairs) or recover(...))"])
    check_scheme(learner.scheme_, train)
    if step.pairs is not None and step.pairs < len(train):
        train = sample_subset(train, step.pairs, learner.seed)
    model = learner.network_
    lr = step.learning_rate or learner.learning_rate
    masks = [(getattr(mod, name), getattr(mod, name).detach() != 0) for mod, name in prunable_weights(model)]

    @torch.no_grad()
    def zero_pruned() -> None:
        for weight, mask in masks:
            weight.mul_(mask)

    run = fine_tune(
        learner, train, epochs=step.epochs, learning_rate=lr, restore_best=False, after_step=zero_pruned, name="recover"
    )
    model.eval()
    return {
        "transform": "recover",
        "epochs": step.epochs,
        "learning_rate": lr,
        "pairs": len(train),
        "train_loss": [round(record["train_loss"], 6) for record in run.history],
    }
