"""Prediction speed of a LoRA model with the adapter merged into the frozen weights vs beside them.

    python benchmarks/lora_merge_speed.py [MODEL_DIR] [--pairs 512] [--repeats 5] [--out FILE]

MODEL_DIR is a saved ``transformer`` learner in LoRA (or IA3) mode; the default is the LoRA arm of
benchmarks/transformers-snli-nli3.yaml (``runs/transformers-snli-nli3/minilm-lora/model``).
``predict_proba`` merges the adapter into the frozen weights on its first call and keeps it merged;
the other way takes it out again and applies it beside the frozen weights, as in training (two
matrix products per adapted layer). Merging happens in the warm-up call of each measurement. The two ways alternate,
``--repeats`` times each, on the first ``--pairs`` SNLI test pairs, measured as the study measures
inference (throughput of one call after a warm-up call, at the learner's eval batch size; latency of
single pairs, p50 / p95). Also reports the largest probability difference between the two ways.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed_rounds import alternating_rounds, medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", type=Path, default=Path("runs/transformers-snli-nli3/minilm-lora/model"))
    parser.add_argument("--pairs", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="Also write the record as JSON here.")
    args = parser.parse_args()

    from sizewise.data.catalog import load_dataset
    from sizewise.environment import environment
    from sizewise.learners import load_learner
    from sizewise.learners.transformer import adapter_is_merged

    learner = load_learner(args.model)
    if getattr(learner, "kind", None) != "transformer" or learner.config.mode == "full":
        raise SystemExit(f"{args.model}: not a transformer learner with an adapter (mode lora / ia3)")
    test = load_dataset("snli", "test")
    test = test.subset(np.arange(min(args.pairs, len(test))))

    def beside(data: Any) -> np.ndarray:
        if adapter_is_merged(learner.network_):
            learner.network_.base_model.unmerge_adapter()
        return learner.predict_encoded(learner.encode(data))

    ways = {"merged": learner.predict_proba, "beside": beside}
    runs = alternating_rounds(ways, test, args.pairs, args.repeats)
    diff = float(np.abs(learner.predict_proba(test) - beside(test)).max())

    summary = {way: medians(rs) for way, rs in runs.items()}
    record = {
        "model": str(args.model),
        "pairs": len(test),
        "repeats": args.repeats,
        "eval_batch_size": learner.config.eval_batch_size,
        "threads": torch.get_num_threads(),
        "runs": runs,
        "median": summary,
        "max_probability_difference": diff,
        "environment": environment(),
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    m, b = summary["merged"], summary["beside"]
    print(
        f"| adapter | pairs/s (batch {learner.config.eval_batch_size}) | latency p50 / p95 |\n|---|---|---|\n"
        f"| merged into the weights | {m['pairs_per_s']:,.0f} | {m['latency_p50_ms']:.1f} / "
        f"{m['latency_p95_ms']:.1f} ms |\n"
        f"| beside the frozen weights | {b['pairs_per_s']:,.0f} | {b['latency_p50_ms']:.1f} / "
        f"{b['latency_p95_ms']:.1f} ms |\n\n"
        f"Medians of {args.repeats} alternating runs on {len(test)} SNLI test pairs, {torch.get_num_threads()} "
        f"torch threads; merged / beside = {m['pairs_per_s'] / b['pairs_per_s']:.2f}× the pairs/s; largest "
        f"probability difference {diff:.1e}."
    )


if __name__ == "__main__":
    main()
