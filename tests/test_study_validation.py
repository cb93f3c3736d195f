"""Study files that would fail late are refused early: arm names that collide with the run folder's
own files, sizes larger than the data (before anything is written), booleans given as sizes and
duplicate YAML keys; training on one pair or one label is warned about."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import DOZEN_ROWS, keyword_pairs
from sizewise.config import load_study, parse_study
from sizewise.errors import ConfigError
from sizewise.study import run_study


def _write_tsv(path: Path, n: int, seed: int) -> Path:
    data = keyword_pairs(n, seed=seed)
    rows = [f"{p}\t{h}\t{data.scheme.labels[y]}" for p, h, y in zip(data.premises, data.hypotheses, data.labels)]
    path.write_text("\n".join(["premise\thypothesis\tlabel", *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _write_tsv(tmp_path / "train.tsv", 24, 1)
    _write_tsv(tmp_path / "dev.tsv", 9, 3)
    _write_tsv(tmp_path / "test.tsv", 12, 2)
    return tmp_path


def _raw(**data: Any) -> dict[str, Any]:
    return {
        "name": "checks",
        "data": {"train": "train.tsv", "test": "test.tsv", **data},
        "evaluation": {"bootstrap_resamples": 100},
        "arms": [{"name": "majority", "majority": {}}],
    }


@pytest.mark.parametrize(
    "name", ["study.json", "report.md", "report.html", "confusion_matrices.png", "Notes.JSON", "..", ".hidden", "a/b"]
)
def test_an_arm_name_that_collides_with_the_run_folder_is_refused(name: str, folder: Path) -> None:
    raw = _raw()
    raw["arms"] = [{"name": name, "majority": {}}]
    with pytest.raises(ConfigError) as caught:
        parse_study(raw, "study.yaml", folder)
    assert "arms[0].name" in str(caught.value) and repr(name) in str(caught.value), str(caught.value)


CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "train_size": ({"train_size": 500}, ["data.train_size", "500", "24", "train.tsv"]),
    "test_size": ({"test_size": 100}, ["data.test_size", "100", "12", "test.tsv"]),
    "dev_size": ({"dev": "dev.tsv", "dev_size": 50}, ["data.dev_size", "50", "9", "dev.tsv"]),
    "held_out_dev": ({"dev_size": 24}, ["data.dev_size", "24", "train.tsv"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_size_larger_than_its_data_is_refused_before_anything_is_written(case: str, folder: Path) -> None:
    data, fragments = CASES[case]
    config = parse_study(_raw(**data), "study.yaml", folder)  # study check cannot see the data's size
    out = folder / "out"
    with pytest.raises(ConfigError) as caught:
        run_study(config, output=out, base=folder)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))
    assert not out.exists()


def test_an_arm_own_size_larger_than_its_data_is_refused(folder: Path) -> None:
    raw = _raw()
    raw["arms"] = [{"name": "majority", "majority": {}, "data": {"train": "dev.tsv", "train_size": 10}}]
    with pytest.raises(ConfigError, match=r"arm majority: data.train_size: 10 is more than the 9 pairs"):
        run_study(parse_study(raw, "study.yaml", folder), output=folder / "out", base=folder)
    assert not (folder / "out").exists()


@pytest.mark.parametrize(
    ("where", "value"),
    [("train_size", True), ("test_size", True), ("dev_size", False), ("train_sizes", [True, 8]), ("seeds", [True])],
)
def test_a_boolean_is_not_a_size_or_a_seed(where: str, value: Any, folder: Path) -> None:
    raw = _raw()
    if where == "seeds":
        raw["seeds"] = value
    else:
        raw["data"][where] = value
    with pytest.raises(ConfigError, match=where):
        parse_study(raw, "study.yaml", folder)


def test_duplicate_yaml_keys_are_refused_with_the_line(folder: Path) -> None:
    text = yaml.safe_dump(_raw(), sort_keys=False)
    path = folder / "study.yaml"
    path.write_text(text + "name: again\n", encoding="utf-8")
    line = len(text.splitlines()) + 1
    with pytest.raises(ConfigError) as caught:
        load_study(path)
    message = str(caught.value)
    assert f"{path} line {line}" in message and "'name'" in message and "line 1" in message, message


def test_yaml_merge_keys_still_work(folder: Path) -> None:
    path = folder / "study.yaml"
    path.write_text(
        "name: merged\ndata: {train: train.tsv, test: test.tsv}\n"
        "arms:\n  - &arm {name: a, majority: {}}\n  - <<: *arm\n    name: b\n",
        encoding="utf-8",
    )
    assert [a.name for a in load_study(path).arms] == ["a", "b"]


def test_duplicate_keys_in_a_learner_settings_file_are_refused(tmp_path: Path) -> None:
    from sizewise.cli import _parse_settings

    path = tmp_path / "learner.yaml"
    path.write_text("epochs: 2\nhidden_size: 8\nepochs: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 3.*'epochs' appears twice"):
        _parse_settings(None, path)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (DOZEN_ROWS[:1], "arm majority: trains on 1 pair, of only one label (entailment)"),
        ([r for r in DOZEN_ROWS if r[2] == "neutral"], "arm majority: trains on only one label (neutral)"),
    ],
)
def test_training_on_one_pair_or_one_label_is_warned_about(
    rows: list[tuple[str, str, str]], expected: str, folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = ["premise\thypothesis\tlabel", *("\t".join(r) for r in rows)]
    (folder / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="sizewise"):
        run_study(parse_study(_raw(), "study.yaml", folder), output=folder / "out", base=folder)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert expected in warnings, warnings
