"""The last encoder layer run for the first token only: the one position a classifier reads.

The sequence-classification heads of BERT-style encoders (BERT, MiniLM, RoBERTa, XLM-R, CamemBERT,
ELECTRA) read a single position of the last layer's output: the first token (``[CLS]`` / ``<s>``).
The other positions of that layer feed nothing, yet a plain forward pass computes their queries,
attention rows, output projections and feed-forward blocks: about 5/6 of one layer's arithmetic (all
but the keys and values), a seventh of a 6-layer encoder's, in the forward pass and again in the
backward pass.

:func:`first_token_last_layer` swaps, for the duration of a ``with`` block, the last layer's forward
for one that computes the keys and values of every token (the first token attends to all of them)
and everything else for the first token alone. The logits are the same up to float rounding, and so
are the gradients: the positions it skips never reach the loss. Dropout draws differ (fewer values
are drawn), so a seeded training run is a different, equally likely run. The saved model is
untouched: the swap lives on the module instance and is undone on exit.

Encoders of other types run as they are: MPNet (every layer adds a relative position bias), DeBERTa
(disentangled relative attention), DistilBERT and ALBERT (other layer layouts; ALBERT's one layer is
shared by all depths, so it cannot be swapped for the last depth alone). So do other attention
implementations (flash attention), decoders, relative position embeddings and modules under
accelerate's hooks.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Model types whose classification head reads position 0 of the last layer, built of BERT layers. Not
# MPNet, DeBERTa, DistilBERT or ALBERT: they run whole (see the module's docstring).
FIRST_TOKEN_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})


def last_layer(model: nn.Module) -> nn.Module | None:
    """The last encoder layer of ``model`` when it may run for the first token only, else None."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in FIRST_TOKEN_TYPES:
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return None
    if getattr(config, "_attn_implementation", None) not in ("eager", "sdpa"):
        return None
    layers = [m for m in model.modules() if _is_bert_layer(m)]
    if not layers or hasattr(layers[-1], "_hf_hook"):  # accelerate's offloading hooks wrap forward
        return None
    return layers[-1]


def _is_bert_layer(module: nn.Module) -> bool:
    attention = getattr(module, "attention", None)
    inner = getattr(attention, "self", None)
    return (
        inner is not None
        and hasattr(inner, "attention_head_size")
        and all(isinstance(getattr(inner, n, None), nn.Module) for n in ("query", "key", "value", "dropout"))
        and isinstance(getattr(attention, "output", None), nn.Module)
        and isinstance(getattr(module, "intermediate", None), nn.Module)
        and isinstance(getattr(module, "output", None), nn.Module)
    )


@contextlib.contextmanager
def first_token_last_layer(model: nn.Module, enabled: bool = True) -> Iterator[bool]:
    """Within the block, ``model``'s last layer runs for the first token only; yields whether it does."""
    layer = last_layer(model) if enabled else None
    if layer is None:
        yield False
        return
    before = layer.__dict__.get("forward")  # an instance-level forward (a nested block) is restored too
    layer.forward = types.MethodType(_first_token_forward, layer)
    try:
        yield True
    finally:
        if before is None:
            del layer.forward
        else:
            layer.forward = before


def _first_token_forward(
    self: nn.Module, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """A BERT layer's forward with every position but the first left out of the output."""
    if attention_mask is not None and attention_mask.dim() != 4:  # not a mask this forward knows how to cut
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    inner = self.attention.self
    batch, tokens, _ = hidden_states.shape
    size = inner.attention_head_size
    first = hidden_states[:, :1]
    query = inner.query(first)
    if query.shape[-1] == 0:  # every head pruned: nothing to attend with
        return type(self).forward(self, hidden_states, attention_mask, *args, **kwargs)
    query = query.view(batch, 1, -1, size).transpose(1, 2)
    key = inner.key(hidden_states).view(batch, tokens, -1, size).transpose(1, 2)
    value = inner.value(hidden_states).view(batch, tokens, -1, size).transpose(1, 2)
    mask = None if attention_mask is None else attention_mask[..., :1, :]  # the first query's row
    context = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=inner.dropout.p if self.training else 0.0,
        scale=getattr(inner, "scaling", size**-0.5),
    )
    context = context.transpose(1, 2).reshape(batch, 1, -1)
    attended = self.attention.output(context, first)  # output projection, dropout, norm of (· + first)
    return self.output(self.intermediate(attended), attended)
