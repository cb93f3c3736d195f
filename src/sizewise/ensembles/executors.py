"""Where ensemble members train: in this process, on local worker processes, or on a Ray cluster.

Each member task returns its saved files as bytes (safetensors + JSON), so nothing is pickled
except plain data, and the same task runs unchanged on any executor.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from sizewise.data.pairs import PairData
from sizewise.errors import RunError
from sizewise.learners.base import create_learner
from sizewise.progress import progress_bar, set_quiet

logger = logging.getLogger(__name__)


@dataclass
class MemberTask:
    """One member to train: its learner spec and the rows (or weights) of the shared train set."""

    index: int
    spec: dict[str, Any]
    indices: np.ndarray | None = None
    sample_weight: np.ndarray | None = None


@dataclass
class MemberResult:
    """A trained member, as its saved files, plus what the parent needs without loading it."""

    index: int
    files: dict[str, bytes]
    monitor_probas: list[np.ndarray] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class SharedData:
    """Data every member task reads: sent once per worker, not once per task."""

    train: PairData
    dev: PairData | None = None
    monitor: PairData | None = None


@dataclass
class MemberGroup:
    """Members trained together in one stacked network (executor batched, its members split over
    worker processes); ``settings`` are :func:`~sizewise.ensembles.batched.train_stacked`'s keywords."""

    index: int
    tasks: list[MemberTask]
    settings: dict[str, Any] = field(default_factory=dict)


def train_member(shared: SharedData, task: MemberTask) -> MemberResult:
    """Train one member and return it as files; runs in whichever process the executor picks."""
    start = time.perf_counter()
    learner = create_learner(task.spec)
    train = shared.train if task.indices is None else shared.train.subset(task.indices)
    kwargs: dict[str, Any] = {}
    if shared.monitor is not None:
        kwargs["monitor"] = shared.monitor
    if task.sample_weight is not None:
        kwargs["sample_weight"] = task.sample_weight
    learner.fit(train, shared.dev, **kwargs)
    return _as_result(task.index, learner, time.perf_counter() - start)


def train_member_group(shared: SharedData, group: MemberGroup) -> list[MemberResult]:
    """Train a group's members together in one stacked network; each member's time is an equal share."""
    from sizewise.ensembles.batched import train_stacked

    run = train_stacked(
        [t.spec for t in group.tasks],
        shared.train,
        [t.indices for t in group.tasks],  # type: ignore[misc]
        shared.dev,
        monitor=shared.monitor,
        **group.settings,
    )
    share = run.seconds / len(run.members)
    return [_as_result(t.index, member, share) for t, member in zip(group.tasks, run.members)]


def _as_result(index: int, learner: Any, seconds: float) -> MemberResult:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "member"
        learner.save(folder)
        files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    return MemberResult(
        index=index,
        files=files,
        monitor_probas=list(getattr(learner, "monitor_probas_", [])),
        history=list(getattr(learner, "history_", [])),
        seconds=seconds,
    )


def materialize(result: MemberResult, folder: Path) -> Path:
    """Write a member's files under ``folder`` and return it (for :func:`load_learner`)."""
    for rel, data in result.files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder


_WORKER_SHARED: SharedData | None = None


def end_with_parent(parent: int) -> None:
    """End this process as soon as ``parent`` (the process that started it) is gone, however it ended:
    a worker must never outlive a study killed with SIGKILL or SIGTERM. On Linux the kernel sends
    SIGKILL at once (``PR_SET_PDEATHSIG``); elsewhere a thread notices within a second."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="sizewise-parent-watch", daemon=True).start()


def _init_worker(shared: SharedData, threads: int, parent: int) -> None:
    global _WORKER_SHARED
    end_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    set_quiet(True)  # many processes drawing bars on one terminal would garble it
    _WORKER_SHARED = shared


def _run_in_worker(task: MemberTask | MemberGroup) -> list[MemberResult]:
    assert _WORKER_SHARED is not None
    if isinstance(task, MemberGroup):
        return train_member_group(_WORKER_SHARED, task)
    return [train_member(_WORKER_SHARED, task)]


def run_member_groups(groups: Sequence[MemberGroup], shared: SharedData, *, workers: int) -> list[MemberResult]:
    """Train every group (its members in one stacked network) on ``workers`` local processes, each given
    an equal share of the CPU threads; the results of all members in member order."""
    return run_member_tasks(groups, shared, workers=workers)  # type: ignore[arg-type]


def run_member_tasks(
    tasks: Sequence[MemberTask],
    shared: SharedData,
    *,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    on_done: Callable[[MemberResult], None] | None = None,
) -> list[MemberResult]:
    """Train every task and return the results in task order.

    ``workers=1`` trains in this process; ``workers>1`` on that many local processes, each given
    an equal share of the CPU threads; ``executor="ray"`` on a Ray cluster (``ray_address``, or a
    local Ray instance when None).
    """
    if executor == "ray":
        results = _run_on_ray(tasks, shared, ray_address, on_done)
    elif workers <= 1 or len(tasks) <= 1:
        results = []
        with progress_bar() as bar:
            job = bar.add_task("ensemble members", total=len(tasks), info="")
            for task in tasks:
                for res in _run_here(shared, task):
                    results.append(res)
                    if on_done:
                        on_done(res)
                bar.update(job, advance=1, info=f"member {res.index + 1} in {res.seconds:.0f}s")
            bar.remove_task(job)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        ctx = get_context("spawn")
        results = []
        with (
            ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=(shared, threads, os.getpid())
            ) as pool,
            progress_bar() as bar,
        ):
            job = bar.add_task(f"ensemble members ({workers} workers)", total=len(tasks), info="")
            futures = [pool.submit(_run_in_worker, t) for t in tasks]
            for fut in futures:
                try:
                    done = fut.result()
                except BrokenProcessPool:
                    raise RunError(
                        f"a worker process training ensemble members died (killed, or out of memory) after "
                        f"{len(results)} of {len(tasks)} members; nothing of this model was saved: run it again"
                        " (a study resumes at this unit)"
                    ) from None
                for res in done:
                    results.append(res)
                    if on_done:
                        on_done(res)
                bar.update(job, advance=1, info=f"member {res.index + 1} in {res.seconds:.0f}s")
            bar.remove_task(job)
    return sorted(results, key=lambda r: r.index)


def _run_here(shared: SharedData, task: MemberTask | MemberGroup) -> list[MemberResult]:
    if isinstance(task, MemberGroup):
        return train_member_group(shared, task)
    return [train_member(shared, task)]


def _run_on_ray(
    tasks: Sequence[MemberTask],
    shared: SharedData,
    address: str | None,
    on_done: Callable[[MemberResult], None] | None,
) -> list[MemberResult]:
    from sizewise.cluster import ray_session

    with ray_session(address, keep=True) as ray:
        return _run_tasks_on_ray(ray, tasks, shared, on_done)


def _run_tasks_on_ray(
    ray: Any,
    tasks: Sequence[MemberTask],
    shared: SharedData,
    on_done: Callable[[MemberResult], None] | None,
) -> list[MemberResult]:
    from sizewise.cluster import MAX_RETRIES, task_error

    shared_ref = ray.put(shared)
    remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(train_member)
    pending = {remote.remote(shared_ref, t): t.index for t in tasks}
    results = []
    with progress_bar() as bar:
        job = bar.add_task("ensemble members (ray)", total=len(tasks), info="")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                index = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as exc:
                    for other in pending:
                        ray.cancel(other, force=True)
                    raise task_error(exc, f"ensemble member {index + 1}") from None
                results.append(res)
                if on_done:
                    on_done(res)
                bar.update(job, advance=1, info=f"member {res.index + 1} in {res.seconds:.0f}s")
        bar.remove_task(job)
    return results
