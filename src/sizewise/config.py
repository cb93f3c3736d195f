"""Study files: a YAML of data, arms and seeds, validated with every problem reported at once."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


#: Learner kinds whose trained models a compress arm can start from.
COMPRESSIBLE_KINDS = ("bilstm", "transformer", "ensemble", "compressed")


class CompressArmConfig(_Strict):
    """A compress arm: another arm's trained model, pruned and / or quantized.

    Either ``steps`` (one arm, the transforms in order) or a sweep: ``sparsity`` levels crossed with
    ``int8`` (each becomes its own arm, named ``<name>-p50``, ``<name>-p50-int8``, ``<name>-int8``).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    source: str = Field(alias="from", description="The arm whose trained model is compressed (an earlier arm).")
    steps: list[dict[str, Any]] | None = Field(
        None,
        description="Transforms in order: {transform: prune, sparsity, method}, {transform: prune_structured, "
        "fraction}, {transform: prune_heads, fraction}, {transform: recover, epochs}, {transform: quantize_int8}.",
    )
    sparsity: list[float] | None = Field(
        None, description="Sweep: global magnitude pruning levels in [0, 1); 0 = not pruned."
    )
    int8: list[bool] = Field([False, True], description="Sweep: each level without and / or with int8 quantization.")
    method: Literal["global_magnitude", "layer_magnitude"] = Field(
        "global_magnitude", description="Sweep: how the pruned weights are picked."
    )
    recover_epochs: int = Field(0, ge=0, description="Sweep: fine-tuning epochs after pruning (0 = none).")
    recover_pairs: int | None = Field(
        None, ge=1, description="Sweep: fine-tune on a random subset of this many training pairs (None: all)."
    )

    @model_validator(mode="after")
    def _one_form(self) -> CompressArmConfig:
        from sizewise.compress.transforms import parse_step

        if (self.steps is None) == (self.sparsity is None):
            raise ValueError("give either steps (one arm) or sparsity (a sweep)")
        if self.steps is not None:
            if not self.steps:
                raise ValueError("steps: at least one transform")
            problems = []
            for i, step in enumerate(self.steps):
                try:
                    parse_step(step)
                except ConfigError as exc:
                    problems.extend(f"steps[{i}]: {p}" for p in exc.problems)
            if problems:
                raise ValueError("; ".join(problems))
        else:
            assert self.sparsity is not None
            bad = [s for s in self.sparsity if not 0.0 <= s < 1.0]
            if bad:
                raise ValueError(f"sparsity: levels must lie in [0, 1), got {bad}")
            if not self.int8:
                raise ValueError("int8: list false, true or both")
        return self

    def expand(self, name: str) -> list[tuple[str, list[dict[str, Any]]]]:
        """The arms this spec makes: ``(arm name, steps)`` pairs."""
        if self.steps is not None:
            return [(name, [dict(s) for s in self.steps])]
        out = []
        for level in dict.fromkeys(self.sparsity or []):
            for quantize in dict.fromkeys(self.int8):
                if level == 0 and not quantize:
                    continue  # that is the source arm itself
                steps: list[dict[str, Any]] = []
                suffix = ""
                if level > 0:
                    steps.append({"transform": "prune", "sparsity": level, "method": self.method})
                    if self.recover_epochs:
                        recover: dict[str, Any] = {"transform": "recover", "epochs": self.recover_epochs}
                        if self.recover_pairs is not None:
                            recover["pairs"] = self.recover_pairs
                        steps.append(recover)
                    suffix += f"-p{round(level * 100)}"
                if quantize:
                    steps.append({"transform": "quantize_int8"})
                    suffix += "-int8"
                out.append((name + suffix, steps))
        return out


class ArmConfig(_Strict):
    """One line of the study: a named learner spec (its training budget lives in the spec), or a
    compress arm made from another arm's trained model."""

    name: str = Field(description="Folder-safe name of the arm (letters, digits, . _ -).")
    learner: dict[str, Any] | None = Field(None, description="Learner spec: {kind: bilstm|ensemble|..., settings...}.")
    compress: CompressArmConfig | None = Field(
        None, description="Instead of a learner: {from: arm, steps: [...]} or a sweep {from, sparsity, int8}."
    )
    description: str | None = Field(None, description="A human label for tables (default: the name).")

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, value: str) -> str:
        if not _ARM_NAME.match(value):
            raise ValueError(f"{value!r} must start with a letter or digit and use only letters, digits, . _ -")
        return value

    @model_validator(mode="after")
    def _learner_or_compress(self) -> ArmConfig:
        if (self.learner is None) == (self.compress is None):
            raise ValueError("an arm has either a learner or a compress block")
        return self

    @property
    def kind(self) -> str:
        """The learner kind the arm trains ('compressed' for a compress arm)."""
        if self.compress is not None:
            return "compressed"
        assert self.learner is not None
        return str(self.learner.get("kind"))


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
    def _expand_compress_sweeps(self) -> StudyConfig:
        """Turn every compress sweep into its arms (each with explicit steps), then check sources."""
        arms: list[ArmConfig] = []
        problems: list[str] = []
        for arm in self.arms:
            if arm.compress is None:
                arms.append(arm)
                continue
            source = next((a for a in arms if a.name == arm.compress.source), None)
            if source is None:
                problems.append(
                    f"arm {arm.name}: compress.from {arm.compress.source!r} is not the name of an earlier arm"
                )
            elif source.kind not in COMPRESSIBLE_KINDS:
                problems.append(
                    f"arm {arm.name}: arm {source.name} is a {source.kind!r} learner, which cannot be compressed"
                )
            specs = arm.compress.expand(arm.name)
            for name, steps in specs:
                label = arm.description or arm.name
                if len(specs) > 1:
                    label = f"{label} {name[len(arm.name) + 1 :]}"
                arms.append(
                    ArmConfig(
                        name=name,
                        description=label,
                        compress=CompressArmConfig(source=arm.compress.source, steps=steps),
                    )
                )
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
        """A hash of all that determines an arm's result: a finished arm is reused only if it matches."""
        payload: dict[str, Any] = {
            "arm": arm.model_dump(),
            "data": self.data.model_dump(),
            "seed": self.seed,
            "evaluation": self.evaluation.model_dump(exclude={"baseline"}),
        }
        if arm.compress is not None:  # a retrained source makes its compressed versions stale
            payload["source"] = self.arm_fingerprint(self.arm(arm.compress.source))
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
    repeated: set[str] = set()
    for i, arm in enumerate(arms):
        if not isinstance(arm, dict):
            continue
        if arm.get("learner") is not None:
            problems.extend(learner_spec_problems(arm["learner"], f"arms[{i}].learner"))
        name = arm.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.append(f"arms[{i}].name: {name!r} is used by an earlier arm")
                repeated.add(name)
            seen.add(name)
    if config is not None:  # compress sweeps add arms: their names must be new as well
        names = [a.name for a in config.arms]
        for name in sorted({n for n in names if names.count(n) > 1} - repeated):
            problems.append(f"arms: {name!r} is made by a compress sweep and is also the name of another arm")
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
