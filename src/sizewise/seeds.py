"""One result per arm from the results of its units: seeds combined, sizes as a learning curve.

An arm trained on several seeds is reported as the mean over its seeds: metrics, costs, the size
curve and diversity of an ensemble, scores on other test sets. Its intervals are a two-level
bootstrap (training seeds, then test pairs: :func:`~sizewise.evaluation.stats.seed_bootstrap_intervals`),
so they include both sources of variance; the per-seed scores stay in the ``seeds`` section for paired
tests between arms. On a learning curve, the arm's result is its largest size, and ``curve`` holds one
combined result per size. Nothing here is written to a file: the unit results are the record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from sizewise.evaluation.stats import seed_bootstrap_intervals, seed_spread
from sizewise.result import ArmResult, CurvePoint, SeedSummary, TestScore
from sizewise.units import TrainSize

#: How a combined result's intervals were computed.
TWO_LEVEL = "two-level percentile bootstrap: training seeds, then test pairs"


def _mean(values: Sequence[float | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if len(present) == len(values) and present else None


def _mean_fields(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The element-wise mean of numeric fields (recursing into mappings and into equal-length lists of
    numbers or of mappings); other values (text, flags, counts that must stay whole) from the first
    record."""
    first = records[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in records]
        if isinstance(value, bool) or value is None or isinstance(value, str):
            out[key] = value
        elif isinstance(value, int):
            out[key] = value if all(v == value for v in values) else round(float(np.mean(values)))
        elif isinstance(value, float):
            out[key] = _mean(values)
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in values):
            out[key] = _mean_fields(values)  # type: ignore[arg-type]
        elif isinstance(value, list) and all(isinstance(v, list) and len(v) == len(value) for v in values):
            if value and all(isinstance(x, int) and not isinstance(x, bool) for v in values for x in v):  # type: ignore[union-attr]
                # whole counts (an ensemble member's epochs) stay whole, as single ints do
                out[key] = [round(float(np.mean(col))) for col in zip(*values, strict=True)]  # type: ignore[call-overload]
            elif value and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value):
                out[key] = [float(np.mean(col)) for col in zip(*values, strict=True)]
            elif value and all(isinstance(x, dict) for v in values for x in v):  # type: ignore[union-attr]
                out[key] = [_mean_fields(list(col)) for col in zip(*values, strict=True)]  # type: ignore[call-overload]
            else:
                out[key] = value
        else:
            out[key] = value
    return out


def _seed_summary(seeds: list[int], accuracy: list[float], f1: list[float], y_pred: list[list[int]]) -> SeedSummary:
    return SeedSummary(
        seeds=seeds,
        accuracy=accuracy,
        f1_macro=f1,
        accuracy_sd=seed_spread(accuracy)[1],
        f1_macro_sd=seed_spread(f1)[1],
        y_pred=y_pred,
    )


def _combined_scores(
    seeds: list[int],
    scores: list[Any],
    num_labels: int,
    resamples: int,
    level: float,
    seed: int,
) -> dict[str, Any]:
    """Metrics (mean), two-level intervals, summed confusion matrix and per-seed summary of the same
    test set scored by each seed's model (``scores``: ArmResults or TestScores)."""
    y_true = np.asarray(scores[0].predictions.y_true)
    preds = np.asarray([s.predictions.y_pred for s in scores])
    intervals = seed_bootstrap_intervals(y_true, preds, num_labels, n_resamples=resamples, seed=seed, level=level)
    metrics = _mean_fields([s.metrics.model_dump() for s in scores])
    return {
        "metrics": metrics,
        "intervals": {
            "level": level,
            "resamples": resamples,
            "method": TWO_LEVEL,
            **{name: [round(lo, 6), round(hi, 6)] for name, (lo, hi) in intervals.items()},
        },
        "confusion_matrix": np.sum([s.confusion_matrix for s in scores], axis=0).tolist(),
        "predictions": scores[0].predictions.model_dump(),
        "seeds": _seed_summary(
            seeds,
            [s.metrics.accuracy for s in scores],
            [s.metrics.f1_macro for s in scores],
            preds.tolist(),
        ),
    }


def combine_seeds(results: list[ArmResult], *, seed: int = 0) -> ArmResult:
    """One result from the results of one arm at one size, each from another training seed: mean
    metrics and costs, two-level intervals, the confusion matrices summed, the first seed's history
    and predictions (every seed's predictions are in ``seeds``). One result is returned as it is."""
    if len(results) == 1:
        return results[0]
    results = sorted(results, key=lambda r: r.config.seed)
    first = results[0]
    seeds = [r.config.seed for r in results]
    k = len(first.data.labels)
    level, resamples = first.intervals.level, first.intervals.resamples
    record = first.model_dump(by_alias=True)
    record.update(_combined_scores(seeds, results, k, resamples, level, seed))
    record["cost"] = _mean_fields([r.cost.model_dump(exclude={"speed_vs_source"}) for r in results])
    record["curves"] = _mean_fields([r.curves.model_dump(exclude_none=True) for r in results])
    if all(r.diversity is not None for r in results):
        record["diversity"] = _mean_fields([r.diversity.model_dump() for r in results])  # type: ignore[union-attr]
    if all(r.members is not None for r in results):
        record["members"] = _mean_fields([r.members.model_dump(exclude_none=True) for r in results])  # type: ignore[union-attr]
    if all(r.selftraining is not None for r in results):
        record["selftraining"] = _mean_fields([r.selftraining.model_dump() for r in results])  # type: ignore[union-attr]
    if first.tests:
        tests = {}
        for name, score in first.tests.items():
            per_seed = [r.tests[name] for r in results if r.tests and name in r.tests]
            if len(per_seed) != len(results):
                continue
            combined = _combined_scores(seeds, per_seed, len(score.confusion_matrix), resamples, level, seed)
            tests[name] = TestScore.model_validate({**score.model_dump(by_alias=True), **combined})
        record["tests"] = tests
    record["started_at"] = min(r.started_at for r in results)
    record["finished_at"] = max(r.finished_at for r in results)
    return ArmResult.model_validate(record)


def summarize_arm(units: list[ArmResult], *, seed: int = 0) -> ArmResult:
    """The arm's result from all its unit results: its largest size with the seeds combined, and on a
    learning curve (``unit.size`` set) the combined result of every size in ``curve``."""
    by_size: dict[str | None, list[ArmResult]] = defaultdict(list)
    for r in units:
        by_size[r.unit.size if r.unit else None].append(r)
    points = []
    for key, group in by_size.items():
        combined = combine_seeds(group, seed=seed)
        pairs = group[0].unit.labelled_pairs if group[0].unit else group[0].data.train.rows
        size = TrainSize.parse(key) if key else TrainSize()
        points.append((pairs, key, size, combined))
    points.sort(key=lambda p: (p[0], p[1] or ""))
    main = points[-1][3]
    if len(points) > 1 or points[-1][1] is not None:
        curve = [
            CurvePoint(size=key or "all", label=size.label, labelled_pairs=pairs, result=r)
            for pairs, key, size, r in points
        ]
        main = main.model_copy(update={"curve": curve})
    return main
