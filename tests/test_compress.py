"""Compression: pruning (unstructured, structured) and int8 quantization of fitted learners, saved
so that the size on disk is the size of the compression, and loaded back to identical predictions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_BILSTM, TINY_TRANSFORMER, assert_round_trip, dozen_pairs, keyword_pairs
from sizewise.compress import (
    CompressedLearner,
    compress,
    prune,
    prune_heads,
    prune_structured,
    quantize_dynamic_int8,
    read_state,
    recover,
)
from sizewise.compress.structured import HeadPruneStep
from sizewise.compress.transforms import apply_step
from sizewise.compress.unstructured import prunable_weights
from sizewise.ensembles.ensemble import EnsembleLearner
from sizewise.errors import ConfigError, ModelError
from sizewise.learners import create_learner, load_learner

PRUNE_THEN_INT8 = [{"transform": "prune", "sparsity": 0.5}, {"transform": "quantize_int8"}]


@pytest.fixture(scope="module")
def train() -> Any:
    return keyword_pairs(48)


@pytest.fixture(scope="module")
def bilstm(train: Any) -> Any:
    return create_learner(TINY_BILSTM).fit(train)


@pytest.fixture(scope="module")
def roomy_bilstm(train: Any) -> Any:
    """A BiLSTM whose matrices outweigh the file's header, for size-on-disk ratios."""
    return create_learner({**TINY_BILSTM, "hidden_size": 32, "mlp_hidden": 32}).fit(train)


@pytest.fixture(scope="module")
def transformers(tiny_bert: Path) -> dict[str, Any]:
    """Tiny BERTs fitted on the dozen: a full fine-tune and a LoRA adapter."""
    data = dozen_pairs()
    return {
        mode: create_learner({**TINY_TRANSFORMER, "model": str(tiny_bert), "mode": mode}).fit(data)
        for mode in ("full", "lora")
    }


@pytest.fixture(scope="module")
def ensemble(train: Any) -> Any:
    return create_learner({"kind": "ensemble", "n_learners": 2, "base": TINY_BILSTM}).fit(train)


def _zeros(model: nn.Module) -> tuple[int, int]:
    weights = [getattr(mod, name).detach() for mod, name in prunable_weights(model)]
    return sum(int((w == 0).sum()) for w in weights), sum(w.numel() for w in weights)


def _stored(folder: Path, include: Any) -> float:
    """Bytes the selected tensors take in ``compressed.safetensors``, over their float32 bytes."""
    _, layout = read_state(folder / "compressed.safetensors")
    chosen = [e for name, e in layout.items() if include(name)]
    assert chosen
    return sum(e["bytes"] for e in chosen) / sum(e["fp32_bytes"] for e in chosen)


def _matrix(name: str) -> bool:
    """Linear and LSTM weight matrices (not biases, not embeddings)."""
    return "weight" in name and "embedding" not in name and "LayerNorm" not in name


# --- unstructured pruning ------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_prune_bilstm_reaches_the_sparsity(sparsity: float, bilstm: Any, train: Any, tmp_path: Path) -> None:
    before = bilstm.predict_proba(train)
    pruned = prune(bilstm, sparsity)
    assert isinstance(pruned, CompressedLearner)
    zeros, total = _zeros(pruned.base_.network_)
    assert abs(zeros / total - sparsity) <= 1 / total
    (record,) = pruned.transforms_
    assert record["transform"] == "prune" and record["method"] == "global_magnitude"
    assert record["reached"] == pytest.approx(zeros / total, abs=1e-6)
    counts = pruned.parameter_count()
    assert counts["total"] == bilstm.parameter_count()["total"]
    assert counts["nonzero"] <= counts["total"] - zeros
    np.testing.assert_array_equal(bilstm.predict_proba(train), before)  # the original is untouched
    assert_round_trip(pruned, train, tmp_path / "pruned")


def test_layer_magnitude_prunes_every_matrix_alike(bilstm: Any) -> None:
    pruned = prune(bilstm, 0.5, method="layer_magnitude")
    for mod, name in prunable_weights(pruned.base_.network_):
        w = getattr(mod, name)
        assert abs(float((w == 0).float().mean()) - 0.5) <= 1 / w.numel(), name


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_prune_transformer(mode: str, transformers: dict[str, Any], tmp_path: Path) -> None:
    data = dozen_pairs()
    learner = transformers[mode]
    pruned = prune(learner, 0.4)
    zeros, total = _zeros(pruned.base_.network_)
    assert abs(zeros / total - 0.4) <= 1 / total
    steps = [r["transform"] for r in pruned.transforms_]
    assert steps == (["prune"] if mode == "full" else ["merge_adapter", "prune"])
    assert pruned.base_.config.mode == "full"
    assert learner.config.mode == mode  # the original keeps its adapter
    assert_round_trip(pruned, data, tmp_path / "pruned")


def test_merged_adapter_predicts_as_before(transformers: dict[str, Any]) -> None:
    data = dozen_pairs()
    merged = prune(transformers["lora"], 0.0)
    np.testing.assert_allclose(merged.predict_proba(data), transformers["lora"].predict_proba(data), atol=1e-6)


# --- structured pruning --------------------------------------------------------------------------


def test_prune_structured_bilstm_shrinks_the_matrices(bilstm: Any, train: Any, tmp_path: Path) -> None:
    small = prune_structured(bilstm, 0.5)
    net = small.base_.network_
    assert net.encoder.hidden_size == 4
    assert net.encoder.weight_ih_l0.shape == (16, 8) and net.encoder.weight_hh_l0_reverse.shape == (16, 4)
    assert net.classifier[0].weight.shape == (4, 8 * 4)
    assert net.classifier[3].weight.shape == (3, 4)
    assert small.base_.config.hidden_size == 4 and small.base_.config.mlp_hidden == 4
    (record,) = small.transforms_
    assert record["sizes"] == {"hidden_size": [8, 4], "mlp_hidden": [8, 4]}
    assert record["parameters"][1] < record["parameters"][0] == bilstm.parameter_count()["total"]
    assert small.parameter_count()["total"] == record["parameters"][1]
    loaded = assert_round_trip(small, train, tmp_path / "small")
    assert loaded.base_.network_.encoder.weight_hh_l0.shape == (16, 4)
    saved = json.loads((tmp_path / "small" / "base" / "learner.json").read_text())
    assert saved["config"]["hidden_size"] == 4


@torch.no_grad()
def _kill_units(net: nn.Module, dead: list[int]) -> None:
    """Zero every weight into and out of the hidden units ``dead`` (all layers, both directions) and
    of the MLP neurons ``dead``: such units output 0 always, so removing them changes nothing."""
    lstm, first, last = net.encoder, net.classifier[0], net.classifier[3]
    h = lstm.hidden_size
    for name, p in lstm.named_parameters():
        p[[g * h + j for g in range(4) for j in dead]] = 0  # the units' rows in the four gates
        if name.startswith("weight_hh"):
            p[:, dead] = 0  # what the units feed back
        if name.startswith("weight_ih_l1"):
            p[:, [d * h + j for d in range(2) for j in dead]] = 0  # what they feed the second layer
    for b in range(4):
        for d in range(2):
            first.weight[:, [b * 2 * h + d * h + j for j in dead]] = 0
    first.weight[dead] = 0
    first.bias[dead] = 0
    last.weight[:, dead] = 0


def test_structured_pruning_of_dead_units_is_exact(train: Any, tmp_path: Path) -> None:
    # Two layers, both directions: the unit bookkeeping across layers and into the MLP is checked
    # by removing units that contribute nothing, which must leave the predictions as they were.
    learner = create_learner({**TINY_BILSTM, "num_layers": 2}).fit(train)
    _kill_units(learner.network_, dead=[1, 6])
    before = learner.predict_proba(train)
    small = prune_structured(learner, 0.25)
    assert small.base_.network_.encoder.hidden_size == 6
    assert small.base_.network_.encoder.weight_ih_l1.shape == (24, 12)
    np.testing.assert_allclose(small.predict_proba(train), before, rtol=0, atol=1e-6)
    assert_round_trip(small, train, tmp_path / "small")


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_prune_structured_transformer_shrinks_the_feed_forward(
    mode: str, transformers: dict[str, Any], tmp_path: Path
) -> None:
    data = dozen_pairs()
    small = prune_structured(transformers[mode], 0.5)
    model = small.base_.network_
    for layer in model.bert.encoder.layer:
        assert layer.intermediate.dense.weight.shape == (16, 16)
        assert layer.output.dense.weight.shape == (16, 16)
    assert model.config.intermediate_size == 16
    assert small.transforms_[-1]["sizes"] == {"intermediate_size": [32, 16]}
    loaded = assert_round_trip(small, data, tmp_path / "small")
    assert loaded.base_.network_.bert.encoder.layer[1].intermediate.dense.out_features == 16


@torch.no_grad()
def test_structured_pruning_of_dead_neurons_is_exact(transformers: dict[str, Any]) -> None:
    data = dozen_pairs()
    learner = prune(transformers["full"], 0.0)  # a private copy to edit
    for layer in learner.base_.network_.bert.encoder.layer:
        dead = list(range(0, 32, 4))  # 8 of 32 neurons: GELU(0) = 0, so they add nothing
        layer.intermediate.dense.weight[dead] = 0
        layer.intermediate.dense.bias[dead] = 0
        layer.output.dense.weight[:, dead] = 0
    before = learner.predict_proba(data)
    small = prune_structured(learner, 0.25)
    assert small.base_.network_.config.intermediate_size == 24
    np.testing.assert_allclose(small.predict_proba(data), before, rtol=0, atol=1e-6)


# --- attention heads -----------------------------------------------------------------------------


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def _assert_one_head_left(model: nn.Module) -> None:
    """The tiny BERT (hidden 16, 2 heads of 8) cut to 1 head in each of its 2 layers."""
    assert model.config.num_attention_heads == 2 and model.config.sizewise_attention_heads == 1
    for layer in model.bert.encoder.layer:
        inner = layer.attention.self
        for proj in (inner.query, inner.key, inner.value):
            assert proj.out_features == 8 and proj.weight.shape == (8, 16) and proj.bias.shape == (8,)
        assert layer.attention.output.dense.in_features == 8 and layer.attention.output.dense.weight.shape == (16, 8)
        assert inner.num_attention_heads == 1 and inner.all_head_size == 8 and inner.attention_head_size == 8


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_prune_heads_shrinks_the_attention(mode: str, transformers: dict[str, Any], tmp_path: Path) -> None:
    data = dozen_pairs()
    learner = transformers[mode]
    small = prune_heads(learner, 0.5)
    model = small.base_.network_
    _assert_one_head_left(model)
    assert [r["transform"] for r in small.transforms_] == (
        ["prune_heads"] if mode == "full" else ["merge_adapter", "prune_heads"]
    )
    record = small.transforms_[-1]
    # per layer: 3 projections lose 8 rows of 16 weights + 8 biases, the output loses 8 columns of 16
    before = prune(learner, 0.0).parameter_count()["total"]  # merged, for the lora learner
    assert record == {
        "transform": "prune_heads",
        "fraction": 0.5,
        "sizes": {"attention_heads": [2, 1]},
        "layers": 2,
        "parameters": [before, before - 2 * (3 * (8 * 16 + 8) + 16 * 8)],
    }
    assert small.parameter_count()["total"] == record["parameters"][1]
    proba = small.predict_proba(data)
    assert proba.shape == (len(data), 3) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
    assert tuple(small.labels_) == tuple(learner.labels_) == ("entailment", "neutral", "contradiction")
    assert learner.config.mode == mode and learner.network_.config.num_attention_heads == 2  # the original as it was
    loaded = assert_round_trip(small, data, tmp_path / "small")
    _assert_one_head_left(loaded.base_.network_)
    assert _shapes(loaded.base_.network_) == _shapes(model)
    saved = json.loads((tmp_path / "small" / "base" / "config.json").read_text())
    assert saved["sizewise_attention_heads"] == 1 and saved["num_attention_heads"] == 2


@torch.no_grad()
def test_pruning_dead_heads_is_exact(transformers: dict[str, Any]) -> None:
    # A head whose query, key, value and output weights are all zero adds nothing: removing it must
    # leave the predictions as they were, which checks the rows / columns kept in every layer.
    data = dozen_pairs()
    learner = prune(transformers["full"], 0.0)  # a private copy to edit
    for layer, dead in zip(learner.base_.network_.bert.encoder.layer, (1, 0), strict=True):
        rows = slice(8 * dead, 8 * dead + 8)
        for proj in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
            proj.weight[rows] = 0
            proj.bias[rows] = 0
        layer.attention.output.dense.weight[:, rows] = 0
    before = learner.predict_proba(data)
    small = prune_heads(learner, 0.5)
    np.testing.assert_allclose(small.predict_proba(data), before, rtol=0, atol=1e-6)
    originals = transformers["full"].network_.bert.encoder.layer
    for layer, original, alive in zip(small.base_.network_.bert.encoder.layer, originals, (0, 1), strict=True):
        kept = slice(8 * alive, 8 * alive + 8)  # the live head's rows and columns, as they were
        assert torch.equal(layer.attention.self.value.weight, original.attention.self.value.weight[kept])
        assert torch.equal(layer.attention.output.dense.weight, original.attention.output.dense.weight[:, kept])


def test_prune_heads_then_int8_reloads(transformers: dict[str, Any], tmp_path: Path) -> None:
    from torch.ao.nn.quantized import dynamic as nnqd

    data = dozen_pairs()
    steps = [{"transform": "prune_heads", "fraction": 0.5}, {"transform": "quantize_int8"}]
    q = compress(transformers["full"], steps)
    query = q.base_.network_.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, nnqd.Linear) and query.weight().shape == (8, 16)
    reference = prune_heads(transformers["full"], 0.5).predict_proba(data)
    assert np.abs(q.predict_proba(data) - reference).max() < 0.02
    loaded = assert_round_trip(q, data, tmp_path / "int8")
    assert loaded.base_.network_.bert.encoder.layer[1].attention.output.dense.weight().shape == (16, 8)


def test_prune_heads_and_feed_forward_together_reload(transformers: dict[str, Any], tmp_path: Path) -> None:
    data = dozen_pairs()
    steps = [{"transform": "prune_heads", "fraction": 0.5}, {"transform": "prune_structured", "fraction": 0.5}]
    small = compress(transformers["lora"], steps)
    assert [r["transform"] for r in small.transforms_] == ["merge_adapter", "prune_heads", "prune_structured"]
    loaded = assert_round_trip(small, data, tmp_path / "both")
    model = loaded.base_.network_
    _assert_one_head_left(model)
    assert model.config.intermediate_size == 16 and model.bert.encoder.layer[0].intermediate.dense.out_features == 16
    assert _shapes(model) == _shapes(small.base_.network_)


def test_a_head_pruned_transformer_folder_reloads_and_names_missing_weights(
    transformers: dict[str, Any], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    data = dozen_pairs()
    base = prune_heads(transformers["full"], 0.5).base_  # a plain transformer learner, saved as such
    loaded = assert_round_trip(base, data, tmp_path / "plain")
    _assert_one_head_left(loaded.network_)
    weights = tmp_path / "plain" / "model.safetensors"
    state = load_file(str(weights))
    del state["classifier.weight"]
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"model\.safetensors lacks weights: classifier\.weight"):
        load_learner(tmp_path / "plain")


def test_prune_heads_is_for_bert_style_transformers(bilstm: Any, transformers: dict[str, Any]) -> None:
    from types import SimpleNamespace

    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    with pytest.raises(ConfigError, match="prune_heads: removes attention heads of transformer learners; a bilstm"):
        prune_heads(bilstm, 0.5)
    for fraction in (1.0, -0.1):
        with pytest.raises(ConfigError, match="prune_heads: fraction"):
            prune_heads(transformers["full"], fraction)
    config = DistilBertConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, hidden_dim=32, max_position_embeddings=16)
    other = SimpleNamespace(kind="transformer", network_=DistilBertForSequenceClassification(config))
    with pytest.raises(ConfigError, match="model type 'distilbert' has no BERT-style attention heads"):
        apply_step(other, HeadPruneStep(fraction=0.5))


# --- quantization --------------------------------------------------------------------------------


def test_quantized_bilstm_predicts_like_the_original(bilstm: Any, train: Any, tmp_path: Path) -> None:
    from torch.ao.nn.quantized import dynamic as nnqd

    q = quantize_dynamic_int8(bilstm)
    net = q.base_.network_
    assert isinstance(net.encoder, nnqd.LSTM)
    assert isinstance(net.classifier[0], nnqd.Linear) and isinstance(net.classifier[3], nnqd.Linear)
    assert tuple(q.labels_) == tuple(bilstm.labels_) == ("entailment", "neutral", "contradiction")
    for data in (train, dozen_pairs()):  # the dozen is mostly unknown words: the same inputs work
        proba, original = q.predict_proba(data), bilstm.predict_proba(data)
        assert proba.shape == original.shape
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-6)
        assert np.abs(proba - original).max() < 0.02
        assert (proba.argmax(1) == original.argmax(1)).mean() >= 0.9
    counts = q.parameter_count()
    assert counts["total"] == bilstm.parameter_count()["total"]
    assert counts["trainable"] == net.embedding.weight.numel()  # only the embedding is still float
    loaded = assert_round_trip(q, train, tmp_path / "int8")
    assert isinstance(loaded.base_.network_.encoder, nnqd.LSTM)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_quantized_transformer(mode: str, transformers: dict[str, Any], tmp_path: Path) -> None:
    data = dozen_pairs()
    learner = transformers[mode]
    q = quantize_dynamic_int8(learner)
    assert tuple(q.labels_) == tuple(learner.labels_)
    proba, original = q.predict_proba(data), learner.predict_proba(data)
    assert np.abs(proba - original).max() < 0.02
    assert (proba.argmax(1) == original.argmax(1)).all()
    assert q.base_.config.device == "cpu" and q.base_.config.precision == "fp32"
    assert_round_trip(q, data, tmp_path / "int8")
    assert _stored(tmp_path / "int8", _matrix) < 0.4


def test_int8_and_pruned_files_are_smaller(roomy_bilstm: Any, train: Any, tmp_path: Path) -> None:
    roomy_bilstm.save(tmp_path / "fp32")
    fp32 = (tmp_path / "fp32" / "model.safetensors").stat().st_size
    sizes = {}
    for name, learner in [
        ("int8", quantize_dynamic_int8(roomy_bilstm)),
        ("pruned", prune(roomy_bilstm, 0.5)),
        ("pruned_int8", compress(roomy_bilstm, PRUNE_THEN_INT8)),
    ]:
        assert_round_trip(learner, train, tmp_path / name)
        sizes[name] = (tmp_path / name / "compressed.safetensors").stat().st_size / fp32
        meta = json.loads((tmp_path / name / "learner.json").read_text())
        assert meta["storage"]["tensor_bytes"] < meta["storage"]["fp32_tensor_bytes"]
    # int8 matrices: one byte per weight plus a float32 scale per row (fp32: four bytes per weight).
    assert _stored(tmp_path / "int8", _matrix) < 0.3
    # 50% pruned: half the values plus one bit per weight -> 17 of 32 bits.
    assert _stored(tmp_path / "pruned", _matrix) == pytest.approx(17 / 32, abs=0.01)
    assert _stored(tmp_path / "pruned_int8", _matrix) < 0.2
    assert sizes["int8"] < 0.4 and sizes["pruned"] < 0.6 and sizes["pruned_int8"] < 0.3, sizes


def test_tiny_bilstm_int8_matrices_are_under_four_tenths(bilstm: Any, tmp_path: Path) -> None:
    quantize_dynamic_int8(bilstm).save(tmp_path / "int8")
    assert _stored(tmp_path / "int8", _matrix) < 0.4


# --- ensembles and the compressed kind -----------------------------------------------------------


def test_ensemble_members_are_compressed_each(ensemble: Any, train: Any, tmp_path: Path) -> None:
    before = ensemble.predict_proba(train)
    small = compress(ensemble, PRUNE_THEN_INT8)
    assert isinstance(small, EnsembleLearner)
    assert all(isinstance(m, CompressedLearner) for m in small.learners_)
    for member in small.learners_:
        assert [r["transform"] for r in member.transforms_] == ["prune", "quantize_int8"]
        assert member.transforms_[0]["reached"] == pytest.approx(0.5, abs=0.01)
    assert all(not isinstance(m, CompressedLearner) for m in ensemble.learners_)
    np.testing.assert_array_equal(ensemble.predict_proba(train), before)
    assert (small.predict_proba(train).argmax(1) == before.argmax(1)).mean() >= 0.8
    assert small.config.base["kind"] == "compressed" and small.config.base["base"]["kind"] == "bilstm"
    assert_round_trip(small, train, tmp_path / "ensemble")
    # The recipe refits: an ensemble of members trained, then compressed.
    refit = create_learner({"kind": "ensemble", **small.config.model_dump()}).fit(train)
    assert all(isinstance(m, CompressedLearner) for m in refit.learners_)
    seeds = {m.config.seed for m in refit.learners_}
    assert len(seeds) == 2  # every member has its own seed


def test_compressed_spec_trains_then_compresses(train: Any, tmp_path: Path) -> None:
    learner = create_learner({"kind": "compressed", "base": TINY_BILSTM, "steps": PRUNE_THEN_INT8}).fit(train)
    assert [r["transform"] for r in learner.transforms_] == ["prune", "quantize_int8"]
    assert len(learner.history_) == TINY_BILSTM["epochs"]
    loaded = assert_round_trip(learner, train, tmp_path / "model")
    assert loaded.config.base["kind"] == "bilstm"


def test_a_compressed_learner_compresses_further(bilstm: Any, train: Any) -> None:
    both = quantize_dynamic_int8(prune(bilstm, 0.5))
    assert [r["transform"] for r in both.transforms_] == ["prune", "quantize_int8"]
    assert [s.transform for s in both.config.steps] == ["prune", "quantize_int8"]


# --- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_zero_one_is_a_config_error(sparsity: float, bilstm: Any) -> None:
    with pytest.raises(ConfigError, match="prune: sparsity"):
        prune(bilstm, sparsity)


def test_bad_arguments_are_config_errors(bilstm: Any) -> None:
    with pytest.raises(ConfigError, match="prune_structured: fraction"):
        prune_structured(bilstm, 1.0)
    with pytest.raises(ConfigError, match="prune: method"):
        prune(bilstm, 0.5, method="random")
    with pytest.raises(ConfigError, match="transform"):
        compress(bilstm, [{"transform": "distill"}])
    q = quantize_dynamic_int8(bilstm)
    with pytest.raises(ConfigError, match="already quantized"):
        prune(q, 0.5)
    with pytest.raises(ConfigError, match="already quantized"):
        quantize_dynamic_int8(q)
    with pytest.raises(ConfigError, match="cannot be compressed"):
        prune(object(), 0.5)


def test_unfitted_learners_are_model_errors() -> None:
    with pytest.raises(ModelError, match="not fitted"):
        prune(create_learner(TINY_BILSTM), 0.5)
    with pytest.raises(ModelError, match="not fitted"):
        quantize_dynamic_int8(create_learner({"kind": "ensemble", "n_learners": 2, "base": TINY_BILSTM}))
    with pytest.raises(ModelError, match="not fitted"):
        create_learner({"kind": "compressed", "base": TINY_BILSTM}).predict_proba(dozen_pairs())


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": [{"transform": "quantize_int8"}, {"transform": "prune", "sparsity": 0.5}]}, "must be the last"),
        ({"base": {"kind": "ensemble"}}, "cannot be compressed"),
        ({"base": {"kind": "bilstm", "hidden_size": 0}}, r"base\.hidden_size"),
        ({"steps": []}, "steps"),
        ({"steps": [{"transform": "prune", "sparsity": 2}]}, "sparsity"),
    ],
)
def test_bad_compressed_specs_are_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_learner({"kind": "compressed", "base": TINY_BILSTM, **settings})


def test_a_damaged_file_is_a_model_error(bilstm: Any, tmp_path: Path) -> None:
    prune(bilstm, 0.5).save(tmp_path / "model")
    (tmp_path / "model" / "compressed.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError, match="compressed.safetensors"):
        load_learner(tmp_path / "model")


# --- recovery ------------------------------------------------------------------------------------


def _loss(learner: Any, data: Any) -> float:
    proba = learner.predict_proba(data)
    return float(-np.log(proba[np.arange(len(data)), data.labels]).mean())


def test_recover_fine_tunes_and_keeps_the_zeros(bilstm: Any, train: Any, tmp_path: Path) -> None:
    pruned = prune(bilstm, 0.7)
    healed = recover(pruned, train, epochs=4)
    assert [r["transform"] for r in healed.transforms_] == ["prune", "recover"]
    record = healed.transforms_[-1]
    assert record["epochs"] == 4 and record["pairs"] == len(train) and len(record["train_loss"]) == 4
    assert record["learning_rate"] == bilstm.config.learning_rate
    zeros, total = _zeros(healed.base_.network_)
    assert zeros / total == pytest.approx(0.7, abs=1 / total)  # the pruned weights stayed zero
    assert _loss(healed, train) < _loss(pruned, train)
    np.testing.assert_array_equal(pruned.predict_proba(train), prune(bilstm, 0.7).predict_proba(train))
    assert_round_trip(healed, train, tmp_path / "healed")


def test_recover_after_structured_pruning_of_a_transformer(transformers: dict[str, Any]) -> None:
    data = dozen_pairs()
    small = prune_structured(transformers["lora"], 0.5)
    healed = recover(small, data, epochs=2, learning_rate=1e-2)
    assert healed.base_.network_.config.intermediate_size == 16
    record = healed.transforms_[-1]
    assert record["learning_rate"] == 1e-2 and len(record["train_loss"]) == 2
    # The tiny random BERT stays near chance on the dozen; what is checked is that it trained.
    assert np.abs(healed.predict_proba(data) - small.predict_proba(data)).max() > 1e-6


def test_recover_step_in_a_spec_trains_on_the_fit_pairs(train: Any) -> None:
    steps = [{"transform": "prune_structured", "fraction": 0.5}, {"transform": "recover", "epochs": 2}]
    learner = create_learner({"kind": "compressed", "base": TINY_BILSTM, "steps": steps}).fit(train)
    assert [r["transform"] for r in learner.transforms_] == ["prune_structured", "recover"]
    assert learner.transforms_[-1]["pairs"] == len(train)


def test_recover_needs_pairs_and_a_float_model(bilstm: Any, train: Any) -> None:
    with pytest.raises(ConfigError, match="recover: needs labelled training pairs"):
        compress(bilstm, [{"transform": "prune", "sparsity": 0.5}, {"transform": "recover"}])
    with pytest.raises(ConfigError, match="already quantized"):
        recover(quantize_dynamic_int8(bilstm), train)
    with pytest.raises(ConfigError, match="read as 'binary'"):
        recover(bilstm, dozen_pairs("binary"))
    with pytest.raises(ConfigError, match="recover: epochs"):
        recover(bilstm, train, epochs=0)


# --- int8 through onnxruntime ---------------------------------------------------------------------

ORT_INT8 = [{"transform": "quantize_int8", "backend": "onnxruntime"}]
needs_ort = pytest.mark.skipif(
    __import__("sizewise.compress.onnx", fromlist=["x"]).onnxruntime_problem() is not None,
    reason="onnx / onnxruntime not installed",
)


@needs_ort
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_onnxruntime_int8_transformer(mode: str, transformers: dict[str, Any], tmp_path: Path) -> None:
    data = dozen_pairs()
    learner = transformers[mode]
    q = compress(learner, [{"transform": "prune", "sparsity": 0.5}, *ORT_INT8])
    pruned = prune(learner, 0.5)
    assert tuple(q.labels_) == tuple(learner.labels_)
    proba, reference = q.predict_proba(data), pruned.predict_proba(data)
    assert np.abs(proba - reference).max() < 0.03  # int8 rounding only: the graph is the pruned model's
    assert (proba.argmax(1) == reference.argmax(1)).mean() >= 0.9
    record = q.transforms_[-1]
    assert record["backend"] == "onnxruntime"
    import onnx

    ops = {node.op_type for node in onnx.load_from_string(q.base_.network_.onnx_bytes).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops  # int8 weights, activations quantized on the fly
    counts = q.parameter_count()
    assert counts["total"] == pruned.parameter_count()["total"]  # merged, as exported
    assert counts["trainable"] == 0 and counts["nonzero"] == pruned.parameter_count()["nonzero"]
    # saved as ONNX + tokenizer + JSON; loaded back to the same probabilities
    q.save(tmp_path / "ort")
    names = sorted(p.name for p in (tmp_path / "ort").rglob("*") if p.is_file())
    assert "model.int8.onnx" in names and not any(n.endswith(".safetensors") for n in names)
    loaded = load_learner(tmp_path / "ort")
    np.testing.assert_allclose(loaded.predict_proba(data), proba, rtol=0, atol=1e-6)
    assert loaded.parameter_count() == counts
    # a model already in onnxruntime takes no further transform
    with pytest.raises(ConfigError, match="already quantized"):
        compress(q, [{"transform": "prune", "sparsity": 0.5}])


@needs_ort
def test_onnxruntime_int8_takes_a_head_pruned_transformer(transformers: dict[str, Any], tmp_path: Path) -> None:
    data = dozen_pairs()
    q = compress(transformers["full"], [{"transform": "prune_heads", "fraction": 0.5}, *ORT_INT8])
    reference = prune_heads(transformers["full"], 0.5)
    proba = q.predict_proba(data)
    assert np.abs(proba - reference.predict_proba(data)).max() < 0.03
    assert q.parameter_count()["total"] == reference.parameter_count()["total"]
    q.save(tmp_path / "ort")
    np.testing.assert_allclose(load_learner(tmp_path / "ort").predict_proba(data), proba, rtol=0, atol=1e-6)


@needs_ort
@pytest.mark.parametrize("heads", [None, 0.5])
def test_onnxruntime_int8_fused_attention(heads: float | None, transformers: dict[str, Any], tmp_path: Path) -> None:
    import onnx

    data = dozen_pairs()
    before = [{"transform": "prune_heads", "fraction": heads}] if heads else []
    fused = compress(transformers["full"], [*before, {**ORT_INT8[0], "fuse": True}])
    plain = compress(transformers["full"], [*before, *ORT_INT8])
    record = fused.transforms_[-1]
    n_layers = transformers["full"].network_.config.num_hidden_layers
    # every attention block became one operator, but the last: it runs for the first token only
    assert record["first_token_last_layer"] is True
    assert record["fused"]["Attention"] == n_layers - 1
    ops = [node.op_type for node in onnx.load_from_string(fused.base_.network_.onnx_bytes).graph.node]
    assert ops.count("QAttention") == n_layers - 1  # ... and runs in int8
    plain_ops = [node.op_type for node in onnx.load_from_string(plain.base_.network_.onnx_bytes).graph.node]
    assert ops.count("Softmax") == 1 and plain_ops.count("Softmax") == n_layers  # only the last layer's is left
    # every skip layer norm split into additions and a LayerNormalization (the embeddings' norm is
    # fused into their lookup); the unfused export has LayerNormalizations only, and keeps them
    assert record["skip_layer_norms_split"] == 2 * n_layers and "SkipLayerNormalization" not in ops
    assert ops.count("LayerNormalization") == 2 * n_layers
    assert plain.transforms_[-1]["skip_layer_norms_split"] == 0
    assert plain_ops.count("LayerNormalization") == 2 * n_layers + 1
    proba = fused.predict_proba(data)
    assert tuple(fused.labels_) == tuple(transformers["full"].labels_)
    assert np.abs(proba - plain.predict_proba(data)).max() < 0.03  # the same network, int8 rounding apart
    fused.save(tmp_path / "fused")
    np.testing.assert_allclose(load_learner(tmp_path / "fused").predict_proba(data), proba, rtol=0, atol=1e-6)
    # the exported model's config is back to the attention implementation it had (eager only for export)
    own = transformers["full"].network_.config._attn_implementation
    assert own != "eager" and fused.base_.network_.config._attn_implementation == own


@needs_ort
def test_onnx_export_follows_the_first_token_setting(transformers: dict[str, Any]) -> None:
    import onnx

    data = dozen_pairs()
    whole = copy.deepcopy(transformers["full"])
    whole.config = whole.config.model_copy(update={"first_token_last_layer": False})
    n_layers = whole.network_.config.num_hidden_layers
    fused = {"first": compress(transformers["full"], [{**ORT_INT8[0], "fuse": True}])}
    fused["whole"] = compress(whole, [{**ORT_INT8[0], "fuse": True}])
    assert fused["whole"].transforms_[-1]["first_token_last_layer"] is False
    assert fused["whole"].transforms_[-1]["fused"]["Attention"] == n_layers  # every block fused
    ops = [node.op_type for node in onnx.load_from_string(fused["whole"].base_.network_.onnx_bytes).graph.node]
    assert ops.count("QAttention") == n_layers
    proba = {k: learner.predict_proba(data) for k, learner in fused.items()}
    assert np.abs(proba["first"] - proba["whole"]).max() < 0.03  # the same function, int8 rounding apart


def _layer_norm_graph(opset: int, read_sum: bool = False) -> Any:
    """A graph of two SkipLayerNormalizations (with and without a bias and beta) and a LayerNormalization."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    consts = {name: rng.normal(size=8).astype(np.float32) for name in ("g1", "b1", "bias", "g2", "b2", "g3")}
    nodes = [
        helper.make_node(
            "SkipLayerNormalization", ["x", "s", "g1", "b1", "bias"], ["h1"], domain="com.microsoft", epsilon=1e-3
        ),
        helper.make_node(
            "SkipLayerNormalization",
            ["h1", "s", "g3"],
            ["h2", "", "", "sum"] if read_sum else ["h2"],
            domain="com.microsoft",
            epsilon=1e-5,
        ),
        helper.make_node("LayerNormalization", ["h2", "g2", "b2"], ["y"], axis=-1),
    ]
    shape = [3, 5, 8]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if read_sum:
        outputs.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "norms",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "s")],
        outputs,
        [numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return onnx.helper.make_model(graph, opset_imports=opsets)


def _run_graph(model: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(None, feed)


@needs_ort
@pytest.mark.parametrize("opset", [17, 18])
def test_skip_layer_norms_are_split_with_the_same_result(opset: int) -> None:
    import onnx
    from onnx import numpy_helper

    from sizewise.compress.onnx import split_skip_layer_norms

    rng = np.random.default_rng(1)
    feed = {name: (3 * rng.normal(size=(3, 5, 8)) + 2).astype(np.float32) for name in ("x", "s")}
    model = _layer_norm_graph(opset)
    expected = _run_graph(model, feed)
    assert split_skip_layer_norms(model) == 2
    onnx.checker.check_model(model)
    ops = [node.op_type for node in model.graph.node]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 3
    assert ops.count("Add") == 3  # the residual sums, and the one bias
    got = _run_graph(model, feed)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-5)
    # a normalization whose sum or mean is read elsewhere keeps its kernel
    kept = _layer_norm_graph(opset, read_sum=True)
    assert split_skip_layer_norms(kept) == 1
    assert [node.op_type for node in kept.graph.node].count("SkipLayerNormalization") == 1
    np.testing.assert_allclose(_run_graph(kept, feed)[0], expected[0], rtol=1e-5, atol=1e-5)
    # without an epsilon attribute the kernel's default applies (1e-12: it matters on small variances)
    tiny = _layer_norm_graph(opset)
    del tiny.graph.node[1:]
    del tiny.graph.node[0].attribute[:]
    tiny.graph.output[0].name = tiny.graph.node[0].output[0]
    for i, tensor in enumerate(tiny.graph.initializer):
        if tensor.name == "bias":
            tiny.graph.initializer[i].CopyFrom(numpy_helper.from_array(1e-3 * numpy_helper.to_array(tensor), "bias"))
    small = {k: 1e-3 * v for k, v in feed.items()}
    expected_small = _run_graph(tiny, small)[0]
    assert split_skip_layer_norms(tiny) == 1
    np.testing.assert_allclose(_run_graph(tiny, small)[0], expected_small, rtol=1e-4, atol=1e-4)
    # below opset 17 there is no LayerNormalization to split into
    old = _layer_norm_graph(opset)
    old.opset_import[0].version = 16
    assert split_skip_layer_norms(old) == 0


@needs_ort
def test_onnxruntime_sessions_do_not_fuse_layer_norms_back(tmp_path: Path) -> None:
    """With static shapes onnxruntime would fuse Add + LayerNormalization into its slower
    SkipLayerNormalization kernel; the sessions sizewise builds switch that fusion off."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from sizewise.compress.onnx import SLOW_FUSIONS

    shape = [2, 4, 8]
    nodes = [
        helper.make_node("Add", ["x", "s"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "g", "b"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "norm",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "s")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.ones(8, np.float32), n) for n in ("g", "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()

    def optimized(**kwargs: Any) -> list[str]:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        ort.InferenceSession(model, options, providers=["CPUExecutionProvider"], **kwargs)
        return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]

    assert optimized() == ["SkipLayerNormalization"]
    assert optimized(disabled_optimizers=SLOW_FUSIONS) == ["Add", "LayerNormalization"]


@needs_ort
def test_onnx_export_leaves_the_exported_model_in_eval_mode(transformers: dict[str, Any]) -> None:
    from sizewise.compress.onnx import export_int8

    learner = copy.deepcopy(transformers["full"])
    model = learner.network_
    export_int8(learner)
    assert not any(m.training for m in model.modules())


def test_fuse_needs_the_onnxruntime_backend(transformers: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="fuse: true needs backend 'onnxruntime'"):
        compress(transformers["full"], [{"transform": "quantize_int8", "fuse": True}])


@needs_ort
def test_onnxruntime_backend_is_for_transformers(bilstm: Any) -> None:
    with pytest.raises(ConfigError, match="backend 'onnxruntime' is for transformer learners"):
        compress(bilstm, ORT_INT8)


def test_a_missing_onnxruntime_is_named(transformers: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    import sizewise.compress.onnx as onnx_mod

    monkeypatch.setattr(onnx_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs onnx and onnxruntime \(pip install onnx onnxruntime\)"):
        compress(transformers["full"], ORT_INT8)


def test_recover_on_a_subset_of_the_pairs(bilstm: Any, train: Any) -> None:
    healed = compress(bilstm, [{"transform": "prune", "sparsity": 0.5}, {"transform": "recover", "pairs": 12}], train)
    record = healed.transforms_[-1]
    assert record["pairs"] == 12 < len(train)
    again = compress(bilstm, [{"transform": "prune", "sparsity": 0.5}, {"transform": "recover", "pairs": 12}], train)
    np.testing.assert_array_equal(healed.predict_proba(train), again.predict_proba(train))  # the same subset
    everything = compress(bilstm, [{"transform": "prune", "sparsity": 0.5}, {"transform": "recover"}], train)
    assert everything.transforms_[-1]["pairs"] == len(train)
