"""End to end through the real command line, on tiny slices of the shared SNLI data.

Every call is a subprocess of ``python -m sizewise.cli`` (about 2 s each for the imports), so the
trained model and the study run are shared by the tests of this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import run_cli
from sizewise.result import ArmResult

LABELS = ("entailment", "neutral", "contradiction")
TINY = {"epochs": 2, "embedding_dim": 16, "hidden_size": 16, "mlp_hidden": 16, "batch_size": 16, "min_frequency": 1}
STUDY = {
    "name": "tiny-cli",
    "seed": 0,
    # Relative paths: resolved against the study file's folder, whatever the working directory.
    "data": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv", "scheme": "nli3"},
    "evaluation": {"bootstrap_resamples": 100},
    "arms": [
        {"name": "bilstm", "description": "Tiny BiLSTM", "learner": {"kind": "bilstm", **TINY}},
        {
            "name": "bagged",
            "description": "Two bagged BiLSTMs",
            "learner": {
                "kind": "ensemble",
                "n_learners": 2,
                "epoch_curve": True,
                "base": {"kind": "bilstm", **TINY},
            },
        },
    ],
}


def _test_labels(folder: Path) -> list[str]:
    lines = (folder / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[2] for line in lines]


@pytest.fixture(scope="module")
def study_run(tiny_tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``study run`` once, from a working directory other than the study file's."""
    config = tiny_tsv / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY, sort_keys=False), encoding="utf-8")
    out = tmp_path_factory.mktemp("study") / "out"
    elsewhere = tmp_path_factory.mktemp("cwd")
    proc = run_cli("study", "run", str(config), "--out", str(out), cwd=elsewhere)
    return {"config": config, "out": out, "proc": proc, "cwd": elsewhere}


def test_study_run_writes_results_report_and_plot(study_run: dict[str, Any], tiny_tsv: Path) -> None:
    proc, out = study_run["proc"], study_run["out"]
    assert proc.returncode == 0, proc.stderr
    y_true = [LABELS.index(y) for y in _test_labels(tiny_tsv)]
    report = (out / "report.md").read_text(encoding="utf-8")
    png = (out / "size_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    for arm in STUDY["arms"]:
        result = json.loads((out / arm["name"] / "result.json").read_text(encoding="utf-8"))
        assert ArmResult.read(out / arm["name"] / "result.json").to_json() == result  # the one definition
        assert result["arm"] == arm["name"]
        m, ci = result["metrics"], result["intervals"]
        assert result["predictions"]["y_true"] == y_true
        y_pred = result["predictions"]["y_pred"]
        assert len(y_pred) == 60 and set(y_pred) <= {0, 1, 2}
        assert m["accuracy"] == pytest.approx(np.mean(np.array(y_pred) == np.array(y_true)))
        assert set(m) >= {"accuracy", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"}
        assert ci["accuracy"][0] <= m["accuracy"] <= ci["accuracy"][1]
        assert ci["resamples"] == 100
        cm = np.array(result["confusion_matrix"])
        assert cm.shape == (3, 3) and cm.sum() == 60
        assert np.trace(cm) == round(m["accuracy"] * 60)
        assert result["cost"]["parameters_total"] >= result["cost"]["parameters_trainable"] > 0
        assert result["cost"]["train_seconds"] > 0
        assert result["data"]["train"]["rows"] == 150 and result["data"]["dev"]["rows"] == 60
        # The table on stdout and the report both show each arm's accuracy as written in the result.
        assert f"{m['accuracy']:.3f}" in report
        assert arm["description"] in report
        assert arm["description"] in proc.stdout
        assert f"{m['accuracy']:.3f} [{ci['accuracy'][0]:.3f}, {ci['accuracy'][1]:.3f}]" in proc.stdout
    bagged = json.loads((out / "bagged" / "result.json").read_text(encoding="utf-8"))
    assert bagged["curves"]["size"]["k"] == [1, 2]
    assert bagged["curves"]["size"]["accuracy"][-1] == pytest.approx(bagged["metrics"]["accuracy"])
    assert sorted(bagged["curves"]["epoch_size"]) == ["1", "2"]
    d = bagged["diversity"]
    assert d["ensemble_ce"] == pytest.approx(d["member_ce"] - d["diversity"], abs=1e-5)
    assert "report.md" in proc.stdout


def test_study_run_again_skips_finished_arms(study_run: dict[str, Any]) -> None:
    assert study_run["proc"].returncode == 0, study_run["proc"].stderr
    out = study_run["out"]
    results = [out / arm["name"] / "result.json" for arm in STUDY["arms"]]
    before = [p.stat().st_mtime_ns for p in results]
    proc = run_cli("study", "run", str(study_run["config"]), "--out", str(out), cwd=study_run["cwd"])
    assert proc.returncode == 0, proc.stderr
    assert [p.stat().st_mtime_ns for p in results] == before
    assert proc.stderr.count("finished earlier, skipped") == 2
    assert "Tiny BiLSTM" in proc.stdout  # the table is printed from the existing results


def test_study_check_valid(study_run: dict[str, Any]) -> None:
    proc = run_cli("study", "check", str(study_run["config"]))
    assert proc.returncode == 0, proc.stderr
    assert "valid · 2 arms: bilstm, bagged" in proc.stdout


def test_study_check_reports_every_problem_at_once(tmp_path: Path, tiny_tsv: Path) -> None:
    bad = {
        **STUDY,
        "data": {**STUDY["data"], "train": str(tiny_tsv / "train.tsv"), "scheme": "nli5"},
        "arms": [
            {"name": "a", "learner": {"kind": "bilstm", "epochz": 2}},
            {"name": "a", "learner": {"kind": "bilstm"}},
        ],
    }
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(bad), encoding="utf-8")
    proc = run_cli("study", "check", str(config))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert str(config) in errors[0]
    assert "data.scheme" in errors[0] and "unknown scheme 'nli5'" in errors[0]
    assert "arms[0].learner.epochz: unknown setting" in errors[0]
    assert "arms[1].name: 'a' is used by an earlier arm" in errors[0]


# --- a single model: train, evaluate, predict ----------------------------------------------------


@pytest.fixture(scope="module")
def model(tiny_tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("train") / "model"
    sets = [arg for key, value in TINY.items() for arg in ("--set", f"{key}={value}")]
    proc = run_cli(
        "train", str(tiny_tsv / "train.tsv"), "--dev", str(tiny_tsv / "dev.tsv"), "--out", str(folder), *sets
    )
    assert proc.returncode == 0, proc.stderr
    assert "saved bilstm" in proc.stdout and "parameters" in proc.stdout
    return folder


def test_train_saves_a_model(model: Path) -> None:
    meta = json.loads((model / "learner.json").read_text(encoding="utf-8"))
    assert meta["kind"] == "bilstm" and meta["scheme"] == "nli3"
    assert meta["config"]["epochs"] == 2 and meta["config"]["hidden_size"] == 16
    assert 1 <= len(meta["history"]) <= 2
    assert (model / "model.safetensors").is_file()


def test_evaluate(model: Path, tiny_tsv: Path) -> None:
    proc = run_cli("evaluate", str(model), str(tiny_tsv / "test.tsv"), "--resamples", "100")
    assert proc.returncode == 0, proc.stderr
    for word in ("accuracy", "f1_macro", "roc_auc_macro", "confusion matrix", "60 pairs", *LABELS):
        assert word in proc.stdout


def _parse_predictions(text: str) -> tuple[list[str], np.ndarray]:
    lines = text.strip("\n").split("\n")
    assert lines[0].split("\t") == ["label", "p_entailment", "p_neutral", "p_contradiction"]
    rows = [line.split("\t") for line in lines[1:]]
    labels = [r[0] for r in rows]
    proba = np.array([[float(x) for x in r[1:]] for r in rows])
    assert set(labels) <= set(LABELS)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert labels == [LABELS[i] for i in proba.argmax(axis=1)]
    return labels, proba


def test_predict_file_and_stdin(model: Path, tiny_tsv: Path, tmp_path: Path) -> None:
    target = tmp_path / "predictions.tsv"
    proc = run_cli("predict", str(model), str(tiny_tsv / "test.tsv"), "--out", str(target))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 60 predictions" in proc.stderr
    labels, proba = _parse_predictions(target.read_text(encoding="utf-8"))
    assert len(labels) == 60

    # Standard input, without a label column: the first five test pairs get the same answers.
    rows = (tiny_tsv / "test.tsv").read_text(encoding="utf-8").splitlines()[1:6]
    stdin = "premise\thypothesis\n" + "".join("\t".join(r.split("\t")[:2]) + "\n" for r in rows)
    proc = run_cli("predict", str(model), "-", input=stdin)
    assert proc.returncode == 0, proc.stderr
    labels5, proba5 = _parse_predictions(proc.stdout)
    assert len(labels5) == 5
    assert labels5 == labels[:5]
    np.testing.assert_allclose(proba5, proba[:5], atol=1e-6)


def test_data_info(tiny_tsv: Path) -> None:
    proc = run_cli("data", "info", str(tiny_tsv / "test.tsv"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "rows        60" in lines
    labels = _test_labels(tiny_tsv)
    for name in LABELS:
        count = labels.count(name)
        assert any(line.split()[:2] == [name, str(count)] for line in lines), (name, count, proc.stdout)
