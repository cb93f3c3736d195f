"""Arm types as a registry: the built-in types, the majority baseline, a throw-away type registered in
a test and taken through ``study check``, ``study run`` and ``report``, and fingerprints that stay
what they were."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from conftest import TINY_BILSTM, keyword_pairs
from sizewise.arms.registry import ARM_TYPES, ArmRun, ArmType, arm_type_names, get_arm_type, register_arm_type
from sizewise.cli import app
from sizewise.config import load_study, parse_study
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.files import atomic_write_json
from sizewise.learners.base import create_learner
from sizewise.report.document import Block, Heading, Table
from sizewise.report.render import load_results
from sizewise.result import ArmResult
from test_report import _write_tsv

ROOT = Path(__file__).resolve().parents[1]

#: Arm fingerprints of shipped studies before arm types became a registry; they must never change,
#: or every finished arm of a user's study would run again.
FINGERPRINTS = {
    "configs/quickstart.yaml": {"bilstm": "53f1ea35fd1499fe", "minilm-lora": "47a9f9ccb989a223"},
    "configs/compress.yaml": {"bilstm-256-c-p50-int8": "cd5c3917efa74737"},
    "benchmarks/core-snli-nli3.yaml": {"bagged-11": "eb18cbf310779700", "bagged-11-c-p90": "e03ffd85e04bc3af"},
    "benchmarks/transformers-snli-nli3.yaml": {
        "minilm-full-int8-ort": "4aaa60d76ecfb272",
        "minilm-full-h50-f50-rec-int8-ort": "70564db83757181c",
    },
}


@pytest.mark.parametrize("study_file", sorted(FINGERPRINTS))
def test_fingerprints_of_shipped_studies_are_unchanged(study_file: str) -> None:
    study = load_study(ROOT / study_file)
    for arm, fingerprint in FINGERPRINTS[study_file].items():
        assert study.arm_fingerprint(study.arm(arm)) == fingerprint, arm


def test_the_built_in_types_load_by_name_and_a_key_registers_once() -> None:
    assert arm_type_names()[:3] == ["learner", "compress", "majority"]
    assert get_arm_type("compress").key == "compress"
    with pytest.raises(ValueError, match="arm type 'compress' is already registered"):

        @register_arm_type("compress")
        class Again(ArmType):
            pass

    with pytest.raises(ConfigError, match="'trained' is not an arm type; choose one of learner, compress, majority"):
        get_arm_type("trained")


def test_an_arm_names_exactly_one_known_type() -> None:
    base = {"name": "s", "data": {"train": "snli:train", "test": "snli:test"}}
    with pytest.raises(ConfigError) as err:
        parse_study({**base, "arms": [{"name": "a", "trained": {"kind": "bilstm"}}]})
    assert "arms[0].trained: unknown setting" in str(err.value)
    with pytest.raises(ConfigError, match=r"arms\[0\].*exactly one of the blocks learner, compress, majority"):
        parse_study({**base, "arms": [{"name": "a", "learner": {"kind": "bilstm"}, "majority": {}}]})
    with pytest.raises(ConfigError, match=r"arms\[0\]\.majority\.k: unknown setting"):
        parse_study({**base, "arms": [{"name": "a", "majority": {"k": 1}}]})
    with pytest.raises(ConfigError, match=r"arms\[0\]\.learner\.kind: 'lstm' is not a learner kind; choose one of"):
        parse_study({**base, "arms": [{"name": "a", "learner": {"kind": "lstm"}}]})


def test_an_ensemble_adds_its_sections_through_the_learner_contract() -> None:
    data = keyword_pairs(24, seed=3)
    ensemble = create_learner({"kind": "ensemble", "n_learners": 3, "base": {**TINY_BILSTM, "epochs": 1}})
    ensemble.fit(data)
    proba, sections = ensemble.predict_with_sections(data)
    np.testing.assert_allclose(proba, ensemble.predict_proba(data))
    member_probas = ensemble.member_probas(data)
    assert sections["curves"] == {"size": {"k": [1, 2, 3], "accuracy": ensemble.size_curve(member_probas, data.labels)}}
    assert sections["members"]["weights"] == [1.0, 1.0, 1.0] and len(sections["members"]["train_seconds"]) == 3
    assert sections["diversity"]["diversity"] == round(ensemble.diversity(member_probas, data.labels)["diversity"], 6)
    bilstm = create_learner({**TINY_BILSTM, "epochs": 1}).fit(data)
    assert bilstm.predict_with_sections(data)[1] == {}


# -- a throw-away arm type, registered here: one class is all it takes -----------------------------
class ConstantConfig(BaseModel):
    """Settings of the throw-away ``constant`` arm: the label it always predicts."""

    model_config = ConfigDict(extra="forbid")

    label: str


class ConstantModel:
    """Predicts one label for every pair."""

    def __init__(self, column: int, k: int) -> None:
        self.proba_ = np.eye(k)[column]

    def predict_proba(self, data: PairData) -> np.ndarray:
        return np.tile(self.proba_, (len(data), 1))

    def predict_with_sections(self, data: PairData) -> tuple[np.ndarray, dict[str, Any]]:
        return self.predict_proba(data), {}

    def save(self, directory: str | Path) -> None:
        atomic_write_json(Path(directory) / "constant.json", {"proba": self.proba_.tolist()})

    def parameter_count(self) -> dict[str, int]:
        return {"total": 0, "trainable": 0}


class ConstantArm(ArmType):
    """Always the same label; the report lists these arms in a section of their own."""

    config_model = ConstantConfig

    def learner_kind(self, spec: ConstantConfig) -> str:
        return "constant"

    def run(self, run: ArmRun) -> ArmResult:
        labels = run.train.scheme.labels
        with run.meter() as meter:
            model = ConstantModel(labels.index(run.spec.label), len(labels))
        return run.score(model, meter, {"constant": self.dump(run.spec)})

    def report_blocks(self, results: list[ArmResult], images: Mapping[str, bool]) -> list[Block]:
        rows = [[r.description, r.config.block["label"]] for r in results if r.arm_type == "constant"]
        return [Heading("Constant arms"), Table(["arm", "label"], rows)]


@pytest.fixture
def constant_type() -> Iterator[None]:
    register_arm_type("constant")(ConstantArm)
    yield
    del ARM_TYPES["constant"]


def test_a_new_arm_type_runs_a_study_end_to_end(constant_type: None, tmp_path: Path) -> None:
    train = _write_tsv(tmp_path / "train.tsv", keyword_pairs(48, seed=0))
    test = _write_tsv(tmp_path / "test.tsv", keyword_pairs(30, seed=1))
    study = {
        "name": "arm-types",
        "data": {"train": train.name, "test": test.name},
        "evaluation": {"bootstrap_resamples": 100},
        "arms": [
            {"name": "bilstm", "learner": {**TINY_BILSTM, "epochs": 1}},
            {"name": "majority", "description": "majority class", "majority": {}},
            {"name": "neutral", "description": "always neutral", "constant": {"label": "neutral"}},
        ],
    }
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    runner = CliRunner()
    proc = runner.invoke(app, ["-q", "study", "check", str(config)])
    assert proc.exit_code == 0, proc.output
    assert "valid · 3 arms: bilstm, majority, neutral" in proc.output
    proc = runner.invoke(app, ["-q", "study", "run", str(config), "--out", str(out)])
    assert proc.exit_code == 0, proc.output
    proc = runner.invoke(app, ["-q", "report", str(out)])
    assert proc.exit_code == 0, proc.output

    results = {r.arm: r for r in load_results(out)}
    assert [r.arm_type for r in results.values()] == ["learner", "majority", "constant"]
    y_test = np.array(results["bilstm"].predictions.y_true)
    neutral = results["neutral"]
    assert neutral.config.block == {"label": "neutral"} and neutral.config.seed == 0
    assert neutral.metrics.accuracy == pytest.approx(np.mean(y_test == 1))
    # the majority baseline: the training label distribution for every pair
    majority = results["majority"]
    counts = majority.data.train.labels
    top = max(counts, key=counts.__getitem__)
    assert set(majority.predictions.y_pred) == {list(counts).index(top)}
    assert majority.metrics.accuracy == pytest.approx(np.mean(y_test == list(counts).index(top)))
    assert json.loads((out / "majority" / "model" / "majority.json").read_text()) == {"label_counts": counts}
    # the type's own section, and the type's block in study.json (which parses back)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Constant arms" in md and "| always neutral | neutral |" in md
    again = parse_study(json.loads((out / "study.json").read_text(encoding="utf-8")), base=tmp_path)
    assert [a.arm_type for a in again.arms] == ["learner", "majority", "constant"]
    # finished arms are recognised: a second run redoes nothing
    before = {name: (out / name / "result.json").stat().st_mtime_ns for name in results}
    assert runner.invoke(app, ["-q", "study", "run", str(config), "--out", str(out)]).exit_code == 0
    assert before == {name: (out / name / "result.json").stat().st_mtime_ns for name in results}
