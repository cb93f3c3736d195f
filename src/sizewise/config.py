"""Study files: a YAML of data, arms and seeds, validated with every problem reported at once."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
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
from sizewise.units import TrainSize, Unit, sizes_from

_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Endings of the run folder's own files (study.json, report.md, report.html, the plots): no arm folder
#: may take such a name.
_RUN_FILE_ENDINGS = (".json", ".md", ".html", ".png")

#: A size or count: a whole number, never a boolean (YAML's ``true`` is not 1 pair).
Count = Annotated[StrictInt, Field(ge=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MixtureConfig(_Strict):
    """How several training sets make one (multi-task training): how many pairs each contributes."""

    sampling: Literal["proportional", "temperature", "fixed"] = Field(
        "proportional",
        description="proportional: each set by its size; temperature: by size^(1/T), which favours small sets; "
        "fixed: by `weights`.",
    )
    temperature: float = Field(2.0, gt=0, description="temperature sampling: T (1 is proportional).")
    weights: dict[str, float] | None = Field(None, description="fixed sampling: a weight per set name.")
    size: StrictInt | None = Field(
        None,
        ge=1,
        description="Pairs in the mixture (default: all sets' pairs together); a set asked for more "
        "pairs than it has repeats some.",
    )

    @model_validator(mode="after")
    def _weights_for_fixed(self) -> MixtureConfig:
        if (self.sampling == "fixed") != (self.weights is not None):
            raise ValueError("weights go with sampling: fixed, and fixed sampling needs them")
        if self.weights is not None and not all(w > 0 for w in self.weights.values()):
            raise ValueError("weights must be positive")
        return self


def check_mixture(train: str | dict[str, str], mixture: MixtureConfig | None) -> None:
    """Refuse a mixture without several sets, and fixed weights that do not name each set once."""
    if isinstance(train, dict):
        if not train:
            raise ValueError("train: name at least one training set")
        weights = mixture.weights if mixture is not None else None
        if weights is not None and set(weights) != set(train):
            raise ValueError(f"mixture.weights: give one weight per training set ({', '.join(train)})")
    elif mixture is not None:
        raise ValueError("mixture: needs several training sets (train as {name: source})")


class DataConfig(_Strict):
    """Where a study's pairs come from and how many of them it uses."""

    train: str | dict[str, str] = Field(
        description="Training pairs: a file, or a named dataset as `name` or `name:split`; several sets as "
        "{name: source} make a multi-task mixture (see `mixture`), each read under the study's scheme."
    )
    mixture: MixtureConfig | None = Field(None, description="How several training sets are mixed.")
    dev: str | None = Field(None, description="Dev pairs for early stopping (file or `name:split`).")
    test: str | list[str] | dict[str, str] = Field(
        description="Test pairs every arm is scored on (file or `name:split`); several sets as a list or as "
        "{name: source}. The first is the in-domain set of the main tables; every arm is scored on each."
    )
    scheme: str = Field("nli3", description="Label scheme: nli3, or binary (nli3 collapses to it).")
    columns: dict[str, str] | None = Field(
        None, description="Column names in the files, e.g. {premise: sentence1, hypothesis: sentence2}."
    )
    train_size: StrictInt | None = Field(None, ge=1, description="Use a stratified random subset of this many pairs.")
    dev_size: StrictInt | None = Field(
        None,
        ge=1,
        description="Subset size of dev; with no dev named, this many pairs are held out of train.",
    )
    test_size: StrictInt | None = Field(None, ge=1, description="Subset size of each test set (None: all).")
    train_sizes: list[Count | Literal["all"]] | None = Field(
        None,
        description="A learning curve: train each arm on stratified subsets of these many pairs (`all`: the "
        "whole training set), a new subset per seed.",
    )
    shots_per_class: list[Count] | None = Field(
        None, description="A learning curve in examples per class (K-shot): exactly K pairs of every label."
    )
    unlabelled: str | None = Field(
        None,
        description="Unlabelled pairs for self-training arms: a file (a label column is optional) or a named "
        "set whose labels are hidden (`snli:train`). Pairs that also train, tune or test a unit are left out; "
        "gold labels, where the set has them, only measure the pseudo-labels.",
    )
    unlabelled_size: StrictInt | None = Field(
        None, ge=1, description="Draw this many unlabelled pairs (at random, a new draw per seed; None: all)."
    )

    @field_validator("test")
    @classmethod
    def _some_test_set(cls, value: str | list[str] | dict[str, str]) -> str | list[str] | dict[str, str]:
        if not isinstance(value, str) and not value:
            raise ValueError("name at least one test set")
        if isinstance(value, list) and len(set(value)) < len(value):
            raise ValueError("a test set is named twice")
        return value

    @model_validator(mode="after")
    def _one_size_setting(self) -> DataConfig:
        if self.train_size is not None and (self.train_sizes or self.shots_per_class):
            raise ValueError("train_size is one size; with train_sizes or shots_per_class, list every size there")
        if self.unlabelled_size is not None and self.unlabelled is None:
            raise ValueError("unlabelled_size is set but no unlabelled pairs are named (data.unlabelled)")
        check_mixture(self.train, self.mixture)
        return self

    @property
    def test_sets(self) -> dict[str, str]:
        """The test sets by name, the in-domain one first (a set given without a name is named by its source)."""
        if isinstance(self.test, str):
            return {self.test: self.test}
        if isinstance(self.test, list):
            return {spec: spec for spec in self.test}
        return dict(self.test)

    @property
    def sized(self) -> bool:
        """Whether the study draws a learning curve (train_sizes or shots_per_class)."""
        return bool(self.train_sizes or self.shots_per_class)

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value not in SCHEMES:
            raise ValueError(f"unknown scheme {value!r}; choose one of {', '.join(SCHEMES)}")
        return value


class ArmData(_Strict):
    """Training pairs of one arm instead of the study's (an intermediate task to transfer from): they
    replace the study's train and dev sets; the arm is still scored on the study's test sets (a 3-class
    model on a binary study scored as binary)."""

    train: str | dict[str, str] = Field(
        description="This arm's training pairs (file or `name:split`), or a mixture of sets as {name: source}."
    )
    mixture: MixtureConfig | None = Field(None, description="How this arm's training sets are mixed.")
    dev: str | None = Field(None, description="This arm's dev pairs (None: none, unless dev_size holds some out).")
    scheme: str | None = Field(None, description="Label scheme of this arm's pairs (default: the study's).")
    train_size: StrictInt | None = Field(None, ge=1, description="Use a stratified random subset of this many pairs.")
    dev_size: StrictInt | None = Field(
        None, ge=1, description="Subset size of dev; with no dev named, held out of train."
    )

    @field_validator("scheme")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and value not in SCHEMES:
            raise ValueError(f"unknown scheme {value!r}; choose one of {', '.join(SCHEMES)}")
        return value

    @model_validator(mode="after")
    def _mixture(self) -> ArmData:
        check_mixture(self.train, self.mixture)
        return self


class EvaluationConfig(_Strict):
    """How scores and their uncertainty are computed."""

    bootstrap_resamples: StrictInt = Field(1000, ge=100, description="Bootstrap resamples for the intervals.")
    confidence: float = Field(0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals.")
    baseline: str | None = Field(None, description="Arm every other arm is tested against (default: the first).")


class ArmResources(_Strict):
    """What one unit of an arm asks of a Ray cluster (``study run --executor ray``)."""

    num_cpus: float | None = Field(None, gt=0, description="CPUs per unit (also its torch threads); default 1.")
    num_gpus: float | None = Field(
        None, ge=0, description="GPUs per unit; a fraction (0.25) lets small models share one. Default 0."
    )


class ArmConfig(BaseModel):
    """One line of the study: a name, a description, and one arm type's block under that type's key
    (``learner: {...}``, ``compress: {...}``, ``majority: {}``; see :mod:`sizewise.arms`)."""

    model_config = ConfigDict(extra="allow")  # the arm type's block, checked by the type

    name: str = Field(description="Folder-safe name of the arm (letters, digits, . _ -).")
    description: str | None = Field(None, description="A human label for tables (default: the name).")
    seeds: list[StrictInt] | None = Field(
        None, min_length=1, description="Training seeds of this arm (default: the study's)."
    )
    train_sizes: list[Count | Literal["all"]] | None = Field(
        None, description="This arm's learning-curve sizes in pairs (default: the study's data.train_sizes)."
    )
    shots_per_class: list[Count] | None = Field(
        None, description="This arm's learning-curve sizes per class (default: the study's data.shots_per_class)."
    )
    data: ArmData | None = Field(
        None, description="This arm's own training pairs (an intermediate task), instead of the study's."
    )
    resources: ArmResources | None = Field(
        None,
        description="What one unit of this arm asks of a Ray cluster: num_cpus, num_gpus (study run --executor ray).",
    )
    _arm_type: str = PrivateAttr("")
    _spec: Any = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _folder_safe(cls, value: str) -> str:
        if not _ARM_NAME.match(value):
            raise ValueError(f"{value!r} must start with a letter or digit and use only letters, digits, . _ -")
        if value.lower().endswith(_RUN_FILE_ENDINGS):
            raise ValueError(
                f"{value!r} would share its name with the run folder's own files (names ending "
                f"{', '.join(_RUN_FILE_ENDINGS)}: study.json, the report, its plots); pick another"
            )
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
        written = {"name": self.name, self.arm_type: self.type_.dump(self.spec), "description": self.description}
        return {**written, **self.overrides}

    @property
    def overrides(self) -> dict[str, Any]:
        """The study settings this arm overrides (seeds, learning-curve sizes), as written."""
        out: dict[str, Any] = {
            key: getattr(self, key)
            for key in ("seeds", "train_sizes", "shots_per_class")
            if getattr(self, key) is not None
        }
        if self.data is not None:
            out["data"] = self.data.model_dump(exclude_none=True)
        return out

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
    seed: StrictInt = Field(0, description="Seed of the data subsets and the default seed of every learner.")
    seeds: list[StrictInt] | None = Field(
        None,
        min_length=1,
        description="Training seeds: every arm is trained once per seed (each with its own learning-curve "
        "subsets) and reported as the mean over seeds. Default: [seed].",
    )
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
        earlier: dict[str, str] = {}  # arm name -> the learner kind of its model
        for arm in self.arms:
            arm_type = arm.type_
            problems.extend(f"arm {arm.name}: {p}" for p in arm_type.check(arm.spec, earlier))
            made = arm_type.expand(arm.name, arm.description, arm.spec)
            if made == [(arm.name, arm.description, arm.spec)]:
                arms.append(arm)
            else:
                for name, description, spec in made:
                    block = {"name": name, "description": description, arm.arm_type: spec, **arm.overrides}
                    arms.append(ArmConfig.model_validate(block))
            for a in arms[len(earlier) :]:
                earlier[a.name] = a.type_.model_kind(a.spec, earlier)
        problems.extend(self._unit_problems(arms))
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

    def arm_data(self, arm: ArmConfig | None) -> DataConfig:
        """The data settings ``arm`` trains with: the study's, with the arm's own ``data`` in place of its
        train and dev sets (and subset sizes, and scheme where given)."""
        if arm is None or arm.data is None:
            return self.data
        own = arm.data
        update = {
            "train": own.train,
            "dev": own.dev,
            "train_size": own.train_size,
            "dev_size": own.dev_size,
            "scheme": own.scheme or self.data.scheme,
            "mixture": own.mixture,
            "unlabelled": None,
            "unlabelled_size": None,
        }
        return self.data.model_copy(update=update)

    def arm_seeds(self, arm: ArmConfig) -> list[int]:
        """The training seeds of ``arm``: its own, else the study's ``seeds``, else ``[seed]``."""
        return list(dict.fromkeys(arm.seeds or self.seeds or [self.seed]))

    def arm_sizes(self, arm: ArmConfig) -> list[TrainSize]:
        """The learning-curve sizes of ``arm``, smallest first ([] when it trains on the whole training set
        once). An arm made from another arm's model (a compress arm) has its source's largest size."""
        if not arm.type_.sized:
            sources = arm.type_.sources(arm.spec)
            return self.arm_sizes(self.arm(sources[0]))[-1:] if sources else []
        if arm.train_sizes is not None or arm.shots_per_class is not None:
            sizes = sizes_from(arm.train_sizes, arm.shots_per_class)
        else:
            sizes = sizes_from(self.data.train_sizes, self.data.shots_per_class)
        k = SCHEMES[self.data.scheme].num_labels
        return sorted(sizes, key=lambda size: size.labelled_pairs(sys.maxsize, k))

    def units(self, arm: ArmConfig) -> list[Unit]:
        """Every training of ``arm``: seeds crossed with sizes, smallest size first."""
        sizes: list[TrainSize | None] = [*self.arm_sizes(arm)] or [None]
        return [Unit(seed, size) for size in sizes for seed in self.arm_seeds(arm)]

    def single_unit(self, arm: ArmConfig) -> bool:
        """Whether ``arm`` trains once (one seed, no curve): its result stays in its own folder."""
        return len(self.units(arm)) == 1 and self.units(arm)[0].size is None

    def source_unit(self, arm: ArmConfig, unit: Unit, source: str) -> Unit:
        """The unit of arm ``source`` that ``arm``'s ``unit`` is made from: the same seed, and the same
        size for an arm with sizes of its own (a self-trained arm and its teacher), else the source's
        largest size."""
        if arm.type_.sized and arm.type_.same_unit_sources:
            return unit
        sizes = self.arm_sizes(self.arm(source))
        return Unit(unit.seed, sizes[-1] if sizes else None)

    def arm_fingerprint(self, arm: ArmConfig, unit: Unit | None = None) -> str:
        """A hash of all that determines one unit's result (the arm's first unit by default): a finished
        unit is reused only if it matches. An arm made from other arms' models includes their
        fingerprints: a retrained source makes it stale."""
        unit = unit or self.units(arm)[0]
        record = {"name": arm.name, **dict.fromkeys(_FINGERPRINT_BLOCKS), "description": arm.description}
        record[arm.arm_type] = arm.type_.dump(arm.spec)
        data = self.data.model_dump(
            exclude={"train_sizes", "shots_per_class", "unlabelled", "unlabelled_size", "mixture"}
        )
        if self.data.mixture is not None:
            data["mixture"] = self.data.mixture.model_dump()
        payload: dict[str, Any] = {
            "arm": record,
            "data": data,
            "seed": unit.seed,
            "evaluation": self.evaluation.model_dump(exclude={"baseline"}),
        }
        if self.seeds is not None or arm.seeds is not None:
            payload["data_seed"] = self.seed
        if unit.size is not None:
            payload["train"] = unit.size.key
        if arm.type_.uses_unlabelled:
            payload["unlabelled"] = [self.data.unlabelled, self.data.unlabelled_size]
        if arm.data is not None:
            payload["arm_data"] = arm.data.model_dump()
        sources = [
            self.arm_fingerprint(self.arm(name), self.source_unit(arm, unit, name))
            for name in arm.type_.sources(arm.spec)
        ]
        if sources:
            payload["source"] = sources[0] if len(sources) == 1 else sources
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def _unit_problems(self, arms: list[ArmConfig]) -> list[str]:
        problems = []
        by_name = {a.name: a for a in arms}
        for arm in arms:
            seeds = arm.seeds or self.seeds or [self.seed]
            if len(seeds) > 1 and isinstance(arm.spec, dict) and "seed" in arm.spec:
                problems.append(
                    f"arm {arm.name}: its learner names seed {arm.spec['seed']}, so each of its {len(seeds)} "
                    "training seeds would train the same model; drop the learner's seed"
                )
            if arm.data is not None and arm.data.scheme == "binary" and self.data.scheme != "binary":
                problems.append(
                    f"arm {arm.name}: data.scheme binary: a binary model cannot be scored on the study's "
                    f"{self.data.scheme} test sets (it cannot tell neutral from contradiction)"
                )
            if arm.data is not None and arm.type_.uses_unlabelled:
                problems.append(f"arm {arm.name}: a self-trained arm trains on the study's data; drop its data block")
            if not arm.type_.same_unit_sources:
                for name in arm.type_.sources(arm.spec):
                    source = by_name.get(name)
                    theirs = (source.seeds if source else None) or self.seeds or [self.seed]
                    missing = [s for s in seeds if s not in theirs]
                    if source is not None and missing and arm.type_.sized:
                        problems.append(
                            f"arm {arm.name}: seeds {missing} are not seeds of arm {name}, whose models it starts from"
                        )
            if arm.type_.sized and arm.type_.same_unit_sources:
                for name in arm.type_.sources(arm.spec):
                    source = by_name.get(name)
                    if source is None:
                        continue
                    theirs = set(self.units(source))
                    missing_units = [u for u in self.units(arm) if u not in theirs]
                    if missing_units:
                        shown = ", ".join(u.key for u in missing_units[:3]) + (" …" if len(missing_units) > 3 else "")
                        problems.append(
                            f"arm {arm.name}: trains at {shown}, where arm {name}, whose models it starts from, "
                            "has no training; give both the same seeds and sizes"
                        )
            if arm.type_.uses_unlabelled and self.data.unlabelled is None:
                problems.append(f"arm {arm.name}: needs unlabelled pairs; name them in data.unlabelled")
            if not arm.type_.sized:
                if arm.train_sizes is not None or arm.shots_per_class is not None:
                    problems.append(f"arm {arm.name}: is made from another arm's model and has no sizes of its own")
                for name in arm.type_.sources(arm.spec):
                    source = by_name.get(name)
                    theirs = (source.seeds if source else None) or self.seeds or [self.seed]
                    missing = [s for s in seeds if s not in theirs]
                    if source is not None and missing:
                        problems.append(
                            f"arm {arm.name}: seeds {missing} are not seeds of arm {name}, whose models it is made from"
                        )
        return problems


def _data_spec_problems(cfg: dict[str, Any], base: Path) -> list[str]:
    problems = []
    data = cfg.get("data")
    if not isinstance(data, dict):
        return problems
    specs = [(key, data.get(key)) for key in ("dev", "unlabelled")]
    trains = data.get("train")
    if isinstance(trains, dict):
        specs += [(f"train.{name}", spec) for name, spec in trains.items()]
    else:
        specs.append(("train", trains))
    tests = data.get("test")
    if isinstance(tests, list):
        specs += [(f"test[{i}]", spec) for i, spec in enumerate(tests)]
    elif isinstance(tests, dict):
        specs += [(f"test.{name}", spec) for name, spec in tests.items()]
    else:
        specs.append(("test", tests))
    for key, spec in specs:
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
    if isinstance(baseline, str) and baseline not in seen:  # another type is StudyConfig's problem
        problems.append(f"evaluation.baseline: {baseline!r} is not the name of an arm")
    problems.extend(_data_spec_problems(raw, base or Path.cwd()))
    if problems or config is None:
        raise ConfigError(source, list(dict.fromkeys(problems)))
    return config


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a mapping naming one key twice (the later one would silently
    win), with the line of each; merge keys (``<<: *anchor``) still override as YAML means them to."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the safe loader refuses it itself
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {first + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`UniqueKeyLoader`."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def read_yaml_file(path: str | Path) -> Any:
    """The YAML document in ``path`` (duplicate keys refused); a missing file, bad YAML or bad UTF-8 is
    one ConfigError naming the file (and the line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), ["no such file"])
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}", [f"not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["not valid UTF-8"]) from None


def load_study(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    return parse_study(read_yaml_file(path), str(path), path.parent)
