"""Study files: a YAML of data, arms and seeds, validated with every problem reported at once."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sizewise.cost.energy import EnergySettings
from sizewise.data.labels import SCHEMES
from sizewise.errors import ConfigError
from sizewise.learners.base import format_validation_error, learner_spec_problems

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


class ArmConfig(_Strict):
    """One line of the study: a named learner spec (its training budget lives in the spec)."""

    name: str = Field(description="Folder-safe name of the arm (letters, digits, . _ -).")
    learner: dict[str, Any] = Field(description="Learner spec: {kind: bilstm|ensemble|..., settings...}.")
    description: str | None = Field(None, description="A human label for tables (default: the name).")

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, value: str) -> str:
        if not _ARM_NAME.match(value):
            raise ValueError(f"{value!r} must start with a letter or digit and use only letters, digits, . _ -")
        return value


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

    def arm(self, name: str) -> ArmConfig:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)

    def arm_fingerprint(self, arm: ArmConfig) -> str:
        """A hash of all that determines an arm's result: a finished arm is reused only if it matches."""
        payload = {
            "arm": arm.model_dump(),
            "data": self.data.model_dump(),
            "seed": self.seed,
            "evaluation": self.evaluation.model_dump(exclude={"baseline"}),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _data_spec_problems(cfg: dict[str, Any], base: Path) -> list[str]:
    from sizewise.data.catalog import DATASETS

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
    for i, arm in enumerate(arms):
        if not isinstance(arm, dict):
            continue
        if "learner" in arm:
            problems.extend(learner_spec_problems(arm["learner"], f"arms[{i}].learner"))
        name = arm.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"arms[{i}].name: {name!r} is used by an earlier arm")
            seen.add(name)
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
