"""Measured cost: wall and CPU time, peak memory, inference throughput.

CPU time and peak RSS include child processes (ensemble workers), read from ``getrusage``.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _rusage() -> tuple[float, float, float]:
    """CPU seconds of this process and its finished children, and the larger peak RSS in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss is in kilobytes on Linux and bytes on macOS
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / (1024 * 1024)
    peak = max(own.ru_maxrss, kids.ru_maxrss) * scale
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime, peak


class CostMeter:
    """Context manager that records wall time, CPU time (own + workers) and peak RSS of a block.

    ``peak_rss_mb`` is the process high-water mark, so it includes whatever ran earlier in the
    same process; a study runs each arm in order in one process and reports it as such.
    """

    def __enter__(self) -> CostMeter:
        self._wall = time.perf_counter()
        self._own, self._kids, _ = _rusage()
        return self

    def __exit__(self, *exc: object) -> None:
        own, kids, peak = _rusage()
        self.wall_seconds = time.perf_counter() - self._wall
        self.cpu_seconds = (own - self._own) + (kids - self._kids)
        self.peak_rss_mb = peak

    def as_dict(self, prefix: str) -> dict[str, float]:
        """``{prefix_seconds, prefix_cpu_seconds}`` rounded for a result file."""
        return {
            f"{prefix}_seconds": round(self.wall_seconds, 3),
            f"{prefix}_cpu_seconds": round(self.cpu_seconds, 3),
        }


def measure_throughput(predict: Callable[[Any], Any], data: Any, *, n: int = 512, warmup: int = 1) -> dict[str, float]:
    """Pairs per second of ``predict`` on the first ``n`` rows of ``data``, after a warm-up call."""
    n = min(n, len(data))
    if n == 0:
        return {"pairs_per_s": 0.0, "pairs": 0}
    sample = data.subset(np.arange(n))
    for _ in range(warmup):
        predict(sample)
    start = time.perf_counter()
    predict(sample)
    seconds = time.perf_counter() - start
    return {"pairs_per_s": round(n / max(seconds, 1e-9), 1), "pairs": n}
