"""Faults during a run: a killed study leaves no process behind, a dead worker ends the run in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import SHARED_DATA


def _slow_ensemble_study(tmp_path: Path, tiny_tsv: Path) -> Path:
    """A study whose one arm trains 3 bagged BiLSTMs on 2 worker processes, long enough to be killed."""
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: slow\noutput: {tmp_path / 'out'}\n"
        f"data: {{train: {tiny_tsv / 'train.tsv'}, test: {tiny_tsv / 'test.tsv'}}}\n"
        "arms:\n  - name: bagged\n    learner:\n      kind: ensemble\n      n_learners: 3\n      workers: 2\n"
        "      base: {kind: bilstm, epochs: 400, embedding_dim: 16, hidden_size: 16, min_frequency: 1}\n"
    )
    return study


def _start(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "SIZEWISE_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sizewise.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_workers(
    proc: subprocess.Popen[str], count: int, timeout: float = 120, settle: float = 1.0
) -> list[psutil.Process]:
    """Every descendant of ``proc`` once ``count`` of them are spawned multiprocessing workers (and
    ``settle`` seconds more)."""
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the study ended before its workers started: {proc.stderr.read()}"  # type: ignore[union-attr]
        children = parent.children(recursive=True)
        workers = [c for c in children if "spawn_main" in " ".join(_cmdline(c))]
        if len(workers) >= count:
            time.sleep(settle)  # let the workers start training (and the pool's helpers start)
            return parent.children(recursive=True)
        time.sleep(0.2)
    raise AssertionError(f"no {count} worker processes within {timeout} s")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _survivors(processes: list[psutil.Process], within: float) -> list[str]:
    deadline = time.monotonic() + within
    alive = processes
    while time.monotonic() < deadline:
        alive = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return []
        time.sleep(0.2)
    left = [f"{p.pid} {' '.join(_cmdline(p))[:120]}" for p in alive]
    for p in alive:  # do not leave them to the rest of the suite
        p.kill()
    return left


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_study_leaves_no_worker_running(tmp_path: Path, tiny_tsv: Path, sig: signal.Signals) -> None:
    proc = _start(["study", "run", str(_slow_ensemble_study(tmp_path, tiny_tsv))])
    try:
        descendants = _wait_for_workers(proc, 2)
        assert len(descendants) >= 2
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert _survivors(descendants, within=15) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("settle", [1.0, 0.0], ids=["training", "starting"])
def test_a_worker_that_dies_ends_the_study_in_one_line(tmp_path: Path, tiny_tsv: Path, settle: float) -> None:
    """Killed while it trains, or while it is still starting (importing torch): one line, no hang."""
    proc = _start(["study", "run", str(_slow_ensemble_study(tmp_path, tiny_tsv))])
    try:
        descendants = _wait_for_workers(proc, 1 if settle == 0 else 2, settle=settle)
        worker = next(p for p in descendants if "spawn_main" in " ".join(_cmdline(p)))
        worker.kill()
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "worker process" in errors[0] and "died" in errors[0], stderr[-2000:]
    assert not list((tmp_path / "out").rglob("result.json"))
    assert _survivors(descendants, within=15) == []
