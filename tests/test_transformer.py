"""The transformer learner on a tiny local BERT (nothing downloads), and once on the packaged MiniLM."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TINY_TRANSFORMER, build_tiny_bert, dozen_pairs
from sizewise.compress import compress
from sizewise.data.io import read_pairs
from sizewise.errors import ConfigError, ModelError
from sizewise.learners import create_learner, load_learner
from sizewise.learners.training import length_bucketed_batches
from sizewise.learners.transformer import (
    TransformerLearner,
    adapter_is_merged,
    default_target_modules,
    resolve_model,
)
from sizewise.learners.transformer import learner as transformer_learner_module


def _learner(model: Path, **settings: Any) -> TransformerLearner:
    learner = create_learner({**TINY_TRANSFORMER, "model": str(model), **settings})
    assert isinstance(learner, TransformerLearner)
    return learner


def _plain_peft_proba(base: Path, adapter: Path, data: Any) -> np.ndarray:
    """Probabilities from the saved adapter loaded with transformers + peft only (no sizewise)."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=data.scheme.num_labels)
    model = PeftModel.from_pretrained(model, adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    batch = tokenizer(data.premises, data.hypotheses, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**batch).logits.float(), dim=1).numpy()


@pytest.mark.parametrize("mode", ["full", "lora", "ia3"])
def test_fit_save_load_gives_identical_probabilities(mode: str, tiny_bert: Path, tmp_path: Path) -> None:
    data = dozen_pairs()
    learner = _learner(tiny_bert, mode=mode, epochs=3, patience=1)
    assert learner.fit(data, data) is learner
    assert 1 <= len(learner.history_) <= 3
    assert {"train_loss", "train_accuracy", "seconds", "pairs_per_s", "dev_accuracy"} <= set(learner.history_[0])
    proba = learner.predict_proba(data)
    # restore_best: the model kept is the one of the best dev epoch.
    best = max(r["dev_accuracy"] for r in learner.history_)
    assert (proba.argmax(1) == data.labels).mean() == pytest.approx(best)

    learner.save(tmp_path / "model")
    names = sorted(p.name for p in (tmp_path / "model").iterdir())
    weights = "model.safetensors" if mode == "full" else "adapter_model.safetensors"
    assert weights in names and "learner.json" in names and "tokenizer.json" in names
    assert all(n.endswith((".json", ".safetensors")) for n in names), names
    loaded = load_learner(tmp_path / "model")
    np.testing.assert_allclose(loaded.predict_proba(data), proba, rtol=0, atol=1e-6)
    assert loaded.parameter_count() == learner.parameter_count()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a transformers API deprecated in v5
@pytest.mark.parametrize("pooler", [True, False], ids=["with-pooler", "without-pooler"])
def test_saved_adapter_loads_with_plain_peft(pooler: bool, tiny_bert: Path, tmp_path: Path) -> None:
    # A checkpoint without a pooler gets a fresh one, which must be trained and saved like the head.
    base = tiny_bert if pooler else build_tiny_bert(tmp_path / "no_pooler", pooler=False)
    data = dozen_pairs()
    learner = _learner(base).fit(data)
    assert ("bert.pooler" in learner.modules_to_save_) is not pooler
    learner.save(tmp_path / "adapter")
    np.testing.assert_allclose(
        _plain_peft_proba(base, tmp_path / "adapter", data), learner.predict_proba(data), rtol=0, atol=1e-5
    )


@pytest.mark.filterwarnings("ignore::FutureWarning")  # peft calls a transformers API deprecated in v5
@pytest.mark.parametrize("mode", ["lora", "ia3"])
def test_adapter_is_merged_for_prediction_and_still_saved_as_an_adapter(
    mode: str, tiny_bert: Path, tmp_path: Path
) -> None:
    data = dozen_pairs()
    learner = _learner(tiny_bert, mode=mode, epochs=2).fit(data)
    assert not adapter_is_merged(learner.network_)
    value = learner.network_.base_model.model.bert.encoder.layer[0].attention.self.value
    frozen = value.base_layer.weight.detach().clone()
    # The adapter applied beside the frozen weights, as in training:
    beside = learner.predict_encoded(learner.encode(data))
    learner.save(tmp_path / "before")
    merged = learner.predict_proba(data)
    assert adapter_is_merged(learner.network_)
    np.testing.assert_allclose(merged, beside, rtol=0, atol=1e-5)
    # Saving after prediction writes the same adapter, which loads with plain peft.
    learner.save(tmp_path / "after")
    name = "adapter_model.safetensors"
    assert (tmp_path / "after" / name).read_bytes() == (tmp_path / "before" / name).read_bytes()
    np.testing.assert_allclose(_plain_peft_proba(tiny_bert, tmp_path / "after", data), merged, rtol=0, atol=1e-5)
    # Compressing a learner whose adapter is merged folds it in once, not twice.
    folded = value.base_layer.weight.detach().clone()
    assert not torch.allclose(folded, frozen)
    plain = compress(learner, [{"transform": "prune", "sparsity": 0.0}])
    torch.testing.assert_close(plain.base_.network_.bert.encoder.layer[0].attention.self.value.weight, folded)
    np.testing.assert_allclose(plain.predict_proba(data), merged, rtol=0, atol=1e-5)


def test_lora_parameter_accounting(tiny_bert: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    learner = _learner(tiny_bert, lora_r=2, epochs=1).fit(dozen_pairs())
    counts = learner.parameter_count()
    base = sum(
        p.numel() for p in AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=3).parameters()
    )
    lora = 2 * 2 * 2 * (16 + 16)  # layers x (query, value) x r x (in + out)
    head = 16 * 3 + 3
    assert counts == {"total": base + lora, "trainable": lora + head}
    assert learner.target_modules_ == ["query", "value"]
    assert "classifier" in learner.modules_to_save_


def test_head_and_adapter_weights_change_in_lora_training(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: dict[str, torch.Tensor] = {}
    build = TransformerLearner._build

    def spy(self: TransformerLearner, scheme: Any) -> None:
        build(self, scheme)
        built.update({n: p.detach().clone() for n, p in self.network_.named_parameters()})

    monkeypatch.setattr(TransformerLearner, "_build", spy)
    learner = _learner(tiny_bert, epochs=2).fit(dozen_pairs())
    after = dict(learner.network_.named_parameters())
    changed = {n for n, p in after.items() if not torch.equal(p.detach(), built[n])}
    assert any("classifier.modules_to_save" in n for n in changed), "the classifier head was not trained"
    assert any("lora_B" in n for n in changed)
    assert not any("classifier.original_module" in n or "word_embeddings" in n for n in changed)
    assert all(after[n].requires_grad for n in changed)


def test_gradient_accumulation_and_max_steps(tiny_bert: Path) -> None:
    learner = _learner(tiny_bert, mode="full", batch_size=2, gradient_accumulation=2, epochs=5, max_steps=2)
    learner.fit(dozen_pairs("binary"))
    assert len(learner.history_) == 1 and learner.history_[0]["steps"] == 2
    assert learner.predict_proba(dozen_pairs("binary")).shape == (12, 2)


def test_longest_first_batches_cover_every_pair_once_and_shrink_within_each_pool() -> None:
    lengths = np.random.default_rng(1).integers(3, 60, 1000)
    batches = length_bucketed_batches(lengths, 8, np.random.default_rng(0), "longest_first")
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) == 8 for b in batches)
    pools = [batches[i : i + 50] for i in range(0, len(batches), 50)]  # 50 batches per pool
    assert len(pools) == 3
    for pool in pools:
        longest = [int(lengths[b].max()) for b in pool]
        assert longest == sorted(longest, reverse=True)
        assert max(lengths[b].max() - lengths[b].min() for b in pool) <= 6  # lengths 3-59 span 56: similar ones share
    shuffled = length_bucketed_batches(lengths, 8, np.random.default_rng(0), "random")
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(1000))
    first = [int(lengths[b].max()) for b in shuffled[:50]]
    assert first != sorted(first, reverse=True) and first != sorted(first)
    with pytest.raises(ValueError, match="order must be"):
        length_bucketed_batches(lengths, 8, np.random.default_rng(0), "shortest_first")


@pytest.mark.parametrize("order", [None, "longest_first"])
def test_batch_order_reaches_the_training_loop(
    order: str | None, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def spy(lengths: np.ndarray, batch_size: int, rng: np.random.Generator, how: str = "random") -> list[np.ndarray]:
        seen.append(how)
        return length_bucketed_batches(lengths, batch_size, rng, how)

    monkeypatch.setattr(transformer_learner_module, "length_bucketed_batches", spy)
    settings = {} if order is None else {"batch_order": order}
    _learner(tiny_bert, mode="full", epochs=2, **settings).fit(dozen_pairs())
    assert seen == [order or "random"] * 2
    with pytest.raises(ConfigError, match="batch_order"):
        _learner(tiny_bert, batch_order="shortest_first")


def test_default_target_modules_per_architecture() -> None:
    assert default_target_modules("bert") == ["query", "value"]
    assert default_target_modules("roberta") == ["query", "value"]
    assert default_target_modules("deberta-v2") == ["query_proj", "value_proj"]
    assert set(default_target_modules("bert", "ia3")) >= {"key", "value"}
    with pytest.raises(ConfigError, match="no default for architecture 'no-such-arch'"):
        default_target_modules("no-such-arch")


def test_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model folder .* does not exist"):
        create_learner({"kind": "transformer", "model": str(tmp_path / "nope")})


def test_folder_that_is_no_model_is_a_model_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model\n", encoding="utf-8")
    learner = _learner(tmp_path)
    with pytest.raises(ModelError, match="could not load"):
        learner.fit(dozen_pairs())


def test_packaged_minilm_is_found() -> None:
    assert (Path(resolve_model("minilm")) / "config.json").is_file()


@pytest.mark.slow
def test_minilm_lora_end_to_end(tiny_tsv: Path, tmp_path: Path) -> None:
    """The packaged all-MiniLM-L6-v2 with LoRA on 64 SNLI pairs: one epoch of two batches of 32."""
    train = read_pairs(tiny_tsv / "train.tsv").subset(range(64))
    test = read_pairs(tiny_tsv / "test.tsv").subset(range(16))
    learner = create_learner(
        {"kind": "transformer", "model": "minilm", "mode": "lora", "epochs": 1, "batch_size": 32, "device": "cpu"}
    )
    learner.fit(train, test)
    record = learner.history_[0]
    assert record["pairs_per_s"] > 0 and 0 <= record["dev_accuracy"] <= 1
    counts = learner.parameter_count()
    assert counts["total"] > 22_000_000 and counts["trainable"] < counts["total"] / 50
    proba = learner.predict_proba(test)
    assert proba.shape == (16, 3)
    learner.save(tmp_path / "minilm")
    assert (tmp_path / "minilm" / "adapter_model.safetensors").stat().st_size < 2_000_000
    np.testing.assert_allclose(load_learner(tmp_path / "minilm").predict_proba(test), proba, rtol=0, atol=1e-5)


def test_adapter_without_its_base_model_is_a_model_error(tiny_bert: Path, tmp_path: Path) -> None:
    base = build_tiny_bert(tmp_path / "base")
    _learner(base, epochs=1).fit(dozen_pairs()).save(tmp_path / "adapter")
    shutil.rmtree(base)
    with pytest.raises(ModelError, match="base model .* is not available"):
        load_learner(tmp_path / "adapter")


def test_full_model_loads_without_its_base_model(tmp_path: Path) -> None:
    base = build_tiny_bert(tmp_path / "base")
    learner = _learner(base, mode="full", epochs=1).fit(dozen_pairs())
    learner.save(tmp_path / "model")
    shutil.rmtree(base)
    loaded = load_learner(tmp_path / "model")
    assert loaded.config == learner.config
    np.testing.assert_allclose(loaded.predict_proba(dozen_pairs()), learner.predict_proba(dozen_pairs()), atol=1e-6)


def test_settings_that_do_not_fit_together_are_config_errors(tiny_bert: Path) -> None:
    with pytest.raises(ConfigError, match="target_modules is for mode 'lora' or 'ia3'"):
        _learner(tiny_bert, mode="full", target_modules=["query"])
    with pytest.raises(ConfigError, match="fp16' needs a GPU"):
        _learner(tiny_bert, precision="fp16")


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_num_layers_keeps_the_first_layers(mode: str, tiny_bert: Path, tmp_path: Path) -> None:
    data = dozen_pairs()
    whole = _learner(tiny_bert, mode=mode, epochs=1).fit(data)
    cut = _learner(tiny_bert, mode=mode, epochs=1, num_layers=1).fit(data)
    layers = cut.network_.base_model.model.bert.encoder.layer if mode == "lora" else cut.network_.bert.encoder.layer
    assert len(layers) == 1 and cut.network_.config.num_hidden_layers == 1
    assert cut.parameter_count()["total"] < whole.parameter_count()["total"]
    proba = cut.predict_proba(data)
    cut.save(tmp_path / "cut")
    loaded = load_learner(tmp_path / "cut")
    assert loaded.parameter_count() == cut.parameter_count()
    np.testing.assert_allclose(loaded.predict_proba(data), proba, rtol=0, atol=1e-6)


def test_more_layers_than_the_model_has_is_a_config_error(tiny_bert: Path) -> None:
    with pytest.raises(ConfigError, match="num_layers: 5 asked for, but the model has 2 layers"):
        _learner(tiny_bert, num_layers=5).fit(dozen_pairs())
