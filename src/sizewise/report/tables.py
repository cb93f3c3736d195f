"""The poster-style table and the paired tests, as plain rows any renderer can print."""

from __future__ import annotations

from typing import Any

import numpy as np

from sizewise.evaluation.metrics import METRIC_NAMES
from sizewise.evaluation.stats import mcnemar_exact, paired_bootstrap

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


def fmt_params(cost: dict[str, Any]) -> str:
    """Total parameters, with the trainable count in brackets when it differs (adapters)."""
    total, trainable = cost["parameters_total"], cost["parameters_trainable"]
    return fmt_count(total) + ("" if trainable == total else f" ({fmt_count(trainable)})")


def fmt_seconds(s: float) -> str:
    """Seconds as 42s / 3m05s / 1h02m."""
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def main_table(results: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the poster's Table 1 with intervals, parameters and train time."""
    level = results[0]["intervals"]["level"] if results else 0.95
    pct = f"{100 * level:.0f}%"
    header = ["arm", "params (trainable)"]
    for name in METRIC_NAMES:
        title = METRIC_TITLES[name]
        header.append(f"{title} [{pct} CI]" if name in ("accuracy", "f1_macro") else title)
    header.append("train time")
    rows = []
    for r in results:
        cost, m = r["cost"], r["metrics"]
        row = [r["description"], fmt_params(cost)]
        for name in METRIC_NAMES:
            cell = fmt_number(m.get(name))
            if name in r["intervals"]:
                lo, hi = r["intervals"][name]
                cell += f" [{lo:.3f}, {hi:.3f}]"
            row.append(cell)
        row.append(fmt_seconds(cost["train_seconds"]))
        rows.append(row)
    return header, rows


def paired_tests(results: list[dict[str, Any]], baseline: str, *, seed: int = 0) -> list[dict[str, Any]]:
    """Every arm against ``baseline`` on the same test pairs: accuracy difference with its
    paired-bootstrap interval, and the exact McNemar p-value."""
    base = next((r for r in results if r["arm"] == baseline), None)
    if base is None:
        return []
    out = []
    y = np.asarray(base["predictions"]["y_true"])
    k = len(base["data"]["labels"])
    for r in results:
        if r is base:
            continue
        row: dict[str, Any] = {"arm": r["arm"], "description": r["description"], "baseline": baseline}
        if r["data"]["test"]["fingerprint"] != base["data"]["test"]["fingerprint"]:
            row["note"] = "different test set: not compared"
            out.append(row)
            continue
        a = np.asarray(r["predictions"]["y_pred"])
        b = np.asarray(base["predictions"]["y_pred"])
        boot = paired_bootstrap(y, a, b, k, metric="accuracy", seed=seed)
        mc = mcnemar_exact(y, a, b)
        row.update(
            accuracy_difference=boot["difference"],
            interval=list(boot["interval"]),
            mcnemar_p=mc["p_value"],
            bootstrap_p=boot["p_value"],
            arm_only_right=mc["a_only"],
            baseline_only_right=mc["b_only"],
            significant=bool(mc["p_value"] < 0.05),
        )
        out.append(row)
    return out


def fmt_p(p: float) -> str:
    """A p-value as text: ``< 0.001`` or three significant digits."""
    return "< 0.001" if p < 0.001 else f"{p:.3g}"
