"""Resuming a study after a kill: a unit counts as done only with its model beside its result, a
folder swap cut between its two renames is put back, a redone unit loses its old result before it
retrains, and the temporaries of interrupted writes are cleaned."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY_BILSTM, keyword_pairs
from sizewise import files, study
from sizewise.config import StudyConfig, parse_study
from sizewise.learners.base import LEARNER_FILE
from sizewise.result import RESULT_FILE
from sizewise.study import run_study, unit_is_done


class Killed(BaseException):
    """What a kill looks like from inside: nothing after it runs."""


def _write_tsv(path: Path, n: int, seed: int) -> None:
    data = keyword_pairs(n, seed=seed)
    rows = [f"{p}\t{h}\t{data.scheme.labels[y]}" for p, h, y in zip(data.premises, data.hypotheses, data.labels)]
    path.write_text("\n".join(["premise\thypothesis\tlabel", *rows]) + "\n", encoding="utf-8")


def _config(folder: Path) -> StudyConfig:
    raw: dict[str, Any] = {
        "name": "resume",
        "data": {"train": "train.tsv", "test": "test.tsv"},
        "evaluation": {"bootstrap_resamples": 100},
        "arms": [{"name": "bilstm", "learner": {**TINY_BILSTM, "epochs": 1}}],
    }
    return parse_study(raw, "study.yaml", folder)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder (data, and out/ with its one arm finished)."""
    folder = tmp_path_factory.mktemp("resume")
    _write_tsv(folder / "train.tsv", 24, 1)
    _write_tsv(folder / "test.tsv", 12, 2)
    run_study(_config(folder), output=folder / "out", base=folder)
    return folder


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> tuple[StudyConfig, Path]:
    """A copy of the finished study: its config and its folder."""
    folder = tmp_path / "study"
    shutil.copytree(finished, folder)
    return _config(folder), folder


def _done(config: StudyConfig, arm_dir: Path) -> bool:
    arm = config.arms[0]
    return unit_is_done(config, arm, config.units(arm)[0], arm_dir)


def test_a_unit_without_its_model_is_not_done(run: tuple[StudyConfig, Path]) -> None:
    config, folder = run
    arm_dir = folder / "out" / "bilstm"
    assert _done(config, arm_dir)
    shutil.rmtree(arm_dir / "model")
    assert not _done(config, arm_dir)


def test_a_kill_between_the_swap_renames_is_recovered_on_resume(
    run: tuple[StudyConfig, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, folder = run
    out, arm_dir = folder / "out", folder / "out" / "bilstm"
    real_replace = files.os.replace

    def die_after_moving_the_model_aside(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        if Path(dst).name == ".model.old":
            raise Killed

    monkeypatch.setattr(files.os, "replace", die_after_moving_the_model_aside)
    with pytest.raises(Killed):
        run_study(config, output=out, base=folder, force=True)  # redo the finished arm; killed mid-swap
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert not (arm_dir / "model").exists()  # the state a kill between the two renames leaves
    assert not _done(config, arm_dir)

    run_study(config, output=out, base=folder)  # resume
    assert (arm_dir / "model" / LEARNER_FILE).is_file()
    assert _done(config, arm_dir)
    assert sorted(p.name for p in arm_dir.iterdir()) == ["model", RESULT_FILE]


def test_a_left_over_old_model_is_put_back(run: tuple[StudyConfig, Path]) -> None:
    # On disk as a kill between the renames leaves it, with the old result still marking the unit done.
    config, folder = run
    arm_dir = folder / "out" / "bilstm"
    (arm_dir / "model").rename(arm_dir / ".model.old")
    shutil.copytree(arm_dir / ".model.old", arm_dir / ".model.k3x9q2ab.tmp")
    run_study(config, output=folder / "out", base=folder)
    assert (arm_dir / "model" / LEARNER_FILE).is_file()
    assert _done(config, arm_dir)
    assert sorted(p.name for p in arm_dir.iterdir()) == ["model", RESULT_FILE]


def test_a_redone_unit_loses_its_old_result_before_it_retrains(
    run: tuple[StudyConfig, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, folder = run
    arm_dir = folder / "out" / "bilstm"

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(study, "run_arm", killed)
    with pytest.raises(Killed):
        run_study(config, output=folder / "out", base=folder, force=True)
    assert not (arm_dir / RESULT_FILE).exists()
    assert not _done(config, arm_dir)


def test_temporaries_of_interrupted_writes_are_cleaned_and_nothing_else(run: tuple[StudyConfig, Path]) -> None:
    config, folder = run
    out, arm_dir = folder / "out", folder / "out" / "bilstm"
    stale = [
        arm_dir / ".model.a1b2c3d4.tmp",
        arm_dir / f".{RESULT_FILE}.x_9y8z7w.tmp",
        out / ".report.md.qwertyui.tmp",
        out / ".study.json.asdfghjk.tmp",
        out / ".confusion_matrices.png.tmp.png",
    ]
    (arm_dir / ".model.a1b2c3d4.tmp").mkdir()
    (arm_dir / ".model.a1b2c3d4.tmp" / "model.safetensors").write_bytes(b"half")
    for path in stale[1:]:
        path.write_bytes(b"half")
    kept = [out / "notes.tmp", out / ".hidden", arm_dir / "my.old", out / ".x.tmp"]
    for path in kept:
        path.write_bytes(b"mine")
    before = (arm_dir / RESULT_FILE).stat().st_mtime_ns
    run_study(config, output=out, base=folder)  # the arm is done: only the cleaning happens
    assert (arm_dir / RESULT_FILE).stat().st_mtime_ns == before
    assert [p for p in stale if p.exists()] == []
    assert all(p.read_bytes() == b"mine" for p in kept)
