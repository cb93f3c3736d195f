"""onnxruntime's layer-norm kernel against the same arithmetic spelled out, and its share of an int8 model.

    python benchmarks/layer_norm_speed.py [MODEL_DIR] [--shape 128 34 384] [--calls 50] [--rounds 5]
                                          [--pairs 512]

1. A one-operator graph, ``SkipLayerNormalization`` (input + skip + bias, then the norm) on a float32
   tensor of ``--shape`` (batch, tokens, hidden), and the same graph after
   ``sizewise.compress.onnx.decompose_layer_norms``; each run ``--calls`` times per round, the two
   taking turns for ``--rounds`` rounds; milliseconds per call, medians over rounds, and the largest
   output difference.
2. With MODEL_DIR (a saved, fully fine-tuned transformer learner; default: the MiniLM-L6 arm of
   benchmarks/transformers-snli-nli3.yaml), its ``{quantize_int8, backend: onnxruntime, fuse: true}``
   export built both ways, profiled by onnxruntime on the first ``--pairs`` SNLI test pairs (sorted by
   length, in batches of the learner's eval batch size, as the learner predicts): the share of the run
   time each operator type takes.
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
import onnx
import onnxruntime as ort
import torch
from int8_speed import WAYS, kernel_layer_norms
from onnx import TensorProto, helper, numpy_helper

from sizewise.compress.onnx import decompose_layer_norms


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
        profile(args.model, args.pairs, threads)


def _session(model: Any, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


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
    fused = helper.make_model(graph, opset_imports=opsets)
    spelled = onnx.ModelProto()
    spelled.CopyFrom(fused)
    decompose_layer_norms(spelled)
    feed = {n: rng.normal(size=shape).astype(np.float32) for n in ("x", "skip")}
    sessions = {"kernel": _session(fused, threads), "spelled out": _session(spelled, threads)}
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
        print(f"  {way:12s} {value:6.2f} ms  (rounds: {', '.join(f'{x:.2f}' for x in ms[way])})")
    print(
        f"  kernel / spelled out: {median['kernel'] / median['spelled out']:.2f}x; largest output difference "
        f"{float(np.abs(outputs['kernel'] - outputs['spelled out']).max()):.1e}"
    )


def profile(model_dir: Path, pairs: int, threads: int) -> None:
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
    for label, layer_norms in (("kernel", kernel_layer_norms), ("spelled out", None)):
        with layer_norms() if layer_norms else contextlib.nullcontext():
            learner = compress(base, WAYS["int8-ort-fused"])
        with tempfile.TemporaryDirectory() as tmp:
            session = _session(learner.base_.model_.onnx_bytes, threads, str(Path(tmp) / "profile"))
            types = {i.name: np.int32 if i.type == "tensor(int32)" else np.int64 for i in session.get_inputs()}
            feeds = [{k: v.astype(types[k]) for k, v in b.items() if k in types} for b in batches]
            for _ in range(2):  # a warm-up pass and a second one: the profile covers both
                for feed in feeds:
                    session.run(["logits"], feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        by_op: collections.Counter[str] = collections.Counter()
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                by_op[e["args"]["op_name"]] += e["dur"]
        total = sum(by_op.values())
        print(
            f"\nfused int8 export, layer norms as {label}: {total / 2e3:.0f} ms of operator time per pass "
            f"over {pairs} pairs (batch {size}); share by operator type:"
        )
        for op, dur in by_op.most_common(8):
            print(f"  {op:28s} {100 * dur / total:5.1f}%")


if __name__ == "__main__":
    main()
