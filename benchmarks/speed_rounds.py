"""Prediction speed of several ways side by side: the rounds loops shared by the benchmark scripts.

Every way is measured once per round as the study measures inference (throughput of one predict call
after a warm-up call; latency of single pairs, p50 / p95), the order of the ways reversed every other
round so that no way always runs first or last; the summary is the median over rounds.

:func:`alternating_rounds` measures every way in this process; :func:`isolated_rounds` measures each
way in a fresh process of its own (a saved learner loaded, as a deployed model runs), for ways whose
runtimes keep their own thread pools: onnxruntime's and torch's threads slow each other down when
both run in one process on few cores. Run as a script, this file is that child process:

    python benchmarks/speed_rounds.py MODEL_DIR --dataset snli --split test --pairs 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SPEED_KEYS = ("pairs_per_s", "latency_p50_ms", "latency_p95_ms")


def alternating_rounds(
    ways: Mapping[str, Callable[[Any], np.ndarray]], data: Any, pairs: int, repeats: int
) -> dict[str, list[dict[str, float]]]:
    """``repeats`` rounds of every way in ``ways`` (name -> predict_proba) on ``data``; the runs per way."""
    from sizewise.cost.meter import measure_latency, measure_throughput

    runs: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
    for i in range(repeats):
        for way in ways if i % 2 == 0 else list(ways)[::-1]:
            predict = ways[way]
            runs[way].append({**measure_throughput(predict, data, n=pairs), **measure_latency(predict, data)})
            print(f"round {i + 1} {way}: {runs[way][-1]}", flush=True)
    return runs


def isolated_rounds(
    models: Mapping[str, Path], dataset: str, split: str, pairs: int, repeats: int
) -> dict[str, list[dict[str, float]]]:
    """``repeats`` rounds of every way in ``models`` (name -> saved learner directory), each way measured
    in a fresh process on the first ``pairs`` pairs of ``dataset``/``split``; the runs per way."""
    runs: dict[str, list[dict[str, float]]] = {w: [] for w in models}
    for i in range(repeats):
        for way in models if i % 2 == 0 else list(models)[::-1]:
            command = [sys.executable, __file__, str(models[way]), "--dataset", dataset, "--split", split]
            done = subprocess.run([*command, "--pairs", str(pairs)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"measuring {way} failed:\n{done.stderr.strip()}")
            runs[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {i + 1} {way}: {runs[way][-1]}", flush=True)
    return runs


def measure_saved(directory: Path, dataset: str, split: str, pairs: int) -> dict[str, float]:
    """Throughput and latency of the learner saved in ``directory`` (this process loads only it)."""
    from sizewise.cost.meter import measure_latency, measure_throughput
    from sizewise.data.catalog import load_dataset
    from sizewise.learners import load_learner

    learner = load_learner(directory)
    data = load_dataset(dataset, split)
    data = data.subset(np.arange(min(pairs, len(data))))
    predict = learner.predict_proba
    return {**measure_throughput(predict, data, n=pairs), **measure_latency(predict, data)}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median over rounds of a way's throughput and latencies."""
    return {key: statistics.median(r[key] for r in runs) for key in SPEED_KEYS}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Measure one saved learner's prediction speed (one way, one round).")
    parser.add_argument("model", type=Path)
    parser.add_argument("--dataset", default="snli")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pairs", type=int, default=512)
    args = parser.parse_args()
    print(json.dumps(measure_saved(args.model, args.dataset, args.split, args.pairs)))
