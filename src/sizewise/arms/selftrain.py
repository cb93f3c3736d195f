"""The self-trained arm (``selftrain: {teacher: ARM, method: simple, ...}``): another arm's trained
model labels the study's unlabelled pairs (``data.unlabelled``), and a student learns from the gold
training pairs plus the kept pseudo-labelled ones; with ``rounds: n`` each student teaches the next.

The student is by default a fresh learner of the teacher's kind and settings; ``student:`` names
another learner (a smaller one: distillation across sizes). The arm trains at every size and seed
of its teacher, from the teacher's model of the same unit. Its result records each round: pool size,
kept fraction, and the pseudo-labels' accuracy against the pool's hidden gold labels (where the set
has them; they never reach training).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from sizewise.arms.registry import ArmRun, ArmType, register_arm_type
from sizewise.errors import ConfigError
from sizewise.files import read_json_file
from sizewise.learners.base import (
    create_learner,
    learner_spec_problems,
    load_learner,
    read_learner_meta,
    spec_with_seed,
)
from sizewise.learners.training import fine_tune
from sizewise.report.document import Block, Heading, Paragraph, Table
from sizewise.report.tables import fmt_number
from sizewise.result import RESULT_FILE, ArmResult, ResultError
from sizewise.selftrain import (
    PseudoLabelSettings,
    pseudo_label,
    pseudo_label_accuracy,
    soften,
    student_data,
    teacher_passes,
)

logger = logging.getLogger(__name__)


class SelfTrainArmConfig(PseudoLabelSettings):
    """A self-trained arm: the teacher arm, how its predictions become labels, and the student."""

    teacher: str = Field(description="The arm whose trained model labels the unlabelled pairs (an earlier arm).")
    student: dict[str, Any] | None = Field(
        None, description="The student's learner spec (default: the teacher's kind and settings, trained anew)."
    )
    weight: float = Field(1.0, gt=0.0, description="Loss weight of a pseudo-labelled pair (a gold pair weighs 1).")
    rounds: int = Field(1, ge=1, le=10, description="Rounds of self-training: each round's student labels the next.")
    init: Literal["scratch", "teacher"] = Field(
        "scratch",
        description="The student's starting weights: its own initial ones, or the teacher's (then the student "
        "is the teacher's model, trained further; bilstm and transformer teachers).",
    )
    soft: bool = Field(
        False,
        description="Train the student on the teacher's probabilities on the kept pairs (distillation) instead "
        "of its labels (bilstm and transformer students).",
    )
    temperature: float = Field(1.0, gt=0.0, description="soft: the teacher's probabilities at this temperature.")

    @field_validator("student")
    @classmethod
    def _valid_student(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            problems = learner_spec_problems(value, "student")
            if problems:
                raise ValueError("; ".join(problems))
        return value


@register_arm_type("selftrain")
class SelfTrainArm(ArmType):
    """An arm trained on gold pairs plus a teacher arm's pseudo-labels on unlabelled pairs."""

    config_model = SelfTrainArmConfig
    uses_unlabelled = True

    def learner_kind(self, spec: SelfTrainArmConfig) -> str:
        """The student's kind (the teacher's when no student is named: resolved when the study is checked)."""
        return str(spec.student["kind"]) if spec.student else "selftrained"

    def model_kind(self, spec: SelfTrainArmConfig, earlier: Mapping[str, str]) -> str:
        """The student's kind: the one named, else the teacher's."""
        return str(spec.student["kind"]) if spec.student else earlier.get(spec.teacher, "selftrained")

    def sources(self, spec: SelfTrainArmConfig) -> list[str]:
        """The teacher arm."""
        return [spec.teacher]

    def check(self, spec: SelfTrainArmConfig, earlier: Mapping[str, str]) -> list[str]:
        """The teacher must be an earlier arm with a model that predicts (not the majority baseline)."""
        if spec.teacher not in earlier:
            return super().check(spec, earlier)
        if earlier[spec.teacher] == "majority":
            return [f"selftrain.teacher: arm {spec.teacher} is the majority baseline, which labels every pair alike"]
        return []

    def run(self, run: ArmRun) -> ArmResult:
        """Label the pool with the teacher, train the student on gold + pseudo-labels (for each round),
        all inside the cost meter; then score the last student."""
        spec: SelfTrainArmConfig = run.spec
        teacher_dir = run.source_model(spec.teacher)
        pool = run.pool
        student_spec = self._student_spec(spec, teacher_dir, run.seed)
        rounds: list[dict[str, Any]] = []
        with run.meter() as meter:
            current, labeller = load_learner(teacher_dir), f"arm {spec.teacher}"
            for number in range(1, spec.rounds + 1):
                start = time.perf_counter()
                logger.info(
                    "arm %s: round %d, %s labels %d unlabelled pairs (%s)",
                    run.name,
                    number,
                    labeller,
                    len(pool.pairs),
                    spec.method,
                )
                passes = teacher_passes(current, pool.pairs, spec, seed=run.seed * 100 + number)
                pseudo = pseudo_label(passes, spec)
                seconds = time.perf_counter() - start
                rounds.append(_round_record(number, labeller, pseudo, pool.gold, seconds))
                logger.info(
                    "arm %s: round %d keeps %d of %d pseudo-labels%s",
                    run.name,
                    number,
                    int(pseudo.kept.sum()),
                    len(pool.pairs),
                    _accuracy_note(rounds[-1]["pseudo_accuracy"]),
                )
                if not pseudo.kept.any():
                    logger.warning(
                        "arm %s: round %d keeps no pseudo-label (none reaches threshold %s): the student trains on "
                        "the gold pairs alone",
                        run.name,
                        number,
                        spec.threshold,
                    )
                soft = soften(passes.deterministic, spec.temperature) if spec.soft else None
                data = student_data(run.train, pool.pairs, pseudo, spec.weight, soft)
                if spec.init == "teacher":
                    # The student goes on from the model that labelled the pool (its teacher, then each round's).
                    student = load_learner(teacher_dir) if number == 1 else current
                    with student.forward_context():
                        run_ = fine_tune(
                            student,
                            data.train,
                            dev=run.dev,
                            epochs=int(student_spec.get("epochs", 3)),
                            learning_rate=student.learning_rate,
                            patience=int(student_spec.get("patience", 2)),
                            name=f"{student.kind} student",
                            **data.fit_kwargs(),
                        )
                    student.history_, student.best_epoch_ = run_.history, run_.best_epoch
                    student.network_.eval()
                else:
                    student = create_learner(student_spec)
                    student.fit(data.train, run.dev, **data.fit_kwargs())
                current, labeller = student, f"the round-{number} student"
        teacher_cost = _teacher_cost(teacher_dir)
        section = {
            "teacher": spec.teacher,
            "method": spec.method,
            "student": student_spec["kind"],
            "pool_source": pool.pairs.source,
            "pool_rows": len(pool.pairs),
            "removed_overlap": pool.removed,
            "teacher_train_seconds": teacher_cost[0],
            "teacher_train_energy_kwh": teacher_cost[1],
            "rounds": rounds,
        }
        recipe = {"selftrain": {**spec.model_dump(), "student": student_spec}}
        return run.score(current, meter, recipe, {"selftraining": section})

    @staticmethod
    def _student_spec(spec: SelfTrainArmConfig, teacher_dir: Path, seed: int) -> dict[str, Any]:
        """The student's learner spec with the unit's seed: the named one, else the teacher's own."""
        if spec.init == "teacher" and spec.student is not None:
            raise ConfigError("selftrain", ["init teacher: the student is the teacher's model; name no student"])
        if spec.init == "teacher" and read_learner_meta(teacher_dir)["kind"] not in ("bilstm", "transformer"):
            raise ConfigError("selftrain", ["init teacher: needs a bilstm or transformer teacher"])
        if spec.student is not None:
            student = dict(spec.student)
        else:
            meta = read_learner_meta(teacher_dir)
            student = {"kind": meta["kind"], **meta.get("config", {})}
            student.pop("seed", None)
        student = spec_with_seed(student, seed, override=False)
        accepts = inspect.signature(create_learner(student).fit).parameters
        if spec.soft and "soft_labels" not in accepts:
            raise ConfigError("selftrain", [f"soft: a {student['kind']} student cannot train on soft labels"])
        if spec.weight != 1.0 and "sample_weight" not in accepts:
            raise ConfigError(
                "selftrain",
                [f"weight {spec.weight}: a {student['kind']} student cannot weight its pairs; use weight 1"],
            )
        return student

    def result_source(self, result: ArmResult) -> str | None:
        """The teacher arm: the verdict counts its training toward this arm's cost."""
        return result.selftraining.teacher if result.selftraining is not None else None

    def report_blocks(self, results: list[ArmResult], images: Mapping[str, bool]) -> list[Block]:
        """The self-training section: per arm and round, the pool, what was kept and how right it was."""
        mine = [r for r in results if r.selftraining is not None]
        if not mine:
            return []
        rows = []
        for r in mine:
            st = r.selftraining
            assert st is not None
            for rd in st.rounds:
                rows.append(
                    [
                        r.description,
                        st.method,
                        str(rd.round),
                        f"{rd.pool:,}",
                        f"{rd.kept_fraction:.2f}",
                        fmt_number(rd.pseudo_accuracy),
                        fmt_number(rd.pool_accuracy),
                        fmt_number(rd.decided_by_vote),
                    ]
                )
        return [
            Heading("Self-training"),
            Paragraph(
                "Each self-trained arm's teacher labels the unlabelled pairs; the student trains on the gold pairs "
                "plus the kept pseudo-labelled ones. Pseudo-label accuracy compares the kept labels (and all labels "
                "of the pool) with the pool's gold labels, which are hidden from training. A self-trained arm's train "
                "time and energy count labelling and the student's training; the verdict adds its teacher's. Over "
                "seeds, each column is the mean; – where a seed kept no pair (or the pool has no gold labels)."
            ),
            Table(
                ["arm", "method", "round", "pool", "kept", "pseudo-label acc (kept)", "acc (all)", "decided by vote"],
                rows,
            ),
        ]


def _round_record(number: int, labeller: str, pseudo: Any, gold: Any, seconds: float) -> dict[str, Any]:
    return {
        "round": number,
        "teacher": labeller,
        "pool": len(pseudo.labels),
        "kept": int(pseudo.kept.sum()),
        "kept_fraction": pseudo.kept_fraction,
        "decided_by_vote": None if pseudo.by_vote is None else float(pseudo.by_vote.mean()),
        "gold": int((gold >= 0).sum()),
        "pseudo_accuracy": pseudo_label_accuracy(pseudo.labels, pseudo.kept, gold),
        "pool_accuracy": pseudo_label_accuracy(pseudo.labels, np.ones(len(pseudo.labels), dtype=bool), gold),
        "label_seconds": round(seconds, 3),
    }


def _accuracy_note(accuracy: float | None) -> str:
    return "" if accuracy is None else f" (accuracy against the hidden gold labels: {accuracy:.3f})"


def _teacher_cost(teacher_dir: Path) -> tuple[float | None, float | None]:
    """The teacher unit's training time and energy, from its result file next to its model."""
    try:
        record = read_json_file(teacher_dir.parent / RESULT_FILE, ResultError, "result file")
        cost = record["cost"]
        return float(cost["train_seconds"]), cost.get("train_energy_kwh")
    except (ResultError, KeyError, TypeError, ValueError):
        return None, None
