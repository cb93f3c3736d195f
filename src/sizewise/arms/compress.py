"""The compress arm (``compress: {from: ARM, steps: [...]}``, or a sweep ``{from, sparsity, int8}``):
another arm's trained model, pruned and / or quantized, then scored like any arm. Its training cost
is the cost of compressing; the report sets it beside the trained arm it descends from (the
compression table and the accuracy-against-size plot), and ``sizewise study speed`` times it side by
side with that arm (:func:`measure_speed`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import matplotlib.ticker
from pydantic import BaseModel, ConfigDict, Field, model_validator

from sizewise.arms.lineage import root_arm, source_arm
from sizewise.arms.registry import ArmRun, ArmType, Expanded, register_arm_type
from sizewise.config import StudyConfig
from sizewise.cost.speed import side_by_side, speedup
from sizewise.environment import environment
from sizewise.errors import ConfigError
from sizewise.learners.base import LEARNER_FILE, compressible_kinds, load_learner
from sizewise.progress import progress_bar
from sizewise.report.document import Block, Heading, Image, Paragraph, Table
from sizewise.report.plots import plt, save_figure
from sizewise.report.tables import fmt_number
from sizewise.result import RESULT_FILE, ArmResult, Cost, SpeedVsSource
from sizewise.study import load_study_test

logger = logging.getLogger(__name__)

#: The accuracy-against-size plot of the report.
COMPRESSION_PNG = "accuracy_vs_size_on_disk.png"


class CompressArmConfig(BaseModel):
    """A compress arm: another arm's trained model, pruned and / or quantized.

    Either ``steps`` (one arm, the transforms in order) or a sweep: ``sparsity`` levels crossed with
    ``int8`` (each becomes its own arm, named ``<name>-p50``, ``<name>-p50-int8``, ``<name>-int8``).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    source: str = Field(alias="from", description="The arm whose trained model is compressed (an earlier arm).")
    steps: list[dict[str, Any]] | None = Field(
        None,
        description="Transforms in order: {transform: prune, sparsity, method}, {transform: prune_structured, "
        "fraction}, {transform: prune_heads, fraction}, {transform: recover, epochs}, {transform: quantize_int8}.",
    )
    sparsity: list[float] | None = Field(
        None, description="Sweep: global magnitude pruning levels in [0, 1); 0 = not pruned."
    )
    int8: list[bool] = Field([False, True], description="Sweep: each level without and / or with int8 quantization.")
    method: Literal["global_magnitude", "layer_magnitude"] = Field(
        "global_magnitude", description="Sweep: how the pruned weights are picked."
    )
    recover_epochs: int = Field(0, ge=0, description="Sweep: fine-tuning epochs after pruning (0 = none).")
    recover_pairs: int | None = Field(
        None, ge=1, description="Sweep: fine-tune on a random subset of this many training pairs (None: all)."
    )

    @model_validator(mode="after")
    def _one_form(self) -> CompressArmConfig:
        # The transforms import torch: loaded when a compress arm is read, not when a report is rendered.
        from sizewise.compress.transforms import parse_step

        if (self.steps is None) == (self.sparsity is None):
            raise ValueError("give either steps (one arm) or sparsity (a sweep)")
        if self.steps is not None:
            if not self.steps:
                raise ValueError("steps: at least one transform")
            problems = []
            for i, step in enumerate(self.steps):
                try:
                    parse_step(step)
                except ConfigError as exc:
                    problems.extend(f"steps[{i}]: {p}" for p in exc.problems)
            if problems:
                raise ValueError("; ".join(problems))
        else:
            assert self.sparsity is not None
            bad = [s for s in self.sparsity if not 0.0 <= s < 1.0]
            if bad:
                raise ValueError(f"sparsity: levels must lie in [0, 1), got {bad}")
            if not self.int8:
                raise ValueError("int8: list false, true or both")
        return self

    def sweep(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """The arms a sweep makes, as ``(name suffix, steps)`` pairs (one ``("", steps)`` for steps)."""
        if self.steps is not None:
            return [("", [dict(s) for s in self.steps])]
        out = []
        for level in dict.fromkeys(self.sparsity or []):
            for quantize in dict.fromkeys(self.int8):
                if level == 0 and not quantize:
                    continue  # that is the source arm itself
                steps: list[dict[str, Any]] = []
                suffix = ""
                if level > 0:
                    steps.append({"transform": "prune", "sparsity": level, "method": self.method})
                    if self.recover_epochs:
                        recover: dict[str, Any] = {"transform": "recover", "epochs": self.recover_epochs}
                        if self.recover_pairs is not None:
                            recover["pairs"] = self.recover_pairs
                        steps.append(recover)
                    suffix += f"-p{round(level * 100)}"
                if quantize:
                    steps.append({"transform": "quantize_int8"})
                    suffix += "-int8"
                out.append((suffix, steps))
        return out


def steps_text(steps: list[dict[str, Any]]) -> str:
    """Transforms with their settings, for log lines: 'prune sparsity 0.5 → quantize_int8'."""
    parts = []
    for step in steps:
        settings = ", ".join(f"{k} {v}" for k, v in step.items() if k != "transform")
        parts.append(f"{step['transform']} {settings}".strip())
    return " → ".join(parts)


@register_arm_type("compress")
class CompressArm(ArmType):
    """An arm made by compressing an earlier arm's saved model; a sweep expands into one arm per
    setting, each with explicit steps and the description ``<description> <suffix>``."""

    config_model = CompressArmConfig

    sized = False
    same_unit_sources = False

    def learner_kind(self, spec: CompressArmConfig) -> str:
        """Compressed models are ``compressed`` learners (an ensemble's members are compressed each)."""
        return "compressed"

    def sources(self, spec: CompressArmConfig) -> list[str]:
        """The arm whose model is compressed."""
        return [spec.source]

    def check(self, spec: CompressArmConfig, earlier: Mapping[str, str]) -> list[str]:
        """The source must be an earlier arm of a kind that compresses."""
        if spec.source not in earlier:
            return [f"compress.from {spec.source!r} is not the name of an earlier arm"]
        kind = earlier[spec.source]
        if kind not in compressible_kinds():
            return [f"arm {spec.source} is a {kind!r} learner, which cannot be compressed"]
        return []

    def expand(self, name: str, description: str | None, spec: CompressArmConfig) -> list[Expanded]:
        """One arm per setting of a sweep (the arm itself for steps), each written out as steps."""
        made = spec.sweep()
        label = description or name
        return [
            Expanded(
                name + suffix,
                f"{label} {suffix[1:]}" if len(made) > 1 else label,
                CompressArmConfig(source=spec.source, steps=steps),
            )
            for suffix, steps in made
        ]

    def run(self, run: ArmRun) -> ArmResult:
        """Compress the source arm's saved model inside the cost meter (recover steps train on the
        study's train pairs), then score it."""
        from sizewise.compress import compress  # torch, see _one_form

        spec: CompressArmConfig = run.spec
        source = run.source_model(spec.source)
        logger.info("arm %s: compressing arm %s (%s)", run.name, spec.source, steps_text(spec.steps or []))
        with run.meter() as meter:
            learner = compress(load_learner(source), spec.steps or [], run.train)
        return run.score(learner, meter, {"compress": spec.model_dump()})

    def result_source(self, result: ArmResult) -> str | None:
        """The ``from`` of the result's compress block."""
        block = result.config.block
        return block.get("from") if isinstance(block, dict) else None

    def draw(self, results: list[ArmResult], run_dir: Path) -> dict[str, bool]:
        """The accuracy-against-size plot."""
        return {COMPRESSION_PNG: plot_compression(results, run_dir / COMPRESSION_PNG)}

    def report_blocks(self, results: list[ArmResult], images: Mapping[str, bool]) -> list[Block]:
        """The compression section: its table and plot."""
        header, rows = compression_table(results)
        if not rows:
            return []
        blocks: list[Block] = [
            Heading("Compression"),
            Paragraph(
                "Compress arms against the trained arm they were made from (Δ accuracy, size and speed-up are "
                "relative to it); their train time is the time taken to compress. Size on disk counts the saved "
                "files: pruned matrices as bitmask + values, int8 weights as int8. A speed-up marked ‡ was "
                "measured side by side with the source model (`sizewise study speed`: alternating rounds, each "
                "model in a process of its own, median of the per-round ratios); unmarked ones divide the two "
                "arms' own throughputs, measured when each was scored."
            ),
            Table(header, rows),
        ]
        if images.get(COMPRESSION_PNG):
            blocks.append(Image(COMPRESSION_PNG, "accuracy against size on disk, one line per trained model"))
        return blocks


# -- the report -----------------------------------------------------------------------------------
def is_compressed(result: ArmResult) -> bool:
    """Whether ``result`` is a compress arm's."""
    return result.arm_type == CompressArm.key


def steps_label(result: ArmResult) -> str:
    """A compress arm's transforms in short, as each transform labels itself: 'prune 50% → int8'."""
    # The transform registry lives in the torch-using compress package: loaded only for compress arms.
    from sizewise.compress.transforms import step_label

    return " → ".join(step_label(step) for step in result.config.block.get("steps") or [])


def _speedup_cell(cost: Cost, root: ArmResult) -> str:
    """Measured side by side against the root arm (``sizewise study speed``) where it was, else the
    ratio of the two arms' own inference measurements (taken at different times)."""
    side = cost.speed_vs_source
    if side is not None and side.source == root.arm:
        return f"{side.ratio:.2f}× ‡"
    return f"{cost.inference_pairs_per_s / root.cost.inference_pairs_per_s:.2f}×"


def compression_table(results: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    """Each compress arm beside the trained arm it descends from: accuracy change, size on disk and
    throughput as ratios of that arm's. Empty rows when the study has no compress arms."""
    by_arm = {r.arm: r for r in results}
    level = results[0].intervals.level if results else 0.95
    header = [
        "arm",
        "from",
        "transforms",
        f"accuracy [{100 * level:.0f}% CI]",
        "Δ accuracy",
        "size on disk",
        "size ratio",
        "nonzero params",
        "inference pairs/s",
        "speed-up",
    ]
    rows = []
    for r in results:
        if not is_compressed(r):
            continue
        root = by_arm[root_arm(r, by_arm)]
        c, rc = r.cost, root.cost
        lo, hi = r.intervals.accuracy
        nonzero = c.parameters_nonzero
        rows.append(
            [
                r.description,
                root.description,
                steps_label(r),
                f"{fmt_number(r.metrics.accuracy)} [{lo:.3f}, {hi:.3f}]",
                f"{100 * (r.metrics.accuracy - root.metrics.accuracy):+.1f} pts",
                f"{c.size_on_disk_mb:.1f} MB",
                f"{c.size_on_disk_mb / rc.size_on_disk_mb:.2f}×",
                "–" if nonzero is None else f"{nonzero / 1e6:.2f}M of {c.parameters_total / 1e6:.2f}M",
                f"{c.inference_pairs_per_s:,.0f}",
                _speedup_cell(c, root),
            ]
        )
    return header, rows


def plot_compression(results: list[ArmResult], path: Path) -> bool:
    """Accuracy (with its interval) against size on disk, one line per trained model and the compress
    arms made from it, smallest first. Returns False when the study has no compress arms."""
    by_arm = {r.arm: r for r in results}
    lines: dict[str, list[ArmResult]] = {}
    for r in results:
        if is_compressed(r):
            lines.setdefault(root_arm(r, by_arm), []).append(r)
    if not lines:
        return False
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for i, (root, arms) in enumerate(lines.items()):
        color = f"C{i % 10}"
        points = sorted([by_arm[root], *arms], key=lambda r: r.cost.size_on_disk_mb)
        xs = [r.cost.size_on_disk_mb for r in points]
        ys = [r.metrics.accuracy for r in points]
        err = [
            [y - r.intervals.accuracy[0] for r, y in zip(points, ys)],
            [r.intervals.accuracy[1] - y for r, y in zip(points, ys)],
        ]
        ax.errorbar(xs, ys, yerr=err, fmt="o", color=color, capsize=3)
        # the line: the best accuracy reached at each size or less, smallest to largest
        best = [max(ys[: j + 1]) for j in range(len(ys))]
        ax.step(xs, best, where="post", color=color, label=by_arm[root].description)
        for r, x, y in zip(points, xs, ys):
            tag = "fp32" if r.arm == root else steps_label(r).replace("prune ", "p")
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=6)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("size on disk, MB (log scale; line: best accuracy at that size or less)")
    ax.set_ylabel("test accuracy (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("compression: better is up and to the left", fontsize=9)
    save_figure(fig, path)
    return True


# -- sizewise study speed -------------------------------------------------------------------------
def measure_speed(
    config: StudyConfig,
    *,
    output: str | Path | None = None,
    base: Path | None = None,
    arms: list[str] | None = None,
    rounds: int = 5,
    pairs: int = 512,
) -> dict[str, SpeedVsSource]:
    """Measure each finished compress arm (those in ``arms``, or all) against the trained arm its
    model descends from, side by side (:func:`sizewise.cost.speed.side_by_side`: ``rounds``
    alternating rounds on the first ``pairs`` test pairs, each model in a process of its own); the
    result goes into the arm's result file as ``cost.speed_vs_source``. Returns what was measured,
    by arm. Nothing is trained: the saved models are measured as they are (an arm whose result no
    longer matches the study file is measured with a warning). The caller writes the report again.
    """
    out = Path(output or config.output)
    chosen = [a for a in config.arms if a.arm_type == CompressArm.key and (arms is None or a.name in arms)]
    if not chosen:
        raise ConfigError(config.name, ["no compress arm to measure" + (f" among {', '.join(arms)}" if arms else "")])
    several = [a.name for a in chosen if not config.single_unit(a)]
    if several:
        raise ConfigError(
            config.name,
            [f"arm {name}: trains once per seed; study speed times arms trained once (one seed)" for name in several],
        )
    results: dict[str, ArmResult] = {}
    for arm in config.arms:
        path = out / arm.name / RESULT_FILE
        if path.is_file() and (out / arm.name / "model" / LEARNER_FILE).is_file():
            results[arm.name] = ArmResult.read(path)
    problems = []
    roots = {}
    for arm in chosen:
        if arm.name not in results:
            problems.append(f"arm {arm.name}: no result and model in {out / arm.name}; run it first")
            continue
        roots[arm.name] = root_arm(results[arm.name], results)
        missing = source_arm(results[roots[arm.name]])
        if missing is not None:  # the chain stops at an arm whose source is missing
            problems.append(f"arm {missing}: no result and model in {out / missing}; run it first")
    if problems:
        raise ConfigError(config.name, sorted(set(problems)))
    test = load_study_test(config, base)
    code = environment()  # the code as it is when measuring starts
    involved = {n for a in chosen for n in (a.name, roots[a.name])}
    stale = sorted(n for n in involved if results[n].fingerprint != config.arm_fingerprint(config.arm(n)))
    if stale:
        logger.warning(
            "arms whose results no longer match the study file (their saved models are measured as they are): %s",
            ", ".join(stale),
        )
    measurements = {}
    for arm in chosen:
        root = roots[arm.name]
        logger.info("arm %s: measuring its speed against arm %s, %d rounds side by side", arm.name, root, rounds)
        with progress_bar() as bar:
            task = bar.add_task(f"{arm.name} vs {root}", total=2 * rounds, info="")

            def advance(_round: int, name: str, speed: dict[str, float], task: Any = task) -> None:
                bar.update(task, advance=1, info=f"{name}: {speed['pairs_per_s']:,.0f} pairs/s")

            models = {root: out / root / "model", arm.name: out / arm.name / "model"}
            runs = side_by_side(models, test, rounds=rounds, pairs=pairs, on_result=advance)
        measured = SpeedVsSource(
            source=root,
            **speedup(runs, arm.name, root),
            pairs=min(pairs, len(test)),
            isolated=True,
            measured_at=time.time(),
            environment=code,
        )
        result = results[arm.name]
        result.cost.speed_vs_source = measured
        result.write(out / arm.name / RESULT_FILE)
        measurements[arm.name] = measured
        logger.info("arm %s: %.2f× the pairs/s of arm %s", arm.name, measured.ratio, root)
    return measurements
