"""Plots for the report, written as PNG files with matplotlib's non-interactive backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_size_curves(results: list[dict[str, Any]], path: Path) -> bool:
    """Ensemble accuracy against the number of learners, one panel per ensemble arm (lines per
    epoch when the arm recorded epoch curves; single-model arms as grey reference lines).
    Returns False when no arm has a curve."""
    with_curves = [r for r in results if r.get("curves", {}).get("size")]
    if not with_curves:
        return False
    fig, axes = plt.subplots(1, len(with_curves), figsize=(5.2 * len(with_curves), 3.8), squeeze=False)
    for ax, r in zip(axes[0], with_curves):
        curves = r["curves"]
        if curves.get("epoch_size"):
            epochs = sorted(curves["epoch_size"], key=int)
            cmap = plt.get_cmap("viridis", len(epochs))
            for i, e in enumerate(epochs):
                accs = curves["epoch_size"][e]
                ax.plot(
                    range(1, len(accs) + 1),
                    accs,
                    marker=".",
                    color=cmap(i),
                    label=f"{e} epoch{'s' * (e != '1')}",
                )
        else:
            ks, accs = curves["size"]["k"], curves["size"]["accuracy"]
            ax.plot(ks, accs, marker="o", label="final members")
        for j, other in enumerate(r2 for r2 in results if not r2.get("curves", {}).get("size")):
            # single models as reference lines: where does the ensemble overtake them?
            ax.axhline(
                other["metrics"]["accuracy"],
                color="grey",
                ls=("--", ":", "-.")[j % 3],
                lw=1,
                label=other["description"],
            )
        ks = curves["size"]["k"]
        ax.set_xticks(ks if len(ks) <= 16 else ks[:: max(1, len(ks) // 8)])
        ax.set_xlabel("number of learners")
        ax.set_ylabel("test accuracy")
        ax.set_title(r["description"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return True
