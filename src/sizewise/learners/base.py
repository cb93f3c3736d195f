"""The learner contract, the registry of learner kinds, and saving / loading by kind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from sizewise import __version__
from sizewise.data.labels import SCHEMES, LabelScheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, ModelError
from sizewise.files import read_json_file

LEARNER_FILE = "learner.json"


class LearnerConfig(BaseModel):
    """Base of every learner kind's settings: unknown keys are errors, every field has help text."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@runtime_checkable
class Learner(Protocol):
    """Anything that learns from pair data and predicts class probabilities."""

    kind: ClassVar[str]

    def fit(self, train: PairData, dev: PairData | None = None) -> Learner:
        """Train on ``train`` (early-stopping on ``dev`` where the kind supports it); returns self."""
        ...

    def predict_proba(self, data: PairData) -> np.ndarray:
        """Probabilities ``[len(data), num_labels]``, columns in the training scheme's label order."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the fitted learner as safetensors + JSON into ``directory`` (replaced whole)."""
        ...

    @classmethod
    def load(cls, directory: str | Path) -> Learner:
        """Read a learner written by :meth:`save`."""
        ...

    def parameter_count(self) -> dict[str, int]:
        """``{"total": ..., "trainable": ...}`` parameters of the fitted model."""
        ...


class _Entry:
    def __init__(self, cls: type, config_cls: type[LearnerConfig]) -> None:
        self.cls = cls
        self.config_cls = config_cls


LEARNERS: dict[str, _Entry] = {}


def register_learner(kind: str, config_cls: type[LearnerConfig]) -> Callable[[type], type]:
    """Class decorator that registers a learner kind; registering a kind twice is an error."""

    def wrap(cls: type) -> type:
        if kind in LEARNERS:
            raise ValueError(f"learner kind {kind!r} is already registered by {LEARNERS[kind].cls.__name__}")
        cls.kind = kind
        LEARNERS[kind] = _Entry(cls, config_cls)
        return cls

    return wrap


def _ensure_builtin_kinds() -> None:
    # Importing the modules registers their kinds; done lazily so `sizewise.learners.base` stays light.
    import sizewise.compress.learner  # noqa: F401
    import sizewise.ensembles.ensemble  # noqa: F401
    import sizewise.learners.bilstm  # noqa: F401
    import sizewise.learners.transformer  # noqa: F401


def learner_kinds() -> list[str]:
    """Names of every registered learner kind."""
    _ensure_builtin_kinds()
    return sorted(LEARNERS)


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One readable line per pydantic problem, with the field path (``arms[1].learner.epochs: ...``)."""
    out = []
    for err in exc.errors():
        loc = prefix
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def learner_spec_problems(spec: Any, where: str = "learner") -> list[str]:
    """Every problem with a learner spec (``{"kind": ..., **settings}``), as readable lines."""
    _ensure_builtin_kinds()
    if not isinstance(spec, dict):
        return [f"{where}: must be a mapping with a 'kind' key"]
    kind = spec.get("kind")
    if kind not in LEARNERS:
        return [f"{where}.kind: {kind!r} is not a learner kind; choose one of {', '.join(sorted(LEARNERS))}"]
    settings = {k: v for k, v in spec.items() if k != "kind"}
    try:
        LEARNERS[kind].config_cls(**settings)
    except ValidationError as exc:
        return format_validation_error(exc, where)
    return []


def learner_config_class(kind: str) -> type[LearnerConfig]:
    """The settings class of a registered learner kind (KeyError for an unknown kind)."""
    _ensure_builtin_kinds()
    return LEARNERS[kind].config_cls


def create_learner(spec: dict[str, Any]) -> Learner:
    """Build an unfitted learner from ``{"kind": ..., **settings}``; bad specs raise ConfigError."""
    problems = learner_spec_problems(spec)
    if problems:
        raise ConfigError("learner", problems)
    entry = LEARNERS[spec["kind"]]
    return entry.cls(**{k: v for k, v in spec.items() if k != "kind"})


def read_learner_meta(directory: str | Path) -> dict[str, Any]:
    """The JSON metadata of a saved learner; a clear ModelError when the folder is not one."""
    path = Path(directory) / LEARNER_FILE
    if not path.is_file():
        raise ModelError(f"{directory}: not a saved sizewise model (no {LEARNER_FILE})")
    meta = read_json_file(path, ModelError, "JSON file")
    if not isinstance(meta, dict) or "kind" not in meta:
        raise ModelError(f"{path}: field 'kind' is missing")
    return meta


def load_learner(directory: str | Path) -> Learner:
    """Load any saved learner; the kind is read from its ``learner.json``."""
    _ensure_builtin_kinds()
    meta = read_learner_meta(directory)
    kind = meta["kind"]
    if kind not in LEARNERS:
        raise ModelError(f"{directory}: unknown learner kind {kind!r} (known: {', '.join(sorted(LEARNERS))})")
    return LEARNERS[kind].cls.load(directory)


def saved_meta(learner: Any, **extra: Any) -> dict[str, Any]:
    """What every saved ``learner.json`` starts with (kind, version, label scheme and order,
    settings), followed by the kind's own ``extra`` fields."""
    return {
        "kind": learner.kind,
        "sizewise_version": __version__,
        "scheme": learner.scheme_.name,
        "labels": list(learner.scheme_.labels),
        "config": learner.config.model_dump(),
        **extra,
    }


def scheme_from_meta(meta: dict[str, Any]) -> LabelScheme:
    """The label scheme a saved learner was trained with."""
    name = meta.get("scheme")
    if name not in SCHEMES:
        raise ModelError(f"saved model has unknown label scheme {name!r}")
    return SCHEMES[name]


def check_scheme(learner_scheme: LabelScheme, data: PairData) -> None:
    """Refuse to predict on data read under a different label scheme than the learner's."""
    if data.scheme.name != learner_scheme.name:
        raise ConfigError(
            "predict",
            [f"{data.source} was read as {data.scheme.name!r}, the model predicts {learner_scheme.name!r}"],
        )
