"""The registry of compression transforms: a transform added in one place (here, inside a test) is
parsed, applied, saved and loaded like the built-in ones; names are unique; steps have report labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from pydantic import Field

from conftest import TINY_BILSTM, assert_round_trip, keyword_pairs
from sizewise.builtins import TRANSFORMS, import_all
from sizewise.compress import compress, prune, quantize_dynamic_int8, step_label
from sizewise.compress.transforms import (
    TRANSFORM_REGISTRY,
    Step,
    get_transform,
    misplaced_final_step,
    parse_step,
    register_transform,
    transform_names,
)
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.learners import create_learner, load_learner
from sizewise.learners.network import NetworkLearner


class MarkStep(Step):
    """A throw-away transform: changes no weight, records that it ran."""

    transform: Literal["mark"] = Field("mark", description="The transform: a mark in the records.")
    note: str = Field("here", description="Written into the record.")


class SealStep(Step):
    """A throw-away final transform: nothing may follow it."""

    transform: Literal["seal"] = Field("seal", description="The transform: the model is sealed.")


def _mark(learner: NetworkLearner, step: MarkStep, train: PairData | None) -> dict[str, Any]:
    weights = sum(p.numel() for p in learner.network_.parameters())
    return {
        "transform": "mark",
        "note": step.note,
        "weights": weights,
        "trained_on": None if train is None else len(train),
    }


def _seal(learner: NetworkLearner, step: SealStep, train: PairData | None) -> dict[str, Any]:
    return {"transform": "seal"}


@pytest.fixture
def throwaway() -> Iterator[None]:
    """``mark`` and ``seal`` registered for one test, then removed."""
    register_transform("mark", MarkStep, label=lambda step: f"mark {step.note}")(_mark)
    register_transform("seal", SealStep, label=lambda step: "sealed", final="sealed")(_seal)
    yield
    TRANSFORM_REGISTRY.pop("mark")
    TRANSFORM_REGISTRY.pop("seal")


@pytest.fixture(scope="module")
def train() -> PairData:
    return keyword_pairs(48)


@pytest.fixture(scope="module")
def bilstm(train: PairData) -> Any:
    return create_learner(TINY_BILSTM).fit(train)


def test_a_registered_transform_runs_through_compress(
    throwaway: None, bilstm: Any, train: PairData, tmp_path: Path
) -> None:
    marked = compress(bilstm, [{"transform": "prune", "sparsity": 0.5}, {"transform": "mark", "note": "x"}], train)
    assert [r["transform"] for r in marked.transforms_] == ["prune", "mark"]
    assert marked.transforms_[-1] == {
        "transform": "mark",
        "note": "x",
        "weights": sum(p.numel() for p in bilstm.network_.parameters()),
        "trained_on": len(train),
    }
    np.testing.assert_array_equal(marked.predict_proba(train), prune(bilstm, 0.5).predict_proba(train))
    loaded = assert_round_trip(marked, train, tmp_path / "marked")
    assert loaded.config.steps[-1] == MarkStep(note="x")
    assert loaded.transforms_ == marked.transforms_


def test_a_registered_transform_runs_in_a_compressed_spec(throwaway: None, train: PairData, tmp_path: Path) -> None:
    spec = {"kind": "compressed", "base": TINY_BILSTM, "steps": [{"transform": "mark"}, {"transform": "quantize_int8"}]}
    learner = create_learner(spec).fit(train)
    assert [r["transform"] for r in learner.transforms_] == ["mark", "quantize_int8"]
    assert learner.config.model_dump()["steps"][0] == {"transform": "mark", "note": "here"}
    assert_round_trip(learner, train, tmp_path / "model")
    assert load_learner(tmp_path / "model").transforms_[0]["note"] == "here"


def test_a_registered_transforms_settings_are_checked(throwaway: None) -> None:
    with pytest.raises(ConfigError, match="mark: colour: unknown setting"):
        parse_step({"transform": "mark", "colour": "red"})
    with pytest.raises(ConfigError, match=r"learner\.steps\[1\]\.mark\.note: Input should be a valid string"):
        create_learner(
            {
                "kind": "compressed",
                "base": TINY_BILSTM,
                "steps": [{"transform": "prune", "sparsity": 0.1}, {"transform": "mark", "note": 3}],
            }
        )
    with pytest.raises(ConfigError, match="expected tags: 'prune', .*'recover', 'mark', 'seal'"):
        parse_step({"transform": "melt"})


def test_a_final_transform_must_come_last(throwaway: None, bilstm: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"steps: seal must be the last step \(a sealed model takes no further step\)"
    ):
        create_learner(
            {"kind": "compressed", "base": TINY_BILSTM, "steps": [{"transform": "seal"}, {"transform": "mark"}]}
        )
    sealed = compress(bilstm, [{"transform": "seal"}])
    with pytest.raises(ConfigError, match="mark: the model is already sealed; mark must come before it"):
        compress(sealed, [{"transform": "mark"}])
    assert misplaced_final_step([parse_step({"transform": "mark"}), parse_step({"transform": "seal"})]) is None


def test_int8_is_final(bilstm: Any) -> None:
    assert get_transform("quantize_int8").final == "quantized"
    assert not any(get_transform(name).final for name in ("prune", "prune_structured", "prune_heads", "recover"))
    with pytest.raises(ConfigError, match="prune: the model is already quantized; prune must come before it"):
        compress(quantize_dynamic_int8(bilstm), [{"transform": "prune", "sparsity": 0.5}])


def test_a_name_is_registered_once() -> None:
    step = get_transform("prune").step_cls
    with pytest.raises(
        ValueError, match=r"transform 'prune' is already registered by sizewise\.compress\.unstructured"
    ):
        register_transform("prune", step, label=str)(_mark)
    with pytest.raises(ValueError, match="MarkStep.transform must default to 'stamp'"):
        register_transform("stamp", MarkStep, label=str)
    assert "stamp" not in TRANSFORM_REGISTRY


def test_built_in_transforms_register_themselves_where_builtins_says() -> None:
    import_all(TRANSFORMS)
    assert set(TRANSFORMS) <= set(TRANSFORM_REGISTRY)
    for name, module in TRANSFORMS.items():
        assert get_transform(name).apply.__module__ == module
    assert transform_names()[: len(TRANSFORMS)] == list(TRANSFORMS)
    with pytest.raises(KeyError):
        get_transform("melt")


@pytest.mark.parametrize(
    ("step", "label"),
    [
        ({"transform": "prune", "sparsity": 0.5}, "prune 50%"),
        ({"transform": "prune", "sparsity": 0.9, "method": "layer_magnitude"}, "prune 90%"),
        ({"transform": "prune_structured", "fraction": 0.25}, "prune units 25%"),
        ({"transform": "prune_heads", "fraction": 0.5}, "prune heads 50%"),
        ({"transform": "recover"}, "recover 1 ep"),
        ({"transform": "recover", "epochs": 3, "pairs": 100}, "recover 3 ep"),
        ({"transform": "quantize_int8"}, "int8"),
        ({"transform": "quantize_int8", "backend": "onnxruntime", "fuse": True}, "int8"),
        ({"transform": "distill"}, "distill"),  # unknown here: its name
        ({"transform": "prune"}, "prune"),  # settings that do not parse: its name
    ],
)
def test_step_labels(step: dict[str, Any], label: str) -> None:
    assert step_label(step) == label


def test_a_step_model_has_a_label_too(throwaway: None) -> None:
    assert step_label(MarkStep(note="x")) == "mark x"
    assert step_label(parse_step({"transform": "prune", "sparsity": 0.3})) == "prune 30%"


def test_the_throwaway_transform_changes_no_weight(throwaway: None, bilstm: Any) -> None:
    marked = compress(bilstm, [{"transform": "mark"}])
    for (name, before), (_, after) in zip(
        bilstm.network_.state_dict().items(), marked.base_.network_.state_dict().items(), strict=True
    ):
        assert torch.equal(before, after), name
