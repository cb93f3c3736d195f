"""Prediction speed of saved models side by side, each in a process of its own.

A speed-up is only meaningful as a ratio measured at the same time: on a shared or throttled machine
the same model's pairs/s drifts by tens of percent over minutes. :func:`side_by_side` starts one
worker process per saved model (``python -m sizewise.cost.speed``), which loads the model once, and
asks the workers in turn, round after round (the order reversed every other round), to measure their
throughput and latency as a study measures inference. Each model runs alone in its process, as a
deployed model does: torch's and onnxruntime's thread pools slowed each other down when both ran in
one process on 2 cores. :func:`speedup` summarizes the rounds as the median of per-round ratios.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sizewise.cost.meter import measure_inference
from sizewise.data.labels import get_scheme
from sizewise.data.pairs import PairData
from sizewise.errors import SizewiseError
from sizewise.learners.base import load_learner

RESULT = "RESULT "
SPEED_KEYS = ("pairs_per_s", "latency_p50_ms", "latency_p95_ms")


class SpeedError(SizewiseError):
    """A worker process could not load its model or measure it."""


def side_by_side(
    models: Mapping[str, str | Path],
    data: PairData,
    *,
    rounds: int,
    pairs: int = 512,
    on_result: Callable[[int, str, dict[str, float]], None] | None = None,
) -> dict[str, list[dict[str, float]]]:
    """``rounds`` rounds of every model in ``models`` (name -> saved learner folder) on the first
    ``pairs`` pairs of ``data``, each model in a worker process of its own; the measurements per name.

    Every measurement is :func:`~sizewise.cost.meter.measure_inference` (throughput of one predict
    call on the pairs after a warm-up call; latency of single pairs);
    ``on_result(round, name, measurement)`` is called after each (rounds count from 1).
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    sample = data.subset(np.arange(min(pairs, len(data))))
    payload = json.dumps({"premises": sample.premises, "hypotheses": sample.hypotheses, "scheme": sample.scheme.name})
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        workers = {}
        for i, (name, directory) in enumerate(models.items()):
            log_path = Path(tmp) / f"worker{i}.log"
            log = stack.enter_context(open(log_path, "w"))  # noqa: SIM115 (closed by the stack)
            worker = subprocess.Popen(
                [sys.executable, "-m", "sizewise.cost.speed", str(directory), "--pairs", str(len(sample))],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            stack.callback(worker.wait)  # after the kill below (an exit stack unwinds last-in, first-out)
            stack.callback(worker.kill)
            assert worker.stdin is not None
            worker.stdin.write(payload + "\n")
            workers[name] = (worker, log_path)
        for r in range(rounds):
            for name in models if r % 2 == 0 else list(models)[::-1]:
                runs[name].append(_ask(name, *workers[name]))
                if on_result is not None:
                    on_result(r + 1, name, runs[name][-1])
    return runs


def _ask(name: str, worker: subprocess.Popen[str], log: Path) -> dict[str, float]:
    """One measurement from a worker (it answers with a line starting with ``RESULT``)."""
    assert worker.stdin is not None and worker.stdout is not None
    try:
        worker.stdin.write("measure\n")
        worker.stdin.flush()
    except BrokenPipeError:
        pass  # the worker has exited: its log says why
    for line in worker.stdout:
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT) :])
    lines = log.read_text().strip().splitlines()
    raise SpeedError(f"measuring the speed of {name} failed: {lines[-1] if lines else 'the worker exited'}")


def speedup(runs: Mapping[str, list[dict[str, float]]], name: str, reference: str) -> dict[str, Any]:
    """``name`` against ``reference`` from :func:`side_by_side`'s rounds: the median of the per-round
    ratios of pairs/s, their range and count, and the median throughput and latencies of each."""
    ratios = [a["pairs_per_s"] / b["pairs_per_s"] for a, b in zip(runs[name], runs[reference], strict=True)]
    return {
        "ratio": round(statistics.median(ratios), 4),
        "range": [round(min(ratios), 4), round(max(ratios), 4)],
        "rounds": len(ratios),
        "medians": {name: medians(runs[name]), reference: medians(runs[reference])},
    }


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median over rounds of one model's throughput and latencies."""
    return {key: round(statistics.median(r[key] for r in runs), 3) for key in SPEED_KEYS}


def serve(directory: Path, pairs: int) -> None:
    """The worker: load the learner saved in ``directory``, read the pairs (one JSON line), then
    measure on every ``measure`` line of stdin and answer with a ``RESULT`` line of JSON."""
    learner = load_learner(directory)
    spec = json.loads(sys.stdin.readline())
    n = len(spec["premises"])
    data = PairData(spec["premises"], spec["hypotheses"], np.full(n, -1), get_scheme(spec["scheme"]))
    for line in sys.stdin:
        if line.strip() == "measure":
            result = {**measure_inference(learner.predict_proba, data, n=pairs), "pid": os.getpid()}
            print(RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A worker measuring one saved learner's prediction speed.")
    parser.add_argument("model", type=Path)
    parser.add_argument("--pairs", type=int, default=512)
    args = parser.parse_args()
    serve(args.model, args.pairs)
