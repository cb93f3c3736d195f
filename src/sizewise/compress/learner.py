"""The ``compressed`` learner: a fitted bilstm / transformer after pruning and / or int8 quantization.

It is made two ways: by the transforms (``prune``, ``prune_structured``, ``prune_heads``,
``quantize_dynamic_int8``, ``compress``) applied to a fitted learner, or from a spec ``{"kind":
"compressed", "base": {...}, "steps": [...]}`` whose ``fit`` trains the base learner and then
applies the steps. An ensemble is compressed member by member (its members become compressed
learners).

A saved compressed learner is a folder::

    learner.json             kind, the recipe (base spec + steps), the record of every transform
    compressed.safetensors   the network, pruned tensors as bitmask + values, int8 weights as int8
    base/                    the base learner's own folder without its weights (vocabulary or
                             tokenizer, config, its learner.json)

Loading rebuilds the base learner from ``base/`` and the stored tensors, then puts the int8
modules back with the exact stored values, so predictions match the saved learner's.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from pydantic import Field, model_validator
from safetensors.torch import save_file

from sizewise.compress.storage import (
    dense_state,
    float_twins,
    install_quantized,
    quantized_module_names,
    read_state,
    storage_summary,
    write_state,
)
from sizewise.compress.transforms import (
    MODEL_ATTRIBUTE,
    QuantizeStep,
    Step,
    apply_step,
    is_onnx,
    merge_adapter,
    parse_step,
    torch_model,
)
from sizewise.data.labels import LabelScheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, ModelError
from sizewise.files import atomic_directory, atomic_write_json
from sizewise.learners.base import (
    LEARNER_FILE,
    LEARNERS,
    LearnerConfig,
    create_learner,
    learner_spec_problems,
    load_learner,
    read_learner_meta,
    register_learner,
    saved_meta,
    scheme_from_meta,
)

WEIGHTS_FILE = "compressed.safetensors"
BASE_FOLDER = "base"
#: Where the bilstm and (full) transformer loaders read their weights from.
_BASE_WEIGHTS = "model.safetensors"


class CompressedConfig(LearnerConfig):
    """Settings of the ``compressed`` learner."""

    base: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "bilstm"},
        description="Learner spec of the model to train, then compress ({kind, ...}): bilstm or transformer.",
    )
    steps: list[Step] = Field(
        default_factory=lambda: [QuantizeStep()],
        min_length=1,
        description="Transforms applied in order after training: {transform: prune, sparsity, method}, "
        "{transform: prune_structured, fraction}, {transform: prune_heads, fraction} (transformers), "
        "{transform: recover, epochs, learning_rate} (fine-tunes on the training pairs, pruned weights kept "
        "at zero), {transform: quantize_int8} (last).",
    )
    seed: int | None = Field(None, description="Overrides the base learner's seed (an ensemble sets it per member).")

    @model_validator(mode="after")
    def _valid(self) -> CompressedConfig:
        kind = self.base.get("kind") if isinstance(self.base, dict) else None
        if kind not in MODEL_ATTRIBUTE:
            raise ValueError(f"base: kind {kind!r} cannot be compressed; use one of {', '.join(MODEL_ATTRIBUTE)}")
        problems = learner_spec_problems(self.base, "base")
        if problems:
            raise ValueError("; ".join(problems))
        if any(isinstance(step, QuantizeStep) for step in self.steps[:-1]):
            raise ValueError("steps: quantize_int8 must be the last step (a quantized model cannot be pruned)")
        return self


def _spec(learner: Any) -> dict[str, Any]:
    return {"kind": learner.kind, **learner.config.model_dump()}


@register_learner("compressed", CompressedConfig)
class CompressedLearner:
    """The ``compressed`` learner: ``base_`` (the compressed bilstm / transformer learner),
    ``transforms_`` (one record per transform) and ``scheme_``."""

    def __init__(self, **settings: Any) -> None:
        self.config = CompressedConfig(**settings)

    @classmethod
    def _wrap(cls, base: Any, records: list[dict[str, Any]], config: CompressedConfig) -> CompressedLearner:
        learner = cls.__new__(cls)
        learner.config = config
        learner._take(base, records)
        return learner

    def _take(self, base: Any, records: list[dict[str, Any]]) -> None:
        self.base_ = base
        self.transforms_ = records
        self.scheme_: LabelScheme = base.scheme_
        self.counts_ = _count(torch_model(base))

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        train: PairData,
        dev: PairData | None = None,
        *,
        monitor: PairData | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> CompressedLearner:
        """Train the base learner (``monitor`` and ``sample_weight`` are passed on), then compress it.

        ``monitor_probas_`` and ``history_`` are the base learner's, recorded before compression.
        """
        spec = dict(self.config.base)
        if self.config.seed is not None and "seed" in LEARNERS[spec["kind"]].config_cls.model_fields:
            spec["seed"] = self.config.seed
        base = create_learner(spec)
        kwargs: dict[str, Any] = {}
        if monitor is not None:
            kwargs["monitor"] = monitor
        if sample_weight is not None:
            kwargs["sample_weight"] = sample_weight
        base.fit(train, dev, **kwargs)
        self._take(base, _apply(base, self.config.steps, [], train))
        return self

    # -- prediction -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "base_"):
            raise ModelError("this compressed learner is not fitted yet: call fit() or load() first")

    def predict_proba(self, data: PairData) -> np.ndarray:
        """Class probabilities ``[len(data), num_labels]`` of the compressed network."""
        self._check_fitted()
        return self.base_.predict_proba(data)

    def parameter_count(self) -> dict[str, int]:
        """``total``: every weight stored (int8 ones included); ``trainable``: those still in floating
        point (a quantized weight trains no further); ``nonzero``: the weights pruning left."""
        self._check_fitted()
        return dict(self.counts_)

    @property
    def labels_(self) -> tuple[str, ...]:
        """Label names, in the column order of :meth:`predict_proba`."""
        return self.scheme_.labels

    @property
    def history_(self) -> list[dict[str, float]]:
        """The base learner's training history."""
        return getattr(self.base_, "history_", [])

    @property
    def monitor_probas_(self) -> list[np.ndarray]:
        """The base learner's per-epoch monitor probabilities (before compression)."""
        return getattr(self.base_, "monitor_probas_", [])

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``learner.json``, ``compressed.safetensors`` and ``base/`` (atomically; no pickle)."""
        self._check_fitted()
        model = torch_model(self.base_)
        if is_onnx(model):
            self._save_onnx(directory, model)
            return
        with atomic_directory(directory) as tmp:
            with float_twins(model) as qweights:
                # The base learner writes its own folder (vocabulary / tokenizer, configs); its
                # float weights are replaced by the compressed file below.
                self.base_.save(tmp / BASE_FOLDER)
                state = {**model.state_dict(), **qweights}
                layout = write_state(tmp / WEIGHTS_FILE, state)
            for path in (tmp / BASE_FOLDER).iterdir():
                if path.name.endswith((".safetensors", ".safetensors.index.json")):
                    path.unlink()
            meta = saved_meta(
                self,
                base_kind=self.base_.kind,
                transforms=self.transforms_,
                quantized_modules=quantized_module_names(model),
                parameters=self.parameter_count(),
                storage=storage_summary(layout),
            )
            atomic_write_json(tmp / LEARNER_FILE, meta)

    def _save_onnx(self, directory: str | Path, model: Any) -> None:
        """An onnxruntime-quantized transformer: the ONNX file, and the tokenizer + settings in base/."""
        from sizewise.compress.onnx import ONNX_FILE

        base = self.base_
        with atomic_directory(directory) as tmp:
            (tmp / BASE_FOLDER).mkdir()
            base.tokenizer_.save_pretrained(tmp / BASE_FOLDER, legacy_format=False)
            atomic_write_json(tmp / BASE_FOLDER / LEARNER_FILE, base._meta())
            (tmp / ONNX_FILE).write_bytes(model.onnx_bytes)
            meta = saved_meta(
                self,
                base_kind=base.kind,
                runtime="onnxruntime",
                onnx_inputs=model.input_names,
                transforms=self.transforms_,
                parameters=self.parameter_count(),
                storage={"files": {ONNX_FILE: len(model.onnx_bytes)}},
            )
            atomic_write_json(tmp / LEARNER_FILE, meta)

    @classmethod
    def load(cls, directory: str | Path) -> CompressedLearner:
        """Read a folder written by :meth:`save`."""
        directory = Path(directory)
        meta = read_learner_meta(directory)
        if meta.get("runtime") == "onnxruntime":
            return cls._load_onnx(directory, meta)
        for name in (WEIGHTS_FILE, f"{BASE_FOLDER}/{LEARNER_FILE}"):
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing")
        state, _ = read_state(directory / WEIGHTS_FILE)
        with tempfile.TemporaryDirectory() as tmp:
            base_dir = Path(tmp) / BASE_FOLDER
            shutil.copytree(directory / BASE_FOLDER, base_dir)
            save_file(dense_state(state), str(base_dir / _BASE_WEIGHTS), metadata={"format": "pt"})
            try:
                base = load_learner(base_dir)
            except ModelError as exc:  # name the saved folder, not the temporary copy
                raise ModelError(str(exc).replace(str(base_dir), str(directory / BASE_FOLDER))) from None
        if base.kind not in MODEL_ATTRIBUTE:
            raise ModelError(f"{directory}: the base learner is a {base.kind!r}, which cannot be compressed")
        model = torch_model(base)
        names = meta.get("quantized_modules") or []
        if names:
            model.to("cpu")  # int8 kernels run on the CPU only
            install_quantized(model, names, {k: v for k, v in state.items() if v.is_quantized})
        config = _config_from_meta(dict(meta.get("config", {})), base, directory)
        learner = cls._wrap(base, list(meta.get("transforms", [])), config)
        if learner.scheme_.name != scheme_from_meta(meta).name:
            raise ModelError(f"{directory}: the base learner's label scheme differs from learner.json's")
        return learner

    @classmethod
    def _load_onnx(cls, directory: Path, meta: dict[str, Any]) -> CompressedLearner:
        from sizewise.compress.onnx import ONNX_FILE, OnnxClassifier, onnxruntime_problem
        from sizewise.learners.transformer import TransformerConfig, TransformerLearner, _load_tokenizer

        problem = onnxruntime_problem()
        if problem:
            raise ModelError(f"{directory}: {problem}")
        for name in (ONNX_FILE, f"{BASE_FOLDER}/{LEARNER_FILE}"):
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing")
        base_meta = read_learner_meta(directory / BASE_FOLDER)
        base = TransformerLearner.__new__(TransformerLearner)
        # The settings were checked when trained; the model they name need not be at hand to predict.
        base.config = TransformerConfig.model_construct(**base_meta.get("config", {}))
        base.scheme_ = scheme_from_meta(base_meta)
        base.tokenizer_ = _load_tokenizer(str(directory / BASE_FOLDER))
        base.base_model_ = base_meta.get("base_model_path")
        base.target_modules_ = base.modules_to_save_ = None
        base.history_ = base_meta.get("history", [])
        base.best_epoch_ = base_meta.get("best_epoch", len(base.history_))
        base.monitor_probas_ = []
        params = meta.get("parameters", {})
        model_config = SimpleNamespace(model_type=base_meta.get("model_type"))
        counts = {"total": int(params.get("total", 0)), "nonzero": int(params.get("nonzero", 0))}
        inputs = list(meta.get("onnx_inputs") or ["input_ids", "attention_mask"])
        base.model_ = OnnxClassifier((directory / ONNX_FILE).read_bytes(), inputs, model_config, counts)
        config = _config_from_meta(meta.get("config", {}), base, directory)
        learner = cls._wrap(base, list(meta.get("transforms", [])), config)
        if learner.scheme_.name != scheme_from_meta(meta).name:
            raise ModelError(f"{directory}: the base learner's label scheme differs from learner.json's")
        return learner


def _config_from_meta(settings: dict[str, Any], base: Any, directory: Path) -> CompressedConfig:
    try:
        steps = [parse_step(s) for s in settings.get("steps", [])]
    except ConfigError as exc:
        raise ModelError(f"{directory / LEARNER_FILE}: {exc}") from None
    # The recipe is kept as written: its base spec may name files (word vectors, a model folder)
    # that the saved network no longer needs.
    return CompressedConfig.model_construct(
        base=settings.get("base", _spec(base)), steps=steps, seed=settings.get("seed")
    )


def _count(model: torch.nn.Module) -> dict[str, int]:
    if is_onnx(model):  # every weight is int8 in the ONNX graph; none trains
        return {"total": model.counts["total"], "trainable": 0, "nonzero": model.counts["nonzero"]}
    quantized = quantized_module_names(model)
    with float_twins(model):
        params = list(model.named_parameters())
        total = sum(p.numel() for _, p in params)
        nonzero = sum(int(torch.count_nonzero(p.detach())) for _, p in params)
        floating = sum(p.numel() for n, p in params if not any(n.startswith(f"{q}.") for q in quantized))
    return {"total": total, "trainable": floating, "nonzero": nonzero}


def _apply(
    base: Any, steps: Sequence[Any], records: list[dict[str, Any]], train: PairData | None = None
) -> list[dict[str, Any]]:
    """Apply ``steps`` to ``base`` (changed in place); returns ``records`` extended by theirs."""
    records = list(records)
    merged = merge_adapter(base)
    if merged is not None:
        records.append(merged)
    for step in steps:
        records.append(apply_step(base, parse_step(step), train))
    return records


# --- the transforms ------------------------------------------------------------------------------


def compress(learner: Any, steps: Sequence[Any], train: PairData | None = None) -> Any:
    """A compressed copy of a fitted learner (``learner`` itself is left as it was).

    ``steps``: step models or dicts (``{"transform": "prune", "sparsity": 0.5}``, ...); ``train``:
    the pairs a ``recover`` step fine-tunes on. A bilstm / transformer / compressed learner gives a
    :class:`CompressedLearner`; an ensemble gives an ensemble whose members are compressed, each on
    its own.
    """
    from sizewise.ensembles.ensemble import EnsembleLearner

    parsed = [parse_step(s) for s in steps]
    kind = getattr(learner, "kind", type(learner).__name__)
    if isinstance(learner, EnsembleLearner):
        learner._check_fitted()
        out = copy.copy(learner)
        out.learners_ = [compress(member, parsed, train) for member in learner.learners_]
        dumped = [s.model_dump() for s in parsed]
        spec = dict(learner.config.base)
        spec = (
            {**spec, "steps": [*spec["steps"], *dumped]}
            if spec.get("kind") == "compressed"
            else {"kind": "compressed", "base": spec, "steps": dumped}
        )
        out.config = learner.config.model_copy(update={"base": spec})
        return out
    if isinstance(learner, CompressedLearner):
        learner._check_fitted()
        base, records = copy.deepcopy(learner.base_), learner.transforms_
        recipe, done, seed = learner.config.base, list(learner.config.steps), learner.config.seed
    elif kind in MODEL_ATTRIBUTE:
        learner._check_fitted()
        base, records, recipe, done, seed = copy.deepcopy(learner), [], _spec(learner), [], None
    else:
        supported = ", ".join([*MODEL_ATTRIBUTE, "compressed", "ensemble"])
        raise ConfigError("compress", [f"a {kind!r} learner cannot be compressed; supported: {supported}"])
    records = _apply(base, parsed, records, train)
    config = CompressedConfig.model_construct(base=recipe, steps=[*done, *parsed], seed=seed)
    return CompressedLearner._wrap(base, records, config)


def prune(learner: Any, sparsity: float, method: str = "global_magnitude") -> Any:
    """Unstructured magnitude pruning: the ``sparsity`` share of the Linear and LSTM weights with the
    smallest |w| set to zero (``torch.nn.utils.prune``, L1), across all matrices together
    (``global_magnitude``) or the same share in each (``layer_magnitude``). The record's ``reached``
    is the share of zeros among the pruned weights."""
    return compress(learner, [{"transform": "prune", "sparsity": sparsity, "method": method}])


def prune_structured(learner: Any, fraction: float) -> Any:
    """Remove the ``fraction`` of hidden units with the least weight: BiLSTM units per layer and
    direction (and the MLP's hidden neurons), or a transformer's feed-forward neurons in every layer.
    The matrices really shrink, and the learner's config records the new sizes."""
    return compress(learner, [{"transform": "prune_structured", "fraction": fraction}])


def prune_heads(learner: Any, fraction: float) -> Any:
    """Remove the ``fraction`` of a transformer's attention heads with the least weight, the same
    number in every layer (a LoRA / IA3 adapter is merged first). The query, key, value and attention
    output matrices really shrink; the saved ``config.json`` records the heads kept, so the model
    reloads with the smaller layers."""
    return compress(learner, [{"transform": "prune_heads", "fraction": fraction}])


def recover(
    learner: Any, train: PairData, *, epochs: int = 1, learning_rate: float | None = None, pairs: int | None = None
) -> Any:
    """Fine-tune a pruned learner on ``train`` for a few ``epochs``, keeping pruned weights at zero
    (before quantizing: int8 weights do not train). The record holds the loss of every epoch."""
    step = {"transform": "recover", "epochs": epochs, "learning_rate": learning_rate, "pairs": pairs}
    return compress(learner, [step], train)


def quantize_dynamic_int8(learner: Any) -> Any:
    """Dynamic int8 quantization (``torch.ao.quantization.quantize_dynamic``, per output channel) of
    every Linear and LSTM; activations are quantized on the fly at predict time, on the CPU."""
    return compress(learner, [{"transform": "quantize_int8"}])
