"""The report of a run folder: only the units of the study as last run (study.json) enter it, and
every result file is checked before anything is written."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import TINY_BILSTM, keyword_pairs
from sizewise.cli import app
from sizewise.config import parse_study
from sizewise.errors import SizewiseError
from sizewise.report.render import load_results, write_report
from sizewise.result import RESULT_FILE
from sizewise.study import run_study


def _write_tsv(path: Path, n: int, seed: int) -> None:
    data = keyword_pairs(n, seed=seed)
    rows = [f"{p}\t{h}\t{data.scheme.labels[y]}" for p, h, y in zip(data.premises, data.hypotheses, data.labels)]
    path.write_text("\n".join(["premise\thypothesis\tlabel", *rows]) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with arms ``first`` and ``second`` finished and reported."""
    folder = tmp_path_factory.mktemp("scope")
    _write_tsv(folder / "train.tsv", 24, 1)
    _write_tsv(folder / "test.tsv", 12, 2)
    raw: dict[str, Any] = {
        "name": "scope",
        "data": {"train": "train.tsv", "test": "test.tsv"},
        "evaluation": {"bootstrap_resamples": 100},
        "arms": [
            {"name": "first", "learner": {**TINY_BILSTM, "epochs": 1}},
            {"name": "second", "majority": {}},
        ],
    }
    out = run_study(parse_study(raw, "study.yaml", folder), output=folder / "out", base=folder)
    write_report(out)
    return out


@pytest.fixture
def out(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "out")
    return tmp_path / "out"


def _snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# -- only the study's own units -----------------------------------------------------------------------


def _drop_arm(out: Path, name: str) -> None:
    record = json.loads((out / "study.json").read_text(encoding="utf-8"))
    record["arms"] = [a for a in record["arms"] if a["name"] != name]
    (out / "study.json").write_text(json.dumps(record), encoding="utf-8")


def test_an_arm_no_longer_in_the_study_stays_out_of_the_report(out: Path, caplog: pytest.LogCaptureFixture) -> None:
    # As if the study file lost arm `first` (the most accurate one here) and was run again.
    results = {r.arm: r for r in load_results(out)}
    _drop_arm(out, "first")
    with caplog.at_level(logging.INFO, logger="sizewise"):
        write_report(out)
    assert [r.arm for r in load_results(out)] == ["second"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "first" not in md, md
    ignored = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and "first" in ignored[0]
    assert (out / "first" / RESULT_FILE).is_file()  # ignored, never deleted
    assert results["second"].arm == "second"
    result = CliRunner().invoke(app, ["-q", "report", str(out)])
    assert result.exit_code == 0, result.output
    assert "first" not in result.output.replace(str(out), "")


def test_a_seed_the_study_no_longer_has_stays_out(out: Path) -> None:
    # A unit folder of another seed (left by an earlier run with seeds [0, 7]) beside the arm's one result.
    own = json.loads((out / "first" / RESULT_FILE).read_text(encoding="utf-8"))
    (out / "first" / "seed-7").mkdir()
    stale = {**own, "metrics": {**own["metrics"], "accuracy": 0.0}, "config": {**own["config"], "seed": 7}}
    stale["unit"] = {"seed": 7, "size": None, "labelled_pairs": 24}
    (out / "first" / "seed-7" / RESULT_FILE).write_text(json.dumps(stale), encoding="utf-8")
    (first,) = [r for r in load_results(out) if r.arm == "first"]
    assert first.n_seeds == 1
    assert first.metrics.accuracy == own["metrics"]["accuracy"]


# -- every result checked before anything is written ----------------------------------------------------

BAD_RESULTS: dict[str, tuple[list[Any], Any, str]] = {
    # name: (where in result.json, new value or None to delete, the field the error names)
    "missing": (["metrics", "f1_macro"], None, "metrics.f1_macro"),
    "mistyped": (["metrics", "accuracy"], "high", "metrics.accuracy"),
    "out_of_range": (["metrics", "accuracy"], -1, "metrics.accuracy"),
    "no_labels": (["data", "labels"], [], "data.labels"),
    "matrix_shape": (["confusion_matrix"], [[1, 2], [3]], "confusion_matrix"),
    "no_predictions": (["predictions", "y_pred"], [], "predictions"),
    "prediction_range": (["predictions", "y_pred"], "range", "predictions.y_pred"),
    "interval_order": (["intervals", "accuracy"], [0.9, 0.1], "intervals.accuracy"),
}


@pytest.mark.parametrize("case", list(BAD_RESULTS))
def test_a_bad_result_is_one_error_and_nothing_is_rewritten(out: Path, case: str) -> None:
    where, value, field = BAD_RESULTS[case]
    path = out / "second" / RESULT_FILE
    record = json.loads(path.read_text(encoding="utf-8"))
    node = record
    for key in where[:-1]:
        node = node[key]
    if value is None:
        del node[where[-1]]
    elif value == "range":
        node[where[-1]] = [9] * len(node[where[-1]])
    else:
        node[where[-1]] = value
    path.write_text(json.dumps(record), encoding="utf-8")
    before = _snapshot(out)
    with pytest.raises(SizewiseError) as caught:
        write_report(out)
    message = str(caught.value)
    assert str(path) in message and field in message, message
    assert "\n" not in message
    assert _snapshot(out) == before
