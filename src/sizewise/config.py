"""Study files: a YAML of data, arms and seeds, validated with every problem reported at once."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from sizewise.arms.registry import ArmType, arm_type_names, find_arm_type, get_arm_type
from sizewise.cost.energy import EnergySettings
from sizewise.data.catalog import DATASETS
from sizewise.data.labels import SCHEMES
from sizewise.errors import ConfigError
from sizewise.learners.base import format_validation_error

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """Where a study's pairs come from and how many of them it uses."""

    train: str = Field(description="Training pairs: a file, or a named dataset as `name` or `name:split`.")
    dev: str | None = Field(None, description="Dev pairs for early stopping (file or `name:split`).")
    test: str = Field(description="Test pairs every arm is scored on (file or `name:split`).")
    scheme: str = Field("nli3", description="Label scheme: nli3, or binary (nli3 collapses to it).")
    columns: dict[str, str] | None = Field(
        None, description="Column names in the files, e.g. {premise: sentence1, hypothesis: sentence2}."
    )
    train_size: int | None = Field(None, ge=1, description="Use a stratified random subset of this many pairs.")
    dev_size: int | None = Field(
        None,
        ge=1,
        description="Subset size of dev; with no dev named, this many pairs are held out of train.",
    )
    test_size: int | None = Field(None, ge=1, description="Subset size of test (None: all).")

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value not in SCHEMES:
            raise ValueError(f"unknown scheme {value!r}; choose one of {', '.join(SCHEMES)}")
        return value


class EvaluationConfig(_Strict):
    """How scores and their uncertainty are computed."""

    bootstrap_resamples: int = Field(1000, ge=100, description="Bootstrap resamples for the intervals.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals.")
    baseline: str | None = Field(None, description="Arm every other arm is tested against (default: the first).")


class ArmConfig(BaseModel):
    """One line of the study: a name, a description, and one arm type's block under that type's key
    (``learner: {...}``, ``compress: {...}``, ``majority: {}``; see :mod:`sizewise.arms`)."""

    model_config = ConfigDict(extra="allow")  # the arm type's block, checked by the type

    name: str = Field(description="Folder-safe name of the arm (letters, digits, . _ -).")
    description: str | None = Field(None, description="A human label for tables (default: the name).")
    _arm_type: str = PrivateAttr("")
    _spec: Any = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, value: str) -> str:
        if not _ARM_NAME.match(value):
            raise ValueError(f"{value!r} must start with a letter or digit and use only letters, digits, . _ -")
        return value

    @model_validator(mode="after")
    def _one_arm_type(self) -> ArmConfig:
        blocks = {key: block for key, block in (self.model_extra or {}).items() if block is not None}
        unknown = [key for key in blocks if find_arm_type(key) is None]
        if unknown:
            errors = [{"type": "extra_forbidden", "loc": (key,), "input": blocks[key]} for key in unknown]
            raise ValidationError.from_exception_data("ArmConfig", errors)  # type: ignore[arg-type]
        if len(blocks) != 1:
            raise ValueError(f"an arm has exactly one of the blocks {', '.join(arm_type_names())} (its type)")
        ((key, block),) = blocks.items()
        self._arm_type = key
        self._spec = get_arm_type(key).parse(block)
        return self

    @model_serializer
    def _as_written(self) -> dict[str, Any]:
        return {"name": self.name, self.arm_type: self.type_.dump(self.spec), "description": self.description}

    @property
    def arm_type(self) -> str:
        """The key of the arm's block: its type (``learner``, ``compress``, ...)."""
        return self._arm_type

    @property
    def type_(self) -> ArmType:
        """The arm's type."""
        return get_arm_type(self._arm_type)

    @property
    def spec(self) -> Any:
        """The arm's block, parsed by its type (a learner spec, a CompressArmConfig, ...)."""
        return self._spec

    @property
    def kind(self) -> str:
        """The learner kind the arm's model is ('compressed' for a compress arm)."""
        return self.type_.learner_kind(self.spec)


#: The blocks every arm's fingerprint lists (null where absent): ArmConfig had exactly these two fields
#: when sizewise.result/1 fingerprints were first computed, and finished arms must stay current.
_FINGERPRINT_BLOCKS = ("learner", "compress")


class StudyConfig(_Strict):
    """A whole study: data, seed, output folder and the arms to compare."""

    name: str = Field(description="Study name, shown in reports.")
    data: DataConfig
    arms: list[ArmConfig] = Field(min_length=1, description="The models to compare, in table order.")
    seed: int = Field(0, description="Seed of the data subsets and the default seed of every learner.")
    output: str = Field("runs/study", description="Folder for result JSON, models and the report.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    cost: EnergySettings = Field(default_factory=EnergySettings)
    description: str | None = Field(None, description="What the study asks, for the report.")

    @model_validator(mode="after")
    def _expand_arms(self) -> StudyConfig:
        """Check every arm against the arms before it (a compress arm's source), then expand it (a
        sweep becomes one arm per setting)."""
        arms: list[ArmConfig] = []
        problems: list[str] = []
        for arm in self.arms:
            arm_type = arm.type_
            earlier = {a.name: a.kind for a in arms}
            problems.extend(f"arm {arm.name}: {p}" for p in arm_type.check(arm.spec, earlier))
            made = arm_type.expand(arm.name, arm.description, arm.spec)
            if made == [(arm.name, arm.description, arm.spec)]:
                arms.append(arm)
                continue
            for name, description, spec in made:
                arms.append(ArmConfig.model_validate({"name": name, "description": description, arm.arm_type: spec}))
        if problems:
            raise ValueError("; ".join(problems))
        self.arms = arms
        return self

    def arm(self, name: str) -> ArmConfig:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def arm_fingerprint(self, arm: ArmConfig) -> str:
        """A hash of all that determines an arm's result: a finished arm is reused only if it matches.
        An arm made from other arms' models includes their fingerprints: a retrained source makes it stale."""
        record = {"name": arm.name, **dict.fromkeys(_FINGERPRINT_BLOCKS), "description": arm.description}
        record[arm.arm_type] = arm.type_.dump(arm.spec)
        payload: dict[str, Any] = {
            "arm": record,
            "data": self.data.model_dump(),
            "seed": self.seed,
            "evaluation": self.evaluation.model_dump(exclude={"baseline"}),
        }
        sources = [self.arm_fingerprint(self.arm(name)) for name in arm.type_.sources(arm.spec)]
        if sources:
            payload["source"] = sources[0] if len(sources) == 1 else sources
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _data_spec_problems(cfg: dict[str, Any], base: Path) -> list[str]:
    problems = []
    data = cfg.get("data")
    if not isinstance(data, dict):
        return problems
    for key in ("train", "dev", "test"):
        spec = data.get(key)
        if not isinstance(spec, str):
            continue
        name = spec.split(":", 1)[0]
        if name in DATASETS or (base / spec).exists() or Path(spec).expanduser().exists():
            continue
        problems.append(f"data.{key}: {spec!r} is neither a file nor a dataset ({', '.join(DATASETS)})")
    return problems


def parse_study(raw: Any, source: str = "<study>", base: Path | None = None) -> StudyConfig:
    """Validate a study mapping; raise one ConfigError that lists every problem found."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the file must hold a mapping with name, data and arms"])
    problems: list[str] = []
    config = None
    try:
        config = StudyConfig(**raw)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc))
    arms = raw.get("arms") if isinstance(raw.get("arms"), list) else []
    seen: set[str] = set()
    repeated: set[str] = set()
    for i, arm in enumerate(arms):
        if not isinstance(arm, dict):
            continue
        name = arm.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"arms[{i}].name: {name!r} is used by an earlier arm")
                repeated.add(name)
            seen.add(name)
    if config is not None:  # compress sweeps add arms: their names must be new as well
        names = [a.name for a in config.arms]
        for name in sorted({n for n in names if names.count(n) > 1} - repeated):
            problems.append(f"arms: {name!r} is made by a sweep and is also the name of another arm")
        seen |= set(names)
    baseline = raw.get("evaluation", {}).get("baseline") if isinstance(raw.get("evaluation"), dict) else None
    if baseline is not None and baseline not in seen:
        problems.append(f"evaluation.baseline: {baseline!r} is not the name of an arm")
    problems.extend(_data_spec_problems(raw, base or Path.cwd()))
    if problems or config is None:
        raise ConfigError(source, list(dict.fromkeys(problems)))
    return config


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["no such file"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}", [f"not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not valid UTF-8"]) from None
    return parse_study(raw, str(path), path.parent)
