"""Loading what the ``transformer`` learner is made of: tokenizers, sequence-classification models
(head-pruned ones too) and LoRA / IA3 adapters, with transformers' own load reports kept quiet.

``transformers`` and ``peft`` are imported inside the functions: importing sizewise stays fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from sizewise.compress.surgery import PRUNED_HEADS_KEY, attention_blocks, keep_heads
from sizewise.data.labels import LabelScheme
from sizewise.errors import ConfigError, ModelError
from sizewise.learners.transformer.config import TransformerConfig, resolve_model

logger = logging.getLogger(__name__)

#: LoRA target modules per ``config.model_type``: the attention query and value projections (DeBERTa's
#: fused query-key-value projection). DeBERTa-v3 checkpoints are ``deberta-v2``; ALBERT's one shared
#: layer is adapted once and the adapter serves every layer.
LORA_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "camembert": ["query", "value"],
    "electra": ["query", "value"],
    "albert": ["query", "value"],
    "mpnet": ["q", "v"],
    "deberta-v2": ["query_proj", "value_proj"],
    "deberta": ["in_proj"],
    "distilbert": ["q_lin", "v_lin"],
}

#: IA3 target modules per ``config.model_type`` where peft has none: keys, values and the feed-forward
#: output (whose input IA3 scales: see :data:`IA3_FEEDFORWARD_MODULES`), as peft's defaults for BERT.
IA3_TARGET_MODULES: dict[str, list[str]] = {
    "xlm-roberta": ["key", "value", "output.dense"],
    "camembert": ["key", "value", "output.dense"],
    "electra": ["key", "value", "output.dense"],
    "albert": ["key", "value", "ffn_output"],
    "mpnet": ["k", "v", "output.dense"],
    "distilbert": ["k_lin", "v_lin", "lin2"],
}

#: The feed-forward modules among :data:`IA3_TARGET_MODULES` (IA3 scales their input, not their output).
IA3_FEEDFORWARD_MODULES: dict[str, list[str]] = {
    "xlm-roberta": ["output.dense"],
    "camembert": ["output.dense"],
    "electra": ["output.dense"],
    "albert": ["ffn_output"],
    "mpnet": ["output.dense"],
    "distilbert": ["lin2"],
}

#: The top-level modules of a sequence-classification model that make up its head, per
#: ``config.model_type``: trained whole and saved beside an adapter. DistilBERT's head is a
#: ``pre_classifier`` projection and a ``classifier``; DeBERTa's a ``pooler`` (ContextPooler) and a
#: ``classifier``. Other types: ``classifier`` (one linear layer for BERT / ALBERT; ``dense`` +
#: ``out_proj`` for RoBERTa, XLM-R, ELECTRA, MPNet) or ``score`` (decoders).
HEAD_MODULES: dict[str, list[str]] = {
    "distilbert": ["pre_classifier", "classifier"],
    "deberta": ["pooler", "classifier"],
    "deberta-v2": ["pooler", "classifier"],
}

#: The files of a saved full model and of a saved adapter.
FULL_WEIGHTS = "model.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def default_target_modules(model_type: str, mode: str = "lora") -> list[str]:
    """The modules an adapter wraps by default for an architecture (``model.config.model_type``)."""
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
    )

    if mode == "ia3":
        found = IA3_TARGET_MODULES.get(model_type) or TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(model_type)
    else:
        found = LORA_TARGET_MODULES.get(model_type) or TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(
            model_type
        )
    if not found:
        raise ConfigError(
            "transformer", [f"target_modules: no default for architecture {model_type!r}; name the modules to adapt"]
        )
    return list(found)


def default_feedforward_modules(model_type: str) -> list[str]:
    """The feed-forward modules among the default IA3 targets of an architecture (none if unknown)."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING

    found = IA3_FEEDFORWARD_MODULES.get(model_type) or TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(
        model_type
    )
    return list(found or [])


def head_modules(model: nn.Module) -> list[str]:
    """The names of the top-level modules of ``model`` that make up its classification head."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    wanted = HEAD_MODULES.get(model_type or "", ["classifier", "score"])
    children = {name for name, _ in model.named_children()}
    return [name for name in wanted if name in children]


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and tqdm bars for one call; we log what matters ourselves."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def refuse_remote_code(folder: Path) -> None:
    """Refuse a model folder whose configuration asks to run code of its own (``auto_map``,
    ``trust_remote_code``): sizewise never runs code from a model folder. A folder that is not there
    (a hub name) has nothing to check here."""
    for name in ("config.json", "tokenizer_config.json", ADAPTER_CONFIG, "preprocessor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not a valid JSON file ({_first_line(exc)})") from None
        if not isinstance(config, dict):
            raise ModelError(f"{path}: expected a JSON object, found {type(config).__name__}")
        for key in ("auto_map", "auto_mapping", "trust_remote_code"):
            if config.get(key):
                raise ModelError(
                    f"{path}: {key}: the model asks to run code of its own, which sizewise never does; "
                    "use a model that transformers supports as it is"
                )


def _loading_options(saved: bool) -> dict[str, Any]:
    """``from_pretrained`` options: never remote code; for a saved model (or its base), offline and
    safetensors only, so nothing is downloaded and nothing is unpickled."""
    options: dict[str, Any] = {"trust_remote_code": False}
    if saved:
        options.update(local_files_only=True, use_safetensors=True)
    return options


def load_tokenizer(source: str, *, saved: bool = False) -> Any:
    """The tokenizer of a model folder or hub name, with a pad token (its end-of-sequence token if it has none);
    ``saved``: of a saved model, read offline."""
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            options = _loading_options(saved)
            options.pop("use_safetensors", None)
            tokenizer = AutoTokenizer.from_pretrained(source, **options)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as exc:
        raise ModelError(f"{source}: could not load its tokenizer ({_first_line(exc)})") from None
    if tokenizer.pad_token is None:
        # Decoder-style models (GPT-2, Llama) have no pad token; padding positions are masked anyway.
        if tokenizer.eos_token is None:
            raise ModelError(f"{source}: the tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_classifier(
    source: str, scheme: LabelScheme, pad_token_id: int, *, saved: bool = False
) -> tuple[nn.Module, list[str]]:
    """A sequence-classification model for ``scheme``; also the names of weights it had to initialise.
    ``saved``: a saved model or an adapter's base, read offline from safetensors only."""
    from transformers import AutoModelForSequenceClassification

    try:
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source,
                **_loading_options(saved),
                num_labels=scheme.num_labels,
                id2label=dict(enumerate(scheme.labels)),
                label2id={name: i for i, name in enumerate(scheme.labels)},
                ignore_mismatched_sizes=True,  # a checkpoint with another head size gets a fresh head
                output_loading_info=True,
            )
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        ImportError,
        RuntimeError,
        SafetensorError,
    ) as exc:
        raise ModelError(f"{source}: could not load a sequence-classification model ({_first_line(exc)})") from None
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    heads = getattr(model.config, PRUNED_HEADS_KEY, None)
    if heads is not None:  # q / k / v / attention output came back full-size and re-initialised
        return model, _reload_pruned_heads(model, Path(source), int(heads))
    mismatched = {k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())}
    return model, sorted(set(info.get("missing_keys", ())) | mismatched)


def _reload_pruned_heads(model: nn.Module, folder: Path, heads: int) -> list[str]:
    """Cut every attention block of ``model`` to ``heads`` heads, then load all of ``folder``'s saved
    weights into it (safetensors); returns the weights the folder lacks (or holds in another shape,
    as ``ignore_mismatched_sizes`` would: a head for another number of labels)."""
    blocks = attention_blocks(model)
    if not blocks:
        raise ModelError(f"{folder}: config.json says {heads} attention heads were kept, but the model has none")
    keep_heads(model, [torch.arange(heads)] * len(blocks))
    index = folder / f"{FULL_WEIGHTS}.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else None
        saved: dict[str, torch.Tensor] = {}
        for name in files or [FULL_WEIGHTS]:
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise ValueError(f"{index.name} names {name!r}, not a file of the folder")
            saved.update(load_file(str(folder / name)))
    except (OSError, SafetensorError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{folder}: could not read the head-pruned weights ({_first_line(exc)})") from None
    own = model.state_dict()
    usable = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    loaded = {own[k].data_ptr() for k in usable}  # a tied weight is saved under one of its names
    return sorted(k for k in own if k not in usable and own[k].data_ptr() not in loaded)


def _fresh_modules(fresh_keys: list[str], base_prefix: str) -> list[str]:
    """Modules holding freshly initialised weights beyond peft's own ``classifier`` / ``score``.

    peft's SEQ_CLS task already trains and saves ``classifier`` and ``score``; other new parts (the
    pooler of DeBERTa, a BERT checkpoint saved without its pooler) must be trained and saved too,
    or a reloaded adapter would meet different random weights.
    """
    names = set()
    for key in fresh_keys:
        parts = key.split(".")
        name = ".".join(parts[:2]) if parts[0] == base_prefix and len(parts) > 2 else parts[0]
        if name not in ("classifier", "score"):
            names.add(name)
    return sorted(names)


def wrap_adapter(model: nn.Module, fresh: list[str], cfg: TransformerConfig) -> tuple[nn.Module, list[str], list[str]]:
    """``model`` wrapped in the LoRA / IA3 adapter of ``cfg``; also the adapted modules and the modules
    trained and saved whole (the head, and every other module holding the ``fresh`` weights)."""
    from peft import IA3Config, LoraConfig, get_peft_model

    model_type = model.config.model_type
    extra = _fresh_modules(fresh, getattr(model, "base_model_prefix", ""))
    targets = list(cfg.target_modules) if cfg.target_modules else default_target_modules(model_type, cfg.mode)
    # peft's SEQ_CLS task adds 'classifier' and 'score' to modules_to_save itself; naming the whole
    # head here (DistilBERT's pre_classifier, DeBERTa's pooler too) trains and saves all of it, fresh or not.
    heads = head_modules(model)
    to_save = heads + [name for name in extra if name not in heads]
    if cfg.mode == "lora":
        peft_config: Any = LoraConfig(
            task_type="SEQ_CLS",
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=targets,
            modules_to_save=to_save,
        )
    else:
        feedforward = [] if cfg.target_modules else default_feedforward_modules(model_type)
        peft_config = IA3Config(
            task_type="SEQ_CLS",
            target_modules=targets,
            feedforward_modules=feedforward,
            modules_to_save=to_save,
        )
    try:
        with quiet_transformers():
            wrapped = get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ConfigError("transformer", [f"target_modules: {_first_line(exc)}"]) from None
    untrained = [k for k in fresh if not _is_trainable(wrapped, k)]
    if untrained:  # a guard against peft's most reported bug: an untrained, unsaved head
        raise ModelError(f"these newly initialised weights would not be trained: {', '.join(untrained)}")
    return wrapped, targets, saved_modules(wrapped)


def saved_modules(wrapped: nn.Module) -> list[str]:
    """The modules a peft model trains and saves whole (its head, fresh modules), named as in the plain model.

    peft's ``modules_to_save`` setting lists names it may not find (SEQ_CLS adds ``classifier`` and
    ``score`` to every model); these are the modules it did wrap.
    """
    from peft.utils import ModulesToSaveWrapper

    return sorted(
        name.removeprefix("base_model.model.")
        for name, module in wrapped.named_modules()
        if isinstance(module, ModulesToSaveWrapper)
    )


def _is_trainable(wrapped: nn.Module, key: str) -> bool:
    # peft names a saved module's trained copy 'base_model.model.<module>.modules_to_save.default.<rest>'.
    for name, p in wrapped.named_parameters():
        plain = name.removeprefix("base_model.model.").replace("modules_to_save.default.", "")
        if p.requires_grad and plain == key:
            return True
    return False


def load_adapter(base: nn.Module, directory: Path) -> nn.Module:
    """The adapter saved in ``directory`` on ``base``, its adapter and head trainable (as after fit, and counted so)."""
    from peft import PeftModel

    try:
        with quiet_transformers():
            return PeftModel.from_pretrained(base, str(directory), is_trainable=True, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError, SafetensorError) as exc:
        raise ModelError(f"{directory}: could not load the adapter ({_first_line(exc)})") from None


def merge_adapter_for_prediction(model: nn.Module) -> None:
    """Fold a peft adapter into the frozen weights it adapts, once, for prediction: one matrix
    product per adapted layer instead of two. The adapter's own weights stay as they were, so it is
    still saved as an adapter; training always starts from a freshly built model. A model without a
    mergeable adapter (a plain model, an adapter type or layer peft cannot merge) is left as it is.
    """
    tuner = getattr(model, "base_model", None)
    if not hasattr(tuner, "merge_adapter") or adapter_is_merged(model):
        return
    try:
        tuner.merge_adapter()
    except (ValueError, NotImplementedError, RuntimeError) as exc:
        logger.debug("predicting with the adapter unmerged: %s", _first_line(exc))


def adapter_is_merged(model: nn.Module) -> bool:
    """Whether any peft adapter layer of ``model`` is merged into its base weights now."""
    return any(getattr(m, "merged", False) is True for m in model.modules() if hasattr(m, "merged_adapters"))


def resolve_base(name: str, directory: Path) -> str:
    """The adapter's base model: its ``model`` setting (the packaged model, a folder, or a hub name read
    from the local cache only). The folder it resolved to when fitted (``base_model_path``) is not
    used: a saved model reads nothing it does not name as its configured base."""
    try:
        source = resolve_model(name)
    except ConfigError as exc:
        raise ModelError(f"{directory}: the adapter's base model {name!r} is not available ({exc})") from None
    if Path(source).is_dir():
        return source
    # A hub name: its copy in the local Hugging Face cache, if there is one; a saved model never downloads.
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source, local_files_only=True)
    except Exception as exc:  # not a repository name, or not in the cache (huggingface_hub's own errors)
        raise ModelError(
            f"{directory}: the adapter's base model {name!r} is neither a folder nor in the local Hugging Face "
            f"cache; sizewise loads saved models offline ({_first_line(exc)})"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
