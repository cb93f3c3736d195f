"""Prediction speed of several ways side by side: the rounds loops shared by the benchmark scripts.

Every way is measured once per round as the study measures inference (throughput of one predict call
after a warm-up call; latency of single pairs, p50 / p95), the order of the ways reversed every other
round so that no way always runs first or last; the summary is the median over rounds.

:func:`alternating_rounds` measures every way in this process; :func:`isolated_rounds` measures each
way in a process of its own (a saved learner loaded, as a deployed model runs; the library's
:func:`sizewise.cost.speed.side_by_side`), for ways whose runtimes keep their own thread pools: in an
ad-hoc check onnxruntime's and torch's slowed each other down when both ran in one process on 2 cores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sizewise.cost.speed import medians

__all__ = ["alternating_rounds", "isolated_rounds", "medians"]


def alternating_rounds(
    ways: Mapping[str, Callable[[Any], np.ndarray]], data: Any, pairs: int, repeats: int
) -> dict[str, list[dict[str, float]]]:
    """``repeats`` rounds of every way in ``ways`` (name -> predict_proba) on ``data``; the runs per way."""
    from sizewise.cost.meter import measure_inference

    runs: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
    for i in range(repeats):
        for way in ways if i % 2 == 0 else list(ways)[::-1]:
            runs[way].append(measure_inference(ways[way], data, n=pairs))
            print(f"round {i + 1} {way}: {runs[way][-1]}", flush=True)
    return runs


def isolated_rounds(
    models: Mapping[str, Path], dataset: str, split: str, pairs: int, repeats: int
) -> dict[str, list[dict[str, float]]]:
    """``repeats`` rounds of every way in ``models`` (name -> saved learner directory) on the first
    ``pairs`` pairs of ``dataset``/``split``, each way in a worker process of its own
    (:func:`sizewise.cost.speed.side_by_side`, as ``sizewise study speed`` measures); the runs per way.
    """
    from sizewise.cost.speed import side_by_side
    from sizewise.data.catalog import load_dataset

    def show(i: int, way: str, result: dict[str, float]) -> None:
        print(f"round {i} {way}: {result}", flush=True)

    return side_by_side(models, load_dataset(dataset, split), rounds=repeats, pairs=pairs, on_result=show)
