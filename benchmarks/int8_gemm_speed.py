"""The matrix products of MiniLM-L6 in float32 (torch, onnxruntime) and in int8 (onnxruntime), side by side.

    python benchmarks/int8_gemm_speed.py [--tokens 3840] [--hidden 384] [--intermediate 1536]
                                         [--calls 20] [--rounds 5]

How much faster can an int8 model be on this CPU? Most of a BERT-style encoder's time is four matrix
products per layer: query/key/value (hidden -> 3 × hidden), attention output (hidden -> hidden),
feed-forward in (hidden -> intermediate) and out (intermediate -> hidden), each applied to every
token of a batch (``--tokens``: 128 pairs of about 30 tokens). For each, on random float32 inputs:

- ``torch fp32``: ``torch.nn.functional.linear``, as the fp32 learner runs it;
- ``ort fp32``: onnxruntime's ``MatMul``;
- ``ort int8``: onnxruntime's ``DynamicQuantizeMatMul`` with int8 weights (symmetric, per tensor),
  the activations quantized to uint8 on the fly inside the operator, as in sizewise's int8 exports.

Each is called ``--calls`` times per round, the three taking turns for ``--rounds`` rounds, all in
this process with the same thread count (torch's); milliseconds per call are medians over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=3840)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    h, i = args.hidden, args.intermediate
    shapes = {
        "query/key/value": (h, 3 * h),
        "attention output": (h, h),
        "feed-forward in": (h, i),
        "feed-forward out": (i, h),
    }
    print(f"{threads} threads, torch {torch.__version__}, onnxruntime {ort.__version__}; {args.tokens} tokens")
    print("| product | K × N | torch fp32 ms | ort fp32 ms | ort int8 ms | torch fp32 / ort int8 |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for name, (k, n) in shapes.items():
        x = rng.normal(size=(args.tokens, k)).astype(np.float32)
        w = (rng.normal(size=(k, n)) / np.sqrt(k)).astype(np.float32)
        ways = _ways(x, w, threads)
        ms = _rounds(ways, args.calls, args.rounds)
        print(
            f"| {name} | {k} × {n} | {ms['torch fp32']:.2f} | {ms['ort fp32']:.2f} | {ms['ort int8']:.2f} | "
            f"{ms['torch fp32'] / ms['ort int8']:.2f}× |"
        )


def _ways(x: np.ndarray, w: np.ndarray, threads: int) -> dict[str, Callable[[], object]]:
    k, n = w.shape
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])]
    scale = float(np.abs(w).max() / 127)
    quantized = [
        numpy_helper.from_array(np.clip(np.round(w / scale), -127, 127).astype(np.int8), "w"),
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int8), "zero"),
    ]
    graphs = {
        "ort fp32": helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])], "fp32", inputs, outputs, [numpy_helper.from_array(w, "w")]
        ),
        "ort int8": helper.make_graph(
            [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "scale", "zero"], ["y"], domain="com.microsoft")],
            "int8",
            inputs,
            outputs,
            quantized,
        ),
    }
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    sessions = {
        way: ort.InferenceSession(
            helper.make_model(g, opset_imports=opsets).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        for way, g in graphs.items()
    }
    xt, wt = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T))
    return {
        "torch fp32": lambda: torch.nn.functional.linear(xt, wt),
        "ort fp32": lambda: sessions["ort fp32"].run(["y"], {"x": x}),
        "ort int8": lambda: sessions["ort int8"].run(["y"], {"x": x}),
    }


def _rounds(ways: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict[str, float]:
    ms: dict[str, list[float]] = {way: [] for way in ways}
    for f in ways.values():
        f()  # warm-up
    with torch.inference_mode():
        for r in range(rounds):
            for way in ways if r % 2 == 0 else list(ways)[::-1]:
                start = time.perf_counter()
                for _ in range(calls):
                    ways[way]()
                ms[way].append((time.perf_counter() - start) / calls * 1000)
    return {way: statistics.median(v) for way, v in ms.items()}


if __name__ == "__main__":
    main()
