"""Plots for the report, written as PNG files with matplotlib's non-interactive backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sizewise.arms.lineage import cumulative_cost, source_arm  # noqa: E402
from sizewise.result import ArmResult  # noqa: E402


def size_curve_arms(results: list[ArmResult]) -> list[ArmResult]:
    """The arms with a size curve that made their own model (trained ensembles, not compressed ones)."""
    return [r for r in results if r.curves.size is not None and source_arm(r) is None]


def plot_size_curves(results: list[ArmResult], path: Path) -> bool:
    """Ensemble accuracy against the number of learners, one panel per ensemble arm (lines per
    epoch when the arm recorded epoch curves; single-model arms as grey reference lines).
    Returns False when no arm has a curve."""
    with_curves = size_curve_arms(results)
    if not with_curves:
        return False
    fig, axes = plt.subplots(1, len(with_curves), figsize=(5.2 * len(with_curves), 3.8), squeeze=False)
    for ax, r in zip(axes[0], with_curves):
        curves = r.curves
        assert curves.size is not None
        if curves.epoch_size:
            epochs = sorted(curves.epoch_size, key=int)
            cmap = plt.get_cmap("viridis", len(epochs))
            for i, e in enumerate(epochs):
                accs = curves.epoch_size[e]
                ax.plot(
                    range(1, len(accs) + 1),
                    accs,
                    marker=".",
                    color=cmap(i),
                    label=f"{e} epoch{'s' * (e != '1')}",
                )
        else:
            ks, accs = curves.size.k, curves.size.accuracy
            ax.plot(ks, accs, marker="o", label="final members")
        for j, other in enumerate(r2 for r2 in results if r2.curves.size is None):
            # single models as reference lines: where does the ensemble overtake them?
            ax.axhline(
                other.metrics.accuracy,
                color="grey",
                ls=("--", ":", "-.")[j % 3],
                lw=1,
                label=other.description,
            )
        ks = curves.size.k
        ax.set_xticks(ks if len(ks) <= 16 else ks[:: max(1, len(ks) // 8)])
        ax.set_xlabel("number of learners")
        ax.set_ylabel("test accuracy")
        ax.set_title(r.description, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, path)
    return True


def pareto_front(costs: list[float], scores: list[float], *, lower_cost_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both cost and score (ties kept), ordered by cost."""
    sign = 1.0 if lower_cost_is_better else -1.0
    front = []
    for i, (ci, si) in enumerate(zip(costs, scores)):
        dominated = any(
            sign * cj <= sign * ci and sj >= si and (sign * cj < sign * ci or sj > si)
            for j, (cj, sj) in enumerate(zip(costs, scores))
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: sign * costs[i])


#: The trade-off plots of the report: file, cost field, axis label, log scale, lower cost is better.
TRADEOFFS: list[tuple[str, str, str, bool, bool]] = [
    ("accuracy_vs_parameters.png", "parameters_total", "parameters (log scale)", True, True),
    ("accuracy_vs_energy.png", "train_energy_kwh", "training energy, kWh (log scale)", True, True),
    ("accuracy_vs_throughput.png", "inference_pairs_per_s", "CPU inference, pairs/s (log scale)", True, False),
]


def plot_tradeoff(
    results: list[ArmResult], field: str, xlabel: str, path: Path, *, log: bool, lower_is_better: bool
) -> bool:
    """Test accuracy (with its interval) against one cost of every arm, the Pareto frontier drawn.
    Returns False (and writes nothing) when no arm has the cost."""
    by_arm = {r.arm: r for r in results}
    # a compressed model's training cost is its source's training plus the compression
    costs = [
        (r, cumulative_cost(r, by_arm, field) if field.startswith("train_") else getattr(r.cost, field, None))
        for r in results
    ]
    points = [(r, float(x)) for r, x in costs if x is not None and (x > 0 or not log)]
    if not points:
        return False
    xs = [x for _, x in points]
    ys = [r.metrics.accuracy for r, _ in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for (r, x), y in zip(points, ys):
        lo, hi = r.intervals.accuracy
        ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="o", capsize=3, label=r.description)
    front = pareto_front(xs, ys, lower_cost_is_better=lower_is_better)
    if len(front) > 1:
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="grey", lw=1, label="Pareto frontier")
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    better = "left" if lower_is_better else "right"
    ax.set_title(f"better: up and to the {better}", fontsize=9)
    save_figure(fig, path)
    return True


def plot_confusions(results: list[ArmResult], path: Path) -> bool:
    """One confusion-matrix heat map per arm (rows: true label, columns: predicted)."""
    if not results:
        return False
    n = len(results)
    cols = min(n, 6)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_axis_off()
    for ax, r in zip(axes.flat, results):
        cm = r.confusion_matrix
        labels = [lab[:10] for lab in r.data.labels]
        ax.imshow(cm, cmap="Blues")
        top = max(max(row) for row in cm) or 1
        for i, row in enumerate(cm):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(r.description, fontsize=8)
    save_figure(fig, path)
    return True


def save_figure(fig: Any, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` (atomically: a temporary name, then renamed) and close it."""
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
