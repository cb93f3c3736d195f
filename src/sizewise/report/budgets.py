"""The report's sections on the budget axes: learning curves (accuracy and cost against labelled
pairs, where two arms change order, the cheapest adequate arm per budget) and several test sets (each
arm's accuracy in and out of domain, and the drop)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from sizewise.arms.lineage import cumulative_cost
from sizewise.cost.energy import fmt_energy
from sizewise.evaluation.curves import cheapest_not_worse, describe_pair, order_states
from sizewise.report.document import Block, Bullets, Heading, Image, Paragraph, Table
from sizewise.report.plots import plt, save_figure
from sizewise.report.tables import fmt_number, fmt_p, fmt_seconds, paired_difference
from sizewise.result import ArmResult, CurvePoint

LEARNING_CURVE_PNG = "learning_curve.png"


def curve_arms(results: list[ArmResult]) -> list[ArmResult]:
    """The arms with a learning curve of two sizes or more."""
    return [r for r in results if r.curve is not None and len(r.curve) > 1]


def _sd(result: ArmResult) -> float:
    return result.seeds.accuracy_sd if result.seeds is not None else 0.0


def _cost_field(results: list[ArmResult]) -> str:
    points = [p.result for r in results for p in r.curve or []]
    return (
        "train_energy_kwh" if points and all(p.cost.train_energy_kwh is not None for p in points) else "train_seconds"
    )


def plot_learning_curves(results: list[ArmResult], path: Path) -> bool:
    """Accuracy (mean over seeds, ± one sd band) and training time against labelled pairs, log x.
    Returns False when no arm has a curve."""
    arms = curve_arms(results)
    if not arms:
        return False
    fig, (ax, cost_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in arms:
        assert r.curve is not None
        x = np.array([p.labelled_pairs for p in r.curve])
        mean = np.array([p.result.metrics.accuracy for p in r.curve])
        sd = np.array([_sd(p.result) for p in r.curve])
        (line,) = ax.plot(x, mean, marker="o", label=r.description)
        ax.fill_between(x, mean - sd, mean + sd, color=line.get_color(), alpha=0.2, lw=0)
        cost_ax.plot(x, [p.result.cost.train_seconds for p in r.curve], marker="o", color=line.get_color())
    for a in (ax, cost_ax):
        a.set_xscale("log")
        a.set_xlabel("labelled training pairs (log scale)")
        a.grid(alpha=0.3)
    cost_ax.set_yscale("log")
    ax.set_ylabel("test accuracy (mean over seeds, band ± 1 sd)")
    cost_ax.set_ylabel("training time per seed, s (log scale)")
    ax.legend(fontsize=7, loc="best")
    ax.set_title("learning curves", fontsize=9)
    cost_ax.set_title("training cost", fontsize=9)
    save_figure(fig, path)
    return True


def _sizes(arms: list[ArmResult]) -> list[tuple[str, str, int]]:
    """Every size of the arms' curves as (key, label, labelled pairs), smallest first."""
    seen: dict[str, tuple[str, str, int]] = {}
    for r in arms:
        for p in r.curve or []:
            seen.setdefault(p.size, (p.size, p.label, p.labelled_pairs))
    return sorted(seen.values(), key=lambda s: (s[2], s[0]))


def _point(result: ArmResult, size: str) -> CurvePoint | None:
    return next((p for p in result.curve or [] if p.size == size), None)


def _size_header(label: str, pairs: int) -> str:
    if label == "all pairs":
        return f"all ({pairs:,} pairs)"
    return label if label.endswith(" pairs") else f"{label} ({pairs:,} pairs)"


def curve_table(arms: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    """Accuracy ``mean (sd)`` per arm and size, with the number of seeds."""
    sizes = _sizes(arms)
    header = ["arm", *(_size_header(label, pairs) for _, label, pairs in sizes)]
    rows = []
    for r in arms:
        row = [r.description]
        for key, _, _ in sizes:
            p = _point(r, key)
            if p is None:
                row.append("–")
                continue
            m = p.result
            row.append(f"{m.metrics.accuracy:.3f} ({_sd(m):.3f}) n={m.n_seeds}")
        rows.append(row)
    return header, rows


def curve_cost_table(arms: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    """Training CPU time and energy of one training per arm and size (mean over seeds)."""
    sizes = _sizes(arms)
    header = ["arm", *(_size_header(label, pairs) for _, label, pairs in sizes)]
    rows = []
    for r in arms:
        row = [r.description]
        for key, _, _ in sizes:
            p = _point(r, key)
            if p is None:
                row.append("–")
                continue
            c = p.result.cost
            energy = "" if c.train_energy_kwh is None else f", {fmt_energy(c.train_energy_kwh)}"
            row.append(f"{fmt_seconds(c.train_cpu_seconds)} CPU{energy}")
        rows.append(row)
    return header, rows


def crossing_sentences(arms: list[ArmResult], alpha: float = 0.05) -> list[str]:
    """For every two arms, where along the curve one is significantly ahead and where the order
    changes (paired tests at each size both arms reached, on the seeds they share); a pair that stops
    short of the study's largest size says so."""
    lines = []
    largest = max((pairs for _, _, pairs in _sizes(arms)), default=0)
    for a, b in itertools.combinations(arms, 2):
        sizes, diffs, ps = [], [], []
        for key, _, pairs in _sizes([a, b]):
            pa, pb = _point(a, key), _point(b, key)
            if pa is None or pb is None or pa.result.data.test.fingerprint != pb.result.data.test.fingerprint:
                continue
            d = paired_difference(pa.result, pb.result)
            sizes.append(pairs)
            diffs.append(d["difference"])
            ps.append(d["p_value"])
        if sizes:
            line = describe_pair(a.description, b.description, sizes, order_states(diffs, ps, alpha))
            if sizes[-1] < largest:
                line = line[:-1] + f" (both were trained up to {sizes[-1]:,} pairs)."
            lines.append(line)
    return lines


def budget_verdict(arms: list[ArmResult], alpha: float = 0.05) -> list[str]:
    """For each size: the most accurate arm, and the cheapest arm to train not significantly worse (an
    arm made from another arm's model, such as a self-trained one, also pays for that arm's training)."""
    field = _cost_field(arms)
    by_arm = {r.arm: r for r in arms}
    what = "training energy" if field == "train_energy_kwh" else "training time"
    lines = []
    for key, label, pairs in _sizes(arms):
        points = [(r, _point(r, key)) for r in arms]
        present = [(r, p.result) for r, p in points if p is not None]
        if len(present) < 2:
            continue
        best_arm, best = max(present, key=lambda rp: rp[1].metrics.accuracy)
        candidates = []
        for r, m in present:
            p_value = None if m is best else paired_difference(m, best)["p_value"]
            cost = cumulative_cost(m, by_arm, field, size=key) or 0.0
            candidates.append((r.description, m.metrics.accuracy, cost, p_value))
        pick = cheapest_not_worse(candidates, alpha)
        size = _size_header(label, pairs)
        text = f"At {size}: {best_arm.description} is the most accurate ({best.metrics.accuracy:.3f})"
        if pick.arm == best_arm.description:
            text += f" and the cheapest in {what} of the arms not significantly less accurate."
        else:
            p = fmt_p(pick.p_value or 1.0)
            text += (
                f"; {pick.arm} is the cheapest in {what} not significantly less accurate ({pick.accuracy:.3f}, p {p})."
            )
        lines.append(text)
    return lines


def learning_curve_blocks(results: list[ArmResult], images: dict[str, bool]) -> list[Block]:
    """The learning-curve section (empty when no arm has a curve)."""
    arms = curve_arms(results)
    if not arms:
        return []
    blocks: list[Block] = [Heading("Learning curves")]
    if images.get(LEARNING_CURVE_PNG):
        blocks.append(Image(LEARNING_CURVE_PNG, "accuracy and training cost against labelled pairs"))
    blocks.append(
        Paragraph("Test accuracy, mean (standard deviation over seeds) and n = seeds, per training-set size:")
    )
    header, rows = curve_table(arms)
    blocks.append(Table(header, rows))
    blocks.append(Paragraph("Cost of one training (mean over seeds): CPU time and training energy."))
    header, rows = curve_cost_table(arms)
    blocks.append(Table(header, rows))
    blocks.append(
        Paragraph(
            "Where the order of two arms changes (paired tests at each size on the same seeds and test pairs, "
            "p < 0.05):"
        )
    )
    blocks.append(Bullets(crossing_sentences(arms)))
    blocks.append(Paragraph("Per budget, the cheapest arm not significantly less accurate than the best:"))
    blocks.append(Bullets(budget_verdict(arms)))
    return blocks


def test_set_names(results: list[ArmResult]) -> list[str]:
    """The names of the other test sets any arm was scored on, in order of appearance."""
    return list(dict.fromkeys(name for r in results for name in (r.tests or {})))


def test_set_blocks(results: list[ArmResult]) -> list[Block]:
    """One table per other test set, and the summary of in-domain accuracy against each (empty when
    the study has one test set)."""
    names = test_set_names(results)
    if not names:
        return []
    first = results[0]
    blocks: list[Block] = [Heading("Other test sets")]
    header = ["arm", "in-domain", *names]
    rows = []
    for r in results:
        row = [r.description, fmt_number(r.metrics.accuracy)]
        for name in names:
            score = (r.tests or {}).get(name)
            if score is None:
                row.append("–")
                continue
            drop = 100 * (score.metrics.accuracy - r.metrics.accuracy)
            row.append(f"{score.metrics.accuracy:.3f} ({drop:+.1f} pts)")
        rows.append(row)
    blocks.append(
        Paragraph(
            f"Accuracy on {first.data.test.source} (in-domain) and on each other set, with the change from "
            "in-domain in points. A 3-class model on a binary set is scored as binary: p(entailment) against "
            "1 − p(entailment)."
        )
    )
    blocks.append(Table(header, rows))
    for name in names:
        scored = [(r, (r.tests or {}).get(name)) for r in results]
        present = [(r, s) for r, s in scored if s is not None]
        if not present:
            continue
        s0 = present[0][1]
        note = ", scored as binary (collapsed)" if s0.collapsed else ""
        trows = []
        for r, s in present:
            lo, hi = s.intervals.accuracy
            sd = f" ± {s.seeds.accuracy_sd:.3f}" if s.seeds is not None else ""
            trows.append(
                [r.description, f"{s.metrics.accuracy:.3f}{sd} [{lo:.3f}, {hi:.3f}]", fmt_number(s.metrics.f1_macro)]
            )
        blocks.append(
            Table(
                ["arm", f"accuracy [{100 * s0.intervals.level:.0f}% CI]", "F1 macro"],
                trows,
                caption=f"{name}: {s0.data.rows:,} pairs of {s0.data.source}{note}",
            )
        )
    return blocks
