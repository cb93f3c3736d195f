"""Studies along the budget axes: training seeds, learning curves, several test sets (end to end on tiny data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import SHARED_DATA, TINY_BILSTM, keyword_pairs, run_cli
from sizewise.config import parse_study
from sizewise.errors import ConfigError
from sizewise.report.render import load_arm, load_results, write_report
from sizewise.result import ArmResult
from sizewise.study import load_study_data, run_study, unit_data
from sizewise.units import TrainSize, Unit
from test_report import _write_tsv

needs_shared = pytest.mark.skipif(not (SHARED_DATA / "rte" / "dev.tsv.gz").is_file(), reason="no shared RTE data")


def _raw(folder: Path, **data: Any) -> dict[str, Any]:
    train = _write_tsv(folder / "train.tsv", keyword_pairs(90, seed=0))
    dev = _write_tsv(folder / "dev.tsv", keyword_pairs(30, seed=2))
    test = _write_tsv(folder / "test.tsv", keyword_pairs(60, seed=1))
    other = _write_tsv(folder / "other.tsv", keyword_pairs(45, seed=3))
    return {
        "name": "budgets",
        "output": str(folder / "run"),
        "seeds": [0, 1],
        "data": {"train": str(train), "dev": str(dev), "test": {"in": str(test), "other": str(other)}, **data},
        "arms": [
            {"name": "majority", "majority": {}},
            {"name": "lstm", "description": "BiLSTM", "learner": TINY_BILSTM},
            {"name": "lstm-c", "compress": {"from": "lstm", "steps": [{"transform": "quantize_int8"}]}},
        ],
    }


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("budgets")
    config = parse_study(_raw(folder, train_sizes=[24, "all"], shots_per_class=[4]))
    run = run_study(config)
    write_report(run)
    return config, run


def test_every_arm_trains_once_per_seed_and_size(curve_run: tuple[Any, Path]) -> None:
    config, run = curve_run
    assert sorted(p.name for p in (run / "lstm").iterdir()) == sorted(
        f"{size}-seed-{seed}" for size in ("n24", "all", "k4") for seed in (0, 1)
    )
    # the compress arm: one unit per seed, made from the source's last size (all pairs) of the same seed
    assert sorted(p.name for p in (run / "lstm-c").iterdir()) == ["all-seed-0", "all-seed-1"]
    unit = ArmResult.read(run / "lstm" / "k4-seed-1" / "result.json")
    assert unit.unit is not None and (unit.unit.seed, unit.unit.size, unit.unit.labelled_pairs) == (1, "k4", 12)
    assert unit.data.train.labels == {"entailment": 4, "neutral": 4, "contradiction": 4}
    assert unit.data.dev is not None and unit.data.dev.rows == 12  # a dev subset of the same size per class
    assert unit.config.block["seed"] == 1
    whole = ArmResult.read(run / "lstm" / "all-seed-0" / "result.json")
    assert whole.data.train.rows == 90 and whole.data.dev is not None and whole.data.dev.rows == 30


def test_seeds_draw_their_own_subsets_and_models(curve_run: tuple[Any, Path]) -> None:
    _, run = curve_run
    a = ArmResult.read(run / "lstm" / "n24-seed-0" / "result.json")
    b = ArmResult.read(run / "lstm" / "n24-seed-1" / "result.json")
    assert a.data.train.rows == b.data.train.rows == 24
    assert a.data.train.fingerprint != b.data.train.fingerprint
    assert a.data.test.fingerprint == b.data.test.fingerprint  # one test set for every unit


def test_an_arm_is_reported_as_the_mean_over_its_seeds(curve_run: tuple[Any, Path]) -> None:
    _, run = curve_run
    combined = load_arm(run / "lstm")
    units = [ArmResult.read(run / "lstm" / f"all-seed-{s}" / "result.json") for s in (0, 1)]
    assert combined.n_seeds == 2 and combined.seeds is not None
    assert combined.metrics.accuracy == pytest.approx(np.mean([u.metrics.accuracy for u in units]))
    assert combined.seeds.accuracy == [u.metrics.accuracy for u in units]
    assert combined.cost.train_seconds == pytest.approx(np.mean([u.cost.train_seconds for u in units]))
    assert combined.intervals.method.startswith("two-level")
    assert np.sum(combined.confusion_matrix) == 2 * 60
    assert combined.curve is not None and [p.size for p in combined.curve] == ["k4", "n24", "all"]
    assert [p.labelled_pairs for p in combined.curve] == [12, 24, 90]


def test_other_test_sets_are_scored_and_combined(curve_run: tuple[Any, Path]) -> None:
    _, run = curve_run
    unit = ArmResult.read(run / "lstm" / "all-seed-0" / "result.json")
    assert unit.tests is not None and list(unit.tests) == ["other"]
    other = unit.tests["other"]
    assert other.data.rows == 45 and not other.collapsed
    combined = load_arm(run / "lstm")
    assert combined.tests is not None and combined.tests["other"].seeds is not None


def test_the_report_shows_curves_and_test_sets(curve_run: tuple[Any, Path]) -> None:
    _, run = curve_run
    md = (run / "report.md").read_text(encoding="utf-8")
    assert "## Learning curves" in md and "## Other test sets" in md
    assert (run / "learning_curve.png").is_file()
    assert "4 per class (12 pairs)" in md and "24 pairs" in md
    assert "two-level percentile bootstrap" in md
    assert "n=2" in md
    assert "distinguishable" in md or "ahead of" in md or "behind" in md


def test_a_finished_unit_is_not_trained_again(curve_run: tuple[Any, Path], caplog: pytest.LogCaptureFixture) -> None:
    config, run = curve_run
    victim = run / "lstm" / "n24-seed-1" / "result.json"
    before = {p: p.stat().st_mtime_ns for p in run.glob("*/*/result.json") if p != victim}
    victim.unlink()
    run_study(config)
    assert victim.is_file()
    assert {p: p.stat().st_mtime_ns for p in before} == before  # every other unit was skipped


def test_the_same_study_twice_gives_the_same_predictions(tmp_path: Path, curve_run: tuple[Any, Path]) -> None:
    _, run = curve_run
    raw = _raw(tmp_path, train_sizes=[24, "all"], shots_per_class=[4])
    again = run_study(parse_study({**raw, "arms": raw["arms"][1:2]}))
    for unit in ("k4-seed-0", "n24-seed-1", "all-seed-1"):
        a = ArmResult.read(run / "lstm" / unit / "result.json")
        b = ArmResult.read(again / "lstm" / unit / "result.json")
        assert a.predictions == b.predictions and a.metrics == b.metrics  # (paths differ, so do fingerprints)


def test_one_seed_and_no_curve_keep_the_arm_folder_layout(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw.pop("seeds")
    raw["arms"] = raw["arms"][:2]
    run = run_study(parse_study(raw))
    assert (run / "lstm" / "result.json").is_file() and (run / "lstm" / "model").is_dir()
    result = load_results(run)[1]
    assert result.unit is None and result.seeds is None and result.curve is None


def test_unit_subsets_are_stratified_and_per_class(tmp_path: Path) -> None:
    raw = _raw(tmp_path, shots_per_class=[2], train_sizes=[30])
    config = parse_study(raw)
    data = load_study_data(config)
    shots = unit_data(config, data, Unit(3, TrainSize(per_class=2)))
    assert shots.train.label_counts() == {"entailment": 2, "neutral": 2, "contradiction": 2}
    assert shots.dev is not None and len(shots.dev) == 6
    pairs = unit_data(config, data, Unit(3, TrainSize(pairs=30)))
    assert pairs.train.label_counts() == {"entailment": 10, "neutral": 10, "contradiction": 10}
    assert unit_data(config, data, Unit(3, TrainSize())) is data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"train_size": 50, "train_sizes": [10]}}, "train_size is one size"),
        ({"arms": [{"name": "x", "learner": {**TINY_BILSTM, "seed": 3}}]}, "drop the learner's seed"),
        (
            {
                "arms": [
                    {"name": "x", "learner": TINY_BILSTM, "seeds": [0]},
                    {"name": "y", "compress": {"from": "x", "steps": [{"transform": "quantize_int8"}]}},
                ]
            },
            "seeds [1] are not seeds of arm x",
        ),
        ({"data": {"test": []}}, "name at least one test set"),
        ({"data": {"train_sizes": [0]}}, "data.train_sizes.0"),
    ],
)
def test_bad_budget_settings_are_named(change: dict[str, Any], message: str, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    for key, value in change.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_study(raw)


@needs_shared
def test_a_binary_test_set_scores_a_three_class_model_as_binary(tmp_path: Path, shared_home: Path) -> None:
    raw = _raw(tmp_path)
    raw.pop("seeds")
    raw["data"]["test"] = {"in": raw["data"]["test"]["in"], "rte": "rte:dev"}
    raw["data"]["test_size"] = 40
    raw["arms"] = raw["arms"][1:2]
    run = run_study(parse_study(raw))
    result = ArmResult.read(run / "lstm" / "result.json")
    assert result.data.scheme == "nli3" and result.tests is not None
    rte = result.tests["rte"]
    assert rte.scored_as == "binary" and rte.collapsed and len(rte.confusion_matrix) == 2
    assert json.loads((run / "study.json").read_text())["data"]["test"] == {
        "in": raw["data"]["test"]["in"],
        "rte": "rte:dev",
    }


def test_a_killed_study_resumes_at_the_unit_it_was_in(tmp_path: Path, curve_run: tuple[Any, Path]) -> None:
    """SIGKILL the study's process once its first units are written; the resumed run keeps them as they
    are, trains the rest, and ends with the predictions of a run never interrupted."""
    _, uninterrupted = curve_run
    raw = _raw(tmp_path, train_sizes=[24, "all"], shots_per_class=[4])
    raw["arms"] = raw["arms"][1:2]
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "sizewise.cli", "study", "run", str(study_file)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    arm_dir = Path(raw["output"]) / "lstm"
    deadline = time.monotonic() + 240
    try:
        while len(list(arm_dir.glob("*/result.json"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in arm_dir.glob("*/result.json")}
    assert 2 <= len(finished) < 6, "the kill came too late to leave units undone"
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # finished units were not redone
    units = sorted(p.parent.name for p in arm_dir.glob("*/result.json"))
    assert units == sorted(f"{size}-seed-{seed}" for size in ("k4", "n24", "all") for seed in (0, 1))
    for unit in units:
        resumed = ArmResult.read(arm_dir / unit / "result.json")
        assert resumed.predictions == ArmResult.read(uninterrupted / "lstm" / unit / "result.json").predictions


def test_the_benchmark_summary_of_a_curve_study(curve_run: tuple[Any, Path]) -> None:
    _, run = curve_run
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize.py"
    done = subprocess.run(
        [sys.executable, str(script), "--curves", str(run)], capture_output=True, text=True, check=True
    )
    out = done.stdout
    assert "| arm | 4 per class (12 pairs) | 24 pairs | all (90 pairs) |" in out
    combined = load_arm(run / "lstm")
    assert combined.curve is not None
    first = combined.curve[0].result
    assert f"| BiLSTM | {first.metrics.accuracy:.3f} ({first.seeds.accuracy_sd:.3f}) n=2 |" in out  # type: ignore[union-attr]
    assert "not distinguishable" in out or "ahead of" in out or "behind" in out
    assert "| arm | in-domain (" in out and " | other (" in out
    lstm_row = next(line for line in out.splitlines() if line.startswith("| BiLSTM |") and "pts)" in line)
    other = combined.tests["other"]  # type: ignore[index]
    assert f"| {other.metrics.accuracy:.3f} [" in lstm_row


def test_study_check_counts_the_trainings(tmp_path: Path) -> None:
    raw = _raw(tmp_path, train_sizes=[24, "all"], shots_per_class=[4])
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(raw), encoding="utf-8")
    proc = run_cli("study", "check", str(study_file))
    assert proc.returncode == 0, proc.stderr
    # majority and lstm: 2 seeds x 3 sizes each; lstm-c: one per seed on lstm's largest size
    assert "valid · 3 arms: majority, lstm, lstm-c · 14 trainings (seeds × sizes)" in proc.stdout


def test_the_benchmark_summary_at_one_budget(curve_run: tuple[Any, Path]) -> None:
    _, run = curve_run
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize.py"
    done = subprocess.run(
        [sys.executable, str(script), "--budget", "k4", str(run)], capture_output=True, text=True, check=True
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| arm")]
    assert {row.split(" | ")[0][2:] for row in rows} == {"majority", "BiLSTM"}
    assert "vs the most accurate: Δ pts (p)" in done.stdout and "| — |" in done.stdout
    lstm = load_arm(run / "lstm").curve[0].result  # type: ignore[index]
    assert any(f"{lstm.metrics.accuracy:.3f} ± {lstm.seeds.accuracy_sd:.3f}" in row for row in rows)  # type: ignore[union-attr]
    missing = subprocess.run([sys.executable, str(script), "--budget", "k99", str(run)], capture_output=True, text=True)
    assert missing.returncode != 0 and "no arm was trained at size k99" in missing.stderr


def test_a_crossing_sentence_says_where_a_shorter_curve_stops(curve_run: tuple[Any, Path]) -> None:
    from sizewise.report.budgets import crossing_sentences

    _, run = curve_run
    lstm = load_arm(run / "lstm")
    assert lstm.curve is not None and [p.size for p in lstm.curve] == ["k4", "n24", "all"]
    short = lstm.model_copy(update={"curve": lstm.curve[:2], "description": "short", "arm": "short"})
    (line,) = crossing_sentences([lstm, short])
    assert line.endswith("(both were trained up to 24 pairs).")
    (full,) = crossing_sentences([lstm, lstm.model_copy(update={"description": "same", "arm": "same"})])
    assert "both were trained up to" not in full
