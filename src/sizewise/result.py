"""``result.json``: what one arm of a study measured, as one typed record.

:class:`ArmResult` is the only definition of the file: the study writes it, the report, the command
line and the benchmark scripts read it. The JSON layout is the one of schema ``sizewise.result/1``
(field order included), so files written before this model existed load unchanged. A field that is
missing, unknown or of the wrong type is a :class:`ResultError` naming the file and the field
(``runs/x/bilstm/result.json: cost.train_seconds: field required``).

A section whose value is absent is left out of the file (an ensemble's ``members``, a compressed
model's ``parameters_nonzero``, the energy fields when energy was not tracked); a value that is
present but unknown is written as ``null`` (``data.dev`` without a dev set, ``training.history`` of a
kind that keeps none).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from sizewise.errors import SizewiseError
from sizewise.files import atomic_write_json, read_json_file

#: The file name of an arm's result, in the arm's folder.
RESULT_FILE = "result.json"
#: The layout version every result file states in its ``schema`` field.
RESULT_SCHEMA = "sizewise.result/2"
#: The layouts this sizewise reads: /2 added ``unit``, ``tests`` and ``selftraining`` (a /1 file is a /2 file
#: without them).
READABLE_SCHEMAS = ("sizewise.result/1", RESULT_SCHEMA)


class ResultError(SizewiseError):
    """A result file is missing, not JSON, of another schema version, or has a bad field."""


#: A metric or an interval bound: a share, between 0 and 1.
Score = Annotated[float, Field(ge=0.0, le=1.0)]


def _check_scores(k: int, confusion: list[list[int]], predictions: Predictions, what: str) -> None:
    """Refuse a confusion matrix and predictions that do not fit ``k`` labels (``what``: where k comes from)."""
    if k < 2:
        raise ValueError(f"{what}: needs at least 2 labels, got {k}")
    if len(confusion) != k or any(len(row) != k for row in confusion):
        shape = f"{len(confusion)} rows of {sorted({len(row) for row in confusion})} cells"
        raise ValueError(f"confusion_matrix: must be {k} × {k} for the {k} labels of {what}, got {shape}")
    if any(cell < 0 for row in confusion for cell in row):
        raise ValueError("confusion_matrix: counts must not be negative")
    for name in ("y_true", "y_pred"):
        values = getattr(predictions, name)
        if any(not 0 <= v < k for v in values):
            raise ValueError(f"predictions.{name}: label indices must lie in [0, {k}) for the {k} labels of {what}")


def _is_none(value: Any) -> bool:
    return value is None


def _omitted(description: str) -> Any:
    """A field that is left out of the file when it has no value."""
    return Field(None, exclude_if=_is_none, description=description)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class DataSummary(_Section):
    """One split as the arm read it."""

    source: str = Field(description="File or dataset split (``snli:test``).")
    rows: int = Field(description="Pairs used.")
    skipped: int = Field(description="Rows left out on reading (e.g. no gold label).")
    labels: dict[str, int] = Field(description="Pairs per label.")
    fingerprint: str = Field(description="Hash of the pairs: two arms are compared only on the same test set.")


class DataSection(_Section):
    """The label scheme and the three splits."""

    scheme: str = Field(description="Label scheme (nli3, binary).")
    labels: list[str] = Field(description="Label names in the order of the probability columns.")
    train: DataSummary
    dev: DataSummary | None = Field(description="None when the study has no dev set.")
    test: DataSummary


class Metrics(_Section):
    """The poster's six metrics on the test set."""

    accuracy: Score
    f1_macro: Score
    f1_weighted: Score
    precision_macro: Score
    recall_macro: Score
    roc_auc_macro: Score | None = Field(description="None where undefined (a label absent from the test set).")

    def get(self, name: str) -> float | None:
        """A metric by name (None for an unknown name)."""
        return getattr(self, name, None)


class Intervals(_Section):
    """Bootstrap confidence intervals of accuracy and macro-F1."""

    level: float = Field(gt=0.0, lt=1.0, description="Confidence level, e.g. 0.95.")
    resamples: int = Field(ge=1)
    method: str
    accuracy: tuple[Score, Score]
    f1_macro: tuple[Score, Score]

    @field_validator("accuracy", "f1_macro")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] > value[1]:
            raise ValueError(f"the lower bound {value[0]} is above the upper bound {value[1]}")
        return value

    def of(self, metric: str) -> tuple[float, float] | None:
        """The interval of ``metric``, None for a metric without one."""
        return {"accuracy": self.accuracy, "f1_macro": self.f1_macro}.get(metric)


class SizeCurve(_Section):
    """Ensemble accuracy with the first k members."""

    k: list[int]
    accuracy: list[float]


class Curves(_Section):
    """Curves a learner kind adds (an ensemble: accuracy against its size, per epoch)."""

    size: SizeCurve | None = _omitted("Accuracy of the first k members, k = 1..n.")
    epoch_size: dict[str, list[float]] | None = _omitted("The size curve after each epoch (key: epoch).")


class EnergySetting(_Section):
    """The study's energy settings, as the arm ran."""

    country: str
    carbon_intensity_setting_g_per_kwh: float | None
    tracked: bool


class SpeedVsSource(_Section):
    """A compressed model timed side by side with the model it descends from (``sizewise study speed``)."""

    source: str = Field(description="The trained arm it was timed against.")
    ratio: float = Field(description="Median over rounds of pairs/s of this arm / pairs/s of the source.")
    range: tuple[float, float]
    rounds: int
    medians: dict[str, dict[str, float]] = Field(description="Per model: median pairs/s and latencies.")
    pairs: int
    isolated: bool
    measured_at: float
    environment: dict[str, Any]


class Cost(_Section):
    """Parameters, time, memory, energy, size on disk and inference speed.

    ``train_*`` is the block that made the model (training, or compressing), ``eval_*`` the
    prediction on the test set; the energy fields are absent when energy was not tracked.
    """

    parameters_total: int
    parameters_trainable: int
    parameters_nonzero: int | None = _omitted("Parameters that are not zero (pruned models).")
    train_seconds: float
    train_cpu_seconds: float
    train_peak_rss_mb: float
    train_peak_gpu_mb: float | None = _omitted("Peak GPU memory of training.")
    train_energy_kwh: float | None = _omitted("Energy of training, whole machine.")
    train_co2_kg: float | None = _omitted("CO2 of training.")
    train_cpu_kwh: float | None = _omitted("CPU part of the training energy.")
    train_gpu_kwh: float | None = _omitted("GPU part of the training energy.")
    train_ram_kwh: float | None = _omitted("RAM part of the training energy.")
    train_measured: bool | None = _omitted("Energy read from power counters (else estimated).")
    train_method: str | None = _omitted("How the energy was obtained.")
    train_country: str | None = _omitted("Grid of the CO2 intensity.")
    train_carbon_intensity_g_per_kwh: float | None = _omitted("CO2 intensity used, g CO2e/kWh.")
    eval_seconds: float
    eval_cpu_seconds: float
    eval_peak_rss_mb: float
    eval_peak_gpu_mb: float | None = _omitted("Peak GPU memory of prediction.")
    eval_energy_kwh: float | None = _omitted("Energy of prediction.")
    eval_co2_kg: float | None = _omitted("CO2 of prediction.")
    eval_cpu_kwh: float | None = _omitted("CPU part of the prediction energy.")
    eval_gpu_kwh: float | None = _omitted("GPU part of the prediction energy.")
    eval_ram_kwh: float | None = _omitted("RAM part of the prediction energy.")
    eval_measured: bool | None = _omitted("Energy read from power counters (else estimated).")
    eval_method: str | None = _omitted("How the energy was obtained.")
    eval_country: str | None = _omitted("Grid of the CO2 intensity.")
    eval_carbon_intensity_g_per_kwh: float | None = _omitted("CO2 intensity used, g CO2e/kWh.")
    eval_pairs: int
    peak_rss_mb: float
    energy: EnergySetting
    size_on_disk_mb: float
    inference_pairs_per_s: float
    inference_batch_pairs: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_calls: int
    speed_vs_source: SpeedVsSource | None = _omitted("Set by ``sizewise study speed`` for compress arms.")


class Training(_Section):
    """How training went."""

    history: list[dict[str, Any]] | None = Field(description="One record per epoch; None for kinds that keep none.")


class Predictions(_Section):
    """Gold and predicted label indices of every test pair, for paired tests between arms."""

    y_true: list[int]
    y_pred: list[int]

    @model_validator(mode="after")
    def _paired(self) -> Predictions:
        if not self.y_true or len(self.y_true) != len(self.y_pred):
            raise ValueError(
                f"y_true and y_pred must hold one label per test pair, got {len(self.y_true)} and {len(self.y_pred)}"
            )
        return self


class Diversity(_Section):
    """An ensemble's cross-entropy = mean member cross-entropy − diversity."""

    ensemble_ce: float
    member_ce: float
    diversity: float
    per_member_ce: list[float]


class Members(_Section):
    """An ensemble's members."""

    weights: list[float]
    accuracy: list[float] = Field(description="Test accuracy of each member alone.")
    train_seconds: list[float] | None = _omitted("Training time of each member (absent for a loaded ensemble).")
    epochs: list[int] | None = _omitted("Epochs each member trained.")
    executor: str | None = _omitted(
        "Where the members trained: batched (one stacked network), local, local (N processes) or ray."
    )


class Recipe(_Section):
    """What made the arm: the study seed and one arm type's block under its key (``learner``,
    ``compress``, ...), as the arm ran it."""

    model_config = ConfigDict(extra="allow")

    seed: int

    @model_validator(mode="after")
    def _one_block(self) -> Recipe:
        if len(self.model_extra or {}) != 1:
            found = ", ".join(self.model_extra or {}) or "none"
            raise ValueError(f"holds the seed and one arm type's block (learner, compress, ...); found: {found}")
        return self

    @model_serializer(mode="wrap")
    def _seed_last(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # sizewise.result/1 writes the block first, then the seed
        record = handler(self)
        record["seed"] = record.pop("seed")
        return record

    @property
    def arm_type(self) -> str:
        """The key of the arm type's block."""
        return next(iter(self.model_extra or {}))

    @property
    def block(self) -> Any:
        """The arm type's block (a learner spec, a compress block, ...)."""
        return next(iter((self.model_extra or {}).values()))


class PseudoLabelRound(_Section):
    """One round of self-training: the teacher's pseudo-labels on the pool, and how good they were."""

    round: int
    teacher: str = Field(description="Who labelled the pool: the teacher arm, or the previous round's student.")
    pool: int = Field(description="Unlabelled pairs the teacher labelled.")
    kept: int = Field(description="Pseudo-labelled pairs the student trained on.")
    kept_fraction: float
    decided_by_vote: float | None = Field(
        description="vote, simple: share of the pool whose label a vote decided (else the teacher's own label)."
    )
    gold: int = Field(description="Pool pairs with a hidden gold label (used for the two accuracies only).")
    pseudo_accuracy: float | None = Field(description="Accuracy of the kept pseudo-labels against hidden gold.")
    pool_accuracy: float | None = Field(description="Accuracy of every pool pair's pseudo-label against hidden gold.")
    label_seconds: float = Field(description="Time the teacher took to label the pool.")


class SelfTraining(_Section):
    """A self-trained arm: its teacher, method, pool, and every round."""

    teacher: str
    method: str
    student: str = Field(description="The student's learner kind.")
    pool_source: str
    pool_rows: int = Field(description="Unlabelled pairs drawn for this unit.")
    removed_overlap: int = Field(
        description="Pairs of the unlabelled set left out because they also train, tune or test this unit."
    )
    teacher_train_seconds: float | None = Field(description="The teacher unit's training time (its result file).")
    teacher_train_energy_kwh: float | None = Field(description="The teacher unit's training energy, if tracked.")
    rounds: list[PseudoLabelRound]


class UnitInfo(_Section):
    """Which training of its arm a result is: the seed and, on a learning curve, the size."""

    seed: int
    size: str | None = Field(description="Learning-curve size key (``n1536``, ``k8``, ``all``); None off a curve.")
    labelled_pairs: int = Field(description="Labelled training pairs the unit used.")


class SeedSummary(_Section):
    """Per-seed scores behind a result that combines several training seeds (never written to a file:
    the report combines the seeds' own result files)."""

    seeds: list[int]
    accuracy: list[float]
    f1_macro: list[float]
    accuracy_sd: float = Field(description="Sample standard deviation of accuracy over seeds.")
    f1_macro_sd: float
    y_pred: list[list[int]] = Field(description="Each seed's predictions, for paired tests between arms.")


class TestScore(_Section):
    """The arm scored on one more test set (``data.test`` naming several)."""

    data: DataSummary
    scored_as: str = Field(description="Label scheme of the scoring (a 3-class model on a binary set: binary).")
    collapsed: bool = Field(description="True when 3-class probabilities were collapsed to p(entailment) vs the rest.")
    metrics: Metrics
    intervals: Intervals
    confusion_matrix: list[list[int]]
    predictions: Predictions
    seeds: SeedSummary | None = _omitted("Per-seed scores of a result combining seeds.")

    @model_validator(mode="after")
    def _consistent(self) -> TestScore:
        _check_scores(len(self.confusion_matrix), self.confusion_matrix, self.predictions, "its confusion matrix")
        return self


class CurvePoint(_Section):
    """One size of an arm's learning curve, its seeds combined."""

    size: str
    label: str
    labelled_pairs: int
    result: ArmResult


class ArmResult(_Section):
    """Everything one arm of a study measured: the content of its ``result.json``."""

    schema_: str = Field(RESULT_SCHEMA, alias="schema", description="Layout version of the file.")
    study: str
    arm: str
    description: str
    fingerprint: str = Field(description="Hash of arm, data, seed and evaluation: a finished arm is reused if equal.")
    config: Recipe
    data: DataSection
    metrics: Metrics
    intervals: Intervals
    confusion_matrix: list[list[int]]
    curves: Curves
    cost: Cost
    training: Training
    predictions: Predictions
    environment: dict[str, Any] = Field(description="Versions, hardware and git commit (a free mapping).")
    started_at: float
    finished_at: float
    diversity: Diversity | None = _omitted("An ensemble's diversity decomposition.")
    members: Members | None = _omitted("An ensemble's member weights and accuracies.")
    notes: list[str] | None = _omitted("Remarks written by hand (e.g. why a fingerprint was updated).")
    unit: UnitInfo | None = _omitted("The seed and learning-curve size of this training (absent in /1 files).")
    tests: dict[str, TestScore] | None = _omitted("Scores on the study's other test sets, by name.")
    selftraining: SelfTraining | None = _omitted("A self-trained arm's pool and pseudo-label rounds.")
    seeds: SeedSummary | None = _omitted("Per-seed scores of a result combining seeds (report only).")
    curve: list[CurvePoint] | None = _omitted("The arm's learning curve, smallest size first (report only).")

    @model_validator(mode="after")
    def _known_schema(self) -> ArmResult:
        if self.schema_ not in READABLE_SCHEMAS:
            raise ValueError(f"schema {self.schema_!r} is not {RESULT_SCHEMA}, the layout this sizewise reads")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> ArmResult:
        _check_scores(len(self.data.labels), self.confusion_matrix, self.predictions, "data.labels")
        return self

    @property
    def n_seeds(self) -> int:
        """How many training seeds the result combines."""
        return len(self.seeds.seeds) if self.seeds is not None else 1

    @property
    def arm_type(self) -> str:
        """The arm type that made this result (``learner``, ``compress``, ...)."""
        return self.config.arm_type

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``result.json``."""
        return self.model_dump(mode="json", by_alias=True)

    def write(self, path: str | Path) -> None:
        """Write the record to ``path`` atomically (a temporary file renamed into place)."""
        atomic_write_json(path, self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> ArmResult:
        """Read a result file; any problem is one ResultError naming the file and the field."""
        path = Path(path)
        record = read_json_file(path, ResultError, "result file")
        if not isinstance(record, dict) or "schema" not in record:
            raise ResultError(f"{path}: not a sizewise result file (field 'schema' missing)")
        try:
            return cls.model_validate(record)
        except ValidationError as exc:
            raise ResultError(f"{path}: {describe_validation_error(exc)}") from None


CurvePoint.model_rebuild()


def describe_validation_error(exc: ValidationError) -> str:
    """The first problem of ``exc`` as ``field.path: what is wrong``, with a count of the others."""
    problems = []
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        kind = err["type"]
        if kind == "missing":
            msg = "field required"
        elif kind == "extra_forbidden":
            msg = "unknown field"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        problems.append(f"{loc}: {msg}" if loc else msg)
    more = len(problems) - 1
    return problems[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more > 0 else "")
