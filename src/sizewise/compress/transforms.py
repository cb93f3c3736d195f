"""The compression transforms, as steps, and the surgery each does on a fitted learner's network.

Every function here changes the learner it is given (callers hand it a private copy) and returns
a JSON record of what it did and what it reached. Supported networks: the ``bilstm`` learner's
``BiLSTMNet`` and the ``transformer`` learner's Hugging Face model (full fine-tune; an adapter is
merged into the weights first, see :func:`merge_adapter`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune as torch_prune

from sizewise.compress.storage import lstm_like, quantized_module_names, quiet_quantization
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.learners.base import check_scheme, format_validation_error
from sizewise.learners.bilstm import length_bucketed_batches

#: The attribute holding the torch network, per learner kind that can be compressed.
MODEL_ATTRIBUTE = {"bilstm": "net_", "transformer": "model_"}


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PruneStep(_Step):
    """Unstructured magnitude pruning of the Linear and LSTM weight matrices (zeros, same shapes)."""

    transform: Literal["prune"] = "prune"
    sparsity: float = Field(..., ge=0.0, lt=1.0, description="Share of the weights set to zero, in [0, 1).")
    method: Literal["global_magnitude", "layer_magnitude"] = Field(
        "global_magnitude",
        description="global_magnitude: the smallest |w| across all pruned matrices; "
        "layer_magnitude: the same share in every matrix.",
    )


class StructuredPruneStep(_Step):
    """Structured pruning: hidden units (BiLSTM) or feed-forward neurons (transformer) removed."""

    transform: Literal["prune_structured"] = "prune_structured"
    fraction: float = Field(..., ge=0.0, lt=1.0, description="Share of the units removed, in [0, 1).")


class HeadPruneStep(_Step):
    """Structured pruning of a transformer's attention heads: the same number removed in every layer."""

    transform: Literal["prune_heads"] = "prune_heads"
    fraction: float = Field(..., ge=0.0, lt=1.0, description="Share of the heads removed, in [0, 1).")


class QuantizeStep(_Step):
    """Dynamic int8 quantization (per output channel, symmetric) of the Linear and LSTM weights."""

    transform: Literal["quantize_int8"] = "quantize_int8"
    backend: Literal["torch", "onnxruntime"] = Field(
        "torch",
        description="torch: torch.ao dynamic int8 of Linear / LSTM layers (any learner); onnxruntime: "
        "export to ONNX and quantize every weight incl. embeddings, predict with onnxruntime (transformers).",
    )
    fuse: bool = Field(
        False,
        description="onnxruntime only: before quantizing, fuse each attention block, layer norm and GELU into "
        "onnxruntime's single kernels (its transformer optimizer; BERT-style encoders), so attention runs as int8 "
        "QAttention.",
    )

    @model_validator(mode="after")
    def _fuse_needs_onnxruntime(self) -> QuantizeStep:
        if self.fuse and self.backend != "onnxruntime":
            raise ValueError("fuse: true needs backend 'onnxruntime'")
        return self


class RecoverStep(_Step):
    """Short fine-tuning after pruning on the training pairs; pruned weights stay zero."""

    transform: Literal["recover"] = "recover"
    epochs: int = Field(1, ge=1, description="Passes over the training pairs.")
    pairs: int | None = Field(
        None, ge=1, description="Fine-tune on a stratified random subset of this many training pairs (None: all)."
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Adam learning rate; None: the base learner's own (bilstm 1e-3, full fine-tune 5e-5)."
    )


AnyStep = PruneStep | StructuredPruneStep | HeadPruneStep | QuantizeStep | RecoverStep
Step = Annotated[AnyStep, Field(discriminator="transform")]
_STEP = TypeAdapter(Step)


def parse_step(spec: Any) -> AnyStep:
    """A step from ``{"transform": ..., **settings}`` (or a step); bad specs raise ConfigError."""
    if isinstance(spec, _Step):
        return spec  # type: ignore[return-value]
    known = ("prune", "prune_structured", "prune_heads", "quantize_int8", "recover")
    source = spec.get("transform") if isinstance(spec, dict) and spec.get("transform") in known else "compress"
    try:
        return _STEP.validate_python(spec)
    except ValidationError as exc:
        problems = [p.removeprefix(f"{source}.") for p in format_validation_error(exc)]
        raise ConfigError(str(source), problems) from None


def torch_model(learner: Any) -> nn.Module:
    """The network inside a fitted bilstm / transformer learner."""
    return getattr(learner, MODEL_ATTRIBUTE[learner.kind])


def float_parameters(model: nn.Module) -> int:
    """Parameters of the float (not quantized) part of ``model``."""
    return sum(p.numel() for p in model.parameters())


# --- adapters ------------------------------------------------------------------------------------


def merge_adapter(learner: Any) -> dict[str, Any] | None:
    """Fold a LoRA / IA3 adapter into the weights (peft ``merge_and_unload``): the learner becomes a
    full fine-tune, which every transform can work on. Returns the record, or None for no adapter."""
    if learner.kind != "transformer" or learner.config.mode == "full":
        return None
    from sizewise.learners.transformer import adapter_is_merged

    mode = learner.config.mode
    model = learner.model_
    # A model that has predicted already holds the adapter in its weights (the learner merges it
    # for prediction): only the adapter layers are taken out then.
    merged = model.unload() if adapter_is_merged(model) else model.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(True)  # a merged model is a full model: every weight can train
    learner.model_ = merged
    learner.config = learner.config.model_copy(update={"mode": "full", "target_modules": None})
    learner.target_modules_ = learner.modules_to_save_ = None
    return {"transform": "merge_adapter", "mode": mode}


def apply_step(learner: Any, step: AnyStep, train: PairData | None = None) -> dict[str, Any]:
    """Apply ``step`` to ``learner`` in place (``recover`` trains on ``train``); returns its record."""
    model = torch_model(learner)
    if quantized_module_names(model) or is_onnx(model):
        raise ConfigError(step.transform, [f"the model is already quantized; {step.transform} must come before it"])
    model.eval()
    if isinstance(step, PruneStep):
        return _prune(model, step)
    if isinstance(step, StructuredPruneStep):
        return _shrink_bilstm(learner, step) if learner.kind == "bilstm" else _shrink_feed_forward(learner, step)
    if isinstance(step, HeadPruneStep):
        return _shrink_attention_heads(learner, step)
    if isinstance(step, RecoverStep):
        return _recover(learner, model, step, train)
    if step.backend == "onnxruntime":
        from sizewise.compress.onnx import export_int8

        return export_int8(learner, fuse=step.fuse)
    return _quantize(learner, model)


def is_onnx(model: nn.Module) -> bool:
    """True for a network already turned into an onnxruntime int8 session."""
    from sizewise.compress.onnx import OnnxClassifier

    return isinstance(model, OnnxClassifier)


# --- unstructured pruning ------------------------------------------------------------------------


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The weight matrices pruning works on: every Linear weight, every LSTM input / recurrent weight."""
    out: list[tuple[nn.Module, str]] = []
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            out.append((mod, "weight"))
        elif isinstance(mod, nn.LSTM):
            out.extend((mod, name) for name in mod._flat_weights_names if name.startswith("weight"))
    return out


def _prune(model: nn.Module, step: PruneStep) -> dict[str, Any]:
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


# --- structured pruning --------------------------------------------------------------------------


def _kept(size: int, fraction: float) -> int:
    return max(1, int(round(size * (1 - fraction))))


def _top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in ascending index order."""
    return score.topk(k).indices.sort().values


@torch.no_grad()
def _shrink_bilstm(learner: Any, step: StructuredPruneStep) -> dict[str, Any]:
    """Remove the hidden units with the least weight, per LSTM layer and direction, and the MLP's.

    A unit's score is the squared norm of every weight into it (its rows in the four gates of the
    input and recurrent matrices) and out of it (its recurrent column and its columns in the next
    layer, or in the first MLP layer's four feature blocks [u, v, |u−v|, u∗v]).
    """
    net = learner.net_
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


def _feed_forward_blocks(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(intermediate, output) pairs of BERT-style layers: ``intermediate.dense`` feeds ``output.dense``."""
    blocks = []
    for mod in model.modules():
        up = getattr(getattr(mod, "intermediate", None), "dense", None)
        down = getattr(getattr(mod, "output", None), "dense", None)
        if isinstance(up, nn.Linear) and isinstance(down, nn.Linear) and down.in_features == up.out_features:
            blocks.append((mod.intermediate, mod.output))
    return blocks


@torch.no_grad()
def _shrink_feed_forward(learner: Any, step: StructuredPruneStep) -> dict[str, Any]:
    """Remove the same share of feed-forward neurons in every layer: those whose weights in and
    out (row of ``intermediate.dense``, column of ``output.dense``) have the smallest squared norm."""
    from transformers.pytorch_utils import prune_linear_layer

    model = learner.model_
    blocks = _feed_forward_blocks(model)
    if not blocks or not hasattr(model.config, "intermediate_size"):
        raise ConfigError(
            "prune_structured",
            [f"model type {model.config.model_type!r} has no BERT-style feed-forward blocks to shrink"],
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


@torch.no_grad()
def _shrink_attention_heads(learner: Any, step: HeadPruneStep) -> dict[str, Any]:
    """Remove the same number of attention heads in every layer: per layer, those whose weights
    (their rows and biases in query, key and value, their columns in the attention output) have the
    smallest squared norm. The head size stays; ``config.json`` records the heads kept."""
    if learner.kind != "transformer":
        raise ConfigError(
            "prune_heads",
            [f"removes attention heads of transformer learners; a {learner.kind} has none (try prune_structured)"],
        )
    from sizewise.learners.transformer import PRUNED_HEADS_KEY, attention_blocks, keep_heads

    model = learner.model_
    blocks = attention_blocks(model)
    if not blocks:
        raise ConfigError(
            "prune_heads", [f"model type {model.config.model_type!r} has no BERT-style attention heads to remove"]
        )
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


# --- recovery ------------------------------------------------------------------------------------


def _recover(learner: Any, model: nn.Module, step: RecoverStep, train: PairData | None) -> dict[str, Any]:
    """Fine-tune every float weight for ``step.epochs`` on ``train`` (Adam, the base learner's batch
    size and clipping); after each update the pruned weights are set back to zero."""
    if train is None or len(train) == 0 or not train.has_labels:
        raise ConfigError("recover", ["needs labelled training pairs (compress(..., train=pairs) or recover(...))"])
    check_scheme(learner.scheme_, train)
    cfg = learner.config
    if step.pairs is not None and step.pairs < len(train):
        from sizewise.data.sampling import sample_subset

        train = sample_subset(train, step.pairs, cfg.seed)
    device = next(model.parameters()).device
    enc, forward, default_lr = _training_view(learner, model, train, device)
    lr = step.learning_rate or default_lr
    masks = [(getattr(mod, name), getattr(mod, name).detach() != 0) for mod, name in prunable_weights(model)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    labels = torch.from_numpy(train.labels)
    losses = []
    model.train()
    for _ in range(step.epochs):
        loss_sum = 0.0
        for idx in length_bucketed_batches(enc.lengths, cfg.batch_size, rng):
            loss = F.cross_entropy(forward(idx).float(), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            with torch.no_grad():
                for weight, mask in masks:
                    weight.mul_(mask)
            loss_sum += loss.item() * len(idx)
        losses.append(round(loss_sum / len(train), 6))
    model.eval()
    return {
        "transform": "recover",
        "epochs": step.epochs,
        "learning_rate": lr,
        "pairs": len(train),
        "train_loss": losses,
    }


def _training_view(
    learner: Any, model: nn.Module, train: PairData, device: torch.device
) -> tuple[Any, Callable[[np.ndarray], torch.Tensor], float]:
    """The encoded pairs (``lengths``, ``batch``), a batch-indices -> logits function, and the learner's
    learning rate."""
    if learner.kind == "bilstm":
        from sizewise.learners import bilstm

        words = bilstm._Encoded(learner.vocab_, train, learner.config.max_length)

        def bilstm_logits(idx: np.ndarray) -> torch.Tensor:
            return model(*words.batch(idx, device))

        return words, bilstm_logits, learner.config.learning_rate
    from sizewise.learners import transformer

    tokens = transformer._Encoded(learner.tokenizer_, train, learner._max_length())

    def transformer_logits(idx: np.ndarray) -> torch.Tensor:
        return model(**tokens.batch(idx, device)).logits

    return tokens, transformer_logits, learner.config.lr


# --- quantization --------------------------------------------------------------------------------


def _quantize(learner: Any, model: nn.Module) -> dict[str, Any]:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model.to("cpu")  # quantized kernels run on the CPU only
    with quiet_quantization():
        quantize_dynamic(
            model, {nn.Linear: per_channel_dynamic_qconfig, nn.LSTM: per_channel_dynamic_qconfig}, inplace=True
        )
    update: dict[str, Any] = {"device": "cpu"}
    if "precision" in type(learner.config).model_fields:
        update["precision"] = "fp32"  # no autocast around int8 kernels
    learner.config = learner.config.model_copy(update=update)
    names = quantized_module_names(model)
    return {
        "transform": "quantize_int8",
        "dtype": "qint8",
        "scheme": "per_channel_symmetric",
        "modules": len(names),
        "float_parameters_left": float_parameters(model),
    }
