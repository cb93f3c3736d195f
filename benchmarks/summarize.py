"""Turn finished core-benchmark run folders into the Markdown tables of BENCHMARKS.md.

    python benchmarks/summarize.py runs/core-snli-nli3 runs/core-snli-binary runs/core-mnli \
        [--write BENCHMARKS.md]

With --write, the block between ``<!-- core:begin -->`` and ``<!-- core:end -->`` is replaced.
Every number comes from the runs' result.json files.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from sizewise.report.render import load_results
from sizewise.report.tables import fmt_count, fmt_number, fmt_p, fmt_seconds, paired_tests


def _interval(r: dict[str, Any], name: str) -> str:
    lo, hi = r["intervals"][name]
    return f"{r['metrics'][name]:.3f} [{lo:.3f}, {hi:.3f}]"


def summarize_run(run_dir: Path) -> str:
    """One section: main table, paired tests against the first arm, size curves, diversity."""
    results = load_results(run_dir, ["bilstm", "bagged-11", "boosted-11"])
    first = results[0]
    data, env = first["data"], first["environment"]
    lines = [
        f"### {first['study']}: train {data['train']['rows']:,} pairs of `{data['train']['source']}`, "
        f"test {data['test']['rows']:,} pairs of `{data['test']['source']}` ({data['scheme']})",
        "",
        "| arm | params | accuracy [95% CI] | F1 macro [95% CI] | F1 weighted | precision macro | recall macro "
        "| ROC-AUC macro | train time | CPU time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        m, c = r["metrics"], r["cost"]
        lines.append(
            f"| {r['description']} | {fmt_count(c['parameters_total'])} | {_interval(r, 'accuracy')} "
            f"| {_interval(r, 'f1_macro')} | {fmt_number(m['f1_weighted'])} | {fmt_number(m['precision_macro'])} "
            f"| {fmt_number(m['recall_macro'])} | {fmt_number(m['roc_auc_macro'])} "
            f"| {fmt_seconds(c['train_seconds'])} | {fmt_seconds(c['train_cpu_seconds'])} |"
        )
    tests = paired_tests(results, results[0]["arm"])
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
        curves = r.get("curves", {})
        if not curves.get("size"):
            continue
        ks = curves["size"]["k"]
        lines += ["", f"Size curve, {r['description']} (test accuracy of the first k members):", ""]
        lines.append("| epochs \\ k | " + " | ".join(map(str, ks)) + " |")
        lines.append("|---|" + "---|" * len(ks))
        for epoch, accs in sorted(curves.get("epoch_size", {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {epoch} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
        lines.append("| final (best dev epoch) | " + " | ".join(f"{a:.3f}" for a in curves["size"]["accuracy"]) + " |")
        d = r.get("diversity")
        if d:
            lines += [
                "",
                f"Diversity: ensemble CE {d['ensemble_ce']:.4f} = mean member CE {d['member_ce']:.4f} "
                f"− diversity {d['diversity']:.4f}; member accuracies "
                + ", ".join(f"{a:.3f}" for a in r["members"]["accuracy"])
                + ".",
            ]
    lines += [
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']} (CPU), sizewise commit "
        f"{env['git_commit']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Print (or write into BENCHMARKS.md) the summary of the given run folders."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--write", type=Path, help="Markdown file whose core block is replaced.")
    args = parser.parse_args()
    text = "\n".join(summarize_run(r) for r in args.runs if (r / "bilstm" / "result.json").exists())
    if args.write is None:
        print(text)
        return
    doc = args.write.read_text(encoding="utf-8")
    block = f"<!-- core:begin -->\n{text}\n<!-- core:end -->"
    new, n = re.subn(r"<!-- core:begin -->.*?<!-- core:end -->", lambda _: block, doc, flags=re.S)
    if n != 1:
        raise SystemExit(f"{args.write}: needs one <!-- core:begin --> ... <!-- core:end --> block")
    args.write.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
