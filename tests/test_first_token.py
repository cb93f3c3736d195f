"""The last layer run for the first token only: the same logits and gradients, for the encoders it claims."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TINY_TRANSFORMER, dozen_pairs
from sizewise.compress import compress
from sizewise.learners import create_learner
from sizewise.learners.transformer import first_token as first_token_module
from sizewise.learners.transformer.first_token import FIRST_TOKEN_TYPES, first_token_last_layer, last_layer

SIZES = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 32}


def _model(model_type: str, attention: str = "sdpa", dropout: float = 0.1, **extra: Any) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    settings: dict[str, Any] = {**SIZES, "vocab_size": 60, "max_position_embeddings": 40, "num_labels": 3, **extra}
    if model_type == "electra":
        settings["embedding_size"] = 8  # projected up to the hidden size, as in ELECTRA-small
    if model_type == "deberta-v2":
        settings["relative_attention"] = True
    settings["hidden_dropout_prob"] = settings["attention_probs_dropout_prob"] = dropout
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(config, attn_implementation=attention)


def _batch(lengths: tuple[int, ...] = (12, 7, 3, 12, 9)) -> dict[str, torch.Tensor]:
    """A padded batch (pairs of different lengths, padding on the right) with token types."""
    g = torch.Generator().manual_seed(1)
    width = max(lengths)
    ids = torch.randint(5, 60, (len(lengths), width), generator=g)
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    types = (torch.arange(width) >= torch.tensor(lengths)[:, None] // 2).long() * mask
    return {"input_ids": ids * mask + 1 - mask, "attention_mask": mask, "token_type_ids": types}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("model_type", sorted(FIRST_TOKEN_TYPES))
def test_same_logits_for_every_claimed_encoder(model_type: str, attention: str) -> None:
    model = _model(model_type, attention).eval()
    batch = _batch()
    layer = last_layer(model)
    assert layer is not None
    with torch.no_grad():
        whole = model(**batch).logits
        with first_token_last_layer(model) as active:
            first = model(**batch).logits
        again = model(**batch).logits
    assert active
    assert "forward" not in layer.__dict__  # the swap is undone on exit
    torch.testing.assert_close(first, whole, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(again, whole, atol=0, rtol=0)
    assert not torch.allclose(whole[0], whole[1])  # the batch really holds different pairs


def test_skipped_positions_are_really_skipped() -> None:
    model = _model("bert").eval()
    shapes = []
    model.bert.encoder.layer[-1].intermediate.register_forward_hook(lambda m, a, out: shapes.append(tuple(out.shape)))
    with torch.no_grad(), first_token_last_layer(model):
        model(**_batch())
    assert shapes == [(5, 1, SIZES["intermediate_size"])]  # one position per pair, not 12


@pytest.mark.parametrize("adapter", [False, True])
def test_same_gradients_without_dropout(adapter: bool) -> None:
    model = _model("bert", dropout=0.0)
    if adapter:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model, LoraConfig(r=2, target_modules=["query", "value"], modules_to_save=["classifier"])
        )
        for name, p in model.named_parameters():  # LoRA's B starts at zero: give the adapter a gradient path
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.1)
    model.train()
    batch, labels = _batch(), torch.tensor([0, 1, 2, 1, 0])
    grads = []
    for swap in (False, True):
        model.zero_grad()
        with first_token_last_layer(model, enabled=swap) as active:
            torch.nn.functional.cross_entropy(model(**batch).logits, labels).backward()
        assert active == swap
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 0
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize(
    ("model_type", "attention", "extra"),
    [
        ("deberta-v2", "eager", {}),  # relative attention: not a BERT layer
        ("distilbert", "sdpa", {}),  # its own layer layout
        ("bert", "sdpa", {"is_decoder": True}),
        ("bert", "sdpa", {"position_embedding_type": "relative_key"}),
    ],
)
def test_other_encoders_run_whole(model_type: str, attention: str, extra: dict[str, Any]) -> None:
    if model_type == "distilbert":
        extra = {"dim": 16, "n_layers": 2, "n_heads": 4, "hidden_dim": 32}
    model = _model(model_type, attention, **extra).eval()
    assert last_layer(model) is None
    with first_token_last_layer(model) as active:
        assert not active


def test_nested_blocks_restore_in_order() -> None:
    model = _model("bert").eval()
    layer = last_layer(model)
    with first_token_last_layer(model):
        swapped = layer.forward
        with first_token_last_layer(model):
            pass
        assert layer.forward == swapped  # the inner block put the outer swap back, not the class's forward
    assert "forward" not in layer.__dict__


def test_the_learner_trains_and_predicts_with_the_swap_and_can_turn_it_off(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = first_token_module._first_token_forward

    def spy(self: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(self.training)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(first_token_module, "_first_token_forward", spy)
    data = dozen_pairs()
    learner = create_learner({**TINY_TRANSFORMER, "model": str(tiny_bert), "mode": "full", "epochs": 1})
    learner.fit(data, dev=data)
    assert True in calls and False in calls  # training steps, and the dev prediction
    calls.clear()
    on = learner.predict_proba(data)
    assert calls and not any(calls)
    calls.clear()
    learner.config = learner.config.model_copy(update={"first_token_last_layer": False})
    off = learner.predict_proba(data)
    assert not calls
    np.testing.assert_allclose(on, off, atol=1e-6)
    off_learner = create_learner({**TINY_TRANSFORMER, "model": str(tiny_bert), "first_token_last_layer": False})
    off_learner.fit(data)
    assert not calls


def test_pruned_heads_and_torch_int8_keep_the_same_predictions(tiny_bert: Path) -> None:
    data = dozen_pairs()
    learner = create_learner({**TINY_TRANSFORMER, "model": str(tiny_bert), "mode": "full", "epochs": 1}).fit(data)
    small = compress(learner, [{"transform": "prune_heads", "fraction": 0.5}, {"transform": "quantize_int8"}])
    on = small.predict_proba(data)
    small.base_.config = small.base_.config.model_copy(update={"first_token_last_layer": False})
    np.testing.assert_allclose(on, small.predict_proba(data), atol=1e-5)
