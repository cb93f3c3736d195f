"""Summaries of pair data: size, label balance and text lengths (``sizewise data info``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sizewise.data.pairs import PairData


def _length_stats(texts: list[str]) -> dict[str, float]:
    lengths = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=len(texts))
    if not len(lengths):
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    return {
        "mean": round(float(lengths.mean()), 2),
        "median": float(np.median(lengths)),
        "p95": float(np.percentile(lengths, 95)),
        "max": int(lengths.max()),
    }


def describe(data: PairData) -> dict[str, Any]:
    """Rows, skipped rows, label counts and percentages, and whitespace-token lengths of both texts.

    Lengths give ``mean``, ``median``, ``p95`` and ``max`` tokens; ``unlabelled`` counts rows with
    label -1.
    """
    counts = data.label_counts()
    rows = len(data)
    return {
        "source": data.source,
        "scheme": data.scheme.name,
        "rows": rows,
        "skipped": data.skipped,
        "unlabelled": int((data.labels < 0).sum()),
        "labels": {
            name: {"count": c, "percent": round(100.0 * c / rows, 2) if rows else 0.0} for name, c in counts.items()
        },
        "premise_tokens": _length_stats(data.premises),
        "hypothesis_tokens": _length_stats(data.hypotheses),
    }


def format_description(desc: dict[str, Any]) -> str:
    """A plain-text table of a :func:`describe` result, for the terminal."""
    lines = [
        f"source      {desc['source']}",
        f"scheme      {desc['scheme']}",
        f"rows        {desc['rows']:,}",
        f"skipped     {desc['skipped']:,}",
    ]
    if desc.get("unlabelled"):
        lines.append(f"unlabelled  {desc['unlabelled']:,}")
    width = max([len("label"), *(len(n) for n in desc["labels"])])
    lines += ["", f"{'label':<{width}}  {'count':>9}  {'%':>6}"]
    for name, entry in desc["labels"].items():
        lines.append(f"{name:<{width}}  {entry['count']:>9,}  {entry['percent']:>6.2f}")
    lines += ["", f"{'tokens':<10}  {'mean':>7}  {'median':>7}  {'p95':>7}  {'max':>7}"]
    for key, title in (("premise_tokens", "premise"), ("hypothesis_tokens", "hypothesis")):
        s = desc[key]
        lines.append(f"{title:<10}  {s['mean']:>7.1f}  {s['median']:>7.1f}  {s['p95']:>7.1f}  {s['max']:>7}")
    return "\n".join(lines)
