"""Surgery on the layers of Hugging Face encoders (BERT, MiniLM, RoBERTa): finding the attention and
feed-forward blocks, keeping some attention heads, keeping the first layers.

Compression's structured transforms cut networks with these, and the ``transformer`` learner uses
them to rebuild a saved model that was cut (fewer layers or heads than its ``config.json`` class
would build). Only torch and transformers are needed here.
"""

from __future__ import annotations

import torch
from torch import nn

from sizewise.errors import ConfigError

#: config.json key holding the attention heads left per layer by head pruning; ``num_attention_heads``
#: keeps the original count, which sets the head size (``hidden_size // num_attention_heads``).
PRUNED_HEADS_KEY = "sizewise_attention_heads"


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """The BERT-style self-attention blocks of ``model`` (BERT, MiniLM, RoBERTa): each has
    ``self.query`` / ``key`` / ``value`` (heads of ``self.attention_head_size`` rows, side by side)
    and ``output.dense``, whose columns take those heads' outputs."""
    blocks = []
    for mod in model.modules():
        inner = getattr(mod, "self", None)
        out = getattr(getattr(mod, "output", None), "dense", None)
        if (
            isinstance(out, nn.Linear)
            and hasattr(inner, "attention_head_size")
            and all(isinstance(getattr(inner, n, None), nn.Linear) for n in ("query", "key", "value"))
        ):
            blocks.append(mod)
    return blocks


@torch.no_grad()
def keep_heads(model: nn.Module, kept: list[torch.Tensor]) -> None:
    """Keep the attention heads ``kept[i]`` (head indices, ascending) of block ``i`` of
    :func:`attention_blocks`, in place: the query / key / value rows and the output columns of the
    other heads are removed. The head size is unchanged; set ``config.sizewise_attention_heads``
    (:data:`PRUNED_HEADS_KEY`) so that a saved model reloads with the smaller layers."""
    from transformers.pytorch_utils import prune_linear_layer

    for block, heads in zip(attention_blocks(model), kept, strict=True):
        inner = block.self
        size = inner.attention_head_size
        rows = (heads.reshape(-1, 1) * size + torch.arange(size, device=heads.device)).reshape(-1)
        for name in ("query", "key", "value"):
            layer = getattr(inner, name)
            setattr(inner, name, prune_linear_layer(layer, rows, dim=0).to(layer.weight.dtype))
        out = block.output.dense
        block.output.dense = prune_linear_layer(out, rows, dim=1).to(out.weight.dtype)
        inner.num_attention_heads = len(heads)
        inner.all_head_size = len(heads) * size


def feed_forward_blocks(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(intermediate, output) pairs of BERT-style layers: ``intermediate.dense`` feeds ``output.dense``."""
    blocks = []
    for mod in model.modules():
        up = getattr(getattr(mod, "intermediate", None), "dense", None)
        down = getattr(getattr(mod, "output", None), "dense", None)
        if isinstance(up, nn.Linear) and isinstance(down, nn.Linear) and down.in_features == up.out_features:
            blocks.append((mod.intermediate, mod.output))
    return blocks


def keep_layers(model: nn.Module, n: int) -> None:
    """Cut a sequence-classification model to its first ``n`` encoder layers, in place; the config's
    ``num_hidden_layers`` follows, so a saved full model reloads with ``n`` layers."""
    base = getattr(model, "base_model", model)
    holder = getattr(base, "encoder", None) or getattr(base, "transformer", None)
    layers = getattr(holder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            "transformer", [f"num_layers: cannot find the encoder layers of a {model.config.model_type!r} model"]
        )
    if n > len(layers):
        raise ConfigError("transformer", [f"num_layers: {n} asked for, but the model has {len(layers)} layers"])
    holder.layer = nn.ModuleList(list(layers)[:n])
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, n)
