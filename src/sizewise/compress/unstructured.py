"""The ``prune`` transform: unstructured magnitude pruning of the Linear and LSTM weight matrices.

The weights with the smallest |w| are set to zero (``torch.nn.utils.prune``, L1); the matrices keep
their shapes, and the stored file shrinks through its bitmask encoding (:mod:`.storage`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import nn
from torch.nn.utils import prune as torch_prune

from sizewise.compress.transforms import Step, register_transform
from sizewise.data.pairs import PairData
from sizewise.learners.network import NetworkLearner


class PruneStep(Step):
    """Unstructured magnitude pruning of the Linear and LSTM weight matrices (zeros, same shapes)."""

    transform: Literal["prune"] = Field("prune", description="The transform: unstructured magnitude pruning.")
    sparsity: float = Field(..., ge=0.0, lt=1.0, description="Share of the weights set to zero, in [0, 1).")
    method: Literal["global_magnitude", "layer_magnitude"] = Field(
        "global_magnitude",
        description="global_magnitude: the smallest |w| across all pruned matrices; "
        "layer_magnitude: the same share in every matrix.",
    )


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The weight matrices pruning works on: every Linear weight, every LSTM input / recurrent weight."""
    out: list[tuple[nn.Module, str]] = []
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            out.append((mod, "weight"))
        elif isinstance(mod, nn.LSTM):
            out.extend((mod, name) for name in mod._flat_weights_names if name.startswith("weight"))
    return out


@register_transform("prune", PruneStep, label=lambda step: f"prune {100 * step.sparsity:.0f}%")
def prune_weights(learner: NetworkLearner, step: PruneStep, train: PairData | None = None) -> dict[str, Any]:
    """Set the ``step.sparsity`` share of the prunable weights with the smallest |w| to zero, across all
    matrices together or the same share in each; the record's ``reached`` is the share of zeros."""
    model = learner.network_
    targets = prunable_weights(model)
    if step.sparsity > 0:
        if step.method == "global_magnitude":
            torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=step.sparsity)
        else:
            for mod, name in targets:
                torch_prune.l1_unstructured(mod, name, amount=step.sparsity)
        for mod, name in targets:
            torch_prune.remove(mod, name)  # the mask is folded into the weight: zeros stay zeros
        for mod in model.modules():
            if isinstance(mod, nn.LSTM):
                mod._init_flat_weights()  # the LSTM kernel reads its own list of weights
    total = sum(getattr(mod, name).numel() for mod, name in targets)
    zeros = sum(int((getattr(mod, name) == 0).sum()) for mod, name in targets)
    return {
        "transform": "prune",
        "method": step.method,
        "sparsity": step.sparsity,
        "reached": round(zeros / total, 6) if total else 0.0,
        "matrices": len(targets),
        "weights": total,
    }
