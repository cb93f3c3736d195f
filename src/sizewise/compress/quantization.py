"""The ``quantize_int8`` transform: dynamic int8 quantization, the last step of any recipe.

``backend: torch`` quantizes every Linear and LSTM with ``torch.ao`` (per output channel, symmetric;
activations are quantized on the fly at predict time, on the CPU); ``backend: onnxruntime`` exports a
transformer to ONNX and quantizes every weight, embeddings included (:mod:`.onnx`). A quantized
weight trains no further and is not pruned again, so no transform may follow this one.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from torch import nn

from sizewise.compress.onnx import export_int8
from sizewise.compress.storage import float_parameters, quantized_module_names, quiet_quantization
from sizewise.compress.transforms import Step, register_transform
from sizewise.data.pairs import PairData
from sizewise.learners.network import NetworkLearner


class QuantizeStep(Step):
    """Dynamic int8 quantization (per output channel, symmetric) of the Linear and LSTM weights."""

    transform: Literal["quantize_int8"] = Field(
        "quantize_int8", description="The transform: dynamic int8 quantization (the last step)."
    )
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


@register_transform("quantize_int8", QuantizeStep, label=lambda step: "int8", final="quantized")
def quantize_int8(learner: NetworkLearner, step: QuantizeStep, train: PairData | None = None) -> dict[str, Any]:
    """Quantize the learner's network to int8 with ``step.backend``; the learner then runs on the CPU."""
    if step.backend == "onnxruntime":
        return export_int8(learner, fuse=step.fuse)
    return _quantize_torch(learner)


def _quantize_torch(learner: NetworkLearner) -> dict[str, Any]:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    model = learner.network_
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
