"""Three ways to run a transformer's residual sum + layer norm in onnxruntime, and their share of an int8 model.

    python benchmarks/layer_norm_speed.py [MODEL_DIR] [--shape 128 34 384] [--calls 50] [--rounds 5]
                                          [--pairs 512]

The ways: ``kernel`` — onnxruntime's ``SkipLayerNormalization`` (input + skip + bias, then the norm),
which its transformer optimizer writes after every attention and feed-forward block; ``split`` — the
same after ``sizewise.compress.onnx.split_skip_layer_norms`` (two ``Add`` and a standard
``LayerNormalization``), what sizewise's int8 exports run; ``primitive`` — the norm spelled out in
primitive operators (``ReduceMean``, ``Sub``, ``Mul``, ``ReduceMean``, ``Add``, ``Sqrt``, ``Div``,
``Mul``, ``Add``), the rewrite sizewise used before (``primitive_layer_norms`` below).

1. A one-operator graph on a float32 tensor of ``--shape`` (batch, tokens, hidden), each way run
   ``--calls`` times per round, the ways taking turns for ``--rounds`` rounds; milliseconds per call,
   medians over rounds, and the largest output difference to the kernel.
2. With MODEL_DIR (a saved, fully fine-tuned transformer learner; default: the MiniLM-L6 arm of
   benchmarks/transformers-snli-nli3.yaml), its ``{quantize_int8, backend: onnxruntime, fuse: true}``
   export built each way, profiled by onnxruntime on the first ``--pairs`` SNLI test pairs (sorted by
   length, in batches of the learner's eval batch size, as the learner predicts), the ways taking turns
   for ``--rounds`` rounds: operator time per pass over the pairs, the time of the layer-norm operators
   (the norms and the elementwise operators they are made of, residual additions included) and the
   operator types with the largest shares.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from int8_speed import WAYS, kernel_layer_norms
from onnx import TensorProto, helper, numpy_helper

from sizewise.compress.onnx import SLOW_FUSIONS, split_skip_layer_norms

WAYS_OF_NORMS = ("kernel", "split", "primitive")
NORM_OPS = {"SkipLayerNormalization", "LayerNormalization", "Add", "Sub", "Mul", "Div", "Sqrt", "ReduceMean"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=Path("runs/transformers-snli-nli3/minilm-full/model"))
    parser.add_argument("--shape", nargs=3, type=int, default=[128, 34, 384])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=512)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"{threads} threads, onnxruntime {ort.__version__}")
    kernel(args.shape, args.calls, args.rounds, threads)
    if args.model.exists():
        profile(args.model, args.pairs, args.rounds, threads)


def _session(model: Any, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"], disabled_optimizers=SLOW_FUSIONS)


def kernel(shape: list[int], calls: int, rounds: int, threads: int) -> None:
    rng = np.random.default_rng(0)
    hidden = shape[-1]
    weights = {name: rng.normal(size=hidden).astype(np.float32) for name in ("gamma", "beta", "bias")}
    node = helper.make_node(
        "SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y"], domain="com.microsoft", epsilon=1e-12
    )
    graph = helper.make_graph(
        [node],
        "skip_layer_norm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "skip")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    models = {way: helper.make_model(graph, opset_imports=opsets) for way in WAYS_OF_NORMS}
    split_skip_layer_norms(models["split"])
    primitive_layer_norms(models["primitive"])
    feed = {n: rng.normal(size=shape).astype(np.float32) for n in ("x", "skip")}
    sessions = {way: _session(model, threads) for way, model in models.items()}
    outputs = {way: s.run(["y"], feed)[0] for way, s in sessions.items()}  # also the warm-up
    ms: dict[str, list[float]] = {way: [] for way in sessions}
    for i in range(rounds):
        for way in sessions if i % 2 == 0 else list(sessions)[::-1]:
            start = time.perf_counter()
            for _ in range(calls):
                sessions[way].run(["y"], feed)
            ms[way].append((time.perf_counter() - start) / calls * 1000)
    median = {way: statistics.median(v) for way, v in ms.items()}
    print(f"\nSkipLayerNormalization on {shape} float32, median ms per call over {rounds} rounds of {calls}:")
    for way, value in median.items():
        difference = float(np.abs(outputs[way] - outputs["kernel"]).max())
        print(
            f"  {way:10s} {value:6.2f} ms  kernel / {way}: {median['kernel'] / value:.2f}x; largest difference "
            f"to the kernel {difference:.1e}  (rounds: {', '.join(f'{x:.2f}' for x in ms[way])})"
        )


def profile(model_dir: Path, pairs: int, rounds: int, threads: int) -> None:
    from sizewise.compress import compress
    from sizewise.data.catalog import load_dataset
    from sizewise.learners import load_learner

    base = load_learner(model_dir)
    test = load_dataset("snli", "test")
    premises, hypotheses = test.premises[:pairs], test.hypotheses[:pairs]
    tokenizer = base.tokenizer_
    lengths = [len(ids) for ids in tokenizer(premises, hypotheses)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    size = base.config.eval_batch_size
    batches = [
        dict(tokenizer([premises[i] for i in idx], [hypotheses[i] for i in idx], padding=True, return_tensors="np"))
        for idx in (order[s : s + size] for s in range(0, len(order), size))
    ]
    exports = {}
    for way in WAYS_OF_NORMS:
        with _norms_as(way):
            exports[way] = compress(base, WAYS["int8-ort-fused"]).base_.network_.onnx_bytes
    by_op: dict[str, list[collections.Counter[str]]] = {way: [] for way in exports}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            for way in exports if i % 2 == 0 else list(exports)[::-1]:
                session = _session(exports[way], threads, str(Path(tmp) / f"{way}{i}"))
                types = {x.name: np.int32 if x.type == "tensor(int32)" else np.int64 for x in session.get_inputs()}
                feeds = [{k: v.astype(types[k]) for k, v in b.items() if k in types} for b in batches]
                for _ in range(2):  # a warm-up pass and a second one: the profile covers both
                    for feed in feeds:
                        session.run(["logits"], feed)
                events = json.loads(Path(session.end_profiling()).read_text())
                ms: collections.Counter[str] = collections.Counter()
                for e in events:
                    if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                        ms[e["args"]["op_name"]] += e["dur"] / 2e3  # microseconds over two passes
                by_op[way].append(ms)
    print(
        f"\nfused int8 export, {pairs} pairs (batch {size}), operator time per pass in ms, medians over {rounds} "
        "rounds; layer norms = the norm operators and the elementwise ones they are made of:"
    )
    for way, rounds_ in by_op.items():
        total = statistics.median(sum(ms.values()) for ms in rounds_)
        norms = statistics.median(sum(v for k, v in ms.items() if k in NORM_OPS) for ms in rounds_)
        shares = sum(rounds_, collections.Counter())
        top = ", ".join(f"{op} {100 * v / sum(shares.values()):.1f}%" for op, v in shares.most_common(4))
        print(f"  {way:10s} total {total:6.0f}  layer norms {norms:5.0f}  ({top})")


@contextlib.contextmanager
def _norms_as(way: str) -> Any:
    """Build onnxruntime int8 exports with their skip layer norms run ``way``."""
    import sizewise.compress.onnx as exporter

    if way == "kernel":
        with kernel_layer_norms():
            yield
        return
    split = exporter.split_skip_layer_norms
    exporter.split_skip_layer_norms = primitive_layer_norms if way == "primitive" else split
    try:
        yield
    finally:
        exporter.split_skip_layer_norms = split


def primitive_layer_norms(model: Any) -> int:
    """Rewrite, in place, every ``SkipLayerNormalization`` and last-axis ``LayerNormalization`` of an ONNX
    ``model`` (opset 17 or later) as primitive operators: the residual sum, mean, centred values, their
    mean square, ``Sqrt`` of it plus epsilon, ``Div``, ``Mul`` gamma, ``Add`` beta. Returns the count."""
    graph = model.graph
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    nodes: list[Any] = []
    count = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = [*node.input, "", "", "", ""]
        if node.op_type == "SkipLayerNormalization":
            terms, gamma, beta, epsilon = [inputs[0], inputs[1], inputs[4]], inputs[2], inputs[3], 1e-12
        elif node.op_type == "LayerNormalization" and attrs.get("axis", -1) == -1:
            terms, gamma, beta, epsilon = [inputs[0]], inputs[1], inputs[2], 1e-5
        else:
            terms = []
        if not terms or any(name and name in read for name in node.output[1:]):
            nodes.append(node)
            continue
        prefix = f"primitive_layer_norm_{count}/"
        count += 1

        def op(op_type: str, args: list[str], out: str, prefix: str = prefix, **attributes: Any) -> str:
            nodes.append(helper.make_node(op_type, args, [prefix + out], name=prefix + out, **attributes))
            return prefix + out

        def mean(x: str, out: str, prefix: str = prefix) -> str:
            if opset >= 18:  # ReduceMean takes its axes as an input from opset 18 on
                return op("ReduceMean", [x, prefix + "axes"], out, keepdims=1)
            return op("ReduceMean", [x], out, axes=[-1], keepdims=1)

        eps = numpy_helper.from_array(np.array(attrs.get("epsilon", epsilon), np.float32), prefix + "epsilon")
        graph.initializer.extend([eps, numpy_helper.from_array(np.array([-1], np.int64), prefix + "axes")])
        total = terms[0]
        for i, term in enumerate(t for t in terms[1:] if t):
            total = op("Add", [total, term], f"sum{i}")
        centred = op("Sub", [total, mean(total, "mean")], "centred")
        variance = mean(op("Mul", [centred, centred], "squares"), "variance")
        std = op("Sqrt", [op("Add", [variance, eps.name], "variance_eps")], "std")
        scaled = op("Mul", [op("Div", [centred, std], "normed"), gamma], "scaled")
        last = ("Add", [scaled, beta]) if beta else ("Identity", [scaled])
        nodes.append(helper.make_node(last[0], last[1], [node.output[0]], name=prefix + "output"))
    del graph.node[:]
    graph.node.extend(nodes)
    return count


if __name__ == "__main__":
    main()
