"""``sizewise evaluate MODEL DATA --scheme``: an nli3 model scored as binary, a binary model never on
three classes, and short one-line errors for a bad evaluation set."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_BILSTM, keyword_pairs, run_cli
from sizewise.cli import app
from sizewise.data.labels import BINARY
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.learners.base import create_learner

NOTE = "scored as binary: p(entailment) against 1 − p(entailment)"


def _binary(data: PairData) -> PairData:
    """nli3 pairs with their labels collapsed: neutral and contradiction become not_entailment."""
    return dataclasses.replace(data, labels=np.minimum(data.labels, 1), scheme=BINARY)


def _write_tsv(path: Path, data: PairData) -> Path:
    rows = [f"{p}\t{h}\t{data.scheme.labels[y]}" for p, h, y in zip(data.premises, data.hypotheses, data.labels)]
    path.write_text("\n".join(["premise\thypothesis\tlabel", *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny nli3 BiLSTM and a tiny binary one, saved, plus an nli3 test file of keyword pairs."""
    folder = tmp_path_factory.mktemp("evaluate_scheme")
    train = keyword_pairs(60, seed=1)
    nli3 = create_learner(dict(TINY_BILSTM)).fit(train)
    nli3.save(folder / "nli3")
    binary = create_learner(dict(TINY_BILSTM)).fit(_binary(train))
    binary.save(folder / "binary")
    test = _write_tsv(folder / "test.tsv", keyword_pairs(30, seed=2))
    return {"nli3": folder / "nli3", "binary": folder / "binary", "test": test}


def _evaluate(*args: str) -> tuple[str, object]:
    result = CliRunner().invoke(app, ["-q", "evaluate", *args, "--resamples", "50"])
    return " ".join(result.output.split()), result


def _value(output: str, metric: str) -> float:
    match = re.search(rf"{metric} │ ([0-9.]+) │", output)
    assert match, output
    return float(match.group(1))


def test_nli3_model_on_nli3_file_is_unchanged(models: dict[str, Path]) -> None:
    output, result = _evaluate(str(models["nli3"]), str(models["test"]))
    assert result.exit_code == 0, result.output
    assert NOTE not in output and "scored as" not in output
    assert "neutral" in output and "contradiction" in output and "not_entailment" not in output


def test_nli3_model_scored_as_binary_on_request(models: dict[str, Path]) -> None:
    from sizewise.data import read_pairs
    from sizewise.learners.base import load_learner

    output, result = _evaluate(str(models["nli3"]), str(models["test"]), "--scheme", "binary")
    assert result.exit_code == 0, result.output
    assert NOTE in output
    assert "(30 pairs)" in output
    assert "not_entailment" in output and "neutral" not in output and "contradiction" not in output
    # The accuracy is that of argmax [p(e), 1 - p(e)] against the collapsed labels.
    data = read_pairs(models["test"])
    proba = load_learner(models["nli3"]).predict_proba(data)
    predicted = np.where(proba[:, 0] >= 1 - proba[:, 0], 0, 1)
    expected = float(np.mean(predicted == np.minimum(data.labels, 1)))
    assert _value(output, "accuracy") == pytest.approx(expected, abs=5e-4)
    assert np.minimum(data.labels, 1).tolist().count(1) == 20  # 10 neutral + 10 contradiction rows
    assert "not_entailment │" in output


def test_nli3_model_on_a_binary_dataset_is_scored_as_binary(models: dict[str, Path], shared_home: Path) -> None:
    output, result = _evaluate(str(models["nli3"]), "rte:dev")
    assert result.exit_code == 0, result.output
    assert "rte:dev" in output and NOTE in output
    assert "not_entailment" in output and "neutral" not in output


def test_binary_model_on_an_nli3_dataset_is_scored_as_binary(models: dict[str, Path], shared_home: Path) -> None:
    output, result = _evaluate(str(models["binary"]), "snli:dev")
    assert result.exit_code == 0, result.output
    assert "snli:dev" in output and "not_entailment" in output and "neutral" not in output
    assert NOTE not in output  # its own scheme: nothing collapsed on the model's side
    output, result = _evaluate(str(models["binary"]), str(models["test"]), "--scheme", "binary")
    assert result.exit_code == 0, result.output
    assert "(30 pairs)" in output and "not_entailment" in output


def test_binary_model_is_never_scored_on_three_classes(models: dict[str, Path]) -> None:
    output, result = _evaluate(str(models["binary"]), str(models["test"]), "--scheme", "nli3")
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert "\n" not in message and "cannot tell neutral from contradiction" in message
    # Through the real entry point: one line on stderr, exit code 2, nothing on stdout.
    proc = run_cli("evaluate", str(models["binary"]), str(models["test"]), "--scheme", "nli3")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]


def test_unknown_scheme_and_nli3_on_a_binary_dataset(models: dict[str, Path], shared_home: Path) -> None:
    _, result = _evaluate(str(models["nli3"]), str(models["test"]), "--scheme", "nli4")
    assert isinstance(result.exception, ConfigError) and "unknown scheme 'nli4'" in str(result.exception)
    _, result = _evaluate(str(models["nli3"]), "rte:dev", "--scheme", "nli3")
    assert isinstance(result.exception, ConfigError) and "rte has binary labels" in str(result.exception)


def test_nli3_model_on_a_binary_file_says_to_pass_scheme_binary(models: dict[str, Path], tmp_path: Path) -> None:
    binary_file = _write_tsv(tmp_path / "binary.tsv", _binary(keyword_pairs(30, seed=3)))
    _, result = _evaluate(str(models["nli3"]), str(binary_file))
    message = str(result.exception)
    assert "labels are binary" in message and "--scheme binary" in message and "20 problems" in message
    output, result = _evaluate(str(models["nli3"]), str(binary_file), "--scheme", "binary")
    assert result.exit_code == 0, result.output
    assert NOTE in output


def test_an_evaluation_set_of_5000_bad_rows_gives_one_short_line(models: dict[str, Path], tmp_path: Path) -> None:
    rows = [f"premise {i}\thypothesis {i}\t{'entails' if i % 2 else 'contradicts'}" for i in range(5000)]
    (tmp_path / "eval.tsv").write_text("\n".join(["premise\thypothesis\tlabel", *rows]) + "\n", encoding="utf-8")
    proc = run_cli("evaluate", str(models["nli3"]), "eval.tsv", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert len(lines[0]) < 400, lines[0]
    assert lines[0].startswith('error: eval.tsv line 2: label: "contradicts" is not one of entailment, neutral')
    assert lines[0].count(" line ") == 4
    assert "… and 4,996 more problems: 5,000 in all" in lines[0]


def test_one_pair_estimate_lies_in_its_interval_and_is_flagged(models: dict[str, Path], tmp_path: Path) -> None:
    one = _write_tsv(tmp_path / "one.tsv", keyword_pairs(30, seed=2).subset(np.array([0])))
    result = CliRunner().invoke(app, ["-q", "evaluate", str(models["nli3"]), str(one), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for metric in ("accuracy", "f1_macro"):
        match = re.search(rf"{metric} │ ([0-9.]+) │ \[([0-9.]+), ([0-9.]+)\]", output)
        assert match, output
        value, lo, hi = map(float, match.groups())
        assert lo <= value <= hi, (metric, value, lo, hi)
    assert "only 1 test pair: the intervals are rough" in output
