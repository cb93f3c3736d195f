"""``report.md`` and ``report.html`` (and the PNGs they show) from the result JSON files of a run folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sizewise.arms.registry import ArmType, arm_type_names, find_arm_type
from sizewise.errors import SizewiseError
from sizewise.files import failpoint, output_error
from sizewise.report.budgets import (
    LEARNING_CURVE_PNG,
    budget_verdict,
    curve_arms,
    learning_curve_blocks,
    plot_learning_curves,
    test_set_blocks,
)
from sizewise.report.document import Bullets, Document, Heading, Image, Paragraph, Table, to_html, to_markdown
from sizewise.report.plots import TRADEOFFS, plot_confusions, plot_size_curves, plot_tradeoff, size_curve_arms
from sizewise.report.tables import (
    cost_table,
    fmt_number,
    fmt_p,
    main_table,
    paired_tests,
    significance_matrix,
    verdict,
)
from sizewise.result import RESULT_FILE, ArmResult, ResultError
from sizewise.seeds import summarize_arm
from sizewise.units import Unit

SIZE_CURVE_PNG = "size_curve.png"
CONFUSION_PNG = "confusion_matrices.png"
TRADEOFF_ALTS = [
    ("accuracy_vs_parameters.png", "accuracy against parameters"),
    ("accuracy_vs_energy.png", "accuracy against training energy"),
    ("accuracy_vs_throughput.png", "accuracy against inference throughput"),
]


logger = logging.getLogger(__name__)

#: The study file as last run, which a study run leaves in its run folder.
STUDY_RECORD = "study.json"


def load_results(run_dir: str | Path, order: list[str] | None = None, *, log_ignored: bool = False) -> list[ArmResult]:
    """One result per arm folder of ``run_dir`` (its ``result.json``, or its units' combined by
    :func:`sizewise.seeds.summarize_arm`), in ``order`` when given (else by arm name). Where the run
    folder holds the study as last run (``study.json``), only that study's arms and units (seeds,
    sizes) are read: results left by arms or units the study no longer has are ignored (listed in one
    log line with ``log_ignored``), never deleted."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SizewiseError(f"{run_dir}: no such run folder")
    scope = _study_scope(study_record(run_dir))
    results, ignored = [], []
    for folder in sorted(run_dir.iterdir()):
        files = _unit_files(folder)
        if not files:
            continue
        if scope is not None:
            kept = _current_files(folder, scope)
            ignored += [str(f.parent.relative_to(run_dir)) for f in _all_unit_files(folder) if f not in kept]
            files = kept
        if files:
            results.append(_read_arm(folder, files))
    if ignored and log_ignored:
        logger.info(
            "ignored results of arms or units not in %s (the study as last run): %s", STUDY_RECORD, ", ".join(ignored)
        )
    if not results:
        raise SizewiseError(f"{run_dir}: no */{RESULT_FILE} files; run `sizewise study run` first")
    if order:
        rank = {name: i for i, name in enumerate(order)}
        results.sort(key=lambda r: rank.get(r.arm, len(rank)))
    return results


def _study_scope(record: dict[str, Any] | None) -> dict[str, tuple[bool, set[str]] | None] | None:
    """The arms of the study ``record`` (study.json), each with whether it trains once (its result in
    its own folder) and its unit folder names; None for an arm whose units cannot be told (the record
    does not parse here), and None without a record."""
    if record is None:
        return None
    from sizewise.config import StudyConfig

    try:
        config = StudyConfig.model_validate(record)
    except Exception:  # a record of another version, or an arm type not imported: arms by name alone
        arms = record.get("arms")
        names = [a.get("name") for a in arms if isinstance(a, dict)] if isinstance(arms, list) else []
        return {name: None for name in names if isinstance(name, str)} or None
    return {arm.name: (config.single_unit(arm), {u.key for u in config.units(arm)}) for arm in config.arms}


def _all_unit_files(arm_dir: Path) -> list[Path]:
    """Every result file of an arm folder: its own and its unit folders'."""
    files = [p / RESULT_FILE for p in sorted(arm_dir.iterdir()) if Unit.parse(p.name) is not None]
    return [f for f in [arm_dir / RESULT_FILE, *files] if f.is_file()]


def _current_files(arm_dir: Path, scope: dict[str, tuple[bool, set[str]] | None]) -> list[Path]:
    """The result files of ``arm_dir`` that belong to the study ``scope`` (see :func:`_study_scope`)."""
    if arm_dir.name not in scope:
        return []
    units = scope[arm_dir.name]
    if units is None:
        return _unit_files(arm_dir)
    single, keys = units
    if single:
        own = arm_dir / RESULT_FILE
        return [own] if own.is_file() else []
    return [f for f in (arm_dir / key / RESULT_FILE for key in sorted(keys)) if f.is_file()]


def _unit_files(arm_dir: Path) -> list[Path]:
    """The result files of an arm folder: one per unit folder (``seed-1``, ``n96-seed-1``, ...), else
    the folder's own result.json (an arm trained once)."""
    if not arm_dir.is_dir():
        return []
    units = sorted(
        p / RESULT_FILE for p in arm_dir.iterdir() if Unit.parse(p.name) is not None and (p / RESULT_FILE).is_file()
    )
    if units:
        return units
    own = arm_dir / RESULT_FILE
    return [own] if own.is_file() else []


def load_arm(path: str | Path, arm: str | None = None) -> ArmResult:
    """One arm's result from a result.json file, an arm folder (its units' results combined), or a
    run folder + ``arm``; a bad file is a ResultError naming it and the field."""
    path = Path(path)
    if path.is_dir() and not _unit_files(path):
        if arm is None:
            names = sorted(p.name for p in path.iterdir() if _unit_files(p))
            if len(names) != 1:
                raise SizewiseError(
                    f"{path}: a run folder with arms {', '.join(names) or '(none)'}; name one with --arm "
                    "or give the arm's folder"
                )
            arm = names[0]
        path = path / arm
    files = _unit_files(path) if path.is_dir() else [path]
    if not files:
        raise ResultError(f"{path / RESULT_FILE}: no such result file")
    return _read_arm(path, files)


def _read_arm(path: Path, files: list[Path]) -> ArmResult:
    """The result of the arm at ``path`` from its result ``files`` (several units combined)."""
    units = [ArmResult.read(f) for f in files]
    for f, result in zip(files, units, strict=True):
        if find_arm_type(result.arm_type) is None:
            raise ResultError(
                f"{f}: config.{result.arm_type}: not an arm type (known: {', '.join(arm_type_names())}; "
                "import the module of a third-party type first)"
            )
    return summarize_arm(units) if len(units) > 1 or units[0].unit is not None else units[0]


def arm_types_of(results: list[ArmResult]) -> list[ArmType]:
    """The arm types of ``results``, in the order their first arm appears."""
    keys = dict.fromkeys(r.arm_type for r in results)
    return [t for t in (find_arm_type(key) for key in keys) if t is not None]


def _diff_cell(t: dict[str, Any]) -> str:
    lo, hi = t["interval"]
    return f"{100 * t['accuracy_difference']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def build_document(results: list[ArmResult], baseline: str, images: dict[str, bool]) -> Document:
    """The report's blocks, from the results alone; ``images`` says which PNGs were written. Each arm
    type adds its own sections (e.g. the compression table) after the quality-against-cost plots."""
    first = results[0]
    data = first.data
    doc = Document(first.study)
    test, train = data.test, data.train
    doc.add(
        Paragraph(
            f"Trained on {train.rows:,} pairs of {train.source}, scored on {test.rows:,} pairs of "
            f"{test.source}, labels {', '.join(data.labels)} ({data.scheme})."
        )
    )
    doc.add(Heading("Verdict"), Bullets(verdict(results) + budget_verdict(curve_arms(results))))
    doc.add(Heading("Quality and size"))
    header, rows = main_table(results)
    doc.add(Table(header, rows))
    level = first.intervals.level
    seeded = max(r.n_seeds for r in results) > 1
    if seeded:
        doc.add(
            Paragraph(
                f"Each arm was trained once per seed; its scores are means over seeds, ± the standard deviation "
                f"over seeds. Intervals: {100 * level:.0f}% two-level percentile bootstrap "
                f"({first.intervals.resamples} resamples), each resample drawing the seeds and then the test pairs, "
                "so they cover both training-seed and test-sample variance (an arm with one seed: test pairs only)."
            )
        )
    else:
        doc.add(
            Paragraph(
                f"Intervals: {100 * level:.0f}% percentile bootstrap over test pairs "
                f"({first.intervals.resamples} resamples)."
            )
        )
    doc.add(Heading("Cost"))
    header, rows = cost_table(results)
    doc.add(Table(header, rows))
    doc.add(Paragraph(_energy_note(results)))
    tests = paired_tests(results, baseline)
    if tests:
        doc.add(Heading(f"Against the baseline ({baseline})"))
        trows = []
        for t in tests:
            if "note" in t:
                trows.append([t["description"], t["note"], "", "", ""])
                continue
            verdict_cell = "yes" if t["significant"] else "no — the difference may be chance"
            trows.append(
                [
                    t["description"],
                    _diff_cell(t),
                    f"{t['arm_only_right']} / {t['baseline_only_right']}",
                    fmt_p(t["mcnemar_p"]) + ("" if t["test"] == "McNemar" else " (bootstrap)"),
                    verdict_cell,
                ]
            )
        doc.add(
            Table(
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
    if len(results) > 2:
        doc.add(Heading("Significance between every two arms"))
        header, rows = significance_matrix(results)
        how = (
            "p-values of the two-level bootstrap over the seeds both arms share and the test pairs (exact McNemar "
            "for two arms trained once)"
            if seeded
            else "Exact McNemar p-values on the same test pairs"
        )
        doc.add(Table(header, rows), Paragraph(f"{how}; * marks p < 0.05."))
    plots = [(f, alt) for f, alt in TRADEOFF_ALTS if images.get(f)]
    if plots:
        doc.add(Heading("Quality against cost"))
        doc.add(Paragraph("Each point is an arm with its 95% interval; the dashed line joins the Pareto frontier."))
        doc.add(*(Image(f, alt) for f, alt in plots))
    doc.add(*learning_curve_blocks(results, images))
    doc.add(*test_set_blocks(results))
    for arm_type in arm_types_of(results):
        doc.add(*arm_type.report_blocks(results, images))
    ensembles = size_curve_arms(results)
    if ensembles:
        doc.add(Heading("Ensemble size curve"))
        if images.get(SIZE_CURVE_PNG):
            doc.add(Image(SIZE_CURVE_PNG, "ensemble accuracy against the number of learners"))
        items = []
        for r in ensembles:
            assert r.curves.size is not None
            accs = r.curves.size.accuracy
            best = max(range(len(accs)), key=accs.__getitem__)
            items.append(
                f"{r.description}: accuracy with 1…{len(accs)} learners: "
                + ", ".join(fmt_number(a) for a in accs)
                + f" (best {fmt_number(accs[best])} at {best + 1})."
            )
        doc.add(Bullets(items))
        doc.add(Heading("Ensemble diversity"))
        doc.add(
            Paragraph(
                "For the normalized geometric mean, ensemble cross-entropy = mean member cross-entropy − "
                "diversity (mean KL from the ensemble to each member); Wood et al., JMLR 2023."
            )
        )
        drows = [
            [
                r.description,
                fmt_number(r.diversity.ensemble_ce, 4),
                fmt_number(r.diversity.member_ce, 4),
                fmt_number(r.diversity.diversity, 4),
            ]
            for r in ensembles
            if r.diversity is not None
        ]
        doc.add(Table(["arm", "ensemble CE", "mean member CE", "diversity"], drows))
    doc.add(Heading("Confusion matrices (rows: true, columns: predicted)"))
    if images.get(CONFUSION_PNG):
        doc.add(Image(CONFUSION_PNG, "confusion matrices"))
    for r in results:
        labels = r.data.labels
        cm_rows = [[labels[i]] + [str(c) for c in row] for i, row in enumerate(r.confusion_matrix)]
        summed = f" (summed over {r.n_seeds} seeds)" if r.n_seeds > 1 else ""
        doc.add(Table(["", *labels], cm_rows, caption=r.description + summed))
    env = first.environment
    doc.add(
        Heading("Environment"),
        Paragraph(
            f"sizewise {env.get('sizewise')}, Python {env.get('python')}, torch {env.get('torch')}; "
            f"{env.get('cpu')} ({env.get('cpu_count')} cores){', GPU ' + env['gpu'] if env.get('gpu') else ''}; "
            f"commit {env.get('git_commit')}."
        ),
        Paragraph("Every number here is read from the arms' result.json files; sizewise report re-renders it."),
    )
    return doc


def _energy_note(results: list[ArmResult]) -> str:
    tracked = [r for r in results if r.cost.train_energy_kwh is not None]
    if not tracked:
        return "Energy and CO2 were not measured (codecarbon missing or energy tracking turned off)."
    c = tracked[0].cost
    how = (
        "read from the machine's power counters"
        if all(r.cost.train_measured for r in tracked)
        else "estimated (est.): this machine has no power counters, so codecarbon estimated CPU power from its "
        "load and rated power (TDP) and RAM power from its size"
    )
    intensity = c.train_carbon_intensity_g_per_kwh
    grid = f"{intensity:.0f} g CO2e/kWh" if intensity else "unknown intensity"
    return (
        f"Energy: {how}; whole machine, training only. CO2 = energy × the grid intensity of "
        f"{c.train_country} ({grid}; set cost: country or carbon_intensity_g_per_kwh in the study). "
        f"Throughput: pairs per second in one predict call of {c.inference_batch_pairs} pairs after a "
        "warm-up; latency: one pair per call."
    )


def render_markdown(results: list[ArmResult], baseline: str, images: dict[str, bool]) -> str:
    """The whole report as Markdown."""
    return to_markdown(build_document(results, baseline, images))


def study_record(run_dir: Path) -> dict[str, Any] | None:
    """The study.json a study run leaves in its folder (arms, units, baseline), if readable."""
    try:
        record = json.loads((run_dir / STUDY_RECORD).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def write_report(run_dir: str | Path, *, baseline: str | None = None, order: list[str] | None = None) -> Path:
    """Write ``report.md``, ``report.html`` and their PNGs into ``run_dir``; returns the Markdown path.

    Every result file is read and checked first, and the report is rendered whole in a temporary folder
    beside them and only then moved into place: a bad result file is one error and rewrites nothing."""
    run_dir = Path(run_dir)
    study = study_record(run_dir)
    if order is None and study:
        order = [a["name"] for a in study.get("arms", []) if isinstance(a, dict)]
    results = load_results(run_dir, order, log_ignored=True)
    baseline = baseline or (study or {}).get("evaluation", {}).get("baseline") or results[0].arm
    try:
        stage = Path(tempfile.mkdtemp(prefix=".report.", suffix=".tmp", dir=run_dir))
    except OSError as exc:
        raise output_error(run_dir / "report.md", exc) from None
    try:
        images = {SIZE_CURVE_PNG: plot_size_curves(results, stage / SIZE_CURVE_PNG)}
        for file, field, label, log, lower in TRADEOFFS:
            images[file] = plot_tradeoff(results, field, label, stage / file, log=log, lower_is_better=lower)
        images[CONFUSION_PNG] = plot_confusions(results, stage / CONFUSION_PNG)
        images[LEARNING_CURVE_PNG] = plot_learning_curves(results, stage / LEARNING_CURVE_PNG)
        for arm_type in arm_types_of(results):
            images.update(arm_type.draw(results, stage))
        doc = build_document(results, baseline, images)
        (stage / "report.html").write_text(to_html(doc, stage), encoding="utf-8")
        (stage / "report.md").write_text(to_markdown(doc), encoding="utf-8")
        for made in sorted(stage.iterdir(), key=lambda p: (p.suffix != ".png", p.name == "report.md")):
            if made.name.startswith("."):
                continue
            if made.suffix != ".png":
                failpoint("report")  # the images in place, the pages not yet (report.md last)
            try:
                os.chmod(made, 0o666 & ~_umask())
                os.replace(made, run_dir / made.name)
            except OSError as exc:
                raise output_error(run_dir / made.name, exc) from None
    except OSError as exc:
        raise output_error(run_dir / "report.md", exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return run_dir / "report.md"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
