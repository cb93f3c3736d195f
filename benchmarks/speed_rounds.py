"""Prediction speed of several ways side by side: the rounds loop shared by the benchmark scripts.

Every way is measured once per round as the study measures inference (throughput of one predict call
after a warm-up call; latency of single pairs, p50 / p95), the order of the ways reversed every other
round so that no way always runs first or last; the summary is the median over rounds.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
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


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    """The median over rounds of a way's throughput and latencies."""
    return {key: statistics.median(r[key] for r in runs) for key in SPEED_KEYS}
