"""Ray for real: a local cluster started with ``ray start --head`` (torn down after), ensemble members and
whole study units sent to it, a worker killed mid-task, and results equal to the local executor's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from conftest import SHARED_DATA, TINY_BILSTM, keyword_pairs, run_cli

# CI installs ray with the pinned test dependencies: there a missing ray fails instead of skipping.
ray = __import__("ray") if os.environ.get("CI") else pytest.importorskip("ray")

RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a 2-CPU Ray cluster on this machine, stopped (every process of it) afterwards."""
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    start = [str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false"]
    subprocess.run([*start, f"--temp-dir={temp}"], check=True, env=env, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True, timeout=120, check=False)
        shutil.rmtree(temp, ignore_errors=True)


def _study(folder: Path, tiny_tsv: Path, epochs: int = 2) -> Path:
    """Two seeds of a BiLSTM, a 3-member bagged ensemble, and a compressed BiLSTM (made from the first arm)."""
    base = f"{{kind: bilstm, epochs: {epochs}, embedding_dim: 16, hidden_size: 16, min_frequency: 1}}"
    study = folder / "study.yaml"
    study.write_text(
        "name: on-ray\noutput: out\nseeds: [0, 1]\n"
        f"data: {{train: {tiny_tsv / 'train.tsv'}, dev: {tiny_tsv / 'dev.tsv'}, test: {tiny_tsv / 'test.tsv'}}}\n"
        f"arms:\n  - name: bilstm\n    learner: {base}\n"
        f"  - name: bagged\n    learner: {{kind: ensemble, n_learners: 3, base: {base}}}\n"
        "  - name: small\n    compress: {from: bilstm, sparsity: [0.5], int8: [true]}\n"
    )
    return study


def _results(out: Path) -> dict[str, dict[str, Any]]:
    """Every unit's metrics and predictions (what must not depend on where it ran), by unit folder."""
    found = {}
    for path in sorted(out.rglob("result.json")):
        record = json.loads(path.read_text())
        found[str(path.parent.relative_to(out))] = {k: record[k] for k in ("metrics", "predictions", "fingerprint")}
    return found


def _env() -> dict[str, str]:
    return {**os.environ, "SIZEWISE_DATA": str(SHARED_DATA), "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"}


def test_study_units_on_a_ray_cluster_equal_a_local_run(cluster: str, tiny_tsv: Path, tmp_path: Path) -> None:
    study = _study(tmp_path, tiny_tsv)
    local = run_cli("study", "run", str(study), "-o", str(tmp_path / "local"))
    assert local.returncode == 0, local.stderr[-3000:]
    on_ray = run_cli("study", "run", str(study), "-o", str(tmp_path / "ray"), "--executor", "ray", "--address", cluster)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    expected = _results(tmp_path / "local")
    assert len(expected) == 6  # 3 arms x 2 seeds, the compressed arm made from each seed's BiLSTM
    assert _results(tmp_path / "ray") == expected
    for unit in expected:
        assert (tmp_path / "ray" / unit / "model" / "learner.json").is_file()
    assert (tmp_path / "ray" / "report.html").is_file()
    # Resumed on Ray: every unit is finished, nothing runs again.
    again = run_cli("study", "run", str(study), "-o", str(tmp_path / "ray"), "--executor", "ray", "--address", cluster)
    assert again.returncode == 0 and again.stderr.count("finished earlier, skipped") == 6, again.stderr[-2000:]


def _unit_tasks() -> list[psutil.Process]:
    """Ray worker processes running a study unit now (Ray names a running task's process after the task:
    ``ray::sizewise ARM UNIT``)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::sizewise "):
            found.append(p)
    return found


def test_a_killed_ray_worker_is_retried_and_the_study_ends_the_same(
    cluster: str, tiny_tsv: Path, tmp_path: Path
) -> None:
    study = _study(tmp_path, tiny_tsv, epochs=40)
    local = run_cli("study", "run", str(study), "-o", str(tmp_path / "local"), "--arm", "bilstm")
    assert local.returncode == 0, local.stderr[-3000:]
    args = ["study", "run", str(study), "-o", str(tmp_path / "ray"), "--arm", "bilstm"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sizewise.cli", *args, "--executor", "ray", "--address", cluster],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            running = _unit_tasks()
            if running:
                time.sleep(0.5)  # into its training
                running[0].kill()
                killed = running[0].pid
            time.sleep(0.1)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert killed is not None, "no unit task was seen running"
    assert proc.returncode == 0, stderr[-3000:]
    assert _results(tmp_path / "ray") == _results(tmp_path / "local")


def test_ensemble_members_on_a_ray_cluster_equal_local_ones(cluster: str) -> None:
    from sizewise.learners import create_learner

    train, test = keyword_pairs(60, seed=1), keyword_pairs(30, seed=2)
    spec = {"kind": "ensemble", "n_learners": 3, "base": TINY_BILSTM}
    local = create_learner({**spec, "executor": "local"}).fit(train)
    try:
        on_ray = create_learner({**spec, "executor": "ray", "ray_address": cluster}).fit(train)
    finally:
        ray.shutdown()
    assert on_ray.executor_ == "ray"
    np.testing.assert_array_equal(on_ray.member_probas(test), local.member_probas(test))


def test_a_killed_study_leaves_no_process_of_the_ray_instance_it_started(tiny_tsv: Path, tmp_path: Path) -> None:
    study = _study(tmp_path, tiny_tsv, epochs=200)
    args = [sys.executable, "-m", "sizewise.cli", "study", "run", str(study), "--executor", "ray", "--arm", "bilstm"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        parent = psutil.Process(proc.pid)
        deadline = time.monotonic() + 120
        while not _unit_tasks() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.2)
        ours = parent.children(recursive=True)
        assert _unit_tasks() and len(ours) >= 3  # Ray's own processes, started by this study
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        alive = ours
        while alive and time.monotonic() < deadline:
            alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            time.sleep(0.5)
        left = [" ".join(p.cmdline())[:80] for p in alive]
        for p in alive:
            p.kill()
        assert left == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_units_asking_more_than_the_local_instance_has_are_refused(tiny_tsv: Path, tmp_path: Path) -> None:
    # Ray would keep such tasks pending for ever: the study ends in one line instead.
    study = _study(tmp_path, tiny_tsv)
    proc = run_cli("study", "run", str(study), "--executor", "ray", "--arm", "bilstm", "--num-gpus", "1")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "asks 1 GPUs, the cluster has 0" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "out").rglob("result.json"))
