"""Storing a compressed network so its size on disk is the size of the compression.

A state dict (name -> tensor) is written to one safetensors file, each tensor in the smallest of:

* **dense** — the tensor as it is;
* **bitmask** — the non-zero values plus one bit per element saying where they go (what a pruned
  tensor needs: at 50% sparsity an fp32 tensor takes 0.5 · 32 + 1 = 17 bits per element).

An int8 dynamically quantized weight is stored as its int8 values (dense or bitmask, as above)
plus its scales (per output channel or per tensor) and zero points where any is not zero, so an
int8 Linear weight takes about a quarter of its fp32 bytes. A JSON layout in the file's metadata
says how each tensor was stored; reading rebuilds the exact quantized tensors. No pickle.

Quantized modules (``torch.ao.nn.quantized.dynamic`` Linear and LSTM) keep their weights packed
and outside ``state_dict`` as tensors; :func:`float_twins` swaps them for float modules holding
the dequantized weights while a learner's own ``save`` runs, and :func:`install_quantized` puts
quantized modules with the exact stored weights back after loading.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from sizewise.errors import ModelError

_LAYOUT_KEY = "sizewise.layout"
_QUANT_DTYPES = {"qint8": torch.qint8, "quint8": torch.quint8}
#: A tensor smaller than this is always stored dense (the bitmask's extra entry would cost more).
_MIN_SPARSE_NUMEL = 64


@contextlib.contextmanager
def quiet_quantization() -> Iterator[None]:
    """Silence torch's deprecation notices for eager-mode quantization (``torch.ao``) for one call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions")
        yield


def _quantized_modules() -> tuple[type, type]:
    from torch.ao.nn.quantized import dynamic as nnqd

    return nnqd.Linear, nnqd.LSTM


def quantized_module_names(model: nn.Module) -> list[str]:
    """Names of the dynamically quantized Linear / LSTM modules inside ``model``."""
    kinds = _quantized_modules()
    return [name for name, mod in model.named_modules() if isinstance(mod, kinds)]


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    head, _, attr = name.rpartition(".")
    return (model.get_submodule(head) if head else model), attr


def lstm_like(mod: Any, hidden_size: int | None = None) -> nn.LSTM:
    """A float LSTM with the settings of ``mod`` (a float or quantized LSTM), optionally another hidden size."""
    return nn.LSTM(
        mod.input_size,
        hidden_size or mod.hidden_size,
        num_layers=mod.num_layers,
        bias=mod.bias,
        batch_first=mod.batch_first,
        dropout=float(mod.dropout),
        bidirectional=mod.bidirectional,
    )


@contextlib.contextmanager
def float_twins(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Swap every quantized module of ``model`` for a float one holding its dequantized weights.

    Yields ``{state-dict key of the float module: quantized weight}``; the quantized modules are
    put back on exit. Inside, ``model.state_dict()`` has the keys of the uncompressed network.
    """
    linear_q, lstm_q = _quantized_modules()
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    qweights: dict[str, torch.Tensor] = {}
    for name in quantized_module_names(model):
        mod = model.get_submodule(name)
        if isinstance(mod, linear_q):
            weights, biases = {"weight": mod.weight()}, {"bias": mod.bias()}
            twin: nn.Module = nn.Linear(mod.in_features, mod.out_features, bias=biases["bias"] is not None)
        else:
            assert isinstance(mod, lstm_q)
            parts = mod._weight_bias()
            weights, biases = parts["weight"], parts["bias"]
            twin = lstm_like(mod)
        with torch.no_grad():
            for key, value in [*weights.items(), *biases.items()]:
                if value is not None:
                    getattr(twin, key).copy_(value.dequantize() if value.is_quantized else value)
        qweights.update({f"{name}.{key}": value for key, value in weights.items()})
        parent, attr = _parent(model, name)
        swaps.append((parent, attr, mod))
        setattr(parent, attr, twin)
    try:
        yield qweights
    finally:
        for parent, attr, mod in swaps:
            setattr(parent, attr, mod)


@torch.no_grad()
def install_quantized(model: nn.Module, names: list[str], qweights: dict[str, torch.Tensor]) -> None:
    """Replace the float modules ``names`` of ``model`` by quantized ones holding ``qweights`` exactly."""
    linear_q, lstm_q = _quantized_modules()
    for name in names:
        mod = model.get_submodule(name)
        with quiet_quantization():
            if isinstance(mod, nn.Linear):
                twin: nn.Module = linear_q(mod.in_features, mod.out_features, bias_=mod.bias is not None)
                twin.set_weight_bias(qweights[f"{name}.weight"], None if mod.bias is None else mod.bias.detach())
            elif isinstance(mod, nn.LSTM):
                twin = lstm_q(
                    mod.input_size,
                    mod.hidden_size,
                    mod.num_layers,
                    mod.bias,
                    mod.batch_first,
                    float(mod.dropout),
                    mod.bidirectional,
                    torch.qint8,
                )
                # The float LSTM holds the biases; the weights come quantized from the file.
                twin.set_weight_bias(
                    {
                        key: qweights[f"{name}.{key}"] if key.startswith("weight") else getattr(mod, key).detach()
                        for key in mod._flat_weights_names
                    }
                )
            else:
                raise ModelError(f"module {name!r} is a {type(mod).__name__}; only Linear and LSTM store int8")
        parent, attr = _parent(model, name)
        setattr(parent, attr, twin)


# --- the file ------------------------------------------------------------------------------------


def _store(name: str, values: torch.Tensor, out: dict[str, torch.Tensor]) -> str:
    """Put ``values`` into ``out`` dense or as bitmask + non-zero values, whichever is smaller."""
    flat = values.reshape(-1)
    n = flat.numel()
    nonzero = flat != 0
    nnz = int(nonzero.sum())
    bits = flat.element_size() * 8
    if n >= _MIN_SPARSE_NUMEL and nnz * bits + n < n * bits:
        out[f"{name}::mask"] = torch.from_numpy(np.packbits(nonzero.numpy()))
        out[f"{name}::values"] = flat[nonzero].clone()
        return "bitmask"
    out[name] = values.contiguous()
    return "dense"


def write_state(path: str | Path, state: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Write ``state`` (quantized tensors included) to ``path``; returns the layout, one entry per tensor.

    A layout entry has ``shape``, ``encoding`` (dense / bitmask) and, for a quantized tensor,
    ``quant`` (``scheme``, ``axis``); the file's metadata holds the entries of the tensors not
    stored plainly (a plain tensor is its own safetensors entry). The entries returned also have
    ``bytes`` (what the tensor takes in the file) and ``fp32_bytes`` (what it would take as float32).
    """
    out: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    for name, tensor in state.items():
        tensor = tensor.detach().cpu()
        entry: dict[str, Any] = {"shape": list(tensor.shape)}
        if tensor.is_quantized:
            entry["encoding"] = _store(name, tensor.int_repr(), out)
            entry["quant"] = _store_qparams(name, tensor, out)
        else:
            entry["encoding"] = _store(name, tensor, out)
        layout[name] = entry
    encoded = {name: e for name, e in layout.items() if e["encoding"] != "dense" or "quant" in e}
    save_file(out, str(path), metadata={_LAYOUT_KEY: json.dumps(encoded, separators=(",", ":"))})
    return _with_sizes(layout, out)


def _with_sizes(layout: dict[str, dict[str, Any]], parts: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    owned: dict[str, int] = {}
    for key, tensor in parts.items():
        name = key.split("::", 1)[0]
        owned[name] = owned.get(name, 0) + tensor.numel() * tensor.element_size()
    return {
        name: {**entry, "bytes": owned[name], "fp32_bytes": int(np.prod(entry["shape"], dtype=np.int64)) * 4}
        for name, entry in layout.items()
    }


def _store_qparams(name: str, tensor: torch.Tensor, out: dict[str, torch.Tensor]) -> dict[str, Any]:
    if tensor.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scales = torch.tensor([tensor.q_scale()], dtype=torch.float64)
        zero_points = torch.tensor([tensor.q_zero_point()], dtype=torch.int64)
        quant: dict[str, Any] = {"scheme": "per_tensor"}
    elif tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales = tensor.q_per_channel_scales().to(torch.float64)
        zero_points = tensor.q_per_channel_zero_points().to(torch.int64)
        quant = {"scheme": "per_channel", "axis": int(tensor.q_per_channel_axis())}
    else:
        raise ModelError(f"{name}: quantization scheme {tensor.qscheme()} cannot be stored")
    # Observers compute scales in float32; keep float64 only where float32 would change them.
    narrow = scales.to(torch.float32)
    out[f"{name}::scale"] = narrow if torch.equal(narrow.to(torch.float64), scales) else scales
    if bool(zero_points.any()):
        out[f"{name}::zero_point"] = zero_points.to(torch.int32)
    return quant


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """The state written by :func:`write_state` (quantized tensors rebuilt exactly) and its layout."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            parts = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118 (safe_open is no dict)
    except (OSError, SafetensorError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        layout = json.loads(meta[_LAYOUT_KEY])
    except (KeyError, json.JSONDecodeError):
        raise ModelError(f"{path}: no sizewise layout in its metadata; was it written by sizewise?") from None
    for key, tensor in parts.items():
        if "::" not in key and key not in layout:
            layout[key] = {"shape": list(tensor.shape), "encoding": "dense"}
    state = {}
    for name, entry in layout.items():
        try:
            state[name] = _rebuild(name, entry, parts)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ModelError(f"{path}: tensor {name!r} cannot be rebuilt ({exc})") from None
    return state, _with_sizes(layout, parts)


def _rebuild(name: str, entry: dict[str, Any], parts: dict[str, torch.Tensor]) -> torch.Tensor:
    shape = tuple(entry["shape"])
    if entry["encoding"] == "bitmask":
        values = parts[f"{name}::values"]
        n = int(np.prod(shape, dtype=np.int64))
        mask = torch.from_numpy(np.unpackbits(parts[f"{name}::mask"].numpy(), count=n).astype(bool))
        dense = torch.zeros(n, dtype=values.dtype)
        dense[mask] = values
        values = dense.reshape(shape)
    else:
        values = parts[name].reshape(shape)
    quant = entry.get("quant")
    if quant is None:
        return values
    scales = parts[f"{name}::scale"].to(torch.float64)
    zero_points = parts.get(f"{name}::zero_point", torch.zeros(len(scales), dtype=torch.int64)).to(torch.int64)
    with quiet_quantization():
        if quant["scheme"] == "per_tensor":
            return torch._make_per_tensor_quantized_tensor(values, float(scales[0]), int(zero_points[0]))
        return torch._make_per_channel_quantized_tensor(values, scales, zero_points, int(quant["axis"]))


def dense_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every quantized tensor dequantized (what a float network loads)."""
    return {k: (v.dequantize() if v.is_quantized else v).contiguous() for k, v in state.items()}


def storage_summary(layout: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Bytes the stored tensors take, against what they would take as float32."""
    stored = sum(e["bytes"] for e in layout.values())
    fp32 = sum(e["fp32_bytes"] for e in layout.values())
    return {
        "tensor_bytes": stored,
        "fp32_tensor_bytes": fp32,
        "ratio_to_fp32": round(stored / fp32, 4) if fp32 else 1.0,
        "bitmask_tensors": sum(e["encoding"] == "bitmask" for e in layout.values()),
        "int8_tensors": sum("quant" in e for e in layout.values()),
    }


def float_parameters(model: nn.Module) -> int:
    """Parameters of the float (not quantized) part of ``model``."""
    return sum(p.numel() for p in model.parameters())
