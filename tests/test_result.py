"""``result.json`` as one typed record: every shipped result file loads and is written back byte for
byte; a hand-edited file with a bad field is one line naming the file and the field, exit code 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import run_cli
from sizewise.report.render import load_arm
from sizewise.result import ArmResult, ResultError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(ROOT.glob("benchmarks/results/**/result.json"))
ONE = ROOT / "benchmarks" / "results" / "core-mnli" / "bilstm" / "result.json"


def test_every_shipped_result_loads_and_is_written_back_unchanged() -> None:
    schemas: dict[str, int] = {}
    for path in SHIPPED:
        result = ArmResult.read(path)
        schemas[result.schema_] = schemas.get(result.schema_, 0) + 1
        text = json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
        assert text == path.read_text(encoding="utf-8"), f"{path} changes when written back"
    # the 42 files written before seeds and curves are read as written, never rewritten to /2
    assert schemas.pop("sizewise.result/1") == 42
    assert schemas == {"sizewise.result/2": len(SHIPPED) - 42} and len(SHIPPED) > 42


def test_sections_read_as_attributes() -> None:
    bagged = ArmResult.read(ROOT / "benchmarks" / "results" / "core-snli-nli3" / "bagged-11" / "result.json")
    assert bagged.arm_type == "learner" and bagged.config.block["kind"] == "ensemble"
    assert bagged.curves.size is not None and bagged.curves.size.k == list(range(1, 12))
    assert bagged.curves.epoch_size is not None and sorted(bagged.curves.epoch_size, key=int)[-1] == "8"
    assert bagged.members is not None and len(bagged.members.accuracy) == 11
    assert bagged.diversity is not None
    assert bagged.diversity.ensemble_ce == pytest.approx(bagged.diversity.member_ce - bagged.diversity.diversity)
    lo, hi = bagged.intervals.accuracy
    assert lo <= bagged.metrics.accuracy <= hi
    compressed = ArmResult.read(ROOT / "benchmarks" / "results" / "core-snli-nli3" / "bagged-11-c-p50" / "result.json")
    assert compressed.arm_type == "compress" and compressed.config.block["from"] == "bagged-11"
    assert compressed.cost.speed_vs_source is not None and compressed.cost.speed_vs_source.source == "bagged-11"
    # sections without a value stay out of the written file
    single = ArmResult.read(ONE).to_json()
    assert "members" not in single and "diversity" not in single and single["curves"] == {}


def _edited(tmp_path: Path, edit: Any) -> Path:
    record = json.loads(ONE.read_text(encoding="utf-8"))
    edit(record)
    path = tmp_path / "run" / "bilstm" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r["cost"].pop("train_seconds"), "cost.train_seconds: field required"),
        (lambda r: r["metrics"].update(acuracy=0.5), "metrics.acuracy: unknown field"),
        (lambda r: r["predictions"]["y_pred"].__setitem__(3, "neutral"), "predictions.y_pred[3]: Input should be"),
        (lambda r: r["data"]["test"].update(rows="many"), "data.test.rows: Input should be a valid integer"),
        (lambda r: r.update(schema="sizewise.result/9"), "schema 'sizewise.result/9' is not sizewise.result/2"),
        (lambda r: r.pop("schema"), "not a sizewise result file (field 'schema' missing)"),
        (lambda r: r["config"].update(compress={"from": "x"}), "config: holds the seed and one arm type's block"),
        (lambda r: r["config"].update(trained=r["config"].pop("learner")), "config.trained: not an arm type"),
    ],
)
def test_a_bad_field_is_one_line_naming_file_and_field(tmp_path: Path, edit: Any, message: str) -> None:
    path = _edited(tmp_path, edit)
    with pytest.raises(ResultError) as info:
        load_arm(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_several_bad_fields_are_counted_on_the_line(tmp_path: Path) -> None:
    path = _edited(tmp_path, lambda r: (r["cost"].pop("train_seconds"), r["cost"].pop("eval_seconds")))
    with pytest.raises(ResultError, match=r"cost\.train_seconds: field required \(and 1 more problem\)$"):
        ArmResult.read(path)


def test_the_report_command_refuses_a_bad_file_with_exit_code_2(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(ONE.parents[1], run)
    record = json.loads((run / "bilstm" / "result.json").read_text(encoding="utf-8"))
    del record["cost"]["train_seconds"]
    (run / "bilstm" / "result.json").write_text(json.dumps(record), encoding="utf-8")
    proc = run_cli("report", str(run))
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {run / 'bilstm' / 'result.json'}: cost.train_seconds: field required"], proc.stderr
    assert "Traceback" not in proc.stderr
