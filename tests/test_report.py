"""The report: report.md and report.html hold exactly the numbers of result.json; the HTML opens in
headless Chromium (when one is installed) with every plot visible and no console errors; the
Pareto frontier, the verdict and `sizewise compare`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SHARED_DATA, TINY_BILSTM, keyword_pairs, run_cli
from sizewise.config import StudyConfig
from sizewise.cost.energy import fmt_energy, set_tracker_factory
from sizewise.report.plots import pareto_front
from sizewise.report.render import load_results, write_report
from sizewise.report.tables import compare_arms, fmt_count, fmt_ratio, verdict
from sizewise.study import run_study
from test_cost import FakeTracker

ROOT = Path(__file__).resolve().parents[1]


def _write_tsv(path: Path, data: Any) -> Path:
    lines = ["premise\thypothesis\tlabel"]
    lines += [f"{p}\t{h}\t{data.scheme.labels[y]}" for p, h, y in zip(data.premises, data.hypotheses, data.labels)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished three-arm study on synthetic pairs, energy from the fake tracker."""
    folder = tmp_path_factory.mktemp("report")
    train = _write_tsv(folder / "train.tsv", keyword_pairs(60, seed=0))
    test = _write_tsv(folder / "test.tsv", keyword_pairs(45, seed=1))
    config = StudyConfig.model_validate(
        {
            "name": "report-test",
            "output": str(folder / "run"),
            "data": {"train": str(train), "test": str(test)},
            "arms": [
                {"name": "one", "description": "one BiLSTM", "learner": {**TINY_BILSTM, "epochs": 2}},
                {"name": "wide", "description": "wider BiLSTM", "learner": {**TINY_BILSTM, "hidden_size": 16}},
                {
                    "name": "ens",
                    "description": "3 bagged BiLSTMs",
                    "learner": {"kind": "ensemble", "n_learners": 3, "base": {**TINY_BILSTM, "epochs": 2}},
                },
            ],
        }
    )
    set_tracker_factory(FakeTracker)
    try:
        run = run_study(config)
    finally:
        set_tracker_factory(None)
    write_report(run)
    return run


class _Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _md_tables(text: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if all(set(c) <= {"-"} for c in cells):
                continue
            if current is None:
                current = []
                tables.append(current)
            current.append(cells)
        else:
            current = None
    return tables


def _rows_by_arm(table: list[list[str]]) -> dict[str, dict[str, str]]:
    header = table[0]
    return {row[0]: dict(zip(header, row)) for row in table[1:]}


def test_every_number_in_the_reports_is_the_result_files(run_dir: Path) -> None:
    md = (run_dir / "report.md").read_text()
    page = _Tables()
    page.feed((run_dir / "report.html").read_text())
    assert _md_tables(md) == page.tables, "report.md and report.html must hold the same tables"
    quality, cost = (_rows_by_arm(t) for t in page.tables[:2])
    results = load_results(run_dir)
    assert sorted(quality) == sorted(r.description for r in results)
    for r in results:
        q, c, m, ci, rc = quality[r.description], cost[r.description], r.metrics, r.intervals, r.cost
        lo, hi = ci.accuracy
        assert q["accuracy [95% CI]"] == f"{m.accuracy:.3f} [{lo:.3f}, {hi:.3f}]"
        lo, hi = ci.f1_macro
        assert q["F1 macro [95% CI]"] == f"{m.f1_macro:.3f} [{lo:.3f}, {hi:.3f}]"
        for title, key in [
            ("F1 weighted", "f1_weighted"),
            ("precision macro", "precision_macro"),
            ("recall macro", "recall_macro"),
            ("ROC-AUC macro", "roc_auc_macro"),
        ]:
            assert q[title] == f"{m.get(key):.3f}"
        assert q["params (trainable)"] == fmt_count(rc.parameters_total)
        assert rc.train_energy_kwh is not None and rc.train_co2_kg is not None
        assert c["train energy"] == f"{rc.train_energy_kwh * 1000:.2f} Wh (est.)" == "2.00 Wh (est.)"
        assert c["train CO2"] == f"{rc.train_co2_kg * 1000:.2f} g" == "1.00 g"
        assert c["size on disk"] == f"{rc.size_on_disk_mb:.1f} MB"
        assert c["inference pairs/s (batch)"] == f"{rc.inference_pairs_per_s:,.0f} ({rc.inference_batch_pairs})"
        assert c["latency p50 / p95"] == f"{rc.latency_p50_ms:.1f} / {rc.latency_p95_ms:.1f} ms"
        assert c["peak memory"] == f"{rc.peak_rss_mb:,.0f} MB"
        # the confusion matrix table of this arm, row by row
        labels = r.data.labels
        cm_table = next(t for t in page.tables if t[0] == ["", *labels] and len(t) == len(labels) + 1)
        assert cm_table  # at least one is found; each arm's is checked through its caption below
    html_text = (run_dir / "report.html").read_text()
    for r in results:
        cm = r.confusion_matrix
        caption = f"<caption>{r.description}</caption>"
        assert caption in html_text
        block = html_text.split(caption, 1)[1].split("</table>", 1)[0]
        cells = re.findall(r"<td>(\d+)</td>", block)
        assert [int(x) for x in cells] == [v for row in cm for v in row]
    # The verdict's differences are the paired differences of the result files.
    best = max(results, key=lambda r: r.metrics.accuracy)
    for r in results:
        if r is best:
            continue
        d = 100 * (r.metrics.accuracy - best.metrics.accuracy)
        assert f"{r.description} is {abs(d):.1f} pts" in md


def test_report_images_are_embedded_and_exist(run_dir: Path) -> None:
    html_text = (run_dir / "report.html").read_text()
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    assert {"accuracy_vs_parameters.png", "accuracy_vs_energy.png", "accuracy_vs_throughput.png"} <= set(pngs)
    assert {"size_curve.png", "confusion_matrices.png"} <= set(pngs)
    assert html_text.count('src="data:image/png;base64,') == len(pngs)
    assert "<script" not in html_text and "http" not in html_text.split("<body>", 1)[1]
    md = (run_dir / "report.md").read_text()
    assert all(f"]({name})" in md for name in pngs)


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

_PROBE = (
    '<script>window.addEventListener("load", () => { const imgs = [...document.images]; '
    "const ok = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0); "
    'document.body.setAttribute("data-images", imgs.length + "/" + ok.length); });</script>'
)


@pytest.fixture(scope="module")
def quickstart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """configs/quickstart.yaml as shipped (a BiLSTM, 5 bagged BiLSTMs and MiniLM-L6 with LoRA), on
    240 / 60 / 90 SNLI pairs instead of 8,000 / 1,000 / 3,000 so that it runs in seconds."""
    raw = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    raw["data"].update(train_size=240, dev_size=60, test_size=90)
    raw["output"] = str(tmp_path_factory.mktemp("quickstart") / "run")
    set_tracker_factory(FakeTracker)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SIZEWISE_DATA", str(SHARED_DATA))
            run = run_study(StudyConfig.model_validate(raw))
    finally:
        set_tracker_factory(None)
    write_report(run)
    return run


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt install chromium)")
def test_quickstart_report_opens_in_headless_chromium(quickstart_dir: Path, tmp_path: Path) -> None:
    run_dir = quickstart_dir
    # The report itself has no script; a copy gets a probe that records, after loading, how many
    # images there are and how many decoded with a size and take up room on the page.
    probe = tmp_path / "probe.html"
    probe.write_text((run_dir / "report.html").read_text().replace("</body>", _PROBE + "</body>"))
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    proc = subprocess.run(
        [*args, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    n = len(list(run_dir.glob("*.png")))
    assert n == 5  # size curve, three quality-against-cost plots, confusion matrices
    assert f'data-images="{n}/{n}"' in proc.stdout
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*args, "--window-size=1200,3000", f"--screenshot={shot}", (run_dir / "report.html").as_uri()],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.stat().st_size > 50_000  # a rendered page of tables and plots, not a blank one


def test_pareto_front_by_hand() -> None:
    costs, scores = [1.0, 2.0, 3.0, 4.0, 2.0], [0.5, 0.7, 0.6, 0.8, 0.4]
    # 3.0/0.6 is beaten by 2.0/0.7 and 2.0/0.4 by 1.0/0.5; the rest are each best at their cost.
    assert pareto_front(costs, scores) == [0, 1, 3]
    # For throughput more is better: 4.0/0.8 beats everything.
    assert pareto_front(costs, scores, lower_cost_is_better=False) == [3]


def test_ratio_and_energy_wording() -> None:
    assert fmt_ratio(1 / 6, "less", "more") == "6.0× less"
    assert fmt_ratio(2.5, "less", "more") == "2.5× more"
    assert fmt_ratio(1.05, "less", "more") == "about the same"
    assert fmt_energy(0.002) == "2.00 Wh"


def test_the_verdict_of_one_arm_compares_it_with_nothing(run_dir: Path) -> None:
    (one, *_) = load_results(run_dir)
    lines = verdict([one])
    assert lines[0].startswith(f"The most accurate arm is {one.description}")
    assert not any("other arm" in line for line in lines), lines


def test_verdict_and_compare_agree_with_the_results(run_dir: Path) -> None:
    results = load_results(run_dir)
    lines = verdict(results)
    best = max(results, key=lambda r: r.metrics.accuracy)
    assert lines[0].startswith(f"The most accurate arm is {best.description}")
    assert len(lines) == len(results) + 1
    for r in results:
        if r is best:
            continue
        cmp = compare_arms(r, best)
        assert cmp["metrics"]["accuracy"]["difference"] == pytest.approx(r.metrics.accuracy - best.metrics.accuracy)
        line = next(x for x in lines if x.startswith(f"{r.description} is "))
        assert "1.0× " not in line and "same training energy" in line  # the fake tracker: 2 Wh each


def test_compare_cli(run_dir: Path, tmp_path: Path) -> None:
    proc = run_cli("compare", str(run_dir / "ens"), str(run_dir / "one"))
    assert proc.returncode == 0, proc.stderr
    a, b = (json.loads((run_dir / n / "result.json").read_text()) for n in ("ens", "one"))
    diff = 100 * (a["metrics"]["accuracy"] - b["metrics"]["accuracy"])
    assert f"{diff:+.1f} pts" in proc.stdout
    assert "McNemar (exact)" in proc.stdout
    # A run folder needs --arm; with it, the same arm of two runs is compared.
    proc = run_cli("compare", str(run_dir), str(run_dir))
    assert proc.returncode == 2 and "name one with --arm" in proc.stderr
    assert run_cli("compare", str(run_dir), str(run_dir), "--arm", "one").returncode == 0
    # Another test set: refused, one line, exit 2.
    other = tmp_path / "other"
    shutil.copytree(run_dir / "one", other)
    record = json.loads((other / "result.json").read_text())
    record["data"]["test"]["fingerprint"] = "0" * 16
    (other / "result.json").write_text(json.dumps(record))
    proc = run_cli("compare", str(other), str(run_dir / "ens"))
    assert proc.returncode == 2
    assert "scored on different test sets" in proc.stderr and proc.stderr.count("error:") == 1


def test_significance_matrix_is_the_mcnemar_test_of_every_pair(run_dir: Path) -> None:
    from sizewise.evaluation.stats import mcnemar_exact
    from sizewise.report.tables import fmt_p, significance_matrix

    results = load_results(run_dir)
    header, rows = significance_matrix(results)
    assert header == ["", *[r.arm for r in results]]
    for i, a in enumerate(results):
        assert rows[i][0] == a.arm and rows[i][i + 1] == "·"
        for j, b in enumerate(results):
            if i == j:
                continue
            p = mcnemar_exact(a.predictions.y_true, a.predictions.y_pred, b.predictions.y_pred)
            assert rows[i][j + 1] == rows[j][i + 1] == fmt_p(p["p_value"]) + (" *" if p["p_value"] < 0.05 else "")
