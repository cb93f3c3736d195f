"""Turn finished benchmark run folders into the Markdown tables of BENCHMARKS.md.

    python benchmarks/summarize.py runs/core-snli-nli3 runs/core-snli-binary runs/core-mnli \
        [--write BENCHMARKS.md]
    python benchmarks/summarize.py --transformers runs/transformers-snli-nli3 \
        --against runs/core-snli-nli3/bagged-11 [--write BENCHMARKS.md]

    python benchmarks/summarize.py --cost runs/core-snli-nli3 runs/transformers-snli-nli3 [--write BENCHMARKS.md]
    python benchmarks/summarize.py --compression runs/core-snli-nli3 runs/transformers-snli-nli3 \
        --pair minilm-full-c-int8:minilm-l3-full [--write BENCHMARKS.md]
    python benchmarks/summarize.py --curves runs/curve-snli [--figures benchmarks/figures] [--write BENCHMARKS.md]
    python benchmarks/summarize.py --budget k128 runs/curve-snli [--write BENCHMARKS.md]
    python benchmarks/summarize.py --tests runs/ood-snli [--write BENCHMARKS.md]

With --write, the block between ``<!-- core:begin -->`` and ``<!-- core:end -->`` (or, with
--transformers / --cost / --compression / --curves / --budget / --tests, the block of that name) is replaced.
Every number comes from the runs' result.json files.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from sizewise.arms.compress import compression_table
from sizewise.arms.lineage import source_arm
from sizewise.cost.energy import fmt_energy
from sizewise.report.budgets import (
    budget_verdict,
    crossing_sentences,
    curve_arms,
    curve_cost_table,
    curve_table,
    plot_learning_curves,
    test_set_names,
)
from sizewise.report.plots import plot_size_curves
from sizewise.report.render import load_arm, load_results
from sizewise.report.tables import (
    compare_arms,
    fmt_count,
    fmt_number,
    fmt_p,
    fmt_seconds,
    paired_difference,
    paired_tests,
)
from sizewise.result import ArmResult


def _interval(r: ArmResult, name: str) -> str:
    interval = r.intervals.of(name)
    assert interval is not None
    lo, hi = interval
    return f"{r.metrics.get(name):.3f} [{lo:.3f}, {hi:.3f}]"


def _trained(results: list[ArmResult]) -> list[ArmResult]:
    """The arms that trained their own model (not made from another arm's, like a compress arm)."""
    return [r for r in results if source_arm(r) is None]


def _section_heading(first: ArmResult) -> str:
    data = first.data
    return (
        f"### {first.study}: train {data.train.rows:,} pairs of `{data.train.source}`, "
        f"test {data.test.rows:,} pairs of `{data.test.source}` ({data.scheme})"
    )


def summarize_run(run_dir: Path) -> str:
    """One section: main table, paired tests against the first arm, size curves, diversity."""
    # The trained arms only: compress arms of the same study have their own table (--compression).
    results = _trained(load_results(run_dir, ["bilstm", "bagged-11", "boosted-11"]))
    lines = [
        _section_heading(results[0]),
        "",
        "| arm | params | accuracy [95% CI] | F1 macro [95% CI] | F1 weighted | precision macro | recall macro "
        "| ROC-AUC macro | train time | CPU time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, c = r.metrics, r.cost
        lines.append(
            f"| {r.description} | {fmt_count(c.parameters_total)} | {_interval(r, 'accuracy')} "
            f"| {_interval(r, 'f1_macro')} | {fmt_number(m.f1_weighted)} | {fmt_number(m.precision_macro)} "
            f"| {fmt_number(m.recall_macro)} | {fmt_number(m.roc_auc_macro)} "
            f"| {fmt_seconds(c.train_seconds)} | {fmt_seconds(c.train_cpu_seconds)} |"
        )
    tests = paired_tests(results, results[0].arm)
    if tests:
        lines += [
            "",
            "| vs BiLSTM | Δ accuracy [95% CI] | McNemar p | paired-bootstrap p |",
            "|---|---|---|---|",
        ]
        for t in tests:
            lo, hi = t["interval"]
            lines.append(
                f"| {t['description']} | {100 * t['accuracy_difference']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                f"| {fmt_p(t['mcnemar_p'])} | {fmt_p(t['bootstrap_p'])} |"
            )
    for r in results:
        size = r.curves.size
        if size is None:
            continue
        ks = size.k
        lines += ["", f"Size curve, {r.description} (test accuracy of the first k members):", ""]
        lines.append("| epochs \\ k | " + " | ".join(map(str, ks)) + " |")
        lines.append("|---|" + "---|" * len(ks))
        for epoch, accs in sorted((r.curves.epoch_size or {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {epoch} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
        lines.append("| final (best dev epoch) | " + " | ".join(f"{a:.3f}" for a in size.accuracy) + " |")
        d = r.diversity
        if d is not None and r.members is not None:
            lines += [
                "",
                f"Diversity: ensemble CE {d.ensemble_ce:.4f} = mean member CE {d.member_ce:.4f} "
                f"− diversity {d.diversity:.4f}; member accuracies "
                + ", ".join(f"{a:.3f}" for a in r.members.accuracy)
                + ".",
            ]
    lines += ["", _machine(results), ""]
    return "\n".join(lines)


def _machine(results: list[ArmResult]) -> str:
    env = results[0].environment
    commits = sorted({str(r.environment.get("git_commit"))[:12] for r in results})
    return (
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']} (CPU); sizewise "
        f"commit{'s' * (len(commits) > 1)} {', '.join(commits)}."
    )


def summarize_transformers(run_dir: Path, against: list[Path]) -> str:
    """Transformer arms beside other arms scored on the same test set (e.g. the core ensemble)."""
    results = _trained(load_results(run_dir, _study_order(run_dir)))
    for arm_dir in against:
        results.append(load_arm(arm_dir))
    lines = [
        _section_heading(results[0]),
        "",
        "| arm | params total | trainable | accuracy [95% CI] | F1 macro [95% CI] | ROC-AUC macro | epochs "
        "| train time | CPU time | CPU inference pairs/s (batch) | size on disk |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, c = r.metrics, r.cost
        total, trainable = c.parameters_total, c.parameters_trainable
        history = r.training.history or []
        epochs = f"{len(history)}" if history else _learner_spec(r).get("base", {}).get("epochs", "–")
        lines.append(
            f"| {r.description} | {fmt_count(total)} | {fmt_count(trainable)} ({100 * trainable / total:.2f}%) "
            f"| {_interval(r, 'accuracy')} | {_interval(r, 'f1_macro')} | {fmt_number(m.roc_auc_macro)} "
            f"| {epochs} | {fmt_seconds(c.train_seconds)} | {fmt_seconds(c.train_cpu_seconds)} "
            f"| {c.inference_pairs_per_s:,.0f} ({c.inference_batch_pairs}) | {c.size_on_disk_mb:.1f} MB |"
        )
    if any(_learner_spec(r).get("mode") in ("lora", "ia3") for r in results):
        lines += [
            "",
            "A LoRA arm's size on disk is its adapter and classification head: it is loaded onto the base "
            "model, which has to be at hand as well.",
        ]
    for base in results[len(results) - len(against) :]:
        tests = paired_tests(results, base.arm)
        lines += ["", f"| vs {base.description} | Δ accuracy [95% CI] | McNemar p |", "|---|---|---|"]
        for t in tests:
            if "interval" not in t:
                continue
            lo, hi = t["interval"]
            lines.append(
                f"| {t['description']} | {100 * t['accuracy_difference']:+.1f} pts "
                f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {fmt_p(t['mcnemar_p'])} |"
            )
    lines += ["", _machine(results), ""]
    return "\n".join(lines)


def _learner_spec(result: ArmResult) -> dict:
    """A trained arm's learner spec (empty for arms of other types)."""
    return result.config.block if result.arm_type == "learner" else {}


def _arms(paths: list[Path]) -> list[ArmResult]:
    """Results of run folders (every arm, in study order) and of single arm folders."""
    out: list[ArmResult] = []
    for path in paths:
        if (path / "result.json").is_file():
            out.append(load_arm(path))
        else:
            out.extend(load_results(path, _study_order(path)))
    return out


def _study_order(run_dir: Path) -> list[str] | None:
    study = run_dir / "study.json"
    if not study.is_file():
        return None
    return [a["name"] for a in json.loads(study.read_text(encoding="utf-8")).get("arms", [])]


def summarize_cost(paths: list[Path], *, trained_only: bool = True) -> str:
    """The cost table of every arm (compress arms left out unless asked): time, energy, CO2, memory,
    size, CPU throughput and latency."""
    results = _trained(_arms(paths)) if trained_only else _arms(paths)
    lines = [
        "| study | arm | params | train time | CPU time | train energy | train CO2 | peak memory | size on disk "
        "| CPU inference pairs/s (batch) | latency p50 / p95 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = r.cost
        kwh, co2 = c.train_energy_kwh, c.train_co2_kg
        est = "" if kwh is None or c.train_measured else " (est.)"
        latency = f"{c.latency_p50_ms:.1f} / {c.latency_p95_ms:.1f} ms"
        lines.append(
            f"| {r.study} | {r.description} | {fmt_count(c.parameters_total)} "
            f"| {fmt_seconds(c.train_seconds)} | {fmt_seconds(c.train_cpu_seconds)} | {fmt_energy(kwh)}{est} "
            f"| {'–' if co2 is None else f'{co2 * 1000:.1f} g'} | {c.peak_rss_mb:,.0f} MB "
            f"| {c.size_on_disk_mb:.1f} MB | {c.inference_pairs_per_s:,.0f} ({c.inference_batch_pairs}) "
            f"| {latency} |"
        )
    tracked = [r for r in results if r.cost.train_energy_kwh is not None]
    if tracked:
        c = tracked[0].cost
        lines += [
            "",
            f"CO2 = energy × {c.train_carbon_intensity_g_per_kwh or 0:.0f} g CO2e/kWh "
            f"(codecarbon's figure for {c.train_country}, the default `cost.country`).",
        ]
    lines += ["", _machine(results), ""]
    return "\n".join(lines)


def summarize_compression(paths: list[Path], pairs: list[str]) -> str:
    """The compression table of the given runs, then paired tests of ``A:B`` arm pairs (equal size)."""
    results = _arms(paths)
    header, rows = compression_table(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    by_arm = {r.arm: r for r in results}
    if pairs:
        lines += [
            "",
            "| large, compressed | size | small, trained directly | size | Δ accuracy [95% CI] | McNemar p |",
            "|---|---|---|---|---|---|",
        ]
        for pair in pairs:
            a, b = (by_arm[name] for name in pair.split(":"))
            cmp = compare_arms(a, b)
            d = cmp["metrics"]["accuracy"]
            lo, hi = d["interval"]
            lines.append(
                f"| {a.description} ({a.metrics.accuracy:.3f}) | {a.cost.size_on_disk_mb:.1f} MB "
                f"| {b.description} ({b.metrics.accuracy:.3f}) | {b.cost.size_on_disk_mb:.1f} MB "
                f"| {100 * d['difference']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}] "
                f"| {fmt_p(cmp['test']['p_value'])} |"
            )
    lines += ["", _machine(results)]
    side = [r.cost.speed_vs_source for r in results if r.cost.speed_vs_source is not None]
    if side:
        commits = sorted({str(s.environment.get("git_commit"))[:12] for s in side})
        rounds = sorted({s.rounds for s in side})
        lines.append(
            f"‡ speed-up measured side by side with the source arm's model (`sizewise study speed`: "
            f"{'/'.join(map(str, rounds))} alternating rounds of {side[0].pairs} test pairs, each model in a "
            f"process of its own, median of the per-round ratios) at commit{'s' * (len(commits) > 1)} "
            f"{', '.join(commits)}; "
            "other speed-ups divide the two arms' own throughputs, measured when each was scored."
        )
    lines.append("")
    return "\n".join(lines)


def summarize_curves(run_dir: Path) -> str:
    """A learning-curve study: accuracy mean (sd) per arm and size, the cost of one training, where two
    arms change order, the cheapest adequate arm per budget, and the other test sets if any."""
    results = load_results(run_dir, _study_order(run_dir))
    arms = curve_arms(results)
    first = results[0]
    seeds = sorted({s for r in results for s in (r.seeds.seeds if r.seeds else [r.config.seed])})
    lines = [
        f"### {first.study}: test {first.data.test.rows:,} pairs of `{first.data.test.source}` "
        f"({first.data.scheme}), seeds {', '.join(map(str, seeds))}",
        "",
        "Test accuracy, mean (sd over seeds), n = seeds:",
        "",
        *_markdown_table(*curve_table(arms)),
        "",
        "One training (mean over seeds): CPU time and estimated energy.",
        "",
        *_markdown_table(*curve_cost_table(arms)),
        "",
        "Where two arms change order (paired two-level bootstrap over shared seeds and test pairs, p < 0.05):",
        "",
        *(f"- {line}" for line in crossing_sentences(arms)),
        "",
        "Per budget, the cheapest arm not significantly less accurate than the best:",
        "",
        *(f"- {line}" for line in budget_verdict(arms)),
    ]
    if test_set_names(results):
        lines += ["", *_test_set_table(results)]
    lines += ["", _machine(results)]
    return "\n".join(lines)


def _test_set_table(results: list[ArmResult]) -> list[str]:
    """Each arm's accuracy on its in-domain test set and on every other set, with the change in points."""
    names = test_set_names(results)
    first = results[0]
    header = ["arm", f"in-domain ({first.data.test.source}, {first.data.test.rows:,})"]
    for name in names:
        score = next((r.tests[name] for r in results if r.tests and name in r.tests), None)
        assert score is not None
        scored = ", binary" if score.collapsed else ""
        header.append(f"{name} ({score.data.source}, {score.data.rows:,}{scored})")
    rows = []
    for r in results:
        row = [r.description, _interval(r, "accuracy")]
        for name in names:
            t = (r.tests or {}).get(name)
            if t is None:
                row.append("–")
                continue
            lo, hi = t.intervals.accuracy
            drop = 100 * (t.metrics.accuracy - r.metrics.accuracy)
            row.append(f"{t.metrics.accuracy:.3f} [{lo:.3f}, {hi:.3f}] ({drop:+.1f} pts)")
        rows.append(row)
    return _markdown_table(header, rows)


def summarize_tests(run_dir: Path) -> str:
    """A study scored on several test sets: each arm in domain and out, with the drop."""
    results = load_results(run_dir, _study_order(run_dir))
    first = results[0]
    lines = [
        f"### {first.study}: train {first.data.train.rows:,} pairs of `{first.data.train.source}` "
        f"({first.data.scheme})",
        "",
        "Accuracy [95% CI] on each test set, and its change from in-domain:",
        "",
        *_test_set_table(results),
        "",
        _machine(results),
    ]
    return "\n".join(lines)


def summarize_budget(run_dir: Path, size: str) -> str:
    """Every arm of a learning-curve study at one size (``k128``, ``n1536``): accuracy over seeds with
    the two-level interval, parameters, training time and energy, inference speed and latency."""
    results = load_results(run_dir, _study_order(run_dir))
    points = [(r, p.result) for r in results for p in r.curve or [] if p.size == size]
    if not points:
        raise SystemExit(f"{run_dir}: no arm was trained at size {size}")
    first = points[0][1]
    header = [
        "arm",
        "params (trainable)",
        "seeds",
        "accuracy ± sd [95% CI]",
        "vs the most accurate: Δ pts (p)",
        "train time",
        "train energy",
        "inference pairs/s",
        "latency p50",
    ]
    best = max((m for _, m in points), key=lambda m: m.metrics.accuracy)
    rows = []
    for r, m in points:
        lo, hi = m.intervals.accuracy
        sd = f" ± {m.seeds.accuracy_sd:.3f}" if m.seeds else ""
        if m is best:
            versus = "—"
        else:
            d = paired_difference(m, best)
            versus = f"{100 * d['difference']:+.1f} (p {fmt_p(d['p_value'])})"
        c = m.cost
        rows.append(
            [
                r.description,
                f"{fmt_count(c.parameters_total)} ({fmt_count(c.parameters_trainable)})",
                str(m.n_seeds),
                f"{m.metrics.accuracy:.3f}{sd} [{lo:.3f}, {hi:.3f}]",
                versus,
                fmt_seconds(c.train_seconds),
                fmt_energy(c.train_energy_kwh) + ("" if c.train_measured in (None, True) else " (est.)"),
                f"{c.inference_pairs_per_s:,.0f}",
                f"{c.latency_p50_ms:.1f} ms",
            ]
        )
    lines = [
        f"### {first.study} at {first.data.train.rows:,} labelled pairs ({size}): test {first.data.test.rows:,} "
        f"pairs of `{first.data.test.source}`",
        "",
        *_markdown_table(header, rows),
        "",
        "Train time and energy: one training, mean over seeds; inference: pairs/s in one predict call, latency one "
        "pair per call. Δ against the most accurate arm: paired two-level bootstrap over the seeds both arms share "
        "and the test pairs (McNemar's test where they share one seed).",
        "",
        _machine([m for _, m in points]),
    ]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [f"| {' | '.join(header)} |", "|" + "---|" * len(header), *(f"| {' | '.join(row)} |" for row in rows)]


def write_block(path: Path, name: str, text: str) -> None:
    """Replace the block between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``path`` by ``text``."""
    doc = path.read_text(encoding="utf-8")
    block = f"<!-- {name}:begin -->\n{text}\n<!-- {name}:end -->"
    new, n = re.subn(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->", lambda _: block, doc, flags=re.S)
    if n != 1:
        raise SystemExit(f"{path}: needs one <!-- {name}:begin --> ... <!-- {name}:end --> block")
    path.write_text(new, encoding="utf-8")


def main() -> None:
    """Print (or write into BENCHMARKS.md) the summary of the given run folders."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--transformers", type=Path, help="A transformer benchmark run folder.")
    parser.add_argument("--against", nargs="*", type=Path, default=[], help="Arm folders to compare with.")
    parser.add_argument("--cost", nargs="*", type=Path, help="Run / arm folders for the cost table.")
    parser.add_argument("--compression", nargs="*", type=Path, help="Run folders for the compression table.")
    parser.add_argument("--pair", action="append", default=[], help="A:B arms to test against each other.")
    parser.add_argument("--curves", type=Path, help="A learning-curve study's run folder.")
    parser.add_argument("--tests", type=Path, help="A study's run folder scored on several test sets.")
    parser.add_argument("--budget", help="With one run folder: its arms at this learning-curve size (k128, n1536).")
    parser.add_argument("--write", type=Path, help="Markdown file whose block is replaced.")
    parser.add_argument(
        "--figures", type=Path, help="Draw each run folder's size curves as <DIR>/<folder name>-size-curve.png."
    )
    args = parser.parse_args()
    if args.curves and args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        target = args.figures / f"{args.curves.name}-learning-curve.png"
        if plot_learning_curves(load_results(args.curves, _study_order(args.curves)), target):
            print(f"wrote {target}")
        return
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for run in args.runs:
            target = args.figures / f"{run.name}-size-curve.png"
            if plot_size_curves(_arms([run]), target):
                print(f"wrote {target}")
        return
    if args.tests:
        name, text = "tests", summarize_tests(args.tests)
    elif args.budget:
        name, text = "budget", summarize_budget(args.runs[0], args.budget)
    elif args.curves:
        name, text = "curves", summarize_curves(args.curves)
    elif args.cost:
        name, text = "cost", summarize_cost(args.cost)
    elif args.compression:
        name, text = "compression", summarize_compression(args.compression, args.pair)
    elif args.transformers:
        name, text = "transformers", summarize_transformers(args.transformers, args.against)
    else:
        name = "core"
        text = "\n".join(summarize_run(r) for r in args.runs if (r / "bilstm" / "result.json").exists())
    if args.write is None:
        print(text)
    else:
        write_block(args.write, name, text)


if __name__ == "__main__":
    main()
