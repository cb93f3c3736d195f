"""Transfer arms: a source trained on its own pairs (another scheme), its head kept, collapsed or new."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import TINY_BILSTM, TINY_TRANSFORMER, keyword_pairs
from sizewise.arms.lineage import cumulative_cost
from sizewise.arms.transfer import adapt_head, head_layers
from sizewise.config import parse_study
from sizewise.data.labels import SCHEMES
from sizewise.data.pairs import PairData
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
    ((_, _, old),) = head_layers(learner.network_, 3)
    w, b = old.weight.detach().clone(), old.bias.detach().clone()
    assert adapt_head(learner, SCHEMES["binary"], "auto", seed=0) == "collapse"
    ((_, _, new),) = head_layers(learner.network_, 2)
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
