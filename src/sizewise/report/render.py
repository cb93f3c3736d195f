"""``report.md`` (and the PNG it shows) from the result JSON files of a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sizewise.errors import SizewiseError
from sizewise.files import atomic_write_text
from sizewise.report.plots import plot_size_curves
from sizewise.report.tables import fmt_number, fmt_p, main_table, paired_tests

RESULT_FILE = "result.json"
SIZE_CURVE_PNG = "size_curve.png"


def load_results(run_dir: str | Path, order: list[str] | None = None) -> list[dict[str, Any]]:
    """Every ``<run_dir>/<arm>/result.json``, in ``order`` when given (else by arm name)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SizewiseError(f"{run_dir}: no such run folder")
    results = []
    for path in sorted(run_dir.glob(f"*/{RESULT_FILE}")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SizewiseError(f"{path}: not a valid result file ({exc})") from None
        if not isinstance(record, dict) or not str(record.get("schema", "")).startswith("sizewise.result/"):
            raise SizewiseError(f"{path}: not a sizewise result file (field 'schema' missing)")
        results.append(record)
    if not results:
        raise SizewiseError(f"{run_dir}: no */{RESULT_FILE} files; run `sizewise study run` first")
    if order:
        rank = {name: i for i, name in enumerate(order)}
        results.sort(key=lambda r: rank.get(r["arm"], len(rank)))
    return results


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(results: list[dict[str, Any]], baseline: str, has_curve_png: bool) -> str:
    """The whole report as Markdown."""
    first = results[0]
    data = first["data"]
    parts = [f"# {first['study']}", ""]
    test, train = data["test"], data["train"]
    parts.append(
        f"Trained on {train['rows']:,} pairs of `{train['source']}`, scored on {test['rows']:,} pairs of "
        f"`{test['source']}`, labels {', '.join(data['labels'])} (`{data['scheme']}`)."
    )
    parts += ["", "## Quality and size", ""]
    header, rows = main_table(results)
    parts.append(_md_table(header, rows))
    level = first["intervals"]["level"]
    parts.append(
        f"\nIntervals: {100 * level:.0f}% percentile bootstrap over test pairs "
        f"({first['intervals']['resamples']} resamples)."
    )
    tests = paired_tests(results, baseline)
    if tests:
        parts += ["", f"## Against the baseline ({baseline})", ""]
        trows = []
        for t in tests:
            if "note" in t:
                trows.append([t["description"], t["note"], "", "", ""])
                continue
            lo, hi = t["interval"]
            verdict = "yes" if t["significant"] else "no — the difference may be chance"
            trows.append(
                [
                    t["description"],
                    f"{100 * t['accuracy_difference']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                    f"{t['arm_only_right']} / {t['baseline_only_right']}",
                    fmt_p(t["mcnemar_p"]),
                    verdict,
                ]
            )
        parts.append(
            _md_table(
                [
                    "arm",
                    "Δ accuracy vs baseline [95% CI]",
                    "pairs only arm / only baseline right",
                    "McNemar p",
                    "significant (p < 0.05)",
                ],
                trows,
            )
        )
    ensembles = [r for r in results if r.get("curves", {}).get("size")]
    if ensembles:
        parts += ["", "## Ensemble size curve", ""]
        if has_curve_png:
            parts.append(f"![ensemble accuracy against the number of learners]({SIZE_CURVE_PNG})\n")
        for r in ensembles:
            accs = r["curves"]["size"]["accuracy"]
            best = max(range(len(accs)), key=accs.__getitem__)
            parts.append(
                f"- **{r['description']}**: accuracy with 1…{len(accs)} learners: "
                + ", ".join(fmt_number(a) for a in accs)
                + f" (best {fmt_number(accs[best])} at {best + 1})."
            )
        parts += ["", "## Ensemble diversity", ""]
        parts.append(
            "For the normalized geometric mean, ensemble cross-entropy = mean member cross-entropy − "
            "diversity (mean KL from the ensemble to each member); Wood et al., JMLR 2023.\n"
        )
        drows = []
        for r in ensembles:
            d = r.get("diversity", {})
            if d:
                drows.append(
                    [
                        r["description"],
                        fmt_number(d["ensemble_ce"], 4),
                        fmt_number(d["member_ce"], 4),
                        fmt_number(d["diversity"], 4),
                    ]
                )
        parts.append(_md_table(["arm", "ensemble CE", "mean member CE", "diversity"], drows))
    parts += ["", "## Confusion matrices (rows: true, columns: predicted)", ""]
    for r in results:
        labels = r["data"]["labels"]
        cm_rows = [[labels[i]] + [str(c) for c in row] for i, row in enumerate(r["confusion_matrix"])]
        parts += [f"**{r['description']}**", "", _md_table([""] + labels, cm_rows), ""]
    env = first.get("environment", {})
    parts += [
        "## Environment",
        "",
        f"sizewise {env.get('sizewise')}, Python {env.get('python')}, torch {env.get('torch')}; "
        f"{env.get('cpu')} ({env.get('cpu_count')} cores){', GPU ' + env['gpu'] if env.get('gpu') else ''}; "
        f"commit {env.get('git_commit')}.",
        "",
        "Every number here is read from the arms' `result.json` files; `sizewise report` re-renders it.",
        "",
    ]
    return "\n".join(parts)


def write_report(run_dir: str | Path, *, baseline: str | None = None, order: list[str] | None = None) -> Path:
    """Write ``report.md`` (and ``size_curve.png``) into ``run_dir``; returns the report path."""
    run_dir = Path(run_dir)
    results = load_results(run_dir, order)
    baseline = baseline or results[0]["arm"]
    has_png = plot_size_curves(results, run_dir / SIZE_CURVE_PNG)
    path = run_dir / "report.md"
    atomic_write_text(path, render_markdown(results, baseline, has_png))
    return path
