"""The ``recover`` transform: a short fine-tuning after pruning, on the training pairs, in the shared
training loop; the weights pruning set to zero stay zero."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from sizewise.compress.transforms import Step, register_transform
from sizewise.compress.unstructured import prunable_weights
from sizewise.data.pairs import PairData
from sizewise.data.sampling import sample_subset
from sizewise.errors import ConfigError
from sizewise.learners.base import check_scheme
from sizewise.learners.network import NetworkLearner
from sizewise.learners.training import gradient_step, length_bucketed_batches, train_epochs


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

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(learner.seed)
    torch.manual_seed(learner.seed)
    run = train_epochs(
        learner,
        train,
        gradient_step(learner.logits, optimizer, params, learner.max_grad_norm, after_step=zero_pruned),
        lambda encoded: length_bucketed_batches(encoded.lengths, learner.batch_size, rng),
        epochs=step.epochs,
        device=learner.device,
        restore_best=False,
        name="recover",
    )
    model.eval()
    return {
        "transform": "recover",
        "epochs": step.epochs,
        "learning_rate": lr,
        "pairs": len(train),
        "train_loss": [round(record["train_loss"], 6) for record in run.history],
    }
