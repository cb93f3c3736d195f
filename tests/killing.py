"""The kill -9 suite: a small study killed again and again (SIGKILL at random moments, and at the
failpoints inside model writes, folder swaps and report rendering), resumed each time, and its final
results compared with those of an uninterrupted run: metrics, predictions and fingerprints equal (the
timings aside), every model in place, no temporary left, and no process of a killed run left running.

Used by ``tests/test_kill.py`` (a CI-sized run) and ``benchmarks/kill_suite.py`` (as many kills as asked).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

#: Where the first kills land (:func:`sizewise.files.failpoint`): inside the first unit's result write (the
#: study record is the first file written), inside the first model folder write, between the two renames
#: of a finished arm's model folder redone with --force, and halfway through moving the report into place.
FAILPOINTS = ("write-file:2", "fill-folder:1", "swap-folder:1", "report:1")


def write_study(folder: Path, train: Path, dev: Path, test: Path, *, epochs: int = 4) -> Path:
    """Two seeds of a BiLSTM, of 3 bagged BiLSTMs on 2 worker processes, and of the BiLSTM compressed."""
    base = f"{{kind: bilstm, epochs: {epochs}, embedding_dim: 16, hidden_size: 16, min_frequency: 1}}"
    study = folder / "study.yaml"
    study.write_text(
        "name: killed\nseeds: [0, 1]\n"
        f"data: {{train: {train}, dev: {dev}, test: {test}}}\n"
        f"arms:\n  - name: bilstm\n    learner: {base}\n"
        f"  - name: bagged\n    learner: {{kind: ensemble, n_learners: 3, workers: 2, base: {base}}}\n"
        "  - name: small\n    compress: {from: bilstm, sparsity: [0.5], int8: [true]}\n"
    )
    return study


@dataclass
class Run:
    """One run of the study: how it ended, and the processes it left behind (none is the promise)."""

    returncode: int
    seconds: float
    killed_by: str | None
    orphans: list[str] = field(default_factory=list)
    stderr: str = ""


def run_study(
    study: Path,
    out: Path,
    env: dict[str, str],
    *,
    kill_after: float | None = None,
    failpoint: str | None = None,
    force_arm: str | None = None,
) -> Run:
    """Run ``sizewise study run`` into ``out``; SIGKILL it ``kill_after`` seconds in, or let it kill itself at
    ``failpoint`` (``NAME[:K]``); then check that every process it started has ended within 15 s."""
    args = [sys.executable, "-m", "sizewise.cli", "study", "run", str(study), "-o", str(out)]
    if force_arm:
        args += ["--force", "--arm", force_arm]
    run_env = {**env, **({"SIZEWISE_FAILPOINT": failpoint} if failpoint else {})}
    start = time.monotonic()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=run_env)
    seen: dict[int, psutil.Process] = {}
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for child in parent.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            pass
        if kill_after is not None and time.monotonic() - start >= kill_after:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    _, stderr = proc.communicate(timeout=600)
    seconds = time.monotonic() - start
    killed_by = None
    if proc.returncode == -signal.SIGKILL:
        killed_by = f"failpoint {failpoint}" if failpoint else f"SIGKILL at {kill_after:.1f} s"
    return Run(proc.returncode, seconds, killed_by, _survivors(list(seen.values())), stderr)


def _survivors(processes: list[psutil.Process], within: float = 15.0) -> list[str]:
    deadline = time.monotonic() + within
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        if alive:
            time.sleep(0.2)
    left = []
    for p in alive:
        try:
            left.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            p.kill()  # not left to whatever runs next
        except psutil.Error:
            pass
    return left


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def outcomes(out: Path) -> dict[str, dict[str, Any]]:
    """What a run must reproduce, by unit folder: metrics, predictions and fingerprint."""
    found = {}
    for path in sorted(out.rglob("result.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        found[str(path.parent.relative_to(out))] = {k: record[k] for k in ("metrics", "predictions", "fingerprint")}
    return found


def problems(out: Path, expected: dict[str, dict[str, Any]]) -> list[str]:
    """How the finished run folder ``out`` differs from the uninterrupted run's outcomes (none is the promise)."""
    found = outcomes(out)
    issues = [f"{unit}: missing" for unit in expected if unit not in found]
    issues += [f"{unit}: not in the uninterrupted run" for unit in found if unit not in expected]
    issues += [f"{unit}: differs" for unit in expected if unit in found and found[unit] != expected[unit]]
    issues += [f"{unit}: no model" for unit in found if not (out / unit / "model" / "learner.json").is_file()]
    issues += [f"{name}: missing" for name in ("report.md", "report.html") if not (out / name).is_file()]
    left = [p for p in out.rglob(".*") if p.name.endswith((".tmp", ".old"))]
    issues += [f"{p.relative_to(out)}: left over" for p in left]
    return issues


@dataclass
class Trial:
    """One run folder: the runs it took (the killed ones and the last, whole one) and what differed."""

    runs: list[Run]
    problems: list[str]


def kill_suite(study: Path, work: Path, env: dict[str, str], *, kills: int, seed: int = 0) -> tuple[float, list[Trial]]:
    """Run ``study`` once whole (the reference), then kill runs of it ``kills`` times in all and resume each
    time until it finishes; the first kills at the failpoints, the rest at random moments of the time
    left. Returns the reference's seconds and every trial (a fresh folder once one is finished)."""
    reference = run_study(study, work / "reference", env)
    if reference.returncode != 0:
        raise AssertionError(f"the uninterrupted run failed: {reference.stderr[-2000:]}")
    expected = outcomes(work / "reference")
    startup = _startup_seconds(env)
    rng = np.random.default_rng(seed)
    plan: list[str | None] = list(FAILPOINTS[:kills]) + [None] * max(0, kills - len(FAILPOINTS))
    trials: list[Trial] = []
    landed, runs, folder = 0, [], work / "trial-0"
    while landed < kills:
        point = plan[landed]
        force = None
        if point is not None and point.startswith("swap-folder"):
            # A folder is swapped when it is written again: a finished arm redone (--force).
            _finish(study, folder, env, runs)
            force = "bilstm"
        done = len(outcomes(folder)) if folder.exists() else 0
        if point is None and done == len(expected):  # nothing left to interrupt here: a fresh folder
            _finish(study, folder, env, runs)
            trials.append(Trial(runs, problems(folder, expected)))
            runs, folder, done = [], work / f"trial-{len(trials)}", 0
        # The moment: uniform over the run's expected length, start-up (half of it here at least) included.
        left = max(startup + 1.0, startup + (reference.seconds - startup) * (1 - done / len(expected)))
        run = run_study(
            study,
            folder,
            env,
            kill_after=None if point else float(rng.uniform(startup / 2, left)),
            failpoint=point,
            force_arm=force,
        )
        runs.append(run)
        if run.killed_by:
            landed += 1
        elif run.returncode != 0:
            raise AssertionError(f"a run failed: {run.stderr[-2000:]}")
        random_next = point is not None and landed < kills and plan[landed] is None  # in a fresh folder
        if run.returncode == 0 or landed == kills or random_next:
            _finish(study, folder, env, runs)
            trials.append(Trial(runs, problems(folder, expected)))
            runs, folder = [], work / f"trial-{len(trials)}"
    return reference.seconds, trials


def _startup_seconds(env: dict[str, str]) -> float:
    """How long the command line takes to start (Python, torch and sizewise imported) on this machine."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "sizewise.cli", "study", "--help"], env=env, capture_output=True, check=True)
    return time.monotonic() - start


def _finish(study: Path, folder: Path, env: dict[str, str], runs: list[Run]) -> None:
    """Resume ``folder`` until a run ends well (it must on the first try)."""
    if runs and runs[-1].returncode == 0:
        return
    run = run_study(study, folder, env)
    runs.append(run)
    if run.returncode != 0:
        raise AssertionError(f"resuming failed: {run.stderr[-2000:]}")


def summary(reference: float, trials: list[Trial]) -> str:
    """One line per run, then the verdict."""
    lines = [f"uninterrupted run: {reference:.1f} s"]
    for i, trial in enumerate(trials):
        for run in trial.runs:
            how = run.killed_by or f"ended (exit {run.returncode})"
            orphans = f", {len(run.orphans)} processes left running" if run.orphans else ""
            lines.append(f"trial {i}: {how} after {run.seconds:.1f} s{orphans}")
        lines.append(
            f"trial {i}: " + ("identical to the uninterrupted run" if not trial.problems else "; ".join(trial.problems))
        )
    kills = sum(1 for t in trials for r in t.runs if r.killed_by)
    good = sum(1 for t in trials if not t.problems for r in t.runs if r.killed_by and not r.orphans)
    lines.append(f"{good} of {kills} kills resumed to identical results with no process left running")
    return "\n".join(lines)


def environment(data_home: Path) -> dict[str, str]:
    """The environment of every run: one torch thread (the results then do not depend on the load)."""
    return {**os.environ, "SIZEWISE_DATA": str(data_home), "OMP_NUM_THREADS": "1", "COLUMNS": "160"}
