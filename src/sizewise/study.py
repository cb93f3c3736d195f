"""Running a study: every arm trained and scored on the same data, one result JSON per arm.

Each arm runs through its type (:mod:`sizewise.arms`): the type makes the model inside a cost meter,
and :class:`StudyArmRun` scores it into an :class:`~sizewise.result.ArmResult`. An arm whose
``result.json`` exists with the same fingerprint (arm, data, seed, evaluation) is skipped, so an
interrupted study resumes where it stopped. The report is rendered from the result files alone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sizewise.arms.registry import ScoredModel
from sizewise.config import ArmConfig, StudyConfig
from sizewise.cost.meter import CostMeter, measure_latency, measure_throughput
from sizewise.data.catalog import load_pairs
from sizewise.data.pairs import PairData
from sizewise.data.sampling import sample_subset, subset_indices
from sizewise.distributed import is_main_process, world_size
from sizewise.environment import environment
from sizewise.errors import ConfigError
from sizewise.evaluation.metrics import compute_metrics, confusion_matrix
from sizewise.evaluation.stats import bootstrap_intervals
from sizewise.files import atomic_write_text, directory_size
from sizewise.learners.base import LEARNER_FILE
from sizewise.result import RESULT_FILE, RESULT_SCHEMA, ArmResult

logger = logging.getLogger(__name__)


@dataclass
class StudyData:
    """The three splits of a study, already subset and read under the study's scheme."""

    train: PairData
    dev: PairData | None
    test: PairData


def load_study_data(config: StudyConfig, base: Path | None = None) -> StudyData:
    """Read train / dev / test and draw the configured subsets (seeded by the study seed)."""
    d = config.data
    train = _read_split(config, base, d.train, None, 0)
    if d.dev is None and d.dev_size:
        # No dev split named: hold dev_size pairs out of train, so early stopping never sees test.
        held = subset_indices(train.labels, d.dev_size, config.seed + 1)
        rest = np.setdiff1d(np.arange(len(train)), held)
        dev = train.subset(held, source=f"{train.source} (held-out dev)")
        train = train.subset(rest, source=train.source)
    else:
        dev = _read_split(config, base, d.dev, d.dev_size, 1) if d.dev else None
    if d.train_size and d.train_size < len(train):
        train = sample_subset(train, d.train_size, config.seed)
    return StudyData(train=train, dev=dev, test=load_study_test(config, base))


def load_study_test(config: StudyConfig, base: Path | None = None) -> PairData:
    """The study's test set alone, as :func:`load_study_data` draws it."""
    return _read_split(config, base, config.data.test, config.data.test_size, 2)


def _read_split(config: StudyConfig, base: Path | None, spec: str, size: int | None, offset: int) -> PairData:
    d = config.data
    path = (base / spec) if base is not None and (base / spec).exists() else None
    data = load_pairs(str(path) if path else spec, scheme=d.scheme, columns=d.columns)
    return sample_subset(data, size, config.seed + offset) if size and size < len(data) else data


def _data_summary(data: PairData | None) -> dict[str, Any] | None:
    if data is None:
        return None
    return {
        "source": data.source,
        "rows": len(data),
        "skipped": data.skipped,
        "labels": data.label_counts(),
        "fingerprint": data.fingerprint(),
    }


@dataclass
class StudyArmRun:
    """One arm of a study as its type runs it (:class:`sizewise.arms.ArmRun`): the data, the arm's
    folder, the cost meter, and the scoring every arm shares."""

    config: StudyConfig
    arm: ArmConfig
    data: StudyData
    arm_dir: Path
    started: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        """The arm's name."""
        return self.arm.name

    @property
    def spec(self) -> Any:
        """The arm's parsed block."""
        return self.arm.spec

    @property
    def seed(self) -> int:
        """The study seed."""
        return self.config.seed

    @property
    def train(self) -> PairData:
        """The training pairs."""
        return self.data.train

    @property
    def dev(self) -> PairData | None:
        """The dev pairs, if any."""
        return self.data.dev

    @property
    def test(self) -> PairData:
        """The test pairs every arm is scored on."""
        return self.data.test

    def source_model(self, name: str) -> Path:
        """The saved model of arm ``name``, which must be finished and current."""
        source = self.config.arm(name)
        source_dir = self.arm_dir.parent / source.name
        if not arm_is_done(self.config, source, source_dir) or not (source_dir / "model" / LEARNER_FILE).is_file():
            raise ConfigError(
                self.config.name,
                [
                    f"arm {self.arm.name}: is made from arm {source.name}, which has no current trained model in "
                    f"{source_dir}; run it first (--arm {source.name})"
                ],
            )
        return source_dir / "model"

    def meter(self) -> CostMeter:
        """A cost meter with the study's energy settings."""
        return CostMeter(self.config.cost)

    def score(self, model: ScoredModel, train_meter: CostMeter, recipe: dict[str, Any]) -> ArmResult:
        """Predict the test pairs (with the sections the model's kind adds), save the model, compute
        metrics, intervals and cost; the arm's result, not yet written."""
        config, arm, data = self.config, self.arm, self.data
        with CostMeter(config.cost) as eval_meter:
            proba, sections = model.predict_with_sections(data.test)
        model_dir = self.arm_dir / "model"
        model.save(model_dir)

        y_true = data.test.labels
        y_pred = proba.argmax(1)
        k = data.test.scheme.num_labels
        ev = config.evaluation
        intervals = bootstrap_intervals(
            y_true, y_pred, k, n_resamples=ev.bootstrap_resamples, seed=config.seed, level=ev.confidence
        )
        params = model.parameter_count()
        record: dict[str, Any] = {
            "schema": RESULT_SCHEMA,
            "study": config.name,
            "arm": arm.name,
            "description": arm.description or arm.name,
            "fingerprint": config.arm_fingerprint(arm),
            "config": {**recipe, "seed": config.seed},
            "data": {
                "scheme": data.test.scheme.name,
                "labels": list(data.test.scheme.labels),
                "train": _data_summary(data.train),
                "dev": _data_summary(data.dev),
                "test": _data_summary(data.test),
            },
            "metrics": compute_metrics(y_true, proba, k),
            "intervals": {
                "level": ev.confidence,
                "resamples": ev.bootstrap_resamples,
                "method": "percentile bootstrap over test pairs",
                **{name: [round(lo, 6), round(hi, 6)] for name, (lo, hi) in intervals.items()},
            },
            "confusion_matrix": confusion_matrix(y_true, y_pred, k),
            "curves": sections.pop("curves", {}),
            "cost": {
                "parameters_total": params["total"],
                "parameters_trainable": params["trainable"],
                **({"parameters_nonzero": params["nonzero"]} if "nonzero" in params else {}),
                **train_meter.as_dict("train"),
                **eval_meter.as_dict("eval"),
                "eval_pairs": len(data.test),
                "peak_rss_mb": round(max(train_meter.peak_rss_mb, eval_meter.peak_rss_mb), 1),
                "energy": {
                    "country": config.cost.country.upper(),
                    "carbon_intensity_setting_g_per_kwh": config.cost.carbon_intensity_g_per_kwh,
                    "tracked": train_meter.energy is not None,
                },
                "size_on_disk_mb": round(directory_size(model_dir) / 1e6, 3),
            },
            "training": {"history": getattr(model, "history_", None)},
            "predictions": {"y_true": y_true.tolist(), "y_pred": y_pred.tolist()},
            "environment": environment(),
            "started_at": self.started,
            "finished_at": time.time(),
            **sections,
        }
        throughput = measure_throughput(model.predict_proba, data.test)
        record["cost"]["inference_pairs_per_s"] = throughput["pairs_per_s"]
        record["cost"]["inference_batch_pairs"] = throughput["pairs"]
        record["cost"].update(measure_latency(model.predict_proba, data.test))
        return ArmResult.model_validate(record)


def run_arm(config: StudyConfig, arm: ArmConfig, data: StudyData, arm_dir: Path) -> ArmResult:
    """Run one arm through its type (train, compress, ...), save its model and score it; returns its
    result (not yet written)."""
    return arm.type_.run(StudyArmRun(config, arm, data, arm_dir))


def arm_is_done(config: StudyConfig, arm: ArmConfig, arm_dir: Path) -> bool:
    """True when the arm's result file exists and was made from this exact arm, data and seed."""
    path = arm_dir / RESULT_FILE
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("fingerprint") == config.arm_fingerprint(arm)


def run_study(
    config: StudyConfig,
    *,
    output: str | Path | None = None,
    base: Path | None = None,
    force: bool = False,
    arms: list[str] | None = None,
) -> Path:
    """Run every arm not already finished (in order; an arm made from another's model after it);
    returns the output folder. The report is rendered from the result files by the caller
    (:func:`sizewise.report.render.write_report`)."""
    out = Path(output or config.output)
    selected = [a for a in config.arms if arms is None or a.name in arms]
    todo = []
    for arm in selected:
        if not force and arm_is_done(config, arm, out / arm.name):
            logger.info(
                "arm %s: finished earlier, skipped (delete %s to redo it)", arm.name, out / arm.name / RESULT_FILE
            )
        else:
            todo.append(arm)
    if world_size() > 1:
        others = [a.name for a in todo if not a.type_.distributed(a.spec)]
        if others:
            raise ConfigError(
                config.name,
                [
                    f"arm {name}: only transformer arms train across several processes; run it without "
                    "accelerate / torchrun, or pick transformer arms with --arm"
                    for name in others
                ],
            )
    # Read (and so validate) all data before anything is written: bad input leaves no output folder.
    data = load_study_data(config, base) if todo else None
    if not is_main_process():
        # The other processes of a multi-process launch only help train; rank 0 scores and writes.
        for arm in todo:
            assert data is not None
            arm.type_.help_train(StudyArmRun(config, arm, data, out / arm.name))
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.json", config.model_dump_json(indent=2) + "\n")
    for arm in todo:
        arm_dir = out / arm.name
        assert data is not None
        result = run_arm(config, arm, data, arm_dir)
        result.write(arm_dir / RESULT_FILE)
        m, ci = result.metrics, result.intervals.accuracy
        logger.info(
            "arm %s: accuracy %.3f [%.3f, %.3f] · macro-F1 %.3f · %s params · %.0fs",
            arm.name,
            m.accuracy,
            ci[0],
            ci[1],
            m.f1_macro,
            f"{result.cost.parameters_total:,}",
            result.cost.train_seconds,
        )
    return out
