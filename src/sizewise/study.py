"""Running a study: every arm trained and scored on the same data, one result JSON per arm.

An arm whose ``result.json`` exists with the same fingerprint (arm, data, seed, evaluation) is
skipped, so an interrupted study resumes where it stopped. The report is rendered from the
result files alone.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
from sizewise.files import atomic_write_json, atomic_write_text, directory_size
from sizewise.learners.base import LEARNER_FILE, create_learner, learner_config_class, load_learner
from sizewise.progress import progress_bar

logger = logging.getLogger(__name__)

RESULT_FILE = "result.json"
RESULT_SCHEMA = "sizewise.result/1"


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


def _with_default_seed(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    spec = dict(spec)
    fields = learner_config_class(spec["kind"]).model_fields
    if "seed" in fields and "seed" not in spec:
        spec["seed"] = seed
    return spec


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


def _source_model(config: StudyConfig, arm: ArmConfig, arm_dir: Path) -> Path:
    """The saved model a compress arm starts from; its source arm must be finished, and current."""
    assert arm.compress is not None
    source = config.arm(arm.compress.source)
    source_dir = arm_dir.parent / source.name
    if not arm_is_done(config, source, source_dir) or not (source_dir / "model" / LEARNER_FILE).is_file():
        raise ConfigError(
            config.name,
            [
                f"arm {arm.name}: compresses arm {source.name}, which has no current trained model in {source_dir}; "
                f"run it first (--arm {source.name})"
            ],
        )
    return source_dir / "model"


def run_arm(config: StudyConfig, arm: ArmConfig, data: StudyData, arm_dir: Path) -> dict[str, Any]:
    """Train (or, for a compress arm, compress), save and score one arm; returns its result record
    (not yet written). A compress arm's training cost is the cost of compressing."""
    started = time.time()
    fit_kwargs: dict[str, Any] = {}
    if arm.compress is not None:
        from sizewise.compress import compress

        source = _source_model(config, arm, arm_dir)
        recipe: dict[str, Any] = {"compress": arm.compress.model_dump()}
        logger.info("arm %s: compressing arm %s (%s)", arm.name, arm.compress.source, _steps_text(arm))
        with CostMeter(config.cost) as train_meter:
            learner = compress(load_learner(source), arm.compress.steps or [], data.train)
        is_ensemble = hasattr(learner, "member_probas")
    else:
        assert arm.learner is not None
        spec = _with_default_seed(arm.learner, config.seed)
        recipe = {"learner": spec}
        learner = create_learner(spec)
        is_ensemble = hasattr(learner, "member_probas")
        if is_ensemble and getattr(learner.config, "epoch_curve", False):
            fit_kwargs["monitor"] = data.test  # scored after each epoch for the curve only, never for selection
        logger.info("arm %s: training %s on %d pairs", arm.name, spec["kind"], len(data.train))
        with CostMeter(config.cost) as train_meter:
            learner.fit(data.train, data.dev, **fit_kwargs)
    with CostMeter(config.cost) as eval_meter:
        if is_ensemble:
            member_probas = learner.member_probas(data.test)
            proba = learner.combine(member_probas)
        else:
            proba = learner.predict_proba(data.test)
    model_dir = arm_dir / "model"
    learner.save(model_dir)

    y_true = data.test.labels
    y_pred = proba.argmax(1)
    k = data.test.scheme.num_labels
    ev = config.evaluation
    intervals = bootstrap_intervals(
        y_true, y_pred, k, n_resamples=ev.bootstrap_resamples, seed=config.seed, level=ev.confidence
    )
    params = learner.parameter_count()
    result: dict[str, Any] = {
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
        "curves": {},
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
        "training": {"history": getattr(learner, "history_", None)},
        "predictions": {"y_true": y_true.tolist(), "y_pred": y_pred.tolist()},
        "environment": environment(),
        "started_at": started,
        "finished_at": time.time(),
    }
    throughput = measure_throughput(learner.predict_proba, data.test)
    result["cost"]["inference_pairs_per_s"] = throughput["pairs_per_s"]
    result["cost"]["inference_batch_pairs"] = throughput["pairs"]
    result["cost"].update(measure_latency(learner.predict_proba, data.test))
    if is_ensemble:
        sizes = list(range(1, len(member_probas) + 1))
        result["curves"]["size"] = {"k": sizes, "accuracy": learner.size_curve(member_probas, y_true)}
        epoch_curve = learner.epoch_size_curve(y_true)
        if epoch_curve:
            result["curves"]["epoch_size"] = {str(e): accs for e, accs in epoch_curve.items()}
        div = learner.diversity(member_probas, y_true)
        result["diversity"] = {
            key: (np.round(v, 6).tolist() if isinstance(v, list) else round(float(v), 6)) for key, v in div.items()
        }
        result["members"] = {
            "weights": learner.weights_.tolist(),
            "accuracy": [float((p.argmax(1) == y_true).mean()) for p in member_probas],
        }
        if hasattr(learner, "member_seconds_"):  # set by fit; a compressed ensemble was loaded, not fitted
            result["members"]["train_seconds"] = [round(s, 2) for s in learner.member_seconds_]
            result["members"]["epochs"] = [len(h) for h in learner.member_histories_]
    return result


def _steps_text(arm: ArmConfig) -> str:
    assert arm.compress is not None
    parts = []
    for step in arm.compress.steps or []:
        settings = ", ".join(f"{k} {v}" for k, v in step.items() if k != "transform")
        parts.append(f"{step['transform']} {settings}".strip())
    return " → ".join(parts)


def arm_is_done(config: StudyConfig, arm: ArmConfig, arm_dir: Path) -> bool:
    """True when the arm's result file exists and was made from this exact arm, data and seed."""
    path = arm_dir / RESULT_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("fingerprint") == config.arm_fingerprint(arm)
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return False


def run_study(
    config: StudyConfig,
    *,
    output: str | Path | None = None,
    base: Path | None = None,
    force: bool = False,
    arms: list[str] | None = None,
) -> Path:
    """Run every arm not already finished, then write the report; returns the output folder."""
    from sizewise.report.render import write_report

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
        others = [a.name for a in todo if a.kind != "transformer"]
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
            assert data is not None and arm.learner is not None
            create_learner(_with_default_seed(arm.learner, config.seed)).fit(data.train, data.dev)
        return out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "study.json", config.model_dump_json(indent=2) + "\n")
    for arm in todo:
        arm_dir = out / arm.name
        assert data is not None
        result = run_arm(config, arm, data, arm_dir)
        atomic_write_json(arm_dir / RESULT_FILE, result)
        m, ci = result["metrics"], result["intervals"]["accuracy"]
        logger.info(
            "arm %s: accuracy %.3f [%.3f, %.3f] · macro-F1 %.3f · %s params · %.0fs",
            arm.name,
            m["accuracy"],
            ci[0],
            ci[1],
            m["f1_macro"],
            f"{result['cost']['parameters_total']:,}",
            result["cost"]["train_seconds"],
        )
    write_report(out, baseline=config.evaluation.baseline or config.arms[0].name, order=[a.name for a in config.arms])
    return out


def measure_speed(
    config: StudyConfig,
    *,
    output: str | Path | None = None,
    base: Path | None = None,
    arms: list[str] | None = None,
    rounds: int = 5,
    pairs: int = 512,
) -> dict[str, dict[str, Any]]:
    """Measure each finished compress arm (those in ``arms``, or all) against the trained arm its
    model descends from, side by side (:func:`sizewise.cost.speed.side_by_side`: ``rounds``
    alternating rounds on the first ``pairs`` test pairs, each model in a process of its own); the
    result goes into the arm's result file as ``cost.speed_vs_source`` and the report is written
    again. Returns what was measured, by arm. Nothing is trained: the saved models are measured as they are
    (an arm whose result no longer matches the study file is measured with a warning).
    """
    from sizewise.cost.speed import side_by_side, speedup
    from sizewise.report.render import write_report
    from sizewise.report.tables import compress_root

    out = Path(output or config.output)
    chosen = [a for a in config.arms if a.compress is not None and (arms is None or a.name in arms)]
    if not chosen:
        raise ConfigError(config.name, ["no compress arm to measure" + (f" among {', '.join(arms)}" if arms else "")])
    results: dict[str, dict[str, Any]] = {}
    for arm in config.arms:
        path = out / arm.name / RESULT_FILE
        if path.is_file() and (out / arm.name / "model" / LEARNER_FILE).is_file():
            results[arm.name] = json.loads(path.read_text())
    problems = []
    roots = {}
    for arm in chosen:
        if arm.name not in results:
            problems.append(f"arm {arm.name}: no result and model in {out / arm.name}; run it first")
            continue
        roots[arm.name] = compress_root(results[arm.name], results)
        source = results[roots[arm.name]]
        if source.get("config", {}).get("compress"):  # the chain stops at a compress arm: its source is missing
            missing = source["config"]["compress"].get("from")
            problems.append(f"arm {missing}: no result and model in {out / str(missing)}; run it first")
    if problems:
        raise ConfigError(config.name, sorted(set(problems)))
    test = load_study_test(config, base)
    code = environment()  # the code as it is when measuring starts
    involved = {n for a in chosen for n in (a.name, roots[a.name])}
    stale = sorted(n for n in involved if results[n].get("fingerprint") != config.arm_fingerprint(config.arm(n)))
    if stale:
        logger.warning(
            "arms whose results no longer match the study file (their saved models are measured as they are): %s",
            ", ".join(stale),
        )
    measurements = {}
    for arm in chosen:
        root = roots[arm.name]
        logger.info("arm %s: measuring its speed against arm %s, %d rounds side by side", arm.name, root, rounds)
        with progress_bar() as bar:
            task = bar.add_task(f"{arm.name} vs {root}", total=2 * rounds, info="")

            def advance(_round: int, name: str, speed: dict[str, float], task: Any = task) -> None:
                bar.update(task, advance=1, info=f"{name}: {speed['pairs_per_s']:,.0f} pairs/s")

            models = {root: out / root / "model", arm.name: out / arm.name / "model"}
            runs = side_by_side(models, test, rounds=rounds, pairs=pairs, on_result=advance)
        measured = {
            "source": root,
            **speedup(runs, arm.name, root),
            "pairs": min(pairs, len(test)),
            "isolated": True,
            "measured_at": time.time(),
            "environment": code,
        }
        result = results[arm.name]
        result["cost"]["speed_vs_source"] = measured
        atomic_write_json(out / arm.name / RESULT_FILE, result)
        measurements[arm.name] = measured
        logger.info("arm %s: %.2f× the pairs/s of arm %s", arm.name, measured["ratio"], root)
    write_report(out, baseline=config.evaluation.baseline or config.arms[0].name, order=[a.name for a in config.arms])
    return measurements
