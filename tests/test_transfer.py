"""Transfer arms: a source trained on its own pairs (another scheme), its head kept, collapsed or new."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TINY_BILSTM, TINY_TRANSFORMER, keyword_pairs
from sizewise.arms.lineage import cumulative_cost
from sizewise.arms.transfer import adapt_head
from sizewise.config import parse_study
from sizewise.data.labels import SCHEMES
from sizewise.data.pairs import PairData
from sizewise.data.sampling import draw_with_repeats, mixture_counts, mixture_weights
from sizewise.errors import ConfigError
from sizewise.learners.base import create_learner, load_learner
from sizewise.report.render import load_results, write_report
from sizewise.result import ArmResult
from sizewise.study import run_study
from test_report import _write_tsv

SOURCE: dict[str, Any] = {**TINY_BILSTM, "epochs": 6, "learning_rate": 0.01, "hidden_size": 16}


def _raw(folder: Path) -> dict[str, Any]:
    """A binary study (the keyword pairs read as entailment against the rest) whose first arm trains on
    3-class pairs of its own."""
    src = _write_tsv(folder / "source.tsv", keyword_pairs(90, seed=7))
    train = _write_tsv(folder / "train.tsv", keyword_pairs(30, seed=0))
    dev = _write_tsv(folder / "dev.tsv", keyword_pairs(30, seed=2))
    test = _write_tsv(folder / "test.tsv", keyword_pairs(60, seed=1))
    return {
        "name": "transfer",
        "output": str(folder / "run"),
        "data": {"train": str(train), "dev": str(dev), "test": str(test), "scheme": "binary"},
        "arms": [
            {"name": "direct", "learner": SOURCE},
            {
                "name": "src",
                "description": "on 3-class pairs",
                "learner": SOURCE,
                "data": {"train": str(src), "scheme": "nli3"},
            },
            {"name": "tr", "description": "src, then the study", "transfer": {"from": "src", "epochs": 2}},
            {"name": "tr-new", "transfer": {"from": "src", "epochs": 2, "head": "new"}},
        ],
    }


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("transfer")
    run = run_study(parse_study(_raw(folder)))
    write_report(run)
    return run


def test_a_source_on_its_own_pairs_is_scored_on_the_study_test_as_binary(transfer_run: Path) -> None:
    src = ArmResult.read(transfer_run / "src" / "result.json")
    assert src.data.train.rows == 90 and src.data.train.labels == {"entailment": 30, "neutral": 30, "contradiction": 30}
    assert src.data.scheme == "binary" and len(src.confusion_matrix) == 2
    assert src.data.dev is None
    assert src.predictions.y_true == ArmResult.read(transfer_run / "direct" / "result.json").predictions.y_true


def test_transfer_collapses_the_head_and_trains_on_the_study(transfer_run: Path) -> None:
    tr = ArmResult.read(transfer_run / "tr" / "result.json")
    assert tr.config.block["head_used"] == "collapse" and tr.config.block["from"] == "src"
    assert tr.data.train.rows == 30 and tr.data.train.labels == {"entailment": 10, "not_entailment": 20}
    assert len(tr.training.history or []) >= 1
    model = load_learner(transfer_run / "tr" / "model")
    assert model.labels_ == ("entailment", "not_entailment")
    new = ArmResult.read(transfer_run / "tr-new" / "result.json")
    assert new.config.block["head_used"] == "new"
    # the verdict's cost of a transfer arm includes its source's training
    by_arm = {r.arm: r for r in load_results(transfer_run)}
    total = cumulative_cost(by_arm["tr"], by_arm, "train_seconds")
    assert total == pytest.approx(by_arm["tr"].cost.train_seconds + by_arm["src"].cost.train_seconds)
    report = (transfer_run / "report.md").read_text()
    assert "## Transfer" in report and "src, then the study" in report and "← on 3-class pairs (90 pairs" in report


def test_collapse_starts_from_the_entailment_row_and_the_rest() -> None:
    learner = create_learner(SOURCE).fit(keyword_pairs(60, seed=0))
    ((_, _, old),) = learner.head_layers()
    w, b = old.weight.detach().clone(), old.bias.detach().clone()
    assert adapt_head(learner, SCHEMES["binary"], "auto", seed=0) == "collapse"
    ((_, _, new),) = learner.head_layers()
    assert torch.equal(new.weight[0], w[0]) and torch.allclose(new.weight[1], (w[1] + w[2]) / 2)
    assert float(new.bias[1].detach()) == pytest.approx(float(torch.logsumexp(b[1:], 0)))
    assert learner.scheme_.name == "binary"
    probs = learner.predict_proba(PairData.from_rows([("a b", "yes c", "entailment")], SCHEMES["binary"]))
    assert probs.shape == (1, 2) and probs.sum() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="head keep"):
        adapt_head(create_learner(SOURCE).fit(keyword_pairs(30, seed=0)), SCHEMES["binary"], "keep", seed=0)


def test_a_transformer_with_an_adapter_transfers_and_reloads(tmp_path: Path, tiny_bert: Path) -> None:
    raw = _raw(tmp_path)
    bert = {**TINY_TRANSFORMER, "epochs": 1}
    raw["arms"] = [
        {"name": "src", "learner": bert, "data": {"train": raw["arms"][1]["data"]["train"], "scheme": "nli3"}},
        {"name": "tr", "transfer": {"from": "src", "epochs": 1}},
    ]
    run = run_study(parse_study(raw))
    tr = ArmResult.read(run / "tr" / "result.json")
    assert tr.config.block["head_used"] == "collapse"
    model = load_learner(run / "tr" / "model")
    assert model.labels_ == ("entailment", "not_entailment")
    data = keyword_pairs(6, seed=4)
    binary = PairData.from_rows(
        [
            (p, h, "entailment" if y == 0 else "not_entailment")
            for p, h, y in zip(data.premises, data.hypotheses, data.labels)
        ],
        SCHEMES["binary"],
    )
    assert model.predict_proba(binary).shape == (6, 2)


def test_bad_transfer_settings(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["arms"][2]["transfer"]["from"] = "nobody"
    with pytest.raises(ConfigError, match="not the name of an earlier arm"):
        parse_study(raw)
    raw = _raw(tmp_path)
    raw["arms"].insert(0, {"name": "floor", "majority": {}})
    raw["arms"][3]["transfer"]["from"] = "floor"
    with pytest.raises(ConfigError, match="transfer needs a bilstm or transformer"):
        parse_study(raw)
    raw = _raw(tmp_path)
    raw["data"]["scheme"] = "nli3"
    raw["arms"][1]["data"]["scheme"] = "binary"
    with pytest.raises(ConfigError, match="a binary model cannot be scored"):
        parse_study(raw)


# -- multi-task mixtures -------------------------------------------------------------------------------


def test_mixture_counts_by_hand() -> None:
    sizes = {"big": 100, "small": 10}
    assert mixture_counts(sizes, mixture_weights(sizes, "proportional"), 110) == {"big": 100, "small": 10}
    # T = 2: weights 10 and 3.1623; 110 * 10 / 13.1623 = 83.57, 26.43 -> 83 + 26, the spare pair to 83.57
    assert mixture_counts(sizes, mixture_weights(sizes, "temperature", 2.0), 110) == {"big": 84, "small": 26}
    fixed = mixture_weights(sizes, "fixed", fixed={"big": 1, "small": 1})
    assert mixture_counts(sizes, fixed, 110) == {"big": 55, "small": 55}
    assert mixture_counts(sizes, fixed, 7) == {"big": 4, "small": 3}


def test_draw_with_repeats() -> None:
    rng = np.random.default_rng(0)
    idx = draw_with_repeats(10, 25, rng)
    counts = np.bincount(idx, minlength=10)
    assert len(idx) == 25 and counts.min() == 2 and counts.max() == 3 and (counts == 3).sum() == 5
    small = draw_with_repeats(10, 4, np.random.default_rng(1))
    assert len(set(small.tolist())) == 4


def test_a_mixture_of_a_3_class_and_a_binary_set_trains_one_arm(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["data"]["train"] = {"three": raw["arms"][1]["data"]["train"], "two": raw["data"]["train"]}
    raw["data"]["mixture"] = {"sampling": "fixed", "weights": {"three": 1, "two": 3}, "size": 80}
    raw["arms"] = [raw["arms"][0]]
    run = run_study(parse_study(raw))
    result = ArmResult.read(run / "direct" / "result.json")
    assert result.data.train.rows == 80
    assert result.data.train.source.startswith("20 of ") and " + 60 of " in result.data.train.source
    # the 3-class set was read as binary: 20 pairs, a third of them entailment in expectation
    assert set(result.data.train.labels) == {"entailment", "not_entailment"}


def test_bad_mixtures(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["data"]["mixture"] = {"sampling": "temperature"}
    with pytest.raises(ConfigError, match="needs several training sets"):
        parse_study(raw)
    raw = _raw(tmp_path)
    raw["data"]["train"] = {"a": raw["data"]["train"], "b": raw["data"]["dev"]}
    raw["data"]["mixture"] = {"sampling": "fixed", "weights": {"a": 1}}
    with pytest.raises(ConfigError, match="one weight per training set"):
        parse_study(raw)
    raw["data"]["mixture"] = {"sampling": "fixed"}
    with pytest.raises(ConfigError, match="fixed sampling needs them"):
        parse_study(raw)


def test_an_arm_trains_on_a_mixture_of_its_own(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    three = raw["arms"][1]["data"]["train"]
    raw["arms"] = [
        {
            "name": "mix",
            "learner": SOURCE,
            "data": {
                "train": {"three": three, "two": raw["data"]["train"]},
                "mixture": {"sampling": "temperature", "temperature": 2},
                "dev": raw["data"]["dev"],
                "scheme": "binary",
            },
        }
    ]
    run = run_study(parse_study(raw))
    result = ArmResult.read(run / "mix" / "result.json")
    # sizes 90 and 30 at T = 2: weights 9.487 and 5.477 of 120 pairs -> 76.08 and 43.92 -> 76 + 44
    assert result.data.train.rows == 120 and result.data.train.source.startswith("76 of ")
    assert result.data.dev is not None and result.data.dev.rows == 30
    raw["arms"][0]["data"]["mixture"] = {"sampling": "fixed", "weights": {"three": 1}}
    with pytest.raises(ConfigError, match="one weight per training set"):
        parse_study(raw)


def test_a_transferred_or_self_trained_model_can_be_compressed_and_transferred_again(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["arms"] += [
        {"name": "tr-c", "compress": {"from": "tr", "steps": [{"transform": "quantize_int8"}]}},
        {"name": "tr-tr", "transfer": {"from": "tr", "epochs": 1}},
    ]
    config = parse_study(raw)
    assert [a.name for a in config.arms][-2:] == ["tr-c", "tr-tr"]


def test_fine_tuning_a_transformer_that_predicted_trains_its_adapter(tiny_bert: Path) -> None:
    from sizewise.learners.training import fine_tune
    from sizewise.learners.transformer.loading import adapter_is_merged

    train = keyword_pairs(24, seed=0)
    learner = create_learner({**TINY_TRANSFORMER, "epochs": 1}).fit(train)
    learner.predict_proba(train)  # folds the adapter into the weights for prediction
    assert adapter_is_merged(learner.network_)
    lora = {n: p.detach().clone() for n, p in learner.network_.named_parameters() if "lora_" in n}
    assert lora
    fine_tune(learner, train, epochs=1, learning_rate=1e-2)
    assert not adapter_is_merged(learner.network_)
    moved = [n for n, p in learner.network_.named_parameters() if n in lora and not torch.equal(p.detach(), lora[n])]
    assert moved  # the adapter's own weights trained
