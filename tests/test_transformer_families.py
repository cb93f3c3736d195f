"""The transformer learner on a tiny encoder of every family it knows (BERT, RoBERTa, XLM-R, MPNet,
DeBERTa, DeBERTa-v2 / v3, DistilBERT, ELECTRA, ALBERT): each built from its config with its own
tokenizer class and saved to a local folder like a pretrained checkpoint (no head), so nothing downloads."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from conftest import _FILLER, DOZEN_ROWS, KEYWORDS, TINY_TRANSFORMER, assert_round_trip, dozen_pairs
from sizewise.learners import create_learner
from sizewise.learners.transformer import TransformerConfig, TransformerLearner, resolve_model

#: A tiny encoder: small enough that a family trains, predicts, saves and reloads in about a second.
SIZES: dict[str, Any] = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _words() -> list[str]:
    words = {*_FILLER, *KEYWORDS.values()}
    for premise, hypothesis, _ in DOZEN_ROWS:
        words.update(re.findall(r"\w+|[^\w\s]", f"{premise} {hypothesis}".lower()))
    return sorted(words)


def _wordpiece(cls_name: str, specials: list[str]) -> Any:
    """A WordPiece tokenizer (BERT, MPNet, DistilBERT, ELECTRA) whose vocabulary is the test pairs' words."""
    import transformers

    return getattr(transformers, cls_name)(vocab={t: i for i, t in enumerate([*specials, *_words()])})


def _unigram(cls_name: str, specials: list[str]) -> Any:
    """A SentencePiece-style unigram tokenizer (XLM-R, ALBERT, DeBERTa-v2): whole words, then characters."""
    import transformers

    words = _words()
    pieces = [(t, 0.0) for t in specials] + [("\u2581" + w, -1.0) for w in words] + [("\u2581", -2.0)]
    pieces += [(c, -5.0) for c in sorted(set("".join(words)) | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))]
    return getattr(transformers, cls_name)(vocab=pieces)


def _byte_bpe(cls_name: str, specials: list[str]) -> Any:
    """A byte-level BPE tokenizer without merges (RoBERTa, DeBERTa): one token per byte."""
    import transformers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = sorted(set(bytes_to_unicode().values()))
    return getattr(transformers, cls_name)(vocab={t: i for i, t in enumerate([*specials, *symbols])}, merges=[])


ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass(frozen=True)
class Family:
    """One encoder family: its config, tokenizer, and what the learner should make of it."""

    tokenizer: Callable[[], Any]
    lora: list[str]  # the LoRA targets resolved by default
    wrapped: int  # the modules LoRA wraps (2 layers x targets; ALBERT's layers share one)
    head: list[str] = field(default_factory=lambda: ["classifier"])  # trained and saved whole
    first_token: bool = False  # whether first_token_last_layer applies
    config: dict[str, Any] = field(default_factory=dict)


FAMILIES: dict[str, Family] = {
    "bert": Family(lambda: _wordpiece("BertTokenizer", BERT_SPECIALS), ["query", "value"], 4, first_token=True),
    "roberta": Family(
        lambda: _byte_bpe("RobertaTokenizer", ROBERTA_SPECIALS),
        ["query", "value"],
        4,
        first_token=True,
        config={"type_vocab_size": 1},
    ),
    "xlm-roberta": Family(
        lambda: _unigram("XLMRobertaTokenizer", ROBERTA_SPECIALS[:4]),
        ["query", "value"],
        4,
        first_token=True,
        config={"type_vocab_size": 1},
    ),
    "electra": Family(
        lambda: _wordpiece("ElectraTokenizer", BERT_SPECIALS),
        ["query", "value"],
        4,
        first_token=True,
        config={"embedding_size": 16},
    ),
    "mpnet": Family(lambda: _wordpiece("MPNetTokenizer", ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]), ["q", "v"], 4),
    # DeBERTa-v3 checkpoints are model type deberta-v2; this is v3's relative attention setup.
    "deberta-v2": Family(
        lambda: _unigram("DebertaV2Tokenizer", BERT_SPECIALS),
        ["query_proj", "value_proj"],
        4,
        head=["pooler", "classifier"],
        config={
            "relative_attention": True,
            "position_biased_input": False,
            "pos_att_type": ["p2c", "c2p"],
            "position_buckets": 16,
            "max_relative_positions": -1,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "type_vocab_size": 0,
        },
    ),
    "deberta": Family(
        lambda: _byte_bpe("DebertaTokenizer", ["[CLS]", "[SEP]", "[UNK]", "[PAD]", "[MASK]"]),
        ["in_proj"],
        2,
        head=["pooler", "classifier"],
        config={"relative_attention": True, "position_biased_input": False, "pos_att_type": ["c2p", "p2c"]},
    ),
    "distilbert": Family(
        lambda: _wordpiece("DistilBertTokenizer", BERT_SPECIALS),
        ["q_lin", "v_lin"],
        4,
        head=["pre_classifier", "classifier"],
        config={"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},
    ),
    "albert": Family(
        lambda: _unigram("AlbertTokenizer", ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]),
        ["query", "value"],
        2,
        config={"embedding_size": 16},
    ),
}


def build_family(model_type: str, folder: Path) -> Path:
    """Write a tiny random ``model_type`` encoder (no classification head) and its tokenizer to ``folder``."""
    from transformers import AutoConfig, AutoModel

    family = FAMILIES[model_type]
    tokenizer = family.tokenizer()
    sizes = {} if model_type == "distilbert" else SIZES
    config = AutoConfig.for_model(
        model_type,
        **sizes,
        vocab_size=len(tokenizer),
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        **family.config,
    )
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def family_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The tiny model folder of a family, built on first use."""
    built: dict[str, Path] = {}

    def get(model_type: str) -> Path:
        if model_type not in built:
            built[model_type] = build_family(model_type, tmp_path_factory.mktemp(model_type))
        return built[model_type]

    return get


def _learner(folder: Path, **settings: Any) -> TransformerLearner:
    settings = {**TINY_TRANSFORMER, "model": str(folder), "epochs": 1, "max_steps": 2, **settings}
    learner = create_learner(settings)
    assert isinstance(learner, TransformerLearner)
    return learner


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_lora_on_every_family(model_type: str, family_folder: Callable[[str], Path], tmp_path: Path) -> None:
    family, data = FAMILIES[model_type], dozen_pairs()
    learner = _learner(family_folder(model_type)).fit(data)
    assert learner.network_.config.model_type == model_type
    assert learner.target_modules_ == family.lora
    assert learner.modules_to_save_ == sorted(family.head)
    wrapped = [name for name, _ in learner.network_.named_modules() if name.endswith("lora_A.default")]
    assert len(wrapped) == family.wrapped
    assert {name.split(".")[-3] for name in wrapped} == set(family.lora)
    params = dict(learner.network_.named_parameters())
    for head in family.head:  # peft's trained copy of each head module
        copy = [p for n, p in params.items() if n.startswith(f"base_model.model.{head}.modules_to_save.default.")]
        assert copy and all(p.requires_grad for p in copy), head
    with learner.forward_context() as active:
        assert active is family.first_token  # the others run whole, without an error
    assert learner.predict_proba(data).shape == (12, 3)
    assert_round_trip(learner, data, tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    for head in family.head:
        assert any(k.startswith(f"base_model.model.{head}.") for k in saved), f"{head} was not saved"


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_full_fine_tune_on_every_family(model_type: str, family_folder: Callable[[str], Path], tmp_path: Path) -> None:
    data = dozen_pairs()
    learner = _learner(family_folder(model_type), mode="full").fit(data)
    assert all(p.requires_grad for p in learner.network_.parameters())
    assert learner.history_[0]["steps"] == 2
    with learner.forward_context() as active:
        assert active is FAMILIES[model_type].first_token
    assert_round_trip(learner, data, tmp_path / "full")


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_ia3_has_defaults_for_every_family(model_type: str, family_folder: Callable[[str], Path]) -> None:
    learner = _learner(family_folder(model_type), mode="ia3", max_steps=1).fit(dozen_pairs())
    scaled = [name for name, _ in learner.network_.named_modules() if name.endswith("ia3_l")]
    assert scaled and learner.target_modules_
    assert learner.modules_to_save_ == sorted(FAMILIES[model_type].head)


def test_relative_folder_works_and_minilm_stays_the_default(
    family_folder: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert TransformerConfig().model == "minilm"
    folder = family_folder("mpnet")
    monkeypatch.chdir(folder.parent)
    assert resolve_model(folder.name) == str(folder.resolve())
    learner = _learner(Path(folder.name), max_steps=1).fit(dozen_pairs())
    assert learner.base_model_ == str(folder.resolve())
