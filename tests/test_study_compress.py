"""Compress arms in studies: a sweep becomes one arm per setting, each made from its source arm's
saved model; the result files, the report's compression table and its accuracy-vs-size plot."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import TINY_BILSTM, keyword_pairs, run_cli
from sizewise.arms.compress import measure_speed
from sizewise.arms.lineage import cumulative_cost
from sizewise.config import StudyConfig, parse_study
from sizewise.cost.energy import set_tracker_factory
from sizewise.cost.speed import SpeedError, side_by_side
from sizewise.errors import ConfigError
from sizewise.learners.base import load_learner
from sizewise.report.render import load_results, write_report
from sizewise.report.tables import verdict
from sizewise.study import load_study_test, run_study
from test_cost import FakeTracker
from test_report import _md_tables, _rows_by_arm, _Tables, _write_tsv

WIDE_BILSTM = {**TINY_BILSTM, "hidden_size": 24, "mlp_hidden": 24, "epochs": 3}


def _raw(folder: Path) -> dict[str, Any]:
    train = _write_tsv(folder / "train.tsv", keyword_pairs(80, seed=0))
    test = _write_tsv(folder / "test.tsv", keyword_pairs(60, seed=1))
    return {
        "name": "compress-test",
        "output": str(folder / "run"),
        "data": {"train": str(train), "test": str(test)},
        "arms": [
            {"name": "wide", "description": "wide BiLSTM", "learner": WIDE_BILSTM},
            {
                "name": "ens",
                "description": "2 bagged",
                "learner": {"kind": "ensemble", "n_learners": 2, "base": WIDE_BILSTM},
            },
            {"name": "wide-c", "description": "wide BiLSTM", "compress": {"from": "wide", "sparsity": [0, 0.5, 0.9]}},
            {"name": "ens-c", "compress": {"from": "ens", "sparsity": [0.7], "int8": [True]}},
            {
                "name": "wide-units",
                "compress": {
                    "from": "wide",
                    "steps": [{"transform": "prune_structured", "fraction": 0.5}, {"transform": "recover"}],
                },
            },
        ],
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudyConfig, Path]:
    folder = tmp_path_factory.mktemp("compress-study")
    config = parse_study(_raw(folder))
    set_tracker_factory(FakeTracker)
    try:
        run = run_study(config)
    finally:
        set_tracker_factory(None)
    write_report(run)
    return config, run


def test_a_sweep_becomes_one_arm_per_setting(study: tuple[StudyConfig, Path]) -> None:
    config, _ = study
    names = [a.name for a in config.arms]
    assert names == [
        "wide", "ens",
        "wide-c-int8", "wide-c-p50", "wide-c-p50-int8", "wide-c-p90", "wide-c-p90-int8",
        "ens-c-p70-int8",
        "wide-units",
    ]  # fmt: skip
    arm = config.arm("wide-c-p50-int8")
    assert arm.arm_type == "compress" and arm.spec.source == "wide"
    assert arm.spec.steps == [
        {"transform": "prune", "sparsity": 0.5, "method": "global_magnitude"},
        {"transform": "quantize_int8"},
    ]
    assert arm.description == "wide BiLSTM p50-int8"
    # study.json, as written, parses back into the same arms (the sweep written out as steps)
    _, run = study
    again = parse_study(json.loads((run / "study.json").read_text()))
    assert [a.model_dump() for a in again.arms] == [a.model_dump() for a in config.arms]


def test_compress_arms_hold_the_compressed_models(study: tuple[StudyConfig, Path]) -> None:
    _, run = study
    results = {r.arm: r for r in load_results(run)}
    wide = results["wide"]
    for name, sparsity in [("wide-c-p50", 0.5), ("wide-c-p90", 0.9)]:
        r = results[name]
        assert r.arm_type == "compress" and r.config.block["from"] == "wide"
        learner = load_learner(run / name / "model")
        record = next(t for t in learner.transforms_ if t["transform"] == "prune")
        assert record["reached"] == pytest.approx(sparsity, abs=0.01)
        assert r.cost.parameters_nonzero is not None
        assert r.cost.parameters_nonzero < r.cost.parameters_total == wide.cost.parameters_total
        # the saved model predicts the result file's predictions
        from sizewise.data.catalog import load_pairs

        test = load_pairs(r.data.test.source, scheme="nli3")
        assert learner.predict_proba(test).argmax(1).tolist() == r.predictions.y_pred
    weights = {
        name: (run / name / "model" / "compressed.safetensors").stat().st_size
        for name in results
        if name.startswith("wide-c-")
    }
    assert weights["wide-c-p90"] < weights["wide-c-p50"]
    assert weights["wide-c-p90-int8"] < weights["wide-c-p90"] and weights["wide-c-p50-int8"] < weights["wide-c-p50"]
    fp32 = (run / "wide" / "model" / "model.safetensors").stat().st_size
    assert weights["wide-c-int8"] < 0.5 * fp32
    quantized = load_learner(run / "wide-c-int8" / "model")
    assert any(m.__class__.__module__.startswith("torch.ao.nn.quantized") for m in quantized.base_.network_.modules())
    # an ensemble's members are compressed each, and its size curve / diversity still computed
    ens = results["ens-c-p70-int8"]
    assert ens.members is not None and len(ens.members.accuracy) == 2 and ens.diversity is not None
    assert ens.members.train_seconds is None  # compressed from the saved ensemble: not fitted here
    assert ens.curves.size is not None and ens.curves.epoch_size is None
    # structured pruning shrinks the LSTM, then the recover step trains on the study's train pairs
    units = load_learner(run / "wide-units" / "model")
    assert units.base_.network_.encoder.hidden_size == 12
    assert [t["transform"] for t in units.transforms_] == ["prune_structured", "recover"]


def test_the_report_has_the_compression_table_and_curve(study: tuple[StudyConfig, Path]) -> None:
    _, run = study
    md = (run / "report.md").read_text()
    page = _Tables()
    page.feed((run / "report.html").read_text())
    assert _md_tables(md) == page.tables
    table = next(t for t in page.tables if t[0][:3] == ["arm", "from", "transforms"])
    rows = _rows_by_arm(table)
    results = {r.description: r for r in load_results(run)}
    compressed = [r for r in results.values() if r.arm_type == "compress"]
    assert sorted(rows) == sorted(r.description for r in compressed)
    for desc, row in rows.items():
        r = results[desc]
        src = next(x for x in results.values() if x.arm == r.config.block["from"])
        assert row["from"] == src.description
        lo, hi = r.intervals.accuracy
        assert row["accuracy [95% CI]"] == f"{r.metrics.accuracy:.3f} [{lo:.3f}, {hi:.3f}]"
        d = 100 * (r.metrics.accuracy - src.metrics.accuracy)
        assert row["Δ accuracy"] == f"{d:+.1f} pts"
        assert row["size on disk"] == f"{r.cost.size_on_disk_mb:.1f} MB"
        ratio = r.cost.size_on_disk_mb / src.cost.size_on_disk_mb
        assert row["size ratio"] == f"{ratio:.2f}×"
        speed = r.cost.inference_pairs_per_s / src.cost.inference_pairs_per_s
        assert row["speed-up"] == f"{speed:.2f}×"
    assert rows["wide BiLSTM p90-int8"]["transforms"] == "prune 90% → int8"
    assert (run / "accuracy_vs_size_on_disk.png").is_file()
    assert "](accuracy_vs_size_on_disk.png)" in md
    # the size-curve panels are for trained ensembles only
    assert "ens-c" not in md.split("## Ensemble size curve", 1)[1].split("## Ensemble diversity", 1)[0]


def test_finished_compress_arms_are_reused_until_their_source_changes(
    study: tuple[StudyConfig, Path], tmp_path: Path
) -> None:
    config, run = study
    assert all((run / a.name / "result.json").is_file() for a in config.arms)
    before = {a.name: (run / a.name / "result.json").stat().st_mtime_ns for a in config.arms}
    run_study(config)  # everything finished: nothing is redone
    assert before == {a.name: (run / a.name / "result.json").stat().st_mtime_ns for a in config.arms}
    raw = json.loads((run / "study.json").read_text())
    changed = copy.deepcopy(raw)
    changed["arms"][0]["learner"]["epochs"] = 2
    new = parse_study(changed)
    for arm in new.arms:
        same = new.arm_fingerprint(arm) == config.arm_fingerprint(config.arm(arm.name))
        from_wide = arm.name == "wide" or (arm.arm_type == "compress" and arm.spec.source == "wide")
        assert same != from_wide, arm.name


def test_a_compress_arm_needs_its_source_run_first(tmp_path: Path) -> None:
    config = parse_study(_raw(tmp_path))
    with pytest.raises(ConfigError, match=r"arm wide-c-p50: is made from arm wide, .* run it first \(--arm wide\)"):
        run_study(config, arms=["wide-c-p50"])
    assert not (tmp_path / "run" / "wide-c-p50").exists()


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        ({"name": "c", "compress": {"from": "nope", "sparsity": [0.5]}}, "compress.from 'nope' is not the name"),
        ({"name": "c", "compress": {"from": "wide"}}, "give either steps (one arm) or sparsity"),
        (
            {"name": "c", "compress": {"from": "wide", "sparsity": [0.5], "steps": [{"transform": "quantize_int8"}]}},
            "give either steps",
        ),
        ({"name": "c", "compress": {"from": "wide", "sparsity": [1.0]}}, "levels must lie in [0, 1)"),
        ({"name": "c", "compress": {"from": "wide", "steps": [{"transform": "prune", "sparsity": 2}]}}, "steps[0]"),
        ({"name": "c", "compress": {"from": "wide", "steps": [{"transform": "melt"}]}}, "steps[0]"),
        (
            {"name": "c", "learner": TINY_BILSTM, "compress": {"from": "wide", "sparsity": [0.5]}},
            "arms[1]: Value error, an arm has exactly one of the blocks learner, compress, majority",
        ),
        ({"name": "c"}, "an arm has exactly one of the blocks"),
        ({"name": "c", "compres": {"from": "wide", "sparsity": [0.5]}}, "arms[1].compres: unknown setting"),
        ({"name": "wide-c", "compress": {"from": "wide", "sparsity": [0.5]}}, None),
        ({"name": "c", "compress": {"from": "wide", "sparsity": [0.5], "source": "x"}}, "compress.source: unknown"),
    ],
)
def test_bad_compress_arms_are_named(arm: dict[str, Any], message: str | None, tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["arms"] = [raw["arms"][0], arm]
    if message is None:
        parse_study(raw)  # a good one, for contrast
        return
    with pytest.raises(ConfigError) as err:
        parse_study(raw)
    assert message in str(err.value), str(err.value)


def test_a_sweep_name_taken_by_another_arm_is_refused(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["arms"].append({"name": "wide-c-p50", "learner": TINY_BILSTM})
    with pytest.raises(ConfigError, match="'wide-c-p50' is made by a sweep"):
        parse_study(raw)


def test_a_compress_arm_from_a_later_arm_is_refused(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["arms"].insert(0, {"name": "early", "compress": {"from": "wide", "sparsity": [0.5]}})
    with pytest.raises(ConfigError, match="'wide' is not the name of an earlier arm"):
        parse_study(raw)


def test_only_a_compressible_kind_can_be_a_source() -> None:
    from sizewise.config import ArmConfig

    arm = ArmConfig(name="x", majority={})
    assert arm.kind == "majority"
    with pytest.raises(ValueError, match="'majority' learner, which cannot be compressed"):
        StudyConfig.model_validate(
            {
                "name": "s",
                "data": {"train": "a", "test": "b"},
                "arms": [arm, {"name": "c", "compress": {"from": "x", "sparsity": [0.5]}}],
            }
        )


def test_a_compressed_model_costs_its_source_training_too(study: tuple[StudyConfig, Path]) -> None:
    _, run = study
    results = load_results(run)
    by_arm = {r.arm: r for r in results}
    key = "train_energy_kwh"
    p50, wide = by_arm["wide-c-p50"], by_arm["wide"]
    assert wide.cost.train_energy_kwh is not None and p50.cost.train_energy_kwh is not None
    assert cumulative_cost(wide, by_arm, key) == wide.cost.train_energy_kwh
    assert cumulative_cost(p50, by_arm, key) == pytest.approx(wide.cost.train_energy_kwh + p50.cost.train_energy_kwh)
    assert cumulative_cost(p50, by_arm, "no_such_cost") is None
    # the verdict's energy ratios use it: with the fake tracker every arm spends the same, so a compress
    # arm costs twice what a trained arm does, whichever of them is the most accurate
    lines = " ".join(verdict(results))
    best = max(results, key=lambda r: r.metrics.accuracy)
    if best.arm_type == "compress":
        assert f"{wide.description} is" in lines and "2.0× less training energy" in lines
    else:
        assert "2.0× more training energy" in lines


def test_a_sweep_can_recover_after_pruning(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["arms"] = [
        raw["arms"][0],
        {"name": "r", "compress": {"from": "wide", "sparsity": [0.5], "int8": [True], "recover_epochs": 2,
                                   "recover_pairs": 40}},
    ]  # fmt: skip
    (arm,) = parse_study(raw).arms[1:]
    assert arm.name == "r-p50-int8"
    assert arm.spec.steps == [
        {"transform": "prune", "sparsity": 0.5, "method": "global_magnitude"},
        {"transform": "recover", "epochs": 2, "pairs": 40},
        {"transform": "quantize_int8"},
    ]


def test_compress_arms_are_timed_side_by_side_with_their_source(
    study: tuple[StudyConfig, Path], tmp_path: Path
) -> None:
    config, run = study
    copied = tmp_path / "run"
    shutil.copytree(run, copied)
    measured = measure_speed(config, output=copied, arms=["wide-c-p50-int8", "ens-c-p70-int8"], rounds=2, pairs=16)
    assert list(measured) == ["wide-c-p50-int8", "ens-c-p70-int8"]
    write_report(copied)
    results = {r.arm: r for r in load_results(copied)}
    for name, source in [("wide-c-p50-int8", "wide"), ("ens-c-p70-int8", "ens")]:
        side = results[name].cost.speed_vs_source
        assert side is not None and side == measured[name]  # returned as written
        assert side.source == source and side.rounds == 2 and side.pairs == 16 and side.isolated
        lo, hi = side.range
        assert 0 < lo <= side.ratio <= hi
        assert set(side.medians) == {name, source} and side.medians[source]["pairs_per_s"] > 0
    assert results["wide-c-p50"].cost.speed_vs_source is None  # only the arms asked for
    # the report marks the side-by-side speed-ups; the others still divide the arms' own throughputs
    md = (copied / "report.md").read_text()
    table = _rows_by_arm(_md_tables(md)[len(_md_tables(md.split("## Compression", 1)[0]))])
    ratio = measured["wide-c-p50-int8"].ratio
    assert table[results["wide-c-p50-int8"].description]["speed-up"] == f"{ratio:.2f}× ‡"
    other = results["wide-c-p50"].cost.inference_pairs_per_s / results["wide"].cost.inference_pairs_per_s
    assert table[results["wide-c-p50"].description]["speed-up"] == f"{other:.2f}×"
    # through the command line
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(json.loads((run / "study.json").read_text())), encoding="utf-8")
    proc = run_cli("study", "speed", str(study_file), "--out", str(copied), "--arm", "wide-c-int8", "--rounds", "1")
    assert "wide-c-int8: " in proc.stdout and " the pairs/s of wide, 1 rounds" in proc.stdout
    assert json.loads((copied / "wide-c-int8" / "result.json").read_text())["cost"]["speed_vs_source"]["rounds"] == 1


def test_side_by_side_runs_each_model_in_a_worker_of_its_own(study: tuple[StudyConfig, Path]) -> None:
    config, run = study
    test = load_study_test(config)
    runs = side_by_side({"a": run / "wide" / "model", "b": run / "wide-c-int8" / "model"}, test, rounds=3, pairs=8)
    assert {k: len(v) for k, v in runs.items()} == {"a": 3, "b": 3}
    pids = {k: {r["pid"] for r in v} for k, v in runs.items()}
    assert len(pids["a"]) == len(pids["b"]) == 1 and pids["a"] != pids["b"]  # one worker each, all rounds
    assert os.getpid() not in pids["a"] | pids["b"]
    assert all(r["pairs"] == 8 and r["pairs_per_s"] > 0 and r["latency_p50_ms"] > 0 for v in runs.values() for r in v)


def test_a_model_that_cannot_be_timed_is_named(study: tuple[StudyConfig, Path], tmp_path: Path) -> None:
    config, run = study
    with pytest.raises(SpeedError, match=r"^measuring the speed of broken failed: .*learner\.json") as info:
        side_by_side({"fine": run / "wide" / "model", "broken": tmp_path}, load_study_test(config), rounds=1, pairs=4)
    assert "\n" not in str(info.value)


def test_speed_needs_the_arms_run_first(tmp_path: Path) -> None:
    config = parse_study(_raw(tmp_path))
    with pytest.raises(ConfigError, match=r"arm wide-c-p50: no result and model in .*; run it first"):
        measure_speed(config, arms=["wide-c-p50"], rounds=1)
    with pytest.raises(ConfigError, match="no compress arm to measure among wide"):
        measure_speed(config, arms=["wide"], rounds=1)
    seeded = parse_study({**_raw(tmp_path), "seeds": [0, 1]})
    with pytest.raises(ConfigError, match="arm wide-c-p50: trains once per seed; study speed times arms trained once"):
        measure_speed(seeded, arms=["wide-c-p50"], rounds=1)


def test_speed_needs_the_source_model(study: tuple[StudyConfig, Path], tmp_path: Path) -> None:
    config, run = study
    copied = tmp_path / "run"
    shutil.copytree(run, copied)
    shutil.rmtree(copied / "wide" / "model")
    with pytest.raises(ConfigError, match=r"arm wide: no result and model in .*; run it first"):
        measure_speed(config, output=copied, arms=["wide-c-int8"], rounds=1)
