"""int8 quantization of a transformer through onnxruntime: export to ONNX, quantize dynamically, predict
with an onnxruntime session.

torch's dynamic int8 (``torch.ao``) quantizes the Linear layers only (MiniLM-L6: 0.65× the file,
1.3–1.5× the fp32 pairs/s on the 2-core benchmark machine, BENCHMARKS.md); onnxruntime's
``quantize_dynamic`` also stores the embedding tables in int8 (0.26× the file, 1.7–1.9× the pairs/s
there; 1.8–1.9× with ``fuse``, medians of invocations of ``benchmarks/int8_speed.py``) and runs its
own int8 kernels. The quantized network is kept as ONNX bytes inside an :class:`OnnxClassifier`, a
parameter-free ``nn.Module`` that stands in for the Hugging Face model, so the transformer learner
predicts through it unchanged. It is saved as ``model.int8.onnx`` (ONNX is protobuf: loading it runs
no code from the file).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from sizewise.compress.surgery import attention_blocks
from sizewise.errors import ConfigError
from sizewise.learners.network import NetworkLearner

ONNX_FILE = "model.int8.onnx"
# onnxruntime's session fusions whose CPU kernels are slower than what they replace (split_skip_layer_norms)
SLOW_FUSIONS = ["SkipLayerNormFusion"]
logger = logging.getLogger(__name__)


def onnxruntime_problem() -> str | None:
    """Why the onnxruntime backend cannot run here (a missing package), or None."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        return f"backend 'onnxruntime' needs {' and '.join(missing)} (pip install onnx onnxruntime)"
    return None


class OnnxClassifier(nn.Module):
    """An onnxruntime session in place of a sequence-classification model: ``model(**batch).logits``.

    ``counts`` holds the parameter counts of the network it was exported from (total, and the
    weights left non-zero by pruning): an ONNX graph has no parameters to count.
    """

    def __init__(self, onnx_bytes: bytes, input_names: list[str], config: Any, counts: dict[str, int]) -> None:
        super().__init__()
        self.onnx_bytes = onnx_bytes
        self.input_names = list(input_names)
        self.config = config
        self.counts = dict(counts)
        self._session: Any = None
        self._threads = 0
        self._dtypes: dict[str, Any] = {}

    def _session_for_now(self) -> Any:
        import onnxruntime as ort

        threads = torch.get_num_threads()  # the same thread budget as torch's kernels get
        if self._session is None or threads != self._threads:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                self.onnx_bytes,
                options,
                providers=["CPUExecutionProvider"],
                disabled_optimizers=SLOW_FUSIONS,
            )
            self._threads = threads
            # A graph fused by onnxruntime's transformer optimizer may take int32 ids.
            inputs = self._session.get_inputs()
            self._dtypes = {i.name: np.int32 if i.type == "tensor(int32)" else np.int64 for i in inputs}
        return self._session

    def forward(self, **inputs: torch.Tensor) -> SimpleNamespace:
        session = self._session_for_now()
        feed = {name: inputs[name].detach().cpu().numpy().astype(self._dtypes[name]) for name in self.input_names}
        (logits,) = session.run(["logits"], feed)
        return SimpleNamespace(logits=torch.from_numpy(logits))

    def __getstate__(self) -> dict[str, Any]:  # copy.deepcopy: the session is rebuilt on first use
        state = self.__dict__.copy()
        state["_session"] = None
        return state


def is_onnx(model: nn.Module) -> bool:
    """True for a network already turned into an onnxruntime int8 session."""
    return isinstance(model, OnnxClassifier)


def export_int8(learner: NetworkLearner, fuse: bool = False) -> dict[str, Any]:
    """Replace a (full) transformer learner's model by its onnxruntime int8 version; returns the record.

    ``fuse``: export with eager attention and let onnxruntime's transformer optimizer fuse every
    attention block (and GELUs) into single operators before quantizing, so attention
    runs as one int8 ``QAttention`` kernel. Encoders it cannot fuse are quantized unfused (the record
    lists what was fused). With the learner's ``first_token_last_layer`` on, the graph computes the
    last layer for the first token only, as the learner does in torch; that layer's attention is not
    the pattern the optimizer fuses, so it stays unfused. Its ``SkipLayerNormalization`` operators are
    split into additions and a ``LayerNormalization`` before quantizing (:func:`split_skip_layer_norms`;
    the record counts them).
    """
    problem = onnxruntime_problem()
    if problem:
        raise ConfigError("quantize_int8", [problem])
    if learner.kind != "transformer":
        raise ConfigError(
            "quantize_int8",
            [f"backend 'onnxruntime' is for transformer learners; use backend 'torch' for a {learner.kind}"],
        )
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = learner.network_.to("cpu").eval()
    params = [p.detach() for p in model.parameters()]
    counts = {
        "total": sum(p.numel() for p in params),
        "nonzero": sum(int(torch.count_nonzero(p)) for p in params),
    }
    tokenizer = learner.tokenizer_
    sample = tokenizer(
        ["A man plays a guitar on stage.", "Two dogs run."],
        ["Someone makes music.", "Animals sleep."],
        padding=True,
        return_tensors="pt",
    )
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
    axes = {k: {0: "batch", 1: "tokens"} for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "model.onnx", Path(tmp) / ONNX_FILE
        # The tracer warns about Python values in the traced code; they are constants here.
        with (
            torch.no_grad(),
            warnings.catch_warnings(),
            _attention(model, "eager" if fuse else None),
            learner.forward_context() as first_token,
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _LogitsOnly(model, names).eval(),  # export restores this mode on every submodule
                tuple(sample[k] for k in names),
                str(fp32),
                input_names=names,
                output_names=["logits"],
                dynamic_axes={**axes, "logits": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )
        fp32_bytes = fp32.stat().st_size
        logging.disable(logging.WARNING)  # onnxruntime logs a pre-processing hint on the root logger
        try:
            source, fused = fp32, None
            if fuse:
                source = Path(tmp) / "model.fused.onnx"
                fused = _fuse(fp32, source, _attention_shape(model))
            graph = onnx.load(str(source))
            norms = split_skip_layer_norms(graph)
            quantize_dynamic(
                graph,
                str(int8),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        finally:
            logging.disable(logging.NOTSET)
        data = int8.read_bytes()
    learner.network_ = OnnxClassifier(data, names, model.config, counts)
    learner.config = learner.config.model_copy(update={"device": "cpu", "precision": "fp32"})
    record = {
        "transform": "quantize_int8",
        "backend": "onnxruntime",
        "dtype": "qint8",
        "scheme": "per_channel_symmetric",
        "onnx_fp32_bytes": fp32_bytes,
        "onnx_int8_bytes": len(data),
        "first_token_last_layer": first_token,
        "skip_layer_norms_split": norms,
    }
    if fuse:
        record["fused"] = fused
    return record


def split_skip_layer_norms(model: Any) -> int:
    """Rewrite, in place, every ``SkipLayerNormalization`` of an ONNX ``model`` as the residual sum
    (``Add``, then ``Add`` of its bias) followed by a standard ``LayerNormalization``; returns how many
    were rewritten.

    onnxruntime's CPU kernel for ``SkipLayerNormalization`` (which its transformer optimizer puts after
    every attention block and feed-forward block) is much slower than the two additions and its
    ``LayerNormalization`` kernel: 5.8 against 2.3 ms on a [128, 34, 384] float tensor, 2 threads, on
    the benchmark machine (``benchmarks/layer_norm_speed.py``, BENCHMARKS.md). The arithmetic is the
    same float32 sum and normalization. A node whose mean, inverse-deviation or sum output is read
    elsewhere is left as it is, and so is every node of a model below opset 17 (it has no
    ``LayerNormalization``). Sessions built by :class:`OnnxClassifier` also switch off onnxruntime's
    ``SkipLayerNormFusion``, which would fuse an ``Add`` and a ``LayerNormalization`` back.
    """
    from onnx import helper

    graph = model.graph
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 17:
        return 0
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        skip_norm = node.op_type == "SkipLayerNormalization" and node.domain == "com.microsoft"
        if not skip_norm or any(name and name in read for name in node.output[1:]):
            nodes.append(node)
            continue
        prefix = f"sizewise_layer_norm_{count}/"
        count += 1
        x, skip, gamma, beta, bias = [*node.input, "", "", ""][:5]
        nodes.append(helper.make_node("Add", [x, skip], [prefix + "sum"], name=prefix + "sum"))
        total = prefix + "sum"
        if bias:
            nodes.append(helper.make_node("Add", [total, bias], [prefix + "biased"], name=prefix + "biased"))
            total = prefix + "biased"
        epsilon = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-12)
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                [total, gamma, beta] if beta else [total, gamma],
                [node.output[0]],
                name=prefix + "norm",
                axis=-1,
                epsilon=epsilon,
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _attention_shape(model: nn.Module) -> tuple[int, int]:
    """(heads, heads × head size) of the attention blocks as they are now (after any head pruning); (0, 0)
    when the model has no BERT-style blocks or they differ (the optimizer then detects what it can)."""
    shapes = {
        (b.self.query.out_features // b.self.attention_head_size, b.self.query.out_features)
        for b in attention_blocks(model)
    }
    return shapes.pop() if len(shapes) == 1 else (0, 0)


def _fuse(source: Path, target: Path, shape: tuple[int, int]) -> dict[str, int]:
    """Fuse ``source`` with onnxruntime's BERT optimizer into ``target``; returns the fused-operator counts.

    Only the optimizer's own graph rewriting runs (``opt_level=0``): the session applies onnxruntime's
    hardware-specific optimizations when it loads the model, as it does for the unfused graph.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    heads, hidden = shape
    optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not stats.get("Attention"):
        logger.warning("onnxruntime's optimizer fused no attention block in this model; quantizing it as exported")
    optimized.save_model_to_file(str(target))
    return stats


@contextlib.contextmanager
def _attention(model: nn.Module, implementation: str | None) -> Iterator[None]:
    """Run the block with ``model``'s attention switched to ``implementation`` (None: as it is)."""
    before = getattr(model.config, "_attn_implementation", None)
    switchable = before is not None and hasattr(model, "set_attn_implementation")
    if implementation is None or before == implementation or not switchable:
        yield
        return
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


class _LogitsOnly(nn.Module):
    """The model with positional inputs and the logits tensor as its only output (for export)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors))).logits
