"""Measured cost of a block of work: wall and CPU time, peak memory, energy and CO2; inference
latency and throughput.

CPU time includes child processes (ensemble workers), read from ``getrusage``. Peak memory is the
largest resident set (RSS) of this process plus its children seen while the block ran, sampled
every ``memory_interval`` seconds by a background thread (so a spike shorter than that can be
missed); the peak GPU memory comes from torch's allocator when a GPU is in use.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sizewise.cost.energy import EnergyReading, EnergySettings, make_tracker


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def tree_rss_mb() -> float:
    """Resident memory of this process and all its children now, in MB."""
    import psutil

    me = psutil.Process()
    total = 0
    for proc in [me, *me.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 1e6


class _MemorySampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(daemon=True, name="sizewise-memory")
        self.interval = interval
        self.peak_mb = tree_rss_mb()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak_mb = max(self.peak_mb, tree_rss_mb())

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        self.peak_mb = max(self.peak_mb, tree_rss_mb())
        return self.peak_mb


def _gpu_in_use() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_initialized()


class CostMeter:
    """Context manager recording wall time, CPU time (own + workers), peak RSS (process tree),
    peak GPU memory and, with ``energy`` settings, energy and CO2 of a block."""

    def __init__(self, energy: EnergySettings | None = None, *, memory_interval: float = 0.2) -> None:
        self.energy_settings = energy
        self.memory_interval = memory_interval
        self.energy: EnergyReading | None = None
        self.peak_gpu_mb: float | None = None

    def __enter__(self) -> CostMeter:
        self._tracker = make_tracker(self.energy_settings) if self.energy_settings is not None else None
        if _gpu_in_use():
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._sampler = _MemorySampler(self.memory_interval)
        self._sampler.start()
        if self._tracker is not None:
            self._tracker.start()
        self._wall = time.perf_counter()
        self._own, self._kids = _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        own, kids = _cpu_seconds()
        self.wall_seconds = time.perf_counter() - self._wall
        self.cpu_seconds = (own - self._own) + (kids - self._kids)
        if self._tracker is not None:
            self.energy = self._tracker.stop()
        self.peak_rss_mb = self._sampler.stop()
        if _gpu_in_use():
            import torch

            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / 1e6

    def as_dict(self, prefix: str) -> dict[str, Any]:
        """The block's figures for a result file, each key starting with ``prefix``."""
        out: dict[str, Any] = {
            f"{prefix}_seconds": round(self.wall_seconds, 3),
            f"{prefix}_cpu_seconds": round(self.cpu_seconds, 3),
            f"{prefix}_peak_rss_mb": round(self.peak_rss_mb, 1),
        }
        if self.peak_gpu_mb is not None:
            out[f"{prefix}_peak_gpu_mb"] = round(self.peak_gpu_mb, 1)
        if self.energy is not None:
            out.update(self.energy.as_dict(prefix))
        return out


def measure_throughput(predict: Callable[[Any], Any], data: Any, *, n: int = 512, warmup: int = 1) -> dict[str, float]:
    """Pairs per second of ``predict`` on the first ``n`` rows of ``data`` in one call, after a warm-up call."""
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


def measure_latency(
    predict: Callable[[Any], Any], data: Any, *, n: int = 50, warmup: int = 3
) -> dict[str, float | int]:
    """Milliseconds to predict one pair (p50 and p95 over ``n`` calls on single pairs, after
    ``warmup`` calls); pairs cycle through the first rows of ``data``."""
    if len(data) == 0:
        return {"latency_p50_ms": 0.0, "latency_p95_ms": 0.0, "latency_calls": 0}
    singles = [data.subset(np.array([i % len(data)])) for i in range(min(n, len(data)))]
    for i in range(warmup):
        predict(singles[i % len(singles)])
    times = []
    for i in range(n):
        start = time.perf_counter()
        predict(singles[i % len(singles)])
        times.append((time.perf_counter() - start) * 1000)
    return {
        "latency_p50_ms": round(float(np.percentile(times, 50)), 3),
        "latency_p95_ms": round(float(np.percentile(times, 95)), 3),
        "latency_calls": n,
    }


def measure_inference(predict: Callable[[Any], Any], data: Any, *, n: int = 512) -> dict[str, float]:
    """:func:`measure_throughput` on the first ``n`` rows and :func:`measure_latency`, in one record."""
    return {**measure_throughput(predict, data, n=n), **measure_latency(predict, data)}
