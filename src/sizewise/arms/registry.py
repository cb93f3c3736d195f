"""The registry of arm types, and what an arm type provides.

An arm of a study names its type by the key of its block: ``learner: {...}`` is a trained arm,
``compress: {...}`` a compressed copy of another arm's model, ``majority: {}`` the majority-class
baseline. An arm type (a subclass of :class:`ArmType`, registered under its key) owns everything
about its arms:

* its settings: ``config_model``, the pydantic model of the block under its key;
* how an arm expands (a sweep becomes several arms) and which other arms it needs first;
* how an arm runs: given an :class:`ArmRun` (the data, the folder, a cost meter, scoring), it builds
  a model inside the meter and hands it to :meth:`ArmRun.score`, which makes the :class:`ArmResult`;
* where a result comes from (a compressed model descends from its source arm), and the report's
  sections and plots about its own arms.

Adding a type is one module that subclasses :class:`ArmType` and decorates it with
:func:`register_arm_type` (plus, for a built-in type, one line in :data:`sizewise.builtins.ARM_TYPES`).
This module imports no type; a built-in type's module is imported on its first lookup.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, Field, create_model

from sizewise.builtins import ARM_TYPES as BUILTIN_ARM_TYPES
from sizewise.builtins import lookup
from sizewise.cost.meter import CostMeter
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.report.document import Block
from sizewise.result import ArmResult


class ScoredModel(Protocol):
    """What :meth:`ArmRun.score` needs of the model an arm made: the learner contract's prediction,
    saving and parameter count."""

    def predict_proba(self, data: PairData) -> np.ndarray: ...

    def predict_with_sections(self, data: PairData) -> tuple[np.ndarray, dict[str, Any]]: ...

    def save(self, directory: str | Path) -> None: ...

    def parameter_count(self) -> dict[str, int]: ...


class ArmRun(Protocol):
    """What the study hands an arm type to run one arm."""

    name: str
    #: The arm's parsed block (an instance of its type's ``config_model``, or what ``parse`` made of it).
    spec: Any
    #: The unit's training seed (the default seed of every learner).
    seed: int
    train: PairData
    dev: PairData | None
    test: PairData
    #: The unit's folder: its model goes to ``model/``, its result to ``result.json``.
    arm_dir: Path

    def source_model(self, name: str) -> Path:
        """The saved model of arm ``name`` for this unit's seed, which must be finished and current (else a
        ConfigError)."""
        ...

    def meter(self) -> CostMeter:
        """A cost meter with the study's energy settings, for the block that makes the model."""
        ...

    @property
    def pool(self) -> Any:
        """The unit's unlabelled pairs (:class:`sizewise.study.Pool`: ``pairs`` with labels hidden, ``gold``
        kept aside for measuring pseudo-labels only, ``removed``); a ConfigError without ``data.unlabelled``."""
        ...

    def score(
        self,
        model: ScoredModel,
        train_meter: CostMeter,
        recipe: dict[str, Any],
        sections: dict[str, Any] | None = None,
    ) -> ArmResult:
        """Predict the test pairs, save ``model`` and measure it; the arm's result. ``recipe`` is the
        arm's block as it ran (``{"learner": spec}``), written as the result's ``config``; ``sections``
        are result sections of the arm's type."""
        ...


class Expanded(NamedTuple):
    """One arm an arm's block expands into."""

    name: str
    description: str | None
    spec: Any


class ArmType:
    """Base of every arm type; a subclass sets ``config_model`` and overrides :meth:`run` and
    :meth:`learner_kind`, and the other methods where its arms need more than the defaults."""

    #: The arm's key in a study file, set by :func:`register_arm_type`.
    key: ClassVar[str] = ""
    #: The settings of an arm of this type: the block under its key.
    config_model: ClassVar[type[BaseModel]]
    #: Whether its arms train at each size of a learning curve. An arm made from another arm's model
    #: (``sized = False``) runs once per seed, on that arm's model of the same seed at its last size.
    sized: ClassVar[bool] = True
    #: For an arm made from other arms' models: whether each of its units uses their unit of the same seed
    #: and size (a self-trained arm and its teacher), or of the same seed at their largest size (a
    #: compressed or transferred model).
    same_unit_sources: ClassVar[bool] = True
    #: Whether its arms read the study's unlabelled pairs (``data.unlabelled``): they then need them, and
    #: their fingerprints include them.
    uses_unlabelled: ClassVar[bool] = False

    def parse(self, block: Any) -> Any:
        """The arm's spec from its block; a pydantic ValidationError locates problems under the key."""
        return _block_model(type(self)).model_validate({self.key: block}).block

    def dump(self, spec: Any) -> Any:
        """The spec as written in study.json and hashed into the arm's fingerprint."""
        return spec.model_dump()

    def learner_kind(self, spec: Any) -> str:
        """The kind of learner the arm's model is (``bilstm``, ``compressed``, ...)."""
        raise NotImplementedError

    def model_kind(self, spec: Any, earlier: Mapping[str, str]) -> str:
        """The learner kind of the arm's model, given the earlier arms' (name -> kind): by default its
        :meth:`learner_kind`; an arm whose model is another arm's, trained further, has that arm's kind."""
        return self.learner_kind(spec)

    def sources(self, spec: Any) -> list[str]:
        """The arms this arm needs finished first (its fingerprint includes theirs)."""
        return []

    def check(self, spec: Any, earlier: Mapping[str, str]) -> list[str]:
        """Problems with the arm in its study, given the earlier arms (name -> learner kind)."""
        return [f"{name!r} is not the name of an earlier arm" for name in self.sources(spec) if name not in earlier]

    def expand(self, name: str, description: str | None, spec: Any) -> list[Expanded]:
        """The arms this arm becomes (one, unless its block describes a sweep)."""
        return [Expanded(name, description, spec)]

    def distributed(self, spec: Any) -> bool:
        """Whether the arm trains across the processes of a multi-process launch (accelerate / torchrun)."""
        return False

    def run(self, run: ArmRun) -> ArmResult:
        """Make the arm's model inside ``run.meter()`` and return ``run.score(...)``."""
        raise NotImplementedError

    def help_train(self, run: ArmRun) -> None:
        """In a helper process of a multi-process launch: take part in training, score nothing."""
        raise NotImplementedError(f"{self.key} arms do not train across processes")

    def result_source(self, result: ArmResult) -> str | None:
        """The arm a result's model was made from (None when the arm made its own)."""
        return None

    def draw(self, results: list[ArmResult], run_dir: Path) -> dict[str, bool]:
        """Write this type's plots (PNG files in ``run_dir``); which were written, by file name."""
        return {}

    def report_blocks(self, results: list[ArmResult], images: Mapping[str, bool]) -> list[Block]:
        """The report's sections about this type's arms (``results`` holds every arm of the run)."""
        return []


#: Every registered arm type by key.
ARM_TYPES: dict[str, ArmType] = {}

_T = TypeVar("_T", bound=type[ArmType])


def register_arm_type(key: str) -> Callable[[_T], _T]:
    """Class decorator that registers an arm type under ``key``; a key registered twice is a ValueError."""

    def decorate(cls: _T) -> _T:
        if key in ARM_TYPES:
            raise ValueError(f"arm type {key!r} is already registered (by {type(ARM_TYPES[key]).__qualname__})")
        cls.key = key
        ARM_TYPES[key] = cls()
        return cls

    return decorate


def find_arm_type(key: Any) -> ArmType | None:
    """The arm type registered under ``key`` (a built-in type's module is imported), None if none is."""
    return lookup(ARM_TYPES, BUILTIN_ARM_TYPES, key)


def get_arm_type(key: str) -> ArmType:
    """The arm type registered under ``key``; an unknown key is a ConfigError listing the known ones."""
    found = find_arm_type(key)
    if found is None:
        raise ConfigError("arm type", [f"{key!r} is not an arm type; choose one of {', '.join(arm_type_names())}"])
    return found


def arm_type_names() -> list[str]:
    """Keys of the built-in arm types, then of the other registered ones (nothing is imported for this)."""
    return [*BUILTIN_ARM_TYPES, *(key for key in ARM_TYPES if key not in BUILTIN_ARM_TYPES)]


@functools.cache
def _block_model(cls: type[ArmType]) -> type[BaseModel]:
    # A model with one field named by the key, so that pydantic's errors read "<key>.<setting>: ...".
    return create_model(f"{cls.__name__}Block", block=(cls.config_model, Field(alias=cls.key)))
