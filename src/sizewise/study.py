"""Running a study: every arm trained and scored on the same data, one result JSON per training.

Each arm is trained once per unit (:mod:`sizewise.units`: a training seed and, on a learning curve, a
training-set size) through its type (:mod:`sizewise.arms`): the type makes the model inside a cost
meter, and :class:`StudyArmRun` scores it on every test set into an
:class:`~sizewise.result.ArmResult`. A unit whose ``result.json`` exists with the same fingerprint
(arm, data, seed, size, evaluation) is skipped, so an interrupted study resumes where it stopped. The
report is rendered from the result files alone (:mod:`sizewise.seeds` combines an arm's seeds).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sizewise.arms.registry import ScoredModel
from sizewise.cluster import Resources, run_units_on_ray
from sizewise.config import ArmConfig, DataConfig, MixtureConfig, StudyConfig
from sizewise.cost.meter import CostMeter, measure_latency, measure_throughput
from sizewise.data.catalog import load_pairs
from sizewise.data.io import read_pairs
from sizewise.data.pairs import PairData
from sizewise.data.sampling import (
    draw_with_repeats,
    k_shot_indices,
    mixture_counts,
    mixture_weights,
    sample_subset,
    subset_indices,
)
from sizewise.distributed import is_main_process, world_size
from sizewise.environment import environment
from sizewise.errors import ConfigError
from sizewise.evaluation.metrics import compute_metrics, confusion_matrix
from sizewise.evaluation.schemes import collapse_proba, dataset_scheme, model_inputs
from sizewise.evaluation.stats import bootstrap_intervals, few_pairs_note
from sizewise.files import atomic_write_text, clean_temporaries, directory_size
from sizewise.learners.base import LEARNER_FILE
from sizewise.result import RESULT_FILE, RESULT_SCHEMA, ArmResult
from sizewise.units import Unit, unit_dir

logger = logging.getLogger(__name__)


@dataclass
class StudyData:
    """The splits of a study, already subset: train and dev under the study's scheme, and the test
    sets by name (the in-domain one first; a binary set is read as binary)."""

    train: PairData
    dev: PairData | None
    tests: dict[str, PairData]
    #: The unlabelled set as read (gold labels, where it has them, still in it), or None.
    unlabelled: PairData | None = None
    #: Whether the dev set has a size of its own (``dev_size``): a learning curve then keeps it whole.
    fixed_dev: bool = False

    @property
    def test(self) -> PairData:
        """The in-domain test set: the first one named."""
        return next(iter(self.tests.values()))


@dataclass
class Pool:
    """A unit's unlabelled pairs: ``pairs`` with every label hidden (-1); the hidden gold labels (-1 where
    the set has none), which only measure pseudo-labels; and how many pairs of the set were left out
    because they also train, tune or test the unit."""

    pairs: PairData
    gold: np.ndarray
    removed: int


def unit_pool(config: StudyConfig, data: StudyData, unit: Unit) -> Pool:
    """The unlabelled pairs of ``unit`` (``data`` is the unit's data): the study's unlabelled set less
    every pair (premise, hypothesis) that trains, tunes or tests the unit, then ``unlabelled_size`` of
    them drawn at random for the unit's seed."""
    source = data.unlabelled
    if source is None:
        raise ConfigError(config.name, ["no unlabelled pairs: name them in data.unlabelled"])
    taken = {
        pair
        for split in (data.train, data.dev, *data.tests.values())
        if split is not None
        for pair in zip(split.premises, split.hypotheses)
    }
    free = np.array([i for i, pair in enumerate(zip(source.premises, source.hypotheses)) if pair not in taken])
    if not len(free):
        raise ConfigError(
            config.name,
            [
                f"data.unlabelled: every pair of {source.source} also trains, tunes or tests unit {unit.key}; "
                "name other pairs, or train on a subset (train_size, train_sizes or shots_per_class)"
            ],
        )
    removed = len(source) - len(free)
    size = config.data.unlabelled_size
    if size is not None and size < len(free):
        rng = np.random.default_rng([unit.seed, config.seed, 29])
        free = np.sort(rng.choice(free, size=size, replace=False))
    pairs = source.subset(free, source=source.source)
    gold = pairs.labels.copy()
    pairs.labels = np.full(len(pairs), -1, dtype=np.int64)
    return Pool(pairs=pairs, gold=gold, removed=removed)


def load_study_data(
    config: StudyConfig,
    base: Path | None = None,
    arm: ArmConfig | None = None,
    tests: dict[str, PairData] | None = None,
) -> StudyData:
    """Read train / dev / test sets and draw the configured subsets (seeded by the study seed); with
    ``arm``, its own training data where it names some (``tests``: the test sets, if read already)."""
    d = config.arm_data(arm)
    where = f"arm {arm.name}: data." if arm is not None and arm.data is not None else "data."
    train = _read_train(config, base, d)
    if d.dev is None and d.dev_size:
        # No dev split named: hold dev_size pairs out of train, so early stopping never sees test.
        if d.dev_size >= len(train):
            raise ConfigError(
                config.name,
                [
                    f"{where}dev_size: {d.dev_size:,} would hold out all the {len(train):,} pairs of "
                    f"{train.source} (no dev set named), leaving none to train on"
                ],
            )
        held = subset_indices(train.labels, d.dev_size, config.seed + 1)
        rest = np.setdiff1d(np.arange(len(train)), held)
        dev = train.subset(held, source=f"{train.source} (held-out dev)")
        train = train.subset(rest, source=train.source)
    else:
        dev = (
            _read_split(config, base, d.dev, d.dev_size, 1, scheme=d.scheme, field=f"{where}dev_size")
            if d.dev
            else None
        )
    if d.train_size:
        _check_size(config, f"{where}train_size", d.train_size, train)
    if d.train_size and d.train_size < len(train):
        train = sample_subset(train, d.train_size, config.seed)
    unlabelled = _read_unlabelled(config, base) if d.unlabelled else None
    tests = tests if tests is not None else load_test_sets(config, base)
    return StudyData(train=train, dev=dev, tests=tests, unlabelled=unlabelled, fixed_dev=d.dev_size is not None)


def _read_train(config: StudyConfig, base: Path | None, d: DataConfig) -> PairData:
    """The training pairs: one set, or a mixture of several drawn by ``d.mixture`` (seeded by the study
    seed), each read under the study's scheme (3-class sets collapse onto a binary study)."""
    if isinstance(d.train, str):
        return _read_split(config, base, d.train, None, 0, scheme=d.scheme)
    sets = {name: _read_split(config, base, spec, None, 0, scheme=d.scheme) for name, spec in d.train.items()}
    mix = d.mixture or MixtureConfig()
    sizes = {name: len(data) for name, data in sets.items()}
    weights = mixture_weights(sizes, mix.sampling, mix.temperature, mix.weights)
    counts = mixture_counts(sizes, weights, mix.size or sum(sizes.values()))
    rng = np.random.default_rng([config.seed, 31])
    parts = [data.subset(draw_with_repeats(len(data), counts[name], rng)) for name, data in sets.items()]
    mixed = PairData(
        premises=[p for part in parts for p in part.premises],
        hypotheses=[h for part in parts for h in part.hypotheses],
        labels=np.concatenate([part.labels for part in parts]),
        scheme=parts[0].scheme,
        source=" + ".join(f"{counts[name]:,} of {data.source}" for name, data in sets.items()),
        skipped=sum(data.skipped for data in sets.values()),
    )
    mixed.meta = {"mixture": counts}
    return mixed


def _read_unlabelled(config: StudyConfig, base: Path | None) -> PairData:
    """The unlabelled set: a file may lack labels (or carry any); a named set keeps its gold labels
    aside for measuring pseudo-labels."""
    d = config.data
    spec = d.unlabelled
    assert spec is not None
    path = (base / spec) if base is not None and (base / spec).exists() else Path(spec).expanduser()
    if path.is_file():
        return read_pairs(path, d.scheme, columns=d.columns, require_labels=False)
    return load_pairs(spec, scheme=d.scheme)


def load_test_sets(config: StudyConfig, base: Path | None = None) -> dict[str, PairData]:
    """The study's test sets by name, as :func:`load_study_data` draws them."""
    d = config.data
    return {
        name: _read_split(
            config, base, spec, d.test_size, 2, scheme=_test_scheme(spec, d.scheme), field="data.test_size"
        )
        for name, spec in d.test_sets.items()
    }


def load_study_test(config: StudyConfig, base: Path | None = None) -> PairData:
    """The study's in-domain test set alone, as :func:`load_study_data` draws it."""
    name, spec = next(iter(config.data.test_sets.items()))
    return _read_split(config, base, spec, config.data.test_size, 2)


def _test_scheme(spec: str, scheme: str) -> str:
    """The scheme a test set is read under: the study's, or binary for a binary dataset (a 3-class
    model is then scored as binary, p(entailment) against the rest)."""
    return "binary" if dataset_scheme(spec) == "binary" else scheme


def _check_size(config: StudyConfig, field: str, size: int, data: PairData) -> None:
    """Refuse a configured subset ``size`` larger than the pairs it is drawn from."""
    if size > len(data):
        raise ConfigError(config.name, [f"{field}: {size:,} is more than the {len(data):,} pairs of {data.source}"])


def _read_split(
    config: StudyConfig,
    base: Path | None,
    spec: str,
    size: int | None,
    offset: int,
    scheme: str | None = None,
    field: str | None = None,
) -> PairData:
    d = config.data
    path = (base / spec) if base is not None and (base / spec).exists() else None
    data = load_pairs(str(path) if path else spec, scheme=scheme or d.scheme, columns=d.columns)
    if size and field:
        _check_size(config, field, size, data)
    return sample_subset(data, size, config.seed + offset) if size and size < len(data) else data


def unit_data(config: StudyConfig, data: StudyData, unit: Unit) -> StudyData:
    """The study's data as ``unit`` trains on it: on a learning curve, a stratified subset of the
    training pairs (or exactly K pairs of every label), drawn anew for each seed; a dev set larger
    than that subset is cut to the same size per label unless ``data.dev_size`` is set."""
    size = unit.size
    if size is None or (size.pairs is None and size.per_class is None):
        return data
    rng = np.random.default_rng([unit.seed, config.seed, 17])
    train = data.train
    if size.per_class is not None:
        idx = k_shot_indices(train.labels, size.per_class, rng)
    elif size.pairs < len(train):
        idx = subset_indices(train.labels, size.pairs, rng)
    else:
        return data
    subset = train.subset(idx, source=train.source)
    subset.meta = {**train.meta, "subset_of": train.source, "subset_size": len(idx), "unit": unit.key}
    dev = data.dev
    if dev is not None and not data.fixed_dev and len(subset) < len(dev):
        dev_idx = (
            k_shot_indices(dev.labels, size.per_class, rng)
            if size.per_class is not None
            else subset_indices(dev.labels, len(subset), rng)
        )
        dev = dev.subset(dev_idx, source=f"{dev.source} (subset of {len(dev_idx):,})")
    return StudyData(train=subset, dev=dev, tests=data.tests, unlabelled=data.unlabelled, fixed_dev=data.fixed_dev)


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
    """One unit of one arm of a study as its type runs it (:class:`sizewise.arms.ArmRun`): the unit's
    data, its folder, the cost meter, and the scoring every arm shares."""

    config: StudyConfig
    arm: ArmConfig
    data: StudyData
    arm_dir: Path
    unit: Unit | None = None  # type: ignore[assignment]
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if self.unit is None:
            self.unit = self.config.units(self.arm)[0]

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
        """The unit's training seed."""
        assert self.unit is not None
        return self.unit.seed

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
        """The in-domain test pairs every arm is scored on."""
        return self.data.test

    @functools.cached_property
    def pool(self) -> Pool:
        """The unit's unlabelled pairs, labels hidden (drawn on first use)."""
        assert self.unit is not None
        return unit_pool(self.config, self.data, self.unit)

    def source_model(self, name: str) -> Path:
        """The saved model of arm ``name`` for this unit's seed, which must be finished and current."""
        source = self.config.arm(name)
        unit = self.config.source_unit(self.arm, self.unit, name)
        source_dir = unit_folder(self.config, source, unit, self.arm_dir_root)
        if (
            not unit_is_done(self.config, source, unit, source_dir)
            or not (source_dir / "model" / LEARNER_FILE).is_file()
        ):
            raise ConfigError(
                self.config.name,
                [
                    f"arm {self.arm.name}: is made from arm {source.name}, which has no current trained model in "
                    f"{source_dir}; run it first (--arm {source.name})"
                ],
            )
        return source_dir / "model"

    @property
    def arm_dir_root(self) -> Path:
        """The study's output folder."""
        return self.arm_dir.parent if self.config.single_unit(self.arm) else self.arm_dir.parent.parent

    def meter(self) -> CostMeter:
        """A cost meter with the study's energy settings."""
        return CostMeter(self.config.cost)

    def score(
        self,
        model: ScoredModel,
        train_meter: CostMeter,
        recipe: dict[str, Any],
        sections: dict[str, Any] | None = None,
    ) -> ArmResult:
        """Predict the test pairs (with the sections the model's kind adds), save the model, compute
        metrics, intervals and cost, and score every other test set; the unit's result, not yet written.
        ``sections`` are result sections the arm type adds (a self-trained arm's rounds)."""
        config, arm, data = self.config, self.arm, self.data
        # An arm trained on its own data may predict another scheme than the study's (nli3 on a binary study).
        model_scheme = data.train.scheme.name
        inputs = model_inputs(data.test, model_scheme)
        with CostMeter(config.cost) as eval_meter:
            if model_scheme == data.test.scheme.name:
                proba, model_sections = model.predict_with_sections(data.test)
            else:
                proba = collapse_proba(model.predict_proba(inputs), model_scheme, data.test.scheme.name)
                model_sections = {}
        sections = {**model_sections, **(sections or {})}
        model_dir = self.arm_dir / "model"
        model.save(model_dir)

        y_true = data.test.labels
        y_pred = proba.argmax(1)
        k = data.test.scheme.num_labels
        ev = config.evaluation
        few = few_pairs_note(len(y_true))
        if few is not None:
            logger.warning("arm %s: %s", arm.name, few)
        intervals = bootstrap_intervals(
            y_true, y_pred, k, n_resamples=ev.bootstrap_resamples, seed=config.seed, level=ev.confidence
        )
        params = model.parameter_count()
        record: dict[str, Any] = {
            "schema": RESULT_SCHEMA,
            "study": config.name,
            "arm": arm.name,
            "description": arm.description or arm.name,
            "fingerprint": config.arm_fingerprint(arm, self.unit),
            "config": {**recipe, "seed": self.seed},
            "data": {
                "scheme": data.test.scheme.name,
                "labels": list(data.test.scheme.labels),
                "train": _data_summary(data.train),
                "dev": _data_summary(data.dev),
                "test": _data_summary(data.test),
            },
            "metrics": compute_metrics(y_true, proba, k),
            "intervals": self._intervals(intervals),
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
        if not config.single_unit(arm):
            size = self.unit.size
            record["unit"] = {"seed": self.seed, "size": size.key if size else None, "labelled_pairs": len(data.train)}
        others = list(data.tests.items())[1:]
        if others:
            record["tests"] = {name: self._score_other(model, test, model_scheme) for name, test in others}
        throughput = measure_throughput(model.predict_proba, inputs)
        record["cost"]["inference_pairs_per_s"] = throughput["pairs_per_s"]
        record["cost"]["inference_batch_pairs"] = throughput["pairs"]
        record["cost"].update(measure_latency(model.predict_proba, inputs))
        return ArmResult.model_validate(record)

    def _intervals(self, intervals: dict[str, tuple[float, float]]) -> dict[str, Any]:
        ev = self.config.evaluation
        return {
            "level": ev.confidence,
            "resamples": ev.bootstrap_resamples,
            "method": "percentile bootstrap over test pairs",
            **{name: [round(lo, 6), round(hi, 6)] for name, (lo, hi) in intervals.items()},
        }

    def _score_other(self, model: ScoredModel, test: PairData, model_scheme: str) -> dict[str, Any]:
        """The model on another test set; 3-class probabilities on a binary set are collapsed."""
        logger.info("arm %s: scoring on %s (%d pairs)", self.arm.name, test.source, len(test))
        scheme = test.scheme.name
        proba = collapse_proba(model.predict_proba(model_inputs(test, model_scheme)), model_scheme, scheme)
        y_true, y_pred, k = test.labels, proba.argmax(1), test.scheme.num_labels
        ev = self.config.evaluation
        intervals = bootstrap_intervals(
            y_true, y_pred, k, n_resamples=ev.bootstrap_resamples, seed=self.config.seed, level=ev.confidence
        )
        return {
            "data": _data_summary(test),
            "scored_as": scheme,
            "collapsed": scheme != model_scheme,
            "metrics": compute_metrics(y_true, proba, k),
            "intervals": self._intervals(intervals),
            "confusion_matrix": confusion_matrix(y_true, y_pred, k),
            "predictions": {"y_true": y_true.tolist(), "y_pred": y_pred.tolist()},
        }


def unit_folder(config: StudyConfig, arm: ArmConfig, unit: Unit, out: Path) -> Path:
    """The folder of ``arm``'s ``unit`` in the study output folder ``out``."""
    return unit_dir(out / arm.name, unit, config.single_unit(arm))


def run_arm(config: StudyConfig, arm: ArmConfig, data: StudyData, arm_dir: Path, unit: Unit | None = None) -> ArmResult:
    """Run one unit of an arm (its first by default) through the arm's type (train, compress, ...),
    save its model and score it; returns its result (not yet written). ``data`` is the arm's data (the
    study's, or its own: :func:`load_study_data` with the arm); the unit's subset is drawn here."""
    unit = unit or config.units(arm)[0]
    return arm.type_.run(StudyArmRun(config, arm, unit_data(config, data, unit), arm_dir, unit))


#: The folder of a unit's saved model (every arm saves one: :meth:`StudyArmRun.score`).
MODEL_FOLDER = "model"


def unit_is_done(config: StudyConfig, arm: ArmConfig, unit: Unit, folder: Path) -> bool:
    """True when the unit's result file exists and was made from this exact arm, data, seed and size,
    and its saved model is beside it (a kill while the model was being replaced leaves none)."""
    path = folder / RESULT_FILE
    model = folder / MODEL_FOLDER
    if not path.is_file() or not model.is_dir() or not any(model.iterdir()):
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("fingerprint") == config.arm_fingerprint(arm, unit)


def arm_is_done(config: StudyConfig, arm: ArmConfig, arm_dir: Path) -> bool:
    """True when every unit of the arm (whose folder is ``arm_dir``) is finished and current."""
    return all(unit_is_done(config, arm, u, unit_dir(arm_dir, u, config.single_unit(arm))) for u in config.units(arm))


def _thin_training(arm: ArmConfig, train: PairData) -> str | None:
    """A warning for an arm that trains on a single pair or on pairs of a single label, else None."""
    present = [train.scheme.labels[i] for i in sorted(set(train.labels.tolist())) if i >= 0]
    one_label = f"only one label ({present[0]})" if len(present) == 1 else None
    if len(train) == 1:
        return f"arm {arm.name}: trains on 1 pair" + (f", of {one_label}" if one_label else "")
    return f"arm {arm.name}: trains on {one_label}" if one_label else None


def _clean_run_folder(config: StudyConfig, out: Path) -> None:
    """Undo what interrupted writes left in the run folder ``out`` and in the unit folders of the
    study's arms: temporaries removed, a model folder moved aside by a cut swap put back (only names
    sizewise's writers make, :func:`sizewise.files.clean_temporaries`)."""
    if not out.is_dir():
        return
    folders = [out]
    for arm in config.arms:
        arm_dir = out / arm.name
        folders.append(arm_dir)
        folders.extend(unit_folder(config, arm, unit, out) for unit in config.units(arm))
    cleaned = [f"{folder / name}" for folder in dict.fromkeys(folders) for name in clean_temporaries(folder)]
    if cleaned:
        logger.info("cleaned what interrupted writes left: %s", ", ".join(cleaned))


def run_study(
    config: StudyConfig,
    *,
    output: str | Path | None = None,
    base: Path | None = None,
    force: bool = False,
    arms: list[str] | None = None,
    executor: str = "local",
    address: str | None = None,
    resources: Resources | None = None,
) -> Path:
    """Run every unit (arm, seed, size) not already finished, arm by arm in order (an arm made from
    another's model after it); returns the output folder. The report is rendered from the result
    files by the caller (:func:`sizewise.report.render.write_report`).

    ``executor="ray"`` sends every unit to a Ray cluster (``address``; a local instance when None), each
    asking ``resources`` (an arm's own ``resources`` block wins), a unit made from another arm's model
    once that is finished; only this process writes into the output folder."""
    out = Path(output or config.output)
    selected = [a for a in config.arms if arms is None or a.name in arms]
    if is_main_process():
        _clean_run_folder(config, out)
    todo: list[tuple[ArmConfig, Unit]] = []
    for arm in selected:
        for unit in config.units(arm):
            folder = unit_folder(config, arm, unit, out)
            if not force and unit_is_done(config, arm, unit, folder):
                logger.info("arm %s: %s finished earlier, skipped (delete %s to redo it)", arm.name, unit.key, folder)
            else:
                todo.append((arm, unit))
    if world_size() > 1:
        others = sorted({a.name for a, _ in todo if not a.type_.distributed(a.spec)})
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
    tests = load_test_sets(config, base) if todo else {}
    by_data: dict[str, StudyData] = {}  # arms with the same training data share it

    def data_of(arm: ArmConfig) -> StudyData:
        key = arm.data.model_dump_json() if arm.data is not None else ""
        if key not in by_data:
            by_data[key] = load_study_data(config, base, arm, tests)
        return by_data[key]

    warned: set[str] = set()
    for arm, unit in todo:
        if arm.type_.uses_unlabelled:  # an unusable pool is refused before any arm trains
            unit_pool(config, unit_data(config, data_of(arm), unit), unit)
        else:
            data_of(arm)
        warning = _thin_training(arm, unit_data(config, data_of(arm), unit).train)
        if warning is not None and warning not in warned and is_main_process():
            warned.add(warning)
            logger.warning("%s", warning)

    if not is_main_process():
        # The other processes of a multi-process launch only help train; rank 0 scores and writes.
        for arm, unit in todo:
            data = unit_data(config, data_of(arm), unit)
            arm.type_.help_train(StudyArmRun(config, arm, data, unit_folder(config, arm, unit, out), unit))
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.json", config.model_dump_json(indent=2) + "\n")
    if executor == "ray":
        run_units_on_ray(
            config,
            todo,
            data_of,
            out,
            run=run_arm,
            folder_of=unit_folder,
            prepare=clear_unit,
            finish=functools.partial(_finish, config, out),
            address=address,
            resources=resources,
        )
        return out
    for i, (arm, unit) in enumerate(todo, start=1):
        folder = unit_folder(config, arm, unit, out)
        if len(todo) > 1:
            logger.info("unit %d of %d: arm %s, %s", i, len(todo), arm.name, unit.key)
        clear_unit(folder)
        _finish(config, out, arm, unit, run_arm(config, arm, data_of(arm), folder, unit))
    return out


def clear_unit(folder: Path) -> None:
    """Make ready to (re)do the unit in ``folder``: its old result goes first, so a kill while it retrains
    cannot leave the new model beside the old result, marked done; leftovers of interrupted writes go."""
    (folder / RESULT_FILE).unlink(missing_ok=True)
    clean_temporaries(folder)


def _finish(config: StudyConfig, out: Path, arm: ArmConfig, unit: Unit, result: ArmResult) -> None:
    """Write a finished unit's result (its model is saved already) and say how it went."""
    result.write(unit_folder(config, arm, unit, out) / RESULT_FILE)
    m, ci = result.metrics, result.intervals.accuracy
    logger.info(
        "arm %s%s: accuracy %.3f [%.3f, %.3f] · macro-F1 %.3f · %s params · %.0fs",
        arm.name,
        "" if config.single_unit(arm) else f" ({unit.key})",
        m.accuracy,
        ci[0],
        ci[1],
        m.f1_macro,
        f"{result.cost.parameters_total:,}",
        result.cost.train_seconds,
    )
