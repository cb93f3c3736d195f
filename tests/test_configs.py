"""Every shipped study file parses (litgpt's habit: a test reads every config we ship)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sizewise.compress.transforms import parse_step
from sizewise.config import load_study
from sizewise.learners import create_learner

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*ROOT.glob("configs/*.yaml"), *ROOT.glob("benchmarks/*.yaml")])


def test_there_are_shipped_configs() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SHIPPED}
    assert "configs/quickstart.yaml" in names
    assert any(n.startswith("benchmarks/") for n in names)


#: Model folders that benchmark studies read and a user assembles by hand first (see the study's comment).
FETCHED_MODELS = ("runs/models/mpnet-base",)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_config_parses(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # run from a folder where the hand-fetched model folders exist (empty: only their presence is checked)
    for folder in FETCHED_MODELS:
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    study = load_study(path)
    assert study.arms
    names = [arm.name for arm in study.arms]
    assert len(names) == len(set(names))
    for arm in study.arms:
        if arm.arm_type == "compress":  # made from an earlier arm's model, by transforms that parse
            assert arm.spec.source in names[: names.index(arm.name)]
            assert [parse_step(s) for s in arm.spec.steps or []]
        elif arm.arm_type == "learner":
            create_learner(arm.spec)  # every arm's learner spec builds (settings checked again)
