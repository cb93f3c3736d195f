"""Data-parallel transformer training under a multi-process launch (torchrun / accelerate launch),
run for real with two CPU processes (gloo): each trains on its own share of the batches and both
end with the same weights; only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from sizewise.distributed import is_main_process, rank, shard, world_size

TESTS = Path(__file__).resolve().parent


def test_shard_gives_every_process_an_equal_disjoint_share() -> None:
    items = list(range(11))
    parts = [shard(items, i, 3) for i in range(3)]
    assert parts == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]  # 11 // 3 = 3 each; the last two are dropped
    assert shard(items, 0, 1) == items


def test_rank_and_world_come_from_the_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert (world_size(), rank(), is_main_process()) == (1, 0, True)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    assert (world_size(), rank(), is_main_process()) == (4, 2, False)


SCRIPT = """
import os, sys
from pathlib import Path
import numpy as np, torch
torch.set_num_threads(1)
from conftest import keyword_pairs
from sizewise.distributed import close
from sizewise.learners import create_learner

learner = create_learner({
    "kind": "transformer", "model": sys.argv[1], "mode": "lora", "lora_r": 2, "epochs": 2,
    "batch_size": 4, "gradient_accumulation": 2, "max_length": 32, "learning_rate": 1e-2, "device": "cpu",
})
learner.fit(keyword_pairs(48, seed=0))
trained = {n: p.detach().numpy() for n, p in learner.network_.named_parameters() if p.requires_grad}
np.savez(Path(sys.argv[2]) / f"rank{os.environ['RANK']}.npz", steps=learner.history_[-1]["steps"], **trained)
close()  # a script under torchrun ends through sizewise.distributed.close (the interpreter's teardown can abort)
"""


def test_two_processes_train_one_model(tiny_bert: Path, tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
        + [str(tiny_bert), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    # 48 pairs = 12 batches of 4; each process takes 6 per epoch, 2 per optimizer step: 3 steps an
    # epoch, 6 in all (one process alone would take 12).
    assert int(a["steps"]) == int(b["steps"]) == 6
    names = [n for n in a.files if n != "steps"]
    assert any("lora" in n for n in names) and any("classifier" in n for n in names)
    # Different batches on each process, yet identical weights: the gradients were averaged.
    for n in names:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)


def test_a_multi_process_study_refuses_non_transformer_arms(tmp_path: Path, tiny_tsv: Path) -> None:
    study = tmp_path / "study.yaml"
    train, test = tiny_tsv / "train.tsv", tiny_tsv / "test.tsv"
    study.write_text(
        f"name: s\noutput: {tmp_path / 'out'}\ndata: {{train: {train}, test: {test}}}\n"
        "arms:\n  - name: lstm\n    learner: {kind: bilstm, epochs: 1}\n"
    )
    env_cli = subprocess.run(
        [sys.executable, "-m", "sizewise.cli", "study", "run", str(study)],
        capture_output=True,
        text=True,
        env={**os.environ, "WORLD_SIZE": "2", "RANK": "0"},
        timeout=120,
        check=False,
    )
    assert env_cli.returncode == 2
    assert "arm lstm: only transformer arms train across several processes" in env_cli.stderr
    assert not (tmp_path / "out").exists()
    assert run_cli("study", "check", str(study)).returncode == 0  # the file itself is fine
