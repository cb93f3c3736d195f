"""The structured pruning transforms: whole units cut out, so the matrices really shrink.

``prune_structured`` removes hidden units; which ones depends on the network it finds: the
``bilstm`` learner's :class:`~sizewise.learners.bilstm.BiLSTMNet` loses LSTM units (per layer and
direction) and MLP neurons, a BERT-style encoder loses feed-forward neurons in every layer.
``prune_heads`` removes a BERT-style encoder's attention heads. Both keep the units with the most
weight (squared norm of the weights into and out of them) and record the new sizes where loading
reads them (the learner's config, the model's ``config.json``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from sizewise.compress.storage import float_parameters, lstm_like
from sizewise.compress.surgery import PRUNED_HEADS_KEY, attention_blocks, feed_forward_blocks, keep_heads
from sizewise.compress.transforms import Step, register_transform
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.learners.bilstm import BiLSTMNet
from sizewise.learners.network import NetworkLearner


class StructuredPruneStep(Step):
    """Structured pruning: hidden units (BiLSTM) or feed-forward neurons (transformer) removed."""

    transform: Literal["prune_structured"] = Field(
        "prune_structured", description="The transform: hidden units or feed-forward neurons removed."
    )
    fraction: float = Field(..., ge=0.0, lt=1.0, description="Share of the units removed, in [0, 1).")


class HeadPruneStep(Step):
    """Structured pruning of a transformer's attention heads: the same number removed in every layer."""

    transform: Literal["prune_heads"] = Field("prune_heads", description="The transform: attention heads removed.")
    fraction: float = Field(..., ge=0.0, lt=1.0, description="Share of the heads removed, in [0, 1).")


def _kept(size: int, fraction: float) -> int:
    return max(1, int(round(size * (1 - fraction))))


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in ascending index order."""
    return score.topk(k).indices.sort().values


def _model_type(model: nn.Module) -> str | None:
    """The Hugging Face model type of ``model`` (None for a network that is not a Hugging Face model)."""
    return getattr(getattr(model, "config", None), "model_type", None)


@register_transform(
    "prune_structured", StructuredPruneStep, label=lambda step: f"prune units {100 * step.fraction:.0f}%"
)
def prune_units(learner: NetworkLearner, step: StructuredPruneStep, train: PairData | None = None) -> dict[str, Any]:
    """Remove the ``step.fraction`` of hidden units with the least weight from the network, as its
    shape allows: BiLSTM units and MLP neurons, or a BERT-style encoder's feed-forward neurons."""
    if isinstance(learner.network_, BiLSTMNet):
        return _shrink_bilstm(learner, step)
    return _shrink_feed_forward(learner, step)


@torch.no_grad()
def _shrink_bilstm(learner: NetworkLearner, step: StructuredPruneStep) -> dict[str, Any]:
    """Remove the hidden units with the least weight, per LSTM layer and direction, and the MLP's.

    A unit's score is the squared norm of every weight into it (its rows in the four gates of the
    input and recurrent matrices) and out of it (its recurrent column and its columns in the next
    layer, or in the first MLP layer's four feature blocks [u, v, |u−v|, u∗v]).
    """
    net = learner.network_
    lstm, first, last = net.encoder, net.classifier[0], net.classifier[3]
    size, layers, mlp = lstm.hidden_size, lstm.num_layers, first.out_features
    before = float_parameters(net)
    k = _kept(size, step.fraction)
    suffixes = ("", "_reverse")

    def weight(kind: str, layer: int, d: int) -> torch.Tensor:
        return getattr(lstm, f"{kind}_l{layer}{suffixes[d]}").detach()

    # first.weight columns: feature block b (of 4), direction d (of 2), unit j -> b * 2H + d * H + j
    mlp_in = first.weight.detach().view(mlp, 4, 2, size)
    kept: dict[tuple[int, int], torch.Tensor] = {}
    for layer in range(layers):
        for d in range(2):
            w_ih, w_hh = weight("weight_ih", layer, d), weight("weight_hh", layer, d)
            score = w_ih.view(4, size, -1).pow(2).sum((0, 2)) + w_hh.view(4, size, size).pow(2).sum((0, 2))
            score += w_hh.pow(2).sum(0)
            if layer + 1 < layers:
                for d2 in range(2):
                    score += weight("weight_ih", layer + 1, d2)[:, d * size : (d + 1) * size].pow(2).sum(0)
            else:
                score += mlp_in[:, :, d, :].pow(2).sum((0, 1))
            kept[layer, d] = _top(score, k)

    device = lstm.weight_ih_l0.device
    new_lstm = lstm_like(lstm, hidden_size=k).to(device)
    for layer in range(layers):
        inputs = None if layer == 0 else torch.cat([kept[layer - 1, 0], size + kept[layer - 1, 1]])
        for d in range(2):
            rows = torch.cat([gate * size + kept[layer, d] for gate in range(4)])
            w_ih = weight("weight_ih", layer, d)[rows]
            parts = {
                "weight_ih": w_ih if inputs is None else w_ih[:, inputs],
                "weight_hh": weight("weight_hh", layer, d)[rows][:, kept[layer, d]],
                "bias_ih": weight("bias_ih", layer, d)[rows],
                "bias_hh": weight("bias_hh", layer, d)[rows],
            }
            for kind, value in parts.items():
                getattr(new_lstm, f"{kind}_l{layer}{suffixes[d]}").copy_(value)

    last_layer = layers - 1
    features = torch.cat([b * 2 * size + d * size + kept[last_layer, d] for b in range(4) for d in range(2)])
    w1, b1 = first.weight.detach()[:, features], first.bias.detach()
    m = _kept(mlp, step.fraction)
    neurons = _top(w1.pow(2).sum(1) + b1.pow(2) + last.weight.detach().pow(2).sum(0), m)
    new_first, new_last = nn.Linear(len(features), m).to(device), nn.Linear(m, last.out_features).to(device)
    new_first.weight.copy_(w1[neurons])
    new_first.bias.copy_(b1[neurons])
    new_last.weight.copy_(last.weight.detach()[:, neurons])
    new_last.bias.copy_(last.bias.detach())
    net.encoder, net.classifier[0], net.classifier[3] = new_lstm, new_first, new_last
    learner.config = learner.config.model_copy(update={"hidden_size": k, "mlp_hidden": m})
    return {
        "transform": "prune_structured",
        "fraction": step.fraction,
        "sizes": {"hidden_size": [size, k], "mlp_hidden": [mlp, m]},
        "parameters": [before, float_parameters(net)],
    }


@torch.no_grad()
def _shrink_feed_forward(learner: NetworkLearner, step: StructuredPruneStep) -> dict[str, Any]:
    """Remove the same share of feed-forward neurons in every layer: those whose weights in and
    out (row of ``intermediate.dense``, column of ``output.dense``) have the smallest squared norm."""
    from transformers.pytorch_utils import prune_linear_layer

    model = learner.network_
    model_type = _model_type(model)
    blocks = feed_forward_blocks(model)
    if model_type is None:
        raise ConfigError(
            "prune_structured",
            [f"a {learner.kind}'s network has neither BiLSTM units nor BERT-style feed-forward blocks to shrink"],
        )
    if not blocks or not hasattr(model.config, "intermediate_size"):
        raise ConfigError(
            "prune_structured", [f"model type {model_type!r} has no BERT-style feed-forward blocks to shrink"]
        )
    before = float_parameters(model)
    size = blocks[0][0].dense.out_features
    k = _kept(size, step.fraction)
    for intermediate, output in blocks:
        up, down = intermediate.dense, output.dense
        score = up.weight.pow(2).sum(1) + down.weight.pow(2).sum(0)
        if up.bias is not None:
            score += up.bias.pow(2)
        keep = _top(score, k)
        intermediate.dense = prune_linear_layer(up, keep, dim=0)
        output.dense = prune_linear_layer(down, keep, dim=1)
    model.config.intermediate_size = k  # saved in config.json, so loading builds the smaller layers
    return {
        "transform": "prune_structured",
        "fraction": step.fraction,
        "sizes": {"intermediate_size": [size, k]},
        "layers": len(blocks),
        "parameters": [before, float_parameters(model)],
    }


@register_transform("prune_heads", HeadPruneStep, label=lambda step: f"prune heads {100 * step.fraction:.0f}%")
@torch.no_grad()
def prune_attention_heads(
    learner: NetworkLearner, step: HeadPruneStep, train: PairData | None = None
) -> dict[str, Any]:
    """Remove the same number of attention heads in every layer: per layer, those whose weights
    (their rows and biases in query, key and value, their columns in the attention output) have the
    smallest squared norm. The head size stays; ``config.json`` records the heads kept."""
    model = learner.network_
    model_type = _model_type(model)
    if model_type is None:
        raise ConfigError(
            "prune_heads",
            [f"removes attention heads of transformer learners; a {learner.kind} has none (try prune_structured)"],
        )
    blocks = attention_blocks(model)
    if not blocks:
        raise ConfigError("prune_heads", [f"model type {model_type!r} has no BERT-style attention heads to remove"])
    before = float_parameters(model)
    heads, size = blocks[0].self.num_attention_heads, blocks[0].self.attention_head_size
    k = _kept(heads, step.fraction)
    kept = []
    for block in blocks:
        inner, out = block.self, block.output.dense
        score = out.weight.reshape(out.out_features, heads, size).pow(2).sum((0, 2))
        for proj in (inner.query, inner.key, inner.value):
            score += proj.weight.reshape(heads, size, -1).pow(2).sum((1, 2))
            if proj.bias is not None:
                score += proj.bias.reshape(heads, size).pow(2).sum(1)
        kept.append(_top(score, k))
    keep_heads(model, kept)
    setattr(model.config, PRUNED_HEADS_KEY, k)  # saved in config.json, so loading builds the smaller layers
    return {
        "transform": "prune_heads",
        "fraction": step.fraction,
        "sizes": {"attention_heads": [heads, k]},
        "layers": len(blocks),
        "parameters": [before, float_parameters(model)],
    }
