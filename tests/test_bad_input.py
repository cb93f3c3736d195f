"""Bad input through the real command line: one line naming file, line and field; exit code 2; no
traceback; nothing written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import run_cli

HEADER = b"premise\thypothesis\tlabel\n"
GOOD = b"A man plays a guitar.\tA man makes music.\tentailment\n"

# name: (file bytes, the fragments the one error line must hold besides the file name)
BAD_FILES: dict[str, tuple[bytes, list[str]]] = {
    "missing_column": (
        b"premise\tlabel\nA man plays a guitar.\tentailment\n",
        ["line 1", 'header: missing column "hypothesis"'],
    ),
    "unknown_label": (
        HEADER + GOOD + b"A dog runs.\tAn animal moves.\tentails\n",
        ["line 3", 'label: "entails" is not one of entailment, neutral, contradiction'],
    ),
    "empty_premise": (HEADER + GOOD + b"\tSomeone sleeps.\tneutral\n", ["line 3", "premise: empty text"]),
    "undecodable": (
        HEADER + GOOD + b"A caf\xff\xfe menu.\tA menu.\tentailment\n",
        ["line 3", "not valid UTF-8", "byte 0xff"],
    ),
    "empty_file": (b"", ["file is empty"]),
}


def _assert_one_clean_error(proc: subprocess.CompletedProcess[str], fragments: list[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_train_on_a_bad_file(case: str, tmp_path: Path) -> None:
    content, fragments = BAD_FILES[case]
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(content)
    out = tmp_path / "model"
    proc = run_cli("train", str(bad), "--out", str(out), "--set", "epochs=1")
    _assert_one_clean_error(proc, [str(bad), *fragments])
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv"]  # no temporary folder left either


def test_study_run_on_a_bad_train_file(tmp_path: Path) -> None:
    content, fragments = BAD_FILES["unknown_label"]
    (tmp_path / "train.tsv").write_bytes(content)
    (tmp_path / "test.tsv").write_bytes(HEADER + GOOD)
    study = {
        "name": "bad",
        "data": {"train": "train.tsv", "test": "test.tsv"},
        "arms": [{"name": "bilstm", "learner": {"kind": "bilstm", "epochs": 1}}],
    }
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_cli("study", "run", str(config), "--out", str(out))
    _assert_one_clean_error(proc, [str(tmp_path / "train.tsv"), *fragments])
    assert not list(out.rglob("result.json"))
    assert not (out / "report.md").exists()
    assert not (out / "bilstm").exists()


def test_predict_with_a_missing_model_folder(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(HEADER + GOOD)
    missing = tmp_path / "no-model"
    proc = run_cli("predict", str(missing), str(pairs))
    _assert_one_clean_error(proc, [str(missing), "not a saved sizewise model"])
    assert proc.stdout == ""
