"""Outputs: a model folder never replaces what sizewise did not write, an unwritable output is refused
before any work, and a disk that refuses a write is one line naming the path (exit 2), not a traceback."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import TINY_BILSTM, keyword_pairs, run_cli
from sizewise import files
from sizewise.cli import app
from sizewise.errors import OutputError
from sizewise.files import atomic_directory, atomic_write_text
from sizewise.learners.base import create_learner

TINY_SETS = [f"{key}={value}" for key, value in TINY_BILSTM.items() if key != "kind"]


def _write_tsv(path: Path, n: int = 24) -> Path:
    data = keyword_pairs(n)
    rows = [f"{p}\t{h}\t{data.scheme.labels[y]}" for p, h, y in zip(data.premises, data.hypotheses, data.labels)]
    path.write_text("\n".join(["premise\thypothesis\tlabel", *rows]) + "\n", encoding="utf-8")
    return path


def _train(data: Path, out: Path) -> object:
    args = ["-q", "train", str(data), "--out", str(out)]
    for item in TINY_SETS:
        args += ["--set", item]
    return CliRunner().invoke(app, args)


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any training fails the test: the refusals under test come before it."""
    from sizewise.learners.bilstm import BiLSTMLearner

    def fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained before checking the output")

    monkeypatch.setattr(BiLSTMLearner, "fit", fit)


def test_train_refuses_a_folder_it_did_not_write(tmp_path: Path, no_training: None) -> None:
    data = _write_tsv(tmp_path / "train.tsv")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes\n", encoding="utf-8")
    result = _train(data, out)
    assert isinstance(result.exception, OutputError), result.output
    assert str(out) in str(result.exception) and "did not write" in str(result.exception)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "train.tsv"]


def test_train_refuses_a_file(tmp_path: Path, no_training: None) -> None:
    data = _write_tsv(tmp_path / "train.tsv")
    out = tmp_path / "model.txt"
    out.write_text("keep me\n", encoding="utf-8")
    result = _train(data, out)
    assert isinstance(result.exception, OutputError), result.output
    assert out.read_text(encoding="utf-8") == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.txt", "train.tsv"]  # no .model.txt.old


def test_train_replaces_its_own_model_folder_and_fills_an_empty_one(tmp_path: Path) -> None:
    data = _write_tsv(tmp_path / "train.tsv")
    out = tmp_path / "model"
    out.mkdir()
    assert _train(data, out).exit_code == 0
    first = (out / "learner.json").stat().st_mtime_ns
    result = _train(data, out)
    assert result.exit_code == 0, result.output
    assert (out / "learner.json").stat().st_mtime_ns >= first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.tsv"]


def test_saving_a_model_over_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    model = create_learner(dict(TINY_BILSTM)).fit(keyword_pairs(12))
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputError, match="did not write"):
        model.save(tmp_path / "photos")
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["a.jpg"]


def test_train_under_a_file_is_refused_before_training_in_one_line(tmp_path: Path) -> None:
    # A path under a regular file cannot be written, root or not.
    data = _write_tsv(tmp_path / "train.tsv")
    blocker = tmp_path / "blocker"
    blocker.write_text("", encoding="utf-8")
    proc = run_cli("train", str(data), "--out", str(blocker / "model"), "--set", "epochs=1")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(blocker) in errors[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "train.tsv"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_train_into_an_unwritable_folder_is_refused_before_training(
    tmp_path: Path, code: int, no_training: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # chmod does not stop root, so the refusal of the disk is simulated where the probe file is made.
    data = _write_tsv(tmp_path / "train.tsv")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.tempfile, "mkstemp", refuse)
    result = _train(data, tmp_path / "model")
    assert isinstance(result.exception, OutputError), result.output
    assert str(tmp_path / "model") in str(result.exception) and os.strerror(code) in str(result.exception)


def test_predict_to_an_unwritable_place_is_refused_before_predicting(tmp_path: Path) -> None:
    model = create_learner(dict(TINY_BILSTM)).fit(keyword_pairs(12))
    model.save(tmp_path / "model")
    data = _write_tsv(tmp_path / "pairs.tsv", 6)
    (tmp_path / "blocker").write_text("", encoding="utf-8")
    target = tmp_path / "blocker" / "predictions.tsv"
    result = CliRunner().invoke(app, ["-q", "predict", str(tmp_path / "model"), str(data), "--out", str(target)])
    assert isinstance(result.exception, OutputError), result.output
    assert str(target) in str(result.exception)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_is_one_error_naming_the_file(
    tmp_path: Path, code: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(OutputError) as caught:
        atomic_write_text(tmp_path / "report.md", "text")
    assert str(tmp_path / "report.md") in str(caught.value) and os.strerror(code) in str(caught.value)
    assert "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone too


def test_a_full_disk_while_saving_a_folder_is_one_error_and_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "model"
    target.mkdir()
    (target / "learner.json").write_text("{}", encoding="utf-8")
    with pytest.raises(OutputError, match="No space left"), atomic_directory(target, owner="learner.json") as tmp:
        (tmp / "weights").write_bytes(b"1")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["learner.json"]


def test_the_command_line_turns_an_unwrapped_disk_error_into_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A write point that lets a library's OSError through still ends in one line and exit code 2.
    from sizewise import cli

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/runs/x/model.safetensors")

    monkeypatch.setattr(cli, "app", full)
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == [f"error: /runs/x/model.safetensors: {os.strerror(errno.ENOSPC)}"]


def test_saved_files_get_the_modes_of_any_new_file(tmp_path: Path) -> None:
    # safetensors writes its files readable by their owner only; a saved model looks like any other output.
    mask = os.umask(0o022)
    try:
        create_learner(TINY_BILSTM).fit(keyword_pairs(12)).save(tmp_path / "model")
    finally:
        os.umask(mask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert modes == dict.fromkeys(modes, 0o644) and "model.safetensors" in modes, modes
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
