"""The poster-style table and the paired tests, as plain rows any renderer can print."""

from __future__ import annotations

from typing import Any

import numpy as np

from sizewise.arms.lineage import cumulative_cost
from sizewise.cost.energy import fmt_energy
from sizewise.evaluation.metrics import METRIC_NAMES
from sizewise.evaluation.stats import mcnemar_exact, paired_seed_bootstrap
from sizewise.result import ArmResult, Cost

METRIC_TITLES = {
    "accuracy": "accuracy",
    "f1_macro": "F1 macro",
    "f1_weighted": "F1 weighted",
    "precision_macro": "precision macro",
    "recall_macro": "recall macro",
    "roc_auc_macro": "ROC-AUC macro",
}


def fmt_number(value: float | None, digits: int = 3) -> str:
    """A metric as text, ``–`` when undefined."""
    return "–" if value is None else f"{value:.{digits}f}"


def fmt_count(n: int) -> str:
    """A parameter count as 1.08M / 22.7k / 950."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


def fmt_params(cost: Cost) -> str:
    """Total parameters, with the trainable count in brackets when it differs (adapters)."""
    total, trainable = cost.parameters_total, cost.parameters_trainable
    return fmt_count(total) + ("" if trainable == total else f" ({fmt_count(trainable)})")


def fmt_seconds(s: float) -> str:
    """Seconds as 42s / 3m05s / 1h02m."""
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def main_table(results: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the poster's Table 1 with intervals, parameters and train time. Arms trained
    on several seeds show the mean ± the sd over seeds; a column of training pairs appears when the
    arms were trained on different numbers of them (learning curves: each arm's largest size)."""
    level = results[0].intervals.level if results else 0.95
    pct = f"{100 * level:.0f}%"
    seeded = any(r.n_seeds > 1 for r in results)
    sized = len({r.data.train.rows for r in results}) > 1
    header = ["arm", "params (trainable)"]
    header += ["seeds"] if seeded else []
    header += ["train pairs"] if sized else []
    for name in METRIC_NAMES:
        title = METRIC_TITLES[name]
        header.append(f"{title} [{pct} CI]" if name in ("accuracy", "f1_macro") else title)
    header.append("train time")
    rows = []
    for r in results:
        cost, m = r.cost, r.metrics
        row = [r.description, fmt_params(cost)]
        row += [str(r.n_seeds)] if seeded else []
        row += [f"{r.data.train.rows:,}"] if sized else []
        for name in METRIC_NAMES:
            cell = fmt_number(m.get(name))
            sd = getattr(r.seeds, f"{name}_sd", None) if r.seeds is not None else None
            if sd is not None:
                cell += f" ± {sd:.3f}"
            interval = r.intervals.of(name)
            if interval is not None:
                lo, hi = interval
                cell += f" [{lo:.3f}, {hi:.3f}]"
            row.append(cell)
        row.append(fmt_seconds(cost.train_seconds))
        rows.append(row)
    return header, rows


def seed_predictions(result: ArmResult) -> dict[int, list[int]]:
    """Each training seed's test predictions of a result (one seed for a result trained once)."""
    if result.seeds is not None:
        return dict(zip(result.seeds.seeds, result.seeds.y_pred, strict=True))
    return {result.config.seed: result.predictions.y_pred}


def paired_difference(a: ArmResult, b: ArmResult, *, metric: str = "accuracy", seed: int = 0) -> dict[str, Any]:
    """``metric`` of A minus B on the same test pairs, paired by training seed.

    Trained once each: the paired bootstrap and the exact McNemar test (its p-value decides). With
    several seeds: the two-level paired bootstrap over the seeds both arms share (seeds and test pairs
    resampled together; its p-value decides) and McNemar's counts averaged over those seeds. Keys:
    ``difference``, ``interval``, ``p_value``, ``test`` (what gave the p-value), ``seeds`` (how many were
    paired), ``a_only`` / ``b_only`` (pairs only A / only B gets right), ``bootstrap_p``.
    """
    pa, pb = seed_predictions(a), seed_predictions(b)
    common = [s for s in pa if s in pb]
    if common:
        rows_a, rows_b = [pa[s] for s in common], [pb[s] for s in common]
    else:  # no seed in common: pair them in seed order
        n = min(len(pa), len(pb))
        rows_a, rows_b = [pa[s] for s in sorted(pa)[:n]], [pb[s] for s in sorted(pb)[:n]]
    y = np.asarray(a.predictions.y_true)
    k = len(a.data.labels)
    boot = paired_seed_bootstrap(y, np.asarray(rows_a), np.asarray(rows_b), k, metric=metric, seed=seed)
    counts = [mcnemar_exact(y, ra, rb) for ra, rb in zip(rows_a, rows_b, strict=True)]
    out = {
        "difference": boot["difference"],
        "interval": list(boot["interval"]),
        "bootstrap_p": boot["p_value"],
        "seeds": len(rows_a),
        "a_only": float(np.mean([c["a_only"] for c in counts])),
        "b_only": float(np.mean([c["b_only"] for c in counts])),
    }
    if len(rows_a) == 1:
        out.update(p_value=counts[0]["p_value"], test="McNemar", a_only=counts[0]["a_only"], b_only=counts[0]["b_only"])
    else:
        out.update(p_value=boot["p_value"], test="two-level bootstrap")
    return out


def paired_tests(results: list[ArmResult], baseline: str, *, seed: int = 0) -> list[dict[str, Any]]:
    """Every arm against ``baseline`` on the same test pairs (:func:`paired_difference`): accuracy
    difference with its paired-bootstrap interval, and the p-value (``mcnemar_p``: McNemar's for arms
    trained once, the two-level bootstrap's over seeds otherwise)."""
    base = next((r for r in results if r.arm == baseline), None)
    if base is None:
        return []
    out = []
    for r in results:
        if r is base:
            continue
        row: dict[str, Any] = {"arm": r.arm, "description": r.description, "baseline": baseline}
        if r.data.test.fingerprint != base.data.test.fingerprint:
            row["note"] = "different test set: not compared"
            out.append(row)
            continue
        d = paired_difference(r, base, seed=seed)
        row.update(
            accuracy_difference=d["difference"],
            interval=d["interval"],
            mcnemar_p=d["p_value"],
            bootstrap_p=d["bootstrap_p"],
            test=d["test"],
            arm_only_right=d["a_only"],
            baseline_only_right=d["b_only"],
            significant=bool(d["p_value"] < 0.05),
        )
        out.append(row)
    return out


def fmt_p(p: float) -> str:
    """A p-value as text: ``< 0.001`` or three significant digits."""
    return "< 0.001" if p < 0.001 else f"{p:.3g}"


def fmt_ratio(ratio: float, less: str, more: str) -> str:
    """``6× less`` / ``2.5× more`` / ``about the same`` for a cost ratio arm / reference."""
    if not np.isfinite(ratio) or ratio <= 0:
        return "–"
    if 0.9 <= ratio <= 1.1:
        return "about the same"
    return f"{1 / ratio:.1f}× {less}" if ratio < 1 else f"{ratio:.1f}× {more}"


def cost_table(results: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the cost table: time, energy, CO2, memory, size, throughput, latency."""
    header = [
        "arm",
        "params",
        "train time",
        "train CPU time",
        "train energy",
        "train CO2",
        "peak memory",
        "size on disk",
        "inference pairs/s (batch)",
        "latency p50 / p95",
    ]
    rows = []
    for r in results:
        c = r.cost
        co2 = c.train_co2_kg
        latency = f"{c.latency_p50_ms:.1f} / {c.latency_p95_ms:.1f} ms"
        gpu = f" + {c.train_peak_gpu_mb:,.0f} MB GPU" if c.train_peak_gpu_mb is not None else ""
        rows.append(
            [
                r.description,
                fmt_params(c),
                fmt_seconds(c.train_seconds),
                fmt_seconds(c.train_cpu_seconds),
                fmt_energy(c.train_energy_kwh) + ("" if c.train_measured in (None, True) else " (est.)"),
                "–" if co2 is None else f"{co2 * 1000:.2f} g",
                f"{c.peak_rss_mb:,.0f} MB{gpu}",
                f"{c.size_on_disk_mb:.1f} MB",
                f"{c.inference_pairs_per_s:,.0f} ({c.inference_batch_pairs})",
                latency,
            ]
        )
    return header, rows


def significance_matrix(results: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    """p-values between every two arms scored on the same test pairs (:func:`paired_difference`)."""
    header = ["", *[r.arm for r in results]]
    cells: dict[tuple[int, int], str] = {}
    for i, a in enumerate(results):
        for j, b in enumerate(results[i + 1 :], start=i + 1):
            if a.data.test.fingerprint != b.data.test.fingerprint:
                cell = "n/a"
            else:  # the test is symmetric: computed once per pair
                p = paired_difference(a, b)["p_value"]
                cell = fmt_p(p) + (" *" if p < 0.05 else "")
            cells[i, j] = cells[j, i] = cell
    rows = [[a.arm, *(cells.get((i, j), "·") for j in range(len(results)))] for i, a in enumerate(results)]
    return header, rows


def compare_arms(a: ArmResult, b: ArmResult, *, seed: int = 0) -> dict[str, Any]:
    """Arm ``a`` against arm ``b`` on the same test pairs: the difference in accuracy and macro-F1
    with paired-bootstrap intervals, and the test that decides (``test``: McNemar for arms trained
    once, the two-level bootstrap over seeds otherwise; :func:`paired_difference`). Raises ValueError
    when the test sets differ."""
    if a.data.test.fingerprint != b.data.test.fingerprint:
        raise ValueError(
            f"{a.arm} and {b.arm} were scored on different test sets "
            f"({a.data.test.source} vs {b.data.test.source}): "
            "a paired comparison needs the same pairs"
        )
    out: dict[str, Any] = {"a": a.arm, "b": b.arm, "pairs": len(a.predictions.y_true), "metrics": {}}
    for metric in ("accuracy", "f1_macro"):
        d = paired_difference(a, b, metric=metric, seed=seed)
        out["metrics"][metric] = {
            "a": a.metrics.get(metric),
            "b": b.metrics.get(metric),
            "difference": d["difference"],
            "interval": d["interval"],
            "bootstrap_p": d["bootstrap_p"],
        }
        if metric == "accuracy":
            out["seeds"] = d["seeds"]
            out["test"] = {"name": d["test"], "p_value": d["p_value"], "a_only": d["a_only"], "b_only": d["b_only"]}
    return out


def verdict(results: list[ArmResult]) -> list[str]:
    """Plain-language sentences computed from the numbers: every arm against the most accurate
    one (difference with its interval's half-width, significance, training energy or time,
    parameters, inference throughput), then the cheapest arm that is not significantly worse.
    A compress arm's training cost includes its source arm's (see :func:`cumulative_cost`)."""
    if not results:
        return []
    best = max(results, key=lambda r: r.metrics.accuracy)
    lo, hi = best.intervals.accuracy
    lines = [f"The most accurate arm is {best.description}: accuracy {best.metrics.accuracy:.3f} [{lo:.3f}, {hi:.3f}]."]
    by_arm = {r.arm: r for r in results}
    use_energy = all(r.cost.train_energy_kwh is not None for r in results)
    key = "train_energy_kwh" if use_energy else "train_seconds"
    best_cost = max(cumulative_cost(best, by_arm, key) or 0.0, 1e-12)
    bc = best.cost
    candidates = [best]
    for r in sorted(results, key=lambda r: -r.metrics.accuracy):
        if r is best:
            continue
        try:
            cmp = compare_arms(r, best)
        except ValueError:
            lines.append(f"{r.description} was scored on another test set and is not compared.")
            continue
        acc = cmp["metrics"]["accuracy"]
        d, (dlo, dhi) = 100 * acc["difference"], (100 * acc["interval"][0], 100 * acc["interval"][1])
        p, test_name = cmp["test"]["p_value"], cmp["test"]["name"]
        c = r.cost
        train_cost = fmt_ratio((cumulative_cost(r, by_arm, key) or 0.0) / best_cost, "less", "more")
        train_cost += " training energy" if use_energy else " training time"
        params = fmt_ratio(c.parameters_total / max(bc.parameters_total, 1), "fewer", "more")
        speed = fmt_ratio(c.inference_pairs_per_s / max(bc.inference_pairs_per_s, 1e-9), "lower", "higher")
        significance = f"{'significant' if p < 0.05 else 'not significant'}, {test_name} p {fmt_p(p)}"
        lines.append(
            f"{r.description} is {abs(d):.1f} pts (± {(dhi - dlo) / 2:.1f}) {'below' if d < 0 else 'above'} "
            f"{best.description} ({significance}) at {train_cost}, {params} parameters and "
            f"{speed} inference throughput."
        )
        if p >= 0.05:
            candidates.append(r)
    if len(candidates) > 1:
        cheapest = min(candidates, key=lambda r: cumulative_cost(r, by_arm, key) or 0.0)
        if cheapest is best:
            lines.append(
                f"{best.description} is also the cheapest to train of the arms not significantly less accurate than it."
            )
        else:
            lines.append(
                f"{cheapest.description} is the cheapest to train of the arms not significantly less accurate "
                f"than {best.description}."
            )
    elif len(results) > 1:
        lines.append(f"Every other arm is significantly less accurate than {best.description}.")
    return lines
