"""Prediction speed of several ways side by side: the rounds loops shared by the benchmark scripts.

Every way is measured once per round as the study measures inference (throughput of one predict call
after a warm-up call; latency of single pairs, p50 / p95), the order of the ways reversed every other
round so that no way always runs first or last; the summary is the median over rounds.

:func:`alternating_rounds` measures every way in this process; :func:`isolated_rounds` measures each
way in a process of its own (a saved learner loaded, as a deployed model runs), for ways whose
runtimes keep their own thread pools: in an ad-hoc check onnxruntime's and torch's slowed each
other down when both ran in one process on 2 cores. Run as a script, this file is such a worker process:

    python benchmarks/speed_rounds.py MODEL_DIR --dataset snli --split test --pairs 512
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

SPEED_KEYS = ("pairs_per_s", "latency_p50_ms", "latency_p95_ms")
RESULT = "RESULT "


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
    """``repeats`` rounds of every way in ``models`` (name -> saved learner directory) on the first
    ``pairs`` pairs of ``dataset``/``split``, each way in a process of its own; the runs per way.

    One worker process per way loads its learner once and measures when asked, so the ways still
    take turns within seconds of each other (this machine's speed drifts over minutes) while no two
    runtimes share a process.
    """
    runs: dict[str, list[dict[str, float]]] = {w: [] for w in models}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workers = {}
        for way, directory in models.items():
            log = stack.enter_context(open(Path(tmp) / f"{way}.log", "w"))  # noqa: SIM115 (closed by the stack)
            command = [sys.executable, __file__, str(directory), "--dataset", dataset, "--split", split]
            worker = subprocess.Popen(
                [*command, "--pairs", str(pairs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
            stack.callback(worker.kill)
            workers[way] = (worker, Path(tmp) / f"{way}.log")
        for i in range(repeats):
            for way in models if i % 2 == 0 else list(models)[::-1]:
                runs[way].append(_ask(way, *workers[way]))
                print(f"round {i + 1} {way}: {runs[way][-1]}", flush=True)
    return runs


def _ask(way: str, worker: subprocess.Popen[str], log: Path) -> dict[str, float]:
    """One measurement from a worker process (it answers with a line starting with ``RESULT``)."""
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write("measure\n")
    worker.stdin.flush()
    for line in worker.stdout:
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    raise SystemExit(f"measuring {way} failed:\n{log.read_text().strip()[-3000:]}")


def serve(directory: Path, dataset: str, split: str, pairs: int) -> None:
    """Load the learner saved in ``directory`` and measure its throughput and latency on every
    ``measure`` line read from stdin (this process loads nothing else)."""
    from sizewise.cost.meter import measure_latency, measure_throughput
    from sizewise.data.catalog import load_dataset
    from sizewise.learners import load_learner

    learner = load_learner(directory)
    data = load_dataset(dataset, split)
    data = data.subset(np.arange(min(pairs, len(data))))
    predict = learner.predict_proba
    for line in sys.stdin:
        if line.strip() == "measure":
            result = {**measure_throughput(predict, data, n=pairs), **measure_latency(predict, data)}
            print(RESULT + json.dumps(result), flush=True)


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median over rounds of a way's throughput and latencies."""
    return {key: statistics.median(r[key] for r in runs) for key in SPEED_KEYS}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A worker measuring one saved learner's prediction speed.")
    parser.add_argument("model", type=Path)
    parser.add_argument("--dataset", default="snli")
    parser.add_argument("--split", default="test")
    parser.add_argument("--pairs", type=int, default=512)
    args = parser.parse_args()
    serve(args.model, args.dataset, args.split, args.pairs)
