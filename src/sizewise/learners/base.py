"""The learner contract, the registry of learner kinds, and saving / loading by kind.

This module imports no learner kind: each kind registers itself when its module is imported, and a
lookup of a built-in kind not registered yet imports its module (:mod:`sizewise.builtins`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from sizewise import __version__
from sizewise.builtins import LEARNER_KINDS, import_all, lookup
from sizewise.data.labels import SCHEMES, LabelScheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, ModelError, summarise_problems
from sizewise.files import read_json_file

LEARNER_FILE = "learner.json"
#: Files that mark a folder as a model sizewise saved (a learner's, or a study's majority baseline's):
#: only such a folder (or an empty one) is replaced by a new model.
MODEL_FILES = (LEARNER_FILE, "majority.json")


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


class BaseLearner:
    """What every built-in learner shares (scikit-learn's habit: ``__init__`` only stores settings,
    ``fit`` returns self, learned state ends in ``_``)."""

    kind: ClassVar[str]
    #: Whether :func:`sizewise.compress.compress` accepts a fitted learner of this kind.
    compressible: ClassVar[bool] = False
    scheme_: LabelScheme

    def predict_proba(self, data: PairData) -> np.ndarray:  # pragma: no cover - every kind defines it
        raise NotImplementedError

    def predict_with_sections(self, data: PairData) -> tuple[np.ndarray, dict[str, Any]]:
        """Probabilities on labelled ``data`` and the sections this kind adds to an arm's result
        (an ensemble: its members, size curves and diversity); most kinds add none."""
        return self.predict_proba(data), {}

    @property
    def labels_(self) -> tuple[str, ...]:
        """Label names, in the column order of :meth:`predict_proba`."""
        return self.scheme_.labels


class CompositeLearner(BaseLearner):
    """A learner made of fitted member learners (an ensemble): a transformation such as compression
    applies to every member and :meth:`with_members` builds the learner anew around the results."""

    compressible: ClassVar[bool] = True
    learners_: list[Any]

    @property
    def member_spec(self) -> dict[str, Any]:  # pragma: no cover - every composite kind defines it
        """The learner spec every member was built from."""
        raise NotImplementedError

    def with_members(self, members: list[Any], member_spec: dict[str, Any]) -> CompositeLearner:  # pragma: no cover
        """A copy of this learner with ``members`` (built from ``member_spec``) in place of its own."""
        raise NotImplementedError


def check_is_fitted(learner: Any) -> None:
    """Raise ModelError unless ``learner`` was fitted or loaded: it then holds learned state, attributes
    whose names end in ``_`` (scikit-learn's test)."""
    if not any(name.endswith("_") and not name.startswith("__") for name in vars(learner)):
        kind = getattr(learner, "kind", type(learner).__name__)
        raise ModelError(f"this {kind} learner is not fitted yet: call fit() or load() first")


def check_training_data(train: PairData, kind: str) -> None:
    """Refuse to train on data without a labelled pair."""
    if len(train) == 0 or not train.has_labels:
        raise ConfigError(kind, [f"{train.source}: training data needs at least one labelled pair"])


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


def _entry(kind: Any) -> _Entry | None:
    """The registry entry of ``kind``; a built-in kind's module is imported on its first lookup."""
    return lookup(LEARNERS, LEARNER_KINDS, kind)


def learner_kinds() -> list[str]:
    """Names of every learner kind: the registered ones and the built-in ones (not imported for this)."""
    return sorted(set(LEARNERS) | set(LEARNER_KINDS))


def learner_class(kind: str) -> type:
    """The class of a learner kind (KeyError for an unknown kind)."""
    entry = _entry(kind)
    if entry is None:
        raise KeyError(kind)
    return entry.cls


def learner_config_class(kind: str) -> type[LearnerConfig]:
    """The settings class of a learner kind (KeyError for an unknown kind)."""
    entry = _entry(kind)
    if entry is None:
        raise KeyError(kind)
    return entry.config_cls


def compressible_kinds() -> list[str]:
    """Learner kinds :func:`sizewise.compress.compress` accepts (imports every built-in kind to ask it)."""
    import_all(LEARNER_KINDS)
    return sorted(kind for kind, entry in LEARNERS.items() if getattr(entry.cls, "compressible", False))


def spec_with_seed(spec: dict[str, Any], seed: int, *, override: bool) -> dict[str, Any]:
    """A copy of the learner spec ``spec`` with ``seed`` as its seed, if its kind has that setting;
    with ``override=False`` only where the spec names no seed of its own."""
    spec = dict(spec)
    if "seed" in learner_config_class(spec["kind"]).model_fields and (override or "seed" not in spec):
        spec["seed"] = seed
    return spec


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
    if not isinstance(spec, dict):
        return [f"{where}: must be a mapping with a 'kind' key"]
    kind = spec.get("kind")
    entry = _entry(kind)
    if entry is None:
        return [f"{where}.kind: {kind!r} is not a learner kind; choose one of {', '.join(learner_kinds())}"]
    settings = {k: v for k, v in spec.items() if k != "kind"}
    try:
        entry.config_cls(**settings)
    except ValidationError as exc:
        return format_validation_error(exc, where)
    return []


def create_learner(spec: dict[str, Any]) -> Learner:
    """Build an unfitted learner from ``{"kind": ..., **settings}``; bad specs raise ConfigError."""
    problems = learner_spec_problems(spec)
    if problems:
        raise ConfigError("learner", problems)
    return learner_class(spec["kind"])(**{k: v for k, v in spec.items() if k != "kind"})


def read_learner_meta(directory: str | Path) -> dict[str, Any]:
    """The JSON metadata of a saved learner; a clear ModelError when the folder is not one, or when its
    ``kind``, ``scheme`` or ``config`` is not of the kind every saved learner has."""
    path = Path(directory) / LEARNER_FILE
    if not path.is_file():
        raise ModelError(f"{directory}: not a saved sizewise model (no {LEARNER_FILE})")
    try:
        meta = read_json_file(path, ModelError, "JSON file")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(meta, dict) or "kind" not in meta:
        raise ModelError(f"{path}: field 'kind' is missing")
    if not isinstance(meta["kind"], str):
        raise ModelError(f"{path}: kind: expected a string, found {type(meta['kind']).__name__}")
    if not isinstance(meta.get("scheme"), str) or meta["scheme"] not in SCHEMES:
        raise ModelError(f"{path}: scheme: {meta.get('scheme')!r} is not one of {', '.join(SCHEMES)}")
    if not isinstance(meta.get("config", {}), dict):
        raise ModelError(f"{path}: config: expected a mapping of settings, found {type(meta['config']).__name__}")
    return meta


def learner_from_meta(cls: type, directory: str | Path, settings: dict[str, Any], **overrides: Any) -> Any:
    """``cls(**settings, **overrides)`` for the ``config`` of a saved learner: a setting of a wrong type,
    out of range or unknown to ``cls``'s kind is a ModelError naming ``learner.json`` and the setting."""
    path = Path(directory) / LEARNER_FILE
    try:
        return cls(**settings, **overrides)
    except ValidationError as exc:
        raise ModelError(f"{path}: {summarise_problems(format_validation_error(exc, 'config'))}") from None
    except ConfigError as exc:
        raise ModelError(f"{path}: config: {'; '.join(exc.problems)}") from None


def member_folder(directory: str | Path, name: Any, field: str) -> Path:
    """The folder ``name`` inside ``directory`` that a saved learner names in its ``field`` (an ensemble's
    member): a plain folder name whose real path, links followed, stays inside ``directory``."""
    directory = Path(directory)
    where = f"{directory / LEARNER_FILE}: {field}"
    if not isinstance(name, str):
        raise ModelError(f"{where}: expected a folder name, found {type(name).__name__}")
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name or Path(name).is_absolute():
        raise ModelError(f"{where}: {name!r} is not the name of a folder inside the model folder")
    folder = directory / name
    if not folder.resolve().is_relative_to(directory.resolve()):
        raise ModelError(f"{where}: {name!r} leads outside the model folder")
    return folder


def check_links_inside(directory: str | Path) -> None:
    """Refuse (ModelError) a model folder holding a link that leads outside it: loading reads only
    inside the folder (the folder itself may be reached through a link)."""
    root = Path(directory).resolve()
    try:
        for path in root.rglob("*"):
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise ModelError(f"{path}: a link to {path.resolve()}, outside the model folder; copy the file in")
    except OSError as exc:
        raise ModelError(f"{exc.filename or directory}: cannot read ({exc.strerror or exc})") from None


def load_learner(directory: str | Path) -> Learner:
    """Load any saved learner; the kind is read from its ``learner.json``. Loading reads only files
    inside ``directory`` (and an adapter's base model), safetensors and JSON, and never runs code from
    it; whatever is missing, unreadable or corrupt is a one-line :class:`ModelError`."""
    meta = read_learner_meta(directory)
    kind = meta["kind"]
    entry = _entry(kind)
    if entry is None:
        raise ModelError(f"{directory}: unknown learner kind {kind!r} (known: {', '.join(learner_kinds())})")
    check_links_inside(directory)
    try:
        return entry.cls.load(directory)
    except OSError as exc:  # a file of the folder that cannot be read (permissions, a folder in its place)
        what = f"{exc.filename}: " if exc.filename else f"{directory}: "
        raise ModelError(f"{what}cannot read ({exc.strerror or exc})") from None


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
    if not isinstance(name, str) or name not in SCHEMES:
        raise ModelError(f"saved model has unknown label scheme {name!r}")
    return SCHEMES[name]


def check_scheme(learner_scheme: LabelScheme, data: PairData) -> None:
    """Refuse to predict on data read under a different label scheme than the learner's."""
    if data.scheme.name != learner_scheme.name:
        raise ConfigError(
            "predict",
            [f"{data.source} was read as {data.scheme.name!r}, the model predicts {learner_scheme.name!r}"],
        )
