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
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field, SerializeAsAny, field_validator, model_validator
from safetensors.torch import save_file

from sizewise.compress.onnx import ONNX_FILE, OnnxClassifier, is_onnx, onnxruntime_problem
from sizewise.compress.storage import (
    dense_state,
    float_twins,
    install_quantized,
    quantized_module_names,
    read_state,
    storage_summary,
    write_state,
)
from sizewise.compress.transforms import Step, apply_step, misplaced_final_step, parse_step, validate_steps
from sizewise.data.labels import LabelScheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, ModelError
from sizewise.files import atomic_directory, atomic_write_json
from sizewise.learners.base import (
    LEARNER_FILE,
    MODEL_FILES,
    BaseLearner,
    CompositeLearner,
    LearnerConfig,
    check_is_fitted,
    compressible_kinds,
    create_learner,
    learner_class,
    learner_kinds,
    learner_spec_problems,
    load_learner,
    read_learner_meta,
    register_learner,
    saved_meta,
    scheme_from_meta,
    spec_with_seed,
)
from sizewise.learners.network import NetworkLearner

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
    steps: list[SerializeAsAny[Step]] = Field(
        default_factory=lambda: [parse_step({"transform": "quantize_int8"})],
        min_length=1,
        description="Transforms applied in order after training: prune, prune_structured, prune_heads, recover, "
        "quantize_int8 (last). As steps: {transform: prune, sparsity, method}, "
        "{transform: prune_structured, fraction}, {transform: prune_heads, fraction} (transformers), "
        "{transform: recover, epochs, learning_rate} (fine-tunes on the training pairs, pruned weights kept "
        "at zero), {transform: quantize_int8} (last).",
    )
    seed: int | None = Field(None, description="Overrides the base learner's seed (an ensemble sets it per member).")

    @field_validator("steps", mode="before")
    @classmethod
    def _registered_steps(cls, value: Any) -> Any:
        return validate_steps(value)

    @model_validator(mode="after")
    def _valid(self) -> CompressedConfig:
        kind = self.base.get("kind") if isinstance(self.base, dict) else None
        if not _is_network_kind(kind):
            choices = ", ".join(k for k in learner_kinds() if _is_network_kind(k))
            raise ValueError(f"base: kind {kind!r} cannot be compressed; use one of {choices}")
        problems = learner_spec_problems(self.base, "base")
        if problems:
            raise ValueError("; ".join(problems))
        problem = misplaced_final_step(self.steps)
        if problem:
            raise ValueError(problem)
        return self


def _is_network_kind(kind: Any) -> bool:
    """Whether ``kind`` is a learner kind with one torch network (the base a compressed learner wraps)."""
    try:
        return issubclass(learner_class(kind), NetworkLearner)
    except KeyError:
        return False


def _spec(learner: Any) -> dict[str, Any]:
    return {"kind": learner.kind, **learner.config.model_dump()}


@register_learner("compressed", CompressedConfig)
class CompressedLearner(BaseLearner):
    """The ``compressed`` learner: ``base_`` (the compressed bilstm / transformer learner),
    ``transforms_`` (one record per transform) and ``scheme_``."""

    compressible: ClassVar[bool] = True

    def __init__(self, **settings: Any) -> None:
        self.config = CompressedConfig(**settings)

    @classmethod
    def _wrap(cls, base: Any, records: list[dict[str, Any]], config: CompressedConfig) -> CompressedLearner:
        learner = cls.__new__(cls)
        learner.config = config
        learner._take(base, records)
        return learner

    def _take(self, base: NetworkLearner, records: list[dict[str, Any]]) -> None:
        self.base_ = base
        self.transforms_ = records
        self.scheme_: LabelScheme = base.scheme_
        self.counts_ = _count(base.network_)

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
        if self.config.seed is not None:
            spec = spec_with_seed(spec, self.config.seed, override=True)
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
    def predict_proba(self, data: PairData) -> np.ndarray:
        """Class probabilities ``[len(data), num_labels]`` of the compressed network."""
        check_is_fitted(self)
        return self.base_.predict_proba(data)

    def parameter_count(self) -> dict[str, int]:
        """``total``: every weight stored (int8 ones included); ``trainable``: those still in floating
        point (a quantized weight trains no further); ``nonzero``: the weights pruning left."""
        check_is_fitted(self)
        return dict(self.counts_)

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
        check_is_fitted(self)
        model = self.base_.network_
        if is_onnx(model):
            self._save_onnx(directory, model)
            return
        with atomic_directory(directory, owner=MODEL_FILES) as tmp:
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
        """An onnxruntime-quantized transformer: the ONNX file, and the base learner's folder without
        its network (tokenizer + settings) in base/."""
        base = self.base_
        with atomic_directory(directory, owner=MODEL_FILES) as tmp:
            base.save(tmp / BASE_FOLDER, network=False)
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
        if not isinstance(base, NetworkLearner):
            raise ModelError(f"{directory}: the base learner is a {base.kind!r}, which cannot be compressed")
        model = base.network_
        names = meta.get("quantized_modules") or []
        if names:
            model.to("cpu")  # int8 kernels run on the CPU only
            try:
                install_quantized(model, list(names), {k: v for k, v in state.items() if v.is_quantized})
            except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as exc:
                raise ModelError(
                    f"{directory / LEARNER_FILE}: quantized_modules: {names!r} do not match the saved weights ({exc})"
                ) from None
        config = _config_from_meta(dict(meta.get("config", {})), base, directory)
        learner = cls._wrap(base, list(meta.get("transforms", [])), config)
        if learner.scheme_.name != scheme_from_meta(meta).name:
            raise ModelError(f"{directory}: the base learner's label scheme differs from learner.json's")
        return learner

    @classmethod
    def _load_onnx(cls, directory: Path, meta: dict[str, Any]) -> CompressedLearner:
        problem = onnxruntime_problem()
        if problem:
            raise ModelError(f"{directory}: {problem}")
        for name in (ONNX_FILE, f"{BASE_FOLDER}/{LEARNER_FILE}"):
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing")
        base_meta = read_learner_meta(directory / BASE_FOLDER)
        params = meta.get("parameters", {})
        model_config = SimpleNamespace(model_type=base_meta.get("model_type"))
        counts = {"total": int(params.get("total", 0)), "nonzero": int(params.get("nonzero", 0))}
        inputs = list(meta.get("onnx_inputs") or ["input_ids", "attention_mask"])
        network = OnnxClassifier((directory / ONNX_FILE).read_bytes(), inputs, model_config, counts)
        try:
            network._session_for_now()  # a broken graph fails here, not at the first prediction
        except Exception as exc:  # onnxruntime's errors have no common base class of their own
            raise ModelError(f"{directory / ONNX_FILE}: not a readable ONNX model ({exc})") from None
        # The base learner reads its settings and tokenizer from base/; the ONNX session is its network.
        kind = base_meta["kind"]
        if kind not in learner_kinds() or not issubclass(learner_class(kind), NetworkLearner):
            raise ModelError(f"{directory / BASE_FOLDER / LEARNER_FILE}: kind {kind!r} cannot hold an ONNX network")
        base = learner_class(kind).load(directory / BASE_FOLDER, network=network)
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
    merged = base.merge_adapter()
    if merged is not None:
        records.append(merged)
    for step in steps:
        records.append(apply_step(base, parse_step(step), train, done=records))
    return records


# --- the transforms ------------------------------------------------------------------------------


def compress(learner: Any, steps: Sequence[Any], train: PairData | None = None) -> Any:
    """A compressed copy of a fitted learner (``learner`` itself is left as it was).

    ``steps``: step models or dicts (``{"transform": "prune", "sparsity": 0.5}``, ...); ``train``:
    the pairs a ``recover`` step fine-tunes on. A bilstm / transformer / compressed learner gives a
    :class:`CompressedLearner`; an ensemble gives an ensemble whose members are compressed, each on
    its own.
    """
    parsed = [parse_step(s) for s in steps]
    kind = getattr(learner, "kind", type(learner).__name__)
    if not getattr(learner, "compressible", False):
        supported = ", ".join(compressible_kinds())
        raise ConfigError("compress", [f"a {kind!r} learner cannot be compressed; supported: {supported}"])
    check_is_fitted(learner)
    if isinstance(learner, CompositeLearner):
        members = [compress(member, parsed, train) for member in learner.learners_]
        return learner.with_members(members, _extended(learner.member_spec, parsed))
    if isinstance(learner, CompressedLearner):
        base, records = copy.deepcopy(learner.base_), learner.transforms_
        recipe, done, seed = learner.config.base, list(learner.config.steps), learner.config.seed
    elif isinstance(learner, NetworkLearner):
        base, records, recipe, done, seed = copy.deepcopy(learner), [], _spec(learner), [], None
    else:
        raise ConfigError("compress", [f"a {kind!r} learner says it is compressible but has no torch network"])
    records = _apply(base, parsed, records, train)
    config = CompressedConfig.model_construct(base=recipe, steps=[*done, *parsed], seed=seed)
    return CompressedLearner._wrap(base, records, config)


def _extended(spec: dict[str, Any], steps: list[Any]) -> dict[str, Any]:
    """The learner spec of ``spec`` compressed further by ``steps``."""
    dumped = [s.model_dump() for s in steps]
    if spec.get("kind") == "compressed":
        return {**spec, "steps": [*spec["steps"], *dumped]}
    return {"kind": "compressed", "base": spec, "steps": dumped}


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
