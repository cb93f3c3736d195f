"""The ``transformer`` learner: a pretrained encoder fine-tuned for sentence pairs, fully or with a LoRA /
IA3 adapter.

The premise and hypothesis are encoded together as one sequence (``[CLS] premise [SEP] hypothesis
[SEP]``) and classified by the model's sequence-classification head. Saved folders are plain Hugging
Face folders plus ``learner.json``: a full fine-tune is a ``save_pretrained`` model (safetensors), an
adapter is peft's own format (``adapter_model.safetensors`` + ``adapter_config.json``), loadable
without sizewise by
``PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=k), folder)``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sizewise.compress.surgery import keep_layers
from sizewise.data.labels import LabelScheme
from sizewise.data.pairs import PairData
from sizewise.distributed import accelerator, rank, shard, world_size
from sizewise.errors import ConfigError, ModelError
from sizewise.files import atomic_directory, atomic_write_json
from sizewise.learners.base import (
    LEARNER_FILE,
    MODEL_FILES,
    check_is_fitted,
    check_scheme,
    check_training_data,
    learner_from_meta,
    read_learner_meta,
    register_learner,
    saved_meta,
    scheme_from_meta,
)
from sizewise.learners.network import NetworkLearner
from sizewise.learners.training import (
    Batch,
    batches_per_epoch,
    cross_entropy,
    length_bucketed_batches,
    resolve_device,
    train_epochs,
)
from sizewise.learners.transformer.config import TransformerConfig, resolve_model
from sizewise.learners.transformer.first_token import first_token_last_layer
from sizewise.learners.transformer.loading import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    FULL_WEIGHTS,
    adapter_is_merged,
    load_adapter,
    load_classifier,
    load_tokenizer,
    merge_adapter_for_prediction,
    quiet_transformers,
    refuse_remote_code,
    resolve_base,
    wrap_adapter,
)
from sizewise.learners.transformer.pairs import TokenizedPairs
from sizewise.progress import set_quiet

logger = logging.getLogger(__name__)


@register_learner("transformer", TransformerConfig)
class TransformerLearner(NetworkLearner):
    """The ``transformer`` learner. ``fit`` learns ``network_``, ``tokenizer_``, ``scheme_`` and ``history_``."""

    def __init__(self, **settings: Any) -> None:
        self.config = TransformerConfig(**settings)

    # -- building ---------------------------------------------------------------------------
    def _build(self, scheme: LabelScheme) -> None:
        """Load the tokenizer and the pretrained model; wrap it in an adapter for 'lora' / 'ia3'."""
        cfg = self.config
        self.base_model_ = resolve_model(cfg.model)
        self.tokenizer_ = load_tokenizer(self.base_model_)
        model, fresh = load_classifier(self.base_model_, scheme, self.tokenizer_.pad_token_id)
        if cfg.num_layers is not None:
            keep_layers(model, cfg.num_layers)
        if fresh:
            logger.info("newly initialised (trained from scratch): %s", ", ".join(fresh))
        self.target_modules_: list[str] | None = None
        self.modules_to_save_: list[str] | None = None
        if cfg.mode != "full":
            model, self.target_modules_, self.modules_to_save_ = wrap_adapter(model, fresh, cfg)
        self.network_ = model

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        train: PairData,
        dev: PairData | None = None,
        *,
        monitor: PairData | None = None,
        sample_weight: np.ndarray | None = None,
        soft_labels: np.ndarray | None = None,
    ) -> TransformerLearner:
        """Fine-tune the pretrained model (AdamW, linear warm-up and decay), early-stopping on ``dev``
        accuracy; across processes when launched by accelerate / torchrun. ``monitor`` is scored after
        every epoch into ``monitor_probas_`` (for epoch curves); ``sample_weight`` weights the loss per pair;
        ``soft_labels`` (probabilities per pair) replace the labels as targets (distillation)."""
        cfg = self.config
        check_training_data(train, "transformer")
        device = resolve_device(cfg.device, "transformer")
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
        model = self.network_.to(device)
        # The model that trains: DDP-wrapped in a multi-process launch; self.network_ (the same
        # weights) predicts and saves.
        train_model = acc.prepare_model(model) if acc is not None else model

        params = [p for p in model.parameters() if p.requires_grad]
        # Biases and normalisation weights (the 1-d tensors) are not decayed, as in BERT's recipe.
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, fused=device.type == "cuda")
        n_batches = batches_per_epoch(len(train), cfg.batch_size) // world
        if n_batches == 0:
            raise ConfigError(
                "transformer", [f"{len(train)} training pairs make fewer batches than the {world} processes"]
            )
        total_steps = cfg.epochs * math.ceil(n_batches / cfg.gradient_accumulation)
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        scheduler = _linear_schedule(optimizer, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        logger.info(
            "transformer %s (%s) on %s%s: %d pairs, %d optimizer steps",
            cfg.model,
            cfg.mode,
            device,
            f" (process {rank() + 1} of {world})" if world > 1 else "",
            len(train),
            total_steps,
        )
        accumulation, updates = cfg.gradient_accumulation, 0

        def batches(encoded: TokenizedPairs) -> list[np.ndarray]:
            order = length_bucketed_batches(encoded.lengths, cfg.batch_size, rng, cfg.batch_order)
            # Every process draws the same batches (same seed) and takes its share.
            return shard(order, rank(), world) if world > 1 else order

        def step(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal updates
            # The last accumulation group of an epoch may be short; its losses are averaged over its size.
            full_groups = batch.count // accumulation * accumulation
            group = accumulation if batch.number <= full_groups else batch.count - full_groups
            syncs = batch.number % accumulation == 0 or batch.last
            # Gradients are averaged across processes only on the step that updates.
            no_sync = train_model.no_sync() if acc is not None and not syncs else contextlib.nullcontext()
            with no_sync:
                with _autocast(device, amp_dtype):
                    logits = train_model(**batch.inputs).logits
                logits = logits.float()
                loss = cross_entropy(logits, batch.targets, batch.weights)
                scaler.scale(loss / group).backward()
            if syncs:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                updates += 1
            return loss, logits

        with self.forward_context():
            run = train_epochs(
                self,
                train,
                step,
                batches,
                epochs=cfg.epochs,
                device=device,
                dev=dev,
                monitor=monitor,
                sample_weight=sample_weight,
                soft_labels=soft_labels,
                patience=cfg.patience,
                restore_best=cfg.restore_best,
                network=train_model,
                stop=lambda: cfg.max_steps is not None and updates >= cfg.max_steps,
                epoch_fields=lambda: {"steps": updates, "learning_rate": scheduler.get_last_lr()[0]},
            )
        self.history_, self.monitor_probas_, self.best_epoch_ = run.history, run.monitor_probas, run.best_epoch
        model.eval()
        return self

    # -- the network spine ------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """Tokens kept per pair: the ``max_length`` setting, or the tokenizer's limit if smaller."""
        limit = getattr(self.tokenizer_, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:  # unset limits are ~1e30
            return min(self.config.max_length, limit)
        return self.config.max_length

    def encode(self, data: PairData) -> TokenizedPairs:
        """``data`` tokenized as pairs by the fitted tokenizer."""
        return TokenizedPairs(self.tokenizer_, data, self.max_length)

    def logits(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The network's logits for one batch of :meth:`TokenizedPairs.batch`."""
        return self.network_(**inputs).logits

    def forward_context(self) -> contextlib.AbstractContextManager[bool]:
        """The last encoder layer run for the first token only, as the ``first_token_last_layer`` setting says."""
        return first_token_last_layer(self.network_, self.config.first_token_last_layer)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """Autocast to the ``precision`` setting's dtype on ``device`` (none for fp32)."""
        return _autocast(device, _autocast_dtype(self.config.precision, device))

    @property
    def learning_rate(self) -> float:
        """The learning rate in effect (the per-mode default when the setting is None)."""
        return self.config.lr

    def prepare_to_train(self) -> None:
        """Unfold an adapter folded into the weights for prediction: its own weights train again."""
        tuner = getattr(self.network_, "base_model", None)
        if adapter_is_merged(self.network_) and hasattr(tuner, "unmerge_adapter"):
            tuner.unmerge_adapter()

    def merge_adapter(self) -> dict[str, Any] | None:
        """Fold a LoRA / IA3 adapter into the weights (peft ``merge_and_unload``): the learner becomes a
        full fine-tune. Returns the record, or None for a full fine-tune."""
        if self.config.mode == "full":
            return None
        mode, model = self.config.mode, self.network_
        # A model that has predicted already holds the adapter in its weights (the learner merges it
        # for prediction): only the adapter layers are taken out then.
        merged = model.unload() if adapter_is_merged(model) else model.merge_and_unload()
        for p in merged.parameters():
            p.requires_grad_(True)  # a merged model is a full model: every weight can train
        self.network_ = merged
        self.config = self.config.model_copy(update={"mode": "full", "target_modules": None})
        self.target_modules_ = self.modules_to_save_ = None
        return {"transform": "merge_adapter", "mode": mode}

    # -- prediction -------------------------------------------------------------------------
    def predict_proba(self, data: PairData) -> np.ndarray:
        """Class probabilities ``[len(data), num_labels]`` in the scheme's label order."""
        check_is_fitted(self)
        check_scheme(self.scheme_, data)
        if self.config.mode != "full":
            merge_adapter_for_prediction(self.network_)
        return self.predict_encoded(self.encode(data))

    def parameter_count(self) -> dict[str, int]:
        """Total and trainable parameters; with an adapter, total = base model + adapter.

        peft keeps a frozen original beside each trained copy of a saved module (the head); the
        original is not counted, so the head counts once.
        """
        check_is_fitted(self)
        total = trainable = 0
        for name, p in self.network_.named_parameters():
            if ".original_module." in name:
                continue
            total += p.numel()
            trainable += p.numel() if p.requires_grad else 0
        return {"total": total, "trainable": trainable}

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, *, network: bool = True) -> None:
        """Write the model (or adapter), the tokenizer and ``learner.json`` (atomically; no pickle);
        ``network=False`` leaves the network out, for a caller that stores it its own way."""
        check_is_fitted(self)
        with atomic_directory(directory, owner=MODEL_FILES) as tmp, quiet_transformers():
            if network and self.config.mode == "full":
                # transformers 5 writes safetensors only (config.json + model.safetensors).
                self.network_.save_pretrained(tmp)
            elif network:
                self.network_.save_pretrained(tmp, safe_serialization=True)
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
            model_type=self.network_.config.model_type,
            target_modules=self.target_modules_,
            modules_to_save=self.modules_to_save_,
            parameters=self.parameter_count(),
            history=self.history_,
            best_epoch=self.best_epoch_,
            versions={"transformers": transformers.__version__, "peft": peft.__version__},
        )

    @classmethod
    def load(cls, directory: str | Path, *, network: nn.Module | None = None) -> TransformerLearner:
        """Read a folder written by :meth:`save`; an adapter needs its base model (``base_model``) at hand.
        ``network`` stands in for the saved model, which the folder then need not hold."""
        directory = Path(directory)
        meta = read_learner_meta(directory)
        refuse_remote_code(directory)
        settings = dict(meta.get("config", {}))
        model_name = settings.pop("model", "minilm")
        if not isinstance(model_name, str):
            found = type(model_name).__name__
            raise ModelError(f"{directory / LEARNER_FILE}: config.model: expected a string, found {found}")
        # The saved folder stands in for `model` while the other settings are checked: a full
        # fine-tune needs no base model, and a missing base deserves the clearer error below.
        learner = learner_from_meta(cls, directory, settings, model=str(directory))
        learner.config = cfg = learner.config.model_copy(update={"model": model_name})
        if network is not None:
            needed = []
        else:
            needed = [FULL_WEIGHTS, "config.json"] if cfg.mode == "full" else [ADAPTER_WEIGHTS, ADAPTER_CONFIG]
        for name in [*needed, "tokenizer_config.json"]:
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing")
        scheme = scheme_from_meta(meta)
        learner.scheme_ = scheme
        learner.tokenizer_ = load_tokenizer(str(directory), saved=True)
        learner.target_modules_ = meta.get("target_modules")
        learner.modules_to_save_ = meta.get("modules_to_save")
        # base_model_path is a record of where the base model was when it trained; it is never read.
        recorded = meta.get("base_model_path")
        if network is not None:
            learner.base_model_ = recorded if isinstance(recorded, str) else cfg.model
            model = network
        elif cfg.mode == "full":
            learner.base_model_ = recorded if isinstance(recorded, str) else cfg.model
            model, fresh = load_classifier(str(directory), scheme, learner.tokenizer_.pad_token_id, saved=True)
            if fresh:
                raise ModelError(f"{directory}: {FULL_WEIGHTS} lacks weights: {', '.join(fresh[:5])}")
        else:
            learner.base_model_ = resolve_base(cfg.model, directory)
            refuse_remote_code(Path(learner.base_model_))
            base, _ = load_classifier(learner.base_model_, scheme, learner.tokenizer_.pad_token_id, saved=True)
            if cfg.num_layers is not None:  # the adapter was trained on the cut model
                keep_layers(base, cfg.num_layers)
            model = load_adapter(base, directory)
        device = torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")
        learner.network_ = model.to(device).eval()
        learner.history_ = meta.get("history", [])
        learner.best_epoch_ = meta.get("best_epoch", len(learner.history_))
        learner.monitor_probas_ = []
        return learner


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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the peak rate, then linear decay to zero at ``total`` steps."""
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1))
