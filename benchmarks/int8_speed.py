"""CPU prediction speed and accuracy of a fine-tuned transformer in fp32 and in int8, side by side.

    python benchmarks/int8_speed.py [MODEL_DIR] [--pairs 512] [--repeats 5] [--whole-last-layer] [--same-process]
                                    [--out FILE]
    python benchmarks/int8_speed.py --pool RECORD [RECORD ...]   # the rounds of saved records, pooled

MODEL_DIR is a saved, fully fine-tuned ``transformer`` learner; the default is the MiniLM-L6 arm of
benchmarks/transformers-snli-nli3.yaml (``runs/transformers-snli-nli3/minilm-full/model``). From it
the script builds, in memory, the int8 versions sizewise offers:

- ``int8-torch``     — ``{transform: quantize_int8}``: torch.ao dynamic int8 of the Linear layers;
- ``int8-ort``       — ``{transform: quantize_int8, backend: onnxruntime}``: ONNX export, every weight int8;
- ``int8-ort-fused`` — the same with ``fuse: true``: attention blocks and GELUs fused by onnxruntime's
  transformer optimizer before quantizing (attention runs as one int8 kernel).

The fused export splits the optimizer's ``SkipLayerNormalization`` operators into additions and a
``LayerNormalization`` (faster on CPU; ``split_skip_layer_norms`` in ``sizewise.compress.onnx``). For
comparison:

- ``int8-ort-fused-kernel-ln`` — ``int8-ort-fused`` with that step left out (the script switches it
  off while it builds this way): layer norms run as onnxruntime's ``SkipLayerNormalization`` kernel.

Speed is measured as the study measures inference (throughput of one predict call on the first
``--pairs`` SNLI test pairs after a warm-up call, at the learner's eval batch size; latency of single
pairs, p50 / p95), every way once per round, ``--repeats`` rounds, the order reversed every other
round. Each way is saved and measured in a worker process of its own, as a deployed model runs, the
workers taking turns (``--same-process`` measures them all in this one, as records before the
``isolated`` key did; in an ad-hoc check onnxruntime's and torch's thread pools slowed each other
down there). The speed-up of a way is the median over rounds of its pairs/s divided by fp32's in the
same round. fp32 and the exports run the last layer as the learner's ``first_token_last_layer`` says
(on by default: the first token only; ``--whole-last-layer`` turns it off for all of them). Accuracy
is on the whole SNLI test set (9,824 pairs), with the paired difference to fp32.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_rounds import alternating_rounds, isolated_rounds, medians

WAYS = {
    "int8-torch": [{"transform": "quantize_int8"}],
    "int8-ort": [{"transform": "quantize_int8", "backend": "onnxruntime"}],
    "int8-ort-fused": [{"transform": "quantize_int8", "backend": "onnxruntime", "fuse": True}],
    "int8-ort-fused-kernel-ln": [{"transform": "quantize_int8", "backend": "onnxruntime", "fuse": True}],
}
KERNEL_LAYER_NORMS = {"int8-ort-fused-kernel-ln"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=Path("runs/transformers-snli-nli3/minilm-full/model"))
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS))
    parser.add_argument(
        "--whole-last-layer",
        action="store_true",
        help="Run the last layer for every token (first_token_last_layer off) in fp32 and in the exports.",
    )
    parser.add_argument(
        "--same-process", action="store_true", help="Measure every way in this process, not each in its own."
    )
    parser.add_argument("--out", type=Path, help="Also write the record as JSON here.")
    parser.add_argument(
        "--pool", nargs="+", type=Path, metavar="RECORD", help="Measure nothing: pool the rounds of these records."
    )
    args = parser.parse_args()
    if args.pool:
        print(pooled([json.loads(path.read_text()) for path in args.pool]))
        return

    from sizewise.compress import compress
    from sizewise.data.catalog import load_dataset
    from sizewise.environment import environment
    from sizewise.learners import load_learner

    measured = environment()  # the code as it is when measuring starts (files edited later do not count)
    base = load_learner(args.model)
    if getattr(base, "kind", None) != "transformer" or base.config.mode != "full":
        raise SystemExit(f"{args.model}: not a fully fine-tuned transformer learner")
    if args.whole_last_layer:
        base.config = base.config.model_copy(update={"first_token_last_layer": False})
    learners: dict[str, Any] = {"fp32": base}
    records: dict[str, Any] = {}
    for way in args.ways:
        with kernel_layer_norms() if way in KERNEL_LAYER_NORMS else contextlib.nullcontext():
            learners[way] = compress(base, WAYS[way])
        records[way] = learners[way].transforms_[-1]
    test = load_dataset("snli", "test")
    speed_set = test.subset(np.arange(min(args.pairs, len(test))))

    if args.same_process:
        ways = {way: learner.predict_proba for way, learner in learners.items()}
        runs = alternating_rounds(ways, speed_set, args.pairs, args.repeats)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            saved = {way: Path(tmp) / way for way in learners}
            for way, learner in learners.items():
                learner.save(saved[way])
            runs = isolated_rounds(saved, "snli", "test", args.pairs, args.repeats)

    truth = test.labels
    predictions = {way: learner.predict_proba(test).argmax(1) for way, learner in learners.items()}
    summary = {}
    for way, rs in runs.items():
        ratios = [r["pairs_per_s"] / f["pairs_per_s"] for r, f in zip(rs, runs["fp32"], strict=True)]
        right, right_fp32 = predictions[way] == truth, predictions["fp32"] == truth
        speed = medians(rs)
        summary[way] = {
            "pairs_per_s": speed["pairs_per_s"],
            "speedup_vs_fp32": statistics.median(ratios),
            "speedup_range": [min(ratios), max(ratios)],
            "latency_p50_ms": speed["latency_p50_ms"],
            "latency_p95_ms": speed["latency_p95_ms"],
            "accuracy": float(right.mean()),
            "accuracy_diff_vs_fp32": float(right.mean() - right_fp32.mean()),
            "agreement_with_fp32": float((predictions[way] == predictions["fp32"]).mean()),
        }
    record = {
        "model": str(args.model),
        "speed_pairs": len(speed_set),
        "accuracy_pairs": len(test),
        "repeats": args.repeats,
        "isolated": not args.same_process,
        "eval_batch_size": base.config.eval_batch_size,
        "first_token_last_layer": base.config.first_token_last_layer,
        "threads": torch.get_num_threads(),
        "transforms": records,
        "runs": runs,
        "median": summary,
        "environment": measured,
    }
    print(table(record))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")


@contextlib.contextmanager
def kernel_layer_norms() -> Iterator[None]:
    """Build onnxruntime exports with their skip layer norms left as onnxruntime's kernel."""
    import sizewise.compress.onnx as exporter

    split = exporter.split_skip_layer_norms
    exporter.split_skip_layer_norms = lambda model: 0
    try:
        yield
    finally:
        exporter.split_skip_layer_norms = split


def pooled(records: list[dict[str, Any]], target: float = 1.8) -> str:
    """Every round of ``records`` pooled: per way, the median of its per-round ratios to fp32 and how
    many rounds reached ``target``; and, where both ran, the fused export against the same with
    onnxruntime's layer-norm kernel."""
    ratios: dict[str, list[float]] = {}
    for record in records:
        fp32 = [r["pairs_per_s"] for r in record["runs"]["fp32"]]
        for way, runs in record["runs"].items():
            if way != "fp32":
                ratios.setdefault(way, []).extend(r["pairs_per_s"] / f for r, f in zip(runs, fp32, strict=True))
        if {"int8-ort-fused", "int8-ort-fused-kernel-ln"} <= record["runs"].keys():
            pairs = zip(record["runs"]["int8-ort-fused"], record["runs"]["int8-ort-fused-kernel-ln"], strict=True)
            ratios.setdefault("int8-ort-fused vs kernel-ln", []).extend(
                a["pairs_per_s"] / b["pairs_per_s"] for a, b in pairs
            )
    lines = [
        f"{len(records)} records pooled",
        f"| way | rounds | median ratio | rounds at {target}× or more |",
        "|---|---|---|---|",
    ]
    for way, values in ratios.items():
        reached = "—" if " vs " in way else sum(v >= target for v in values)
        lines.append(f"| {way} | {len(values)} | {statistics.median(values):.2f}× | {reached} |")
    return "\n".join(lines)


def table(record: dict[str, Any]) -> str:
    env = record["environment"]
    lines = [
        "| way | accuracy | Δ vs fp32 | pairs/s | speed-up vs fp32 (range) | latency p50 / p95 |",
        "|---|---|---|---|---|---|",
    ]
    for way, m in record["median"].items():
        lo, hi = m["speedup_range"]
        lines.append(
            f"| {way} | {m['accuracy']:.3f} | {100 * m['accuracy_diff_vs_fp32']:+.1f} pts | {m['pairs_per_s']:,.0f} | "
            f"{m['speedup_vs_fp32']:.2f}× ({lo:.2f}–{hi:.2f}) | "
            f"{m['latency_p50_ms']:.1f} / {m['latency_p95_ms']:.1f} ms |"
        )
    lines.append("")
    lines.append(
        f"{record['accuracy_pairs']:,} SNLI test pairs for accuracy; speed on the first {record['speed_pairs']} "
        f"(batch {record['eval_batch_size']}), medians of {record['repeats']} alternating rounds"
        f"{', each way in its own process' if record.get('isolated') else ', all ways in one process'}; last layer "
        f"{'for the first token only' if record.get('first_token_last_layer') else 'for every token'}; "
        f"{record['threads']} threads on {env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
