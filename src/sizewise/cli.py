"""The ``sizewise`` command: parses, calls the library, prints. No logic of its own.

Commands that need torch, scipy or matplotlib (training, scoring, reports) import those parts of the
library when they run, so that ``sizewise --help``, ``data info`` and ``study check`` start in a moment.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from sizewise import __version__
from sizewise.config import load_study, read_yaml_file
from sizewise.data.catalog import fetch_dataset, load_pairs
from sizewise.data.info import describe, format_description
from sizewise.data.io import parse_pairs, read_pairs
from sizewise.data.sampling import sample_subset
from sizewise.distributed import close, is_main_process
from sizewise.errors import ConfigError, SizewiseError
from sizewise.files import WRITE_ERRNOS, atomic_write_text, check_replaceable, check_writable
from sizewise.learners.base import MODEL_FILES, create_learner, load_learner, read_learner_meta
from sizewise.learners.describe import builtin_kinds, replace_block, settings_rows, settings_tables
from sizewise.progress import set_quiet

app = typer.Typer(
    help="sizewise: is a bigger model better for my sentence-pair task, at my budget?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Named datasets: download and inspect.", no_args_is_help=True)
study_app = typer.Typer(help="Run and check study files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(study_app, name="study")

# Off a terminal (CI logs, files) rich would wrap tables at 80 columns; give them room instead.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _version(value: bool) -> None:
    if value:
        out.print(f"sizewise {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug log lines.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    set_quiet(quiet)
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    logger = logging.getLogger("sizewise")
    logger.handlers.clear()
    handler = RichHandler(console=err, show_path=False, show_time=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


# -- data ---------------------------------------------------------------------------------------
@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name: snli, mnli, rte, lingnli, cad_snli.")],
    home: Annotated[Path | None, typer.Option(help="Data home (default: $SIZEWISE_DATA or ~/.cache).")] = None,
    force: Annotated[bool, typer.Option(help="Download again even if present.")] = False,
) -> None:
    """Download a dataset from its canonical source into the data home."""

    folder = fetch_dataset(name, home, force=force)
    out.print(f"{name}: ready in {folder}")


@data_app.command("info")
def data_info(
    source: Annotated[str, typer.Argument(help="A file, or a dataset as name or name:split.")],
    scheme: Annotated[str | None, typer.Option(help="Label scheme to read it under.")] = None,
) -> None:
    """Rows, label distribution and sentence lengths of a file or dataset split."""

    out.print(format_description(describe(load_pairs(source, scheme=scheme))), highlight=False)


# -- studies ------------------------------------------------------------------------------------
def _print_table(run_dir: Path, order: list[str] | None = None) -> None:
    from sizewise.report.render import load_results
    from sizewise.report.tables import fmt_number, fmt_params, fmt_seconds

    results = load_results(run_dir, order)
    table = Table(
        "arm",
        "params (trainable)",
        "accuracy [95% CI]",
        "F1 macro [95% CI]",
        "ROC-AUC",
        "train time",
        title=str(run_dir),
    )
    for r in results:
        m, ci, s = r.metrics, r.intervals, r.seeds
        acc_sd = "" if s is None else f" ± {s.accuracy_sd:.3f} ({r.n_seeds} seeds)"
        f1_sd = "" if s is None else f" ± {s.f1_macro_sd:.3f}"
        table.add_row(
            r.description,
            fmt_params(r.cost),
            f"{m.accuracy:.3f}{acc_sd} [{ci.accuracy[0]:.3f}, {ci.accuracy[1]:.3f}]",
            f"{m.f1_macro:.3f}{f1_sd} [{ci.f1_macro[0]:.3f}, {ci.f1_macro[1]:.3f}]",
            fmt_number(m.roc_auc_macro),
            fmt_seconds(r.cost.train_seconds),
        )
    out.print(table)


def _check_arms(config: Path, study: Any, arms: list[str] | None) -> None:
    """Refuse ``--arm`` names that are not arms of ``study`` (read from ``config``)."""
    unknown = [a for a in arms or [] if a not in {x.name for x in study.arms}]
    if unknown:
        raise ConfigError(str(config), [f"--arm {a!r} is not an arm of this study" for a in unknown])


@study_app.command("run")
def study_run(
    config: Annotated[Path, typer.Argument(help="Study YAML file.")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: the file's).")] = None,
    arm: Annotated[list[str] | None, typer.Option(help="Run only this arm (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Redo arms that finished earlier.")] = False,
    executor: Annotated[
        str,
        typer.Option(help="local: one unit after another in this process; ray: every unit as a task on a Ray cluster."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (auto: the one `ray start` runs here; host:port). Default: start one here."
        ),
    ] = None,
    num_cpus: Annotated[float, typer.Option(min=0.01, help="CPUs per unit on Ray (also its torch threads).")] = 1.0,
    num_gpus: Annotated[float, typer.Option(min=0.0, help="GPUs per unit on Ray; a fraction shares one GPU.")] = 0.0,
) -> None:
    """Train and score every arm, write result JSON per arm and report.md; resumes if interrupted."""
    from sizewise.cluster import Resources
    from sizewise.report.render import write_report
    from sizewise.study import run_study

    if executor not in ("local", "ray"):
        raise ConfigError("study run", [f"--executor {executor!r}: choose local or ray"])
    if executor != "ray" and address is not None:
        raise ConfigError("study run", ["--address names a Ray cluster: add --executor ray"])
    study = load_study(config)
    _check_arms(config, study, arm)
    # Relative data paths are the study file's, as `study check` reads them, not the working folder's.
    run_dir = run_study(
        study,
        output=output,
        force=force,
        arms=arm,
        base=config.parent,
        executor=executor,
        address=address,
        resources=Resources(num_cpus=num_cpus, num_gpus=num_gpus),
    )
    if not is_main_process():  # the other processes of an accelerate / torchrun launch only help train
        return
    order = [a.name for a in study.arms]
    write_report(run_dir, baseline=study.evaluation.baseline or order[0], order=order)
    _print_table(run_dir, order)
    _print_verdict(run_dir, order)


@study_app.command("speed")
def study_speed(
    config: Annotated[Path, typer.Argument(help="Study YAML file.")],
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: the file's).")] = None,
    arm: Annotated[list[str] | None, typer.Option(help="Measure only this compress arm (repeatable).")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Alternating rounds per compress arm.")] = 5,
    pairs: Annotated[int, typer.Option(min=1, help="Test pairs per predict call.")] = 512,
) -> None:
    """Measure finished compress arms against the trained arm they come from, side by side, each
    model in a process of its own; the speed-up goes into the result files and the report."""
    from sizewise.arms.compress import measure_speed
    from sizewise.report.render import write_report

    study = load_study(config)
    _check_arms(config, study, arm)
    measured = measure_speed(study, output=output, base=config.parent, arms=arm, rounds=rounds, pairs=pairs)
    order = [a.name for a in study.arms]
    write_report(output or study.output, baseline=study.evaluation.baseline or order[0], order=order)
    for name, s in measured.items():
        lo, hi = s.range
        out.print(f"{name}: {s.ratio:.2f}× ({lo:.2f}–{hi:.2f}) the pairs/s of {s.source}, {s.rounds} rounds")


@study_app.command("check")
def study_check(config: Annotated[Path, typer.Argument(help="Study YAML file.")]) -> None:
    """Validate a study file and list its arms, without training anything."""

    study = load_study(config)
    units = sum(len(study.units(a)) for a in study.arms)
    trainings = f" · {units} trainings (seeds × sizes)" if units > len(study.arms) else ""
    out.print(f"{config}: valid · {len(study.arms)} arms: {', '.join(a.name for a in study.arms)}{trainings}")


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A study's output folder.")],
    baseline: Annotated[str | None, typer.Option(help="Arm to test the others against.")] = None,
) -> None:
    """Re-render report.md and report.html from the result JSON files of a run folder."""
    from sizewise.report.render import write_report

    write_report(run_dir, baseline=baseline)
    order = _study_order(run_dir)
    _print_table(run_dir, order)
    _print_verdict(run_dir, order)


@app.command("compare")
def compare(
    a: Annotated[Path, typer.Argument(help="Arm A: its folder, its result.json, or a run folder (with --arm).")],
    b: Annotated[Path, typer.Argument(help="Arm B, the same way.")],
    arm: Annotated[str | None, typer.Option(help="Arm name to take from run folders.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the paired bootstrap.")] = 0,
) -> None:
    """Two arms on the same test set: metric differences (A − B) with intervals and the paired test."""
    from sizewise.report.render import load_arm
    from sizewise.report.tables import compare_arms, fmt_p

    ra, rb = load_arm(a, arm), load_arm(b, arm)
    try:
        cmp = compare_arms(ra, rb, seed=seed)
    except ValueError as exc:
        raise SizewiseError(str(exc)) from None
    name_a, name_b = f"A: {ra.description}", f"B: {rb.description}"
    table = Table("metric", name_a, name_b, "A − B [95% CI]", "bootstrap p", title=f"{cmp['pairs']:,} test pairs")
    for metric, m in cmp["metrics"].items():
        lo, hi = m["interval"]
        table.add_row(
            metric,
            f"{m['a']:.3f}",
            f"{m['b']:.3f}",
            f"{100 * m['difference']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]",
            fmt_p(m["bootstrap_p"]),
        )
    out.print(table)
    t = cmp["test"]
    p = t["p_value"]
    if t["name"] == "McNemar":
        counts = f"McNemar (exact): {t['a_only']} pairs only A gets right, {t['b_only']} only B"
    else:
        counts = (
            f"Two-level bootstrap over {cmp['seeds']} training seeds and the test pairs: on average "
            f"{t['a_only']:.0f} pairs only A gets right, {t['b_only']:.0f} only B"
        )
    out.print(
        f"{counts}; p {fmt_p(p)} — "
        + ("a significant difference (p < 0.05)." if p < 0.05 else "not significant: the difference may be chance."),
        highlight=False,
    )


def _study_order(run_dir: Path) -> list[str] | None:
    from sizewise.report.render import study_record

    study = study_record(run_dir)
    return [a["name"] for a in study.get("arms", [])] if study else None


def _print_verdict(run_dir: Path, order: list[str] | None = None) -> None:
    from sizewise.report.budgets import budget_verdict, curve_arms
    from sizewise.report.render import load_results
    from sizewise.report.tables import verdict

    results = load_results(run_dir, order)
    for line in verdict(results) + budget_verdict(curve_arms(results)):
        out.print(f"• {line}", highlight=False)
    out.print(f"report: {run_dir / 'report.html'} (and report.md)", highlight=False)


# -- single learners ----------------------------------------------------------------------------
def _parse_settings(settings: list[str] | None, config: Path | None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if config is not None:
        loaded = read_yaml_file(config)
        if not isinstance(loaded, dict):
            raise ConfigError(str(config), ["must hold a mapping of learner settings"])
        spec.update(loaded)
    for item in settings or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("--set", [f"{item!r} is not KEY=VALUE"])
        spec[key.strip()] = yaml.safe_load(value)
    return spec


@app.command("train")
def train(
    data: Annotated[str, typer.Argument(help="Training pairs: file, or dataset name[:split].")],
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder to save the model in: a new or empty folder, or a sizewise model folder (one with "
            "learner.json), which is replaced. Any other folder or file is refused, before training.",
        ),
    ],
    learner: Annotated[str, typer.Option(help="Learner kind.")] = "bilstm",
    setting: Annotated[list[str] | None, typer.Option("--set", help="A learner setting KEY=VALUE.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file of learner settings.")] = None,
    dev: Annotated[str | None, typer.Option(help="Dev pairs for early stopping.")] = None,
    scheme: Annotated[str, typer.Option(help="Label scheme: nli3 or binary.")] = "nli3",
    train_size: Annotated[int | None, typer.Option(help="Train on a stratified subset of this size.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the subset.")] = 0,
) -> None:
    """Train one learner and save it (safetensors + JSON)."""

    # Refuse an output that is not sizewise's to replace, or that cannot be written, before any training.
    check_replaceable(out_dir, MODEL_FILES)
    check_writable(out_dir)
    spec = {"kind": learner, **_parse_settings(setting, config)}
    model = create_learner(spec)
    train_data = load_pairs(data, scheme=scheme)
    if train_size and train_size < len(train_data):
        train_data = sample_subset(train_data, train_size, seed)
    dev_data = load_pairs(dev, scheme=scheme) if dev else None
    model.fit(train_data, dev_data)
    if not is_main_process():  # the other processes of an accelerate / torchrun launch only help train
        return
    model.save(out_dir)
    params = model.parameter_count()
    out.print(f"saved {learner} ({params['total']:,} parameters) to {out_dir}")


@app.command("evaluate")
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder.")],
    data: Annotated[str, typer.Argument(help="Labelled pairs: file, or dataset name:split.")],
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    scheme: Annotated[
        str | None,
        typer.Option(
            help="Score under this scheme: binary or nli3. Default: the model's own, binary on a binary "
            "dataset or for a binary model. An nli3 model scored as binary: p(entailment) against 1 − "
            "p(entailment), nli3 labels read as binary."
        ),
    ] = None,
) -> None:
    """Score a saved model: the six metrics, intervals, confusion matrix."""
    from sizewise.evaluation.metrics import METRIC_NAMES, compute_metrics, confusion_matrix
    from sizewise.evaluation.schemes import collapse_proba, load_scoring_pairs, model_inputs, scoring_note
    from sizewise.evaluation.stats import bootstrap_intervals, few_pairs_note

    meta = read_learner_meta(model_dir)
    pairs = load_scoring_pairs(data, meta["scheme"], scheme)
    model = load_learner(model_dir)
    proba = collapse_proba(model.predict_proba(model_inputs(pairs, meta["scheme"])), meta["scheme"], pairs.scheme.name)
    k = pairs.scheme.num_labels
    metrics = compute_metrics(pairs.labels, proba, k)
    ci = bootstrap_intervals(pairs.labels, proba.argmax(1), k, n_resamples=resamples, seed=seed)
    title = f"{model_dir} on {pairs.source} ({len(pairs):,} pairs)"
    note = scoring_note(meta["scheme"], pairs.scheme.name)
    table = Table("metric", "value", "95% CI", title=title if note is None else f"{title}\n{note}")
    if note is not None:
        table.min_width = len(note) + 4  # the note on one line of its own
    for name in METRIC_NAMES:
        value = metrics[name]
        interval = f"[{ci[name][0]:.3f}, {ci[name][1]:.3f}]" if name in ci else ""
        table.add_row(name, "–" if value is None else f"{value:.3f}", interval)
    out.print(table)
    cm = Table("true \\ predicted", *pairs.scheme.labels, title="confusion matrix")
    for label, row in zip(pairs.scheme.labels, confusion_matrix(pairs.labels, proba.argmax(1), k)):
        cm.add_row(label, *map(str, row))
    out.print(cm)
    few = few_pairs_note(len(pairs))
    if few is not None:
        err.print(f"note: {few}", highlight=False)


@app.command("predict")
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A saved model folder.")],
    source: Annotated[str, typer.Argument(help="Pairs to label: a file, or - for standard input.")] = "-",
    output: Annotated[Path | None, typer.Option("--out", "-o", help="Write here instead of stdout.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="Input format: tsv, csv or jsonl. Default: from the file name; tsv for standard input."
        ),
    ] = None,
) -> None:
    """Label pairs: one line per pair with the label and every class probability (TSV)."""

    if output is not None and output.is_dir():
        raise SizewiseError(f"{output}: is a folder; name a file to write the predictions to (-o FILE)")
    if output is not None:
        check_writable(output)  # before any predicting
    meta = read_learner_meta(model_dir)
    model = load_learner(model_dir)
    if source == "-":
        pairs = parse_pairs(sys.stdin.buffer.read(), "<stdin>", meta["scheme"], fmt=fmt or "tsv", require_labels=False)
    else:
        pairs = read_pairs(source, meta["scheme"], fmt=fmt, require_labels=False)
    proba = model.predict_proba(pairs)
    labels = model.labels_
    lines = ["\t".join(["label", *(f"p_{name}" for name in labels)])]
    for row in proba:
        lines.append("\t".join([labels[int(row.argmax())], *(f"{p:.6f}" for p in row)]))
    text = "\n".join(lines) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            atomic_write_text(output, text)
        except OSError as exc:
            raise SizewiseError(f"{output}: cannot write the predictions ({exc.strerror or exc})") from None
        err.print(f"wrote {len(pairs):,} predictions to {output}")


# -- learners -----------------------------------------------------------------------------------
@app.command("learners")
def learners(
    kind: Annotated[str | None, typer.Argument(help="One learner kind (default: every built-in kind).")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print Markdown tables instead.")] = False,
    write: Annotated[
        Path | None, typer.Option(help="Replace the learner-settings block of this Markdown file (README.md).")
    ] = None,
) -> None:
    """The learner kinds and their settings: name, default and what each does (one line each with --markdown)."""
    # Listing the settings imports every learner kind (torch, transformers): only this command pays for it.

    kinds = [kind] if kind else builtin_kinds()
    if write is not None:
        atomic_write_text(write, replace_block(write.read_text(encoding="utf-8"), settings_tables(kinds), str(write)))
        err.print(f"wrote the learner settings of {', '.join(kinds)} to {write}")
        return
    if markdown:
        sys.stdout.write(settings_tables(kinds) + "\n")
        return
    for name in kinds:
        table = Table("setting", "default", "what it does", title=name, title_justify="left")
        for setting, default, what in settings_rows(name, full=True):
            table.add_row(setting, default, what)
        out.print(table, markup=False)


def main() -> None:
    """Entry point: runs the app; a SizewiseError becomes one line on stderr and exit code 2. In a
    multi-process launch each process then ends through :func:`sizewise.distributed.close`."""
    try:
        _run_app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        close(code)  # returns outside a multi-process launch
        raise


def _run_app() -> None:
    try:
        app()
    except SizewiseError as exc:
        for line in str(exc).splitlines() or ["error"]:
            err.print(f"error: {line}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        # A write point not wrapped in an OutputError: still one line (the disk, not sizewise, refused).
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"error: {where}{exc.strerror or exc}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
