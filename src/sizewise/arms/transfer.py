"""The transfer arm (``transfer: {from: ARM, epochs: 3}``): another arm's trained model, trained further
on this study's pairs — intermediate-task training (MultiNLI, then RTE; SNLI, then MultiNLI).

The source arm usually trains on other pairs (its own ``data:`` block). Its classification head is
kept when the label schemes match; from a 3-class source to a binary study it is collapsed (the
entailment row kept, the not-entailment row started from the mean of the neutral and contradiction
rows, its bias from their log-sum-exp), or started anew with ``head: new``. A BiLSTM keeps its
source's vocabulary (words it never saw stay unknown); a transformer keeps its adapter, if any, and
trains it further. The verdict counts the source's training toward this arm's cost, and the report
lists each transfer arm's chain of sources.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sizewise.arms.registry import ArmRun, ArmType, register_arm_type
from sizewise.data.labels import SCHEMES, LabelScheme
from sizewise.errors import ConfigError
from sizewise.learners.base import load_learner
from sizewise.learners.network import NetworkLearner
from sizewise.learners.training import fine_tune
from sizewise.report.document import Block, Heading, Paragraph, Table
from sizewise.result import ArmResult

logger = logging.getLogger(__name__)

Head = Literal["auto", "keep", "collapse", "new"]


class TransferArmConfig(BaseModel):
    """A transfer arm: the source arm, and how its model trains on this study's pairs."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    source: str = Field(alias="from", description="The arm whose trained model starts this arm (an earlier arm).")
    epochs: int = Field(3, ge=1, description="Epochs on this study's training pairs (best dev epoch kept).")
    learning_rate: float | None = Field(None, gt=0, description="Adam learning rate (default: the source's own).")
    batch_size: int | None = Field(None, ge=1, description="Pairs per batch (default: the source's own).")
    patience: int = Field(2, ge=0, description="Stop after this many epochs without dev improvement (0: never).")
    head: Head = Field(
        "auto",
        description="The classification head: keep it (same labels), collapse a 3-class head onto binary, or "
        "start a new one; auto keeps or collapses as the schemes ask.",
    )


def adapt_head(learner: NetworkLearner, scheme: LabelScheme, mode: Head, seed: int) -> str:
    """Give ``learner``'s network a head for ``scheme``; returns what was done (``keep``, ``collapse``,
    ``new``). Its label scheme becomes ``scheme``."""
    old = learner.scheme_
    if mode == "auto":
        mode = (
            "keep"
            if old.name == scheme.name
            else "collapse"
            if (old.name, scheme.name) == ("nli3", "binary")
            else "new"
        )
    if mode == "keep":
        if old.name != scheme.name:
            raise ConfigError("transfer", [f"head keep: the source predicts {old.name}, this study {scheme.name}"])
        return mode
    if mode == "collapse" and (old.name, scheme.name) != ("nli3", "binary"):
        raise ConfigError("transfer", [f"head collapse maps nli3 onto binary, not {old.name} onto {scheme.name}"])
    layers = learner.head_layers()
    if not layers:
        raise ConfigError("transfer", [f"no layer with {old.num_labels} outputs found in the {learner.kind} network"])
    torch.manual_seed(seed)
    for parent, name, layer in layers:
        new = nn.Linear(layer.in_features, scheme.num_labels, bias=layer.bias is not None).to(layer.weight.device)
        if mode == "collapse":
            with torch.no_grad():
                new.weight[0] = layer.weight[0]  # entailment
                new.weight[1] = layer.weight[1:].mean(0)  # not entailment: neutral and contradiction
                if layer.bias is not None:
                    new.bias[0] = layer.bias[0]
                    new.bias[1] = torch.logsumexp(layer.bias[1:], 0)
        new.weight.requires_grad_(layer.weight.requires_grad)
        setattr(parent, name, new)
    config = getattr(learner.network_, "config", None)
    if config is not None and hasattr(config, "num_labels"):  # a transformer saves these with its weights
        config.num_labels = scheme.num_labels
        config.id2label = dict(enumerate(scheme.labels))
        config.label2id = {label: i for i, label in enumerate(scheme.labels)}
    learner.scheme_ = scheme
    return mode


@register_arm_type("transfer")
class TransferArm(ArmType):
    """An arm that starts from another arm's trained model and trains it on this study's pairs."""

    config_model = TransferArmConfig
    same_unit_sources = False

    def learner_kind(self, spec: TransferArmConfig) -> str:
        """The source's kind is only known from its model: ``transferred``."""
        return "transferred"

    def model_kind(self, spec: TransferArmConfig, earlier: Mapping[str, str]) -> str:
        """The source's kind: the model is the source's, trained further."""
        return earlier.get(spec.source, "transferred")

    def sources(self, spec: TransferArmConfig) -> list[str]:
        """The source arm."""
        return [spec.source]

    def check(self, spec: TransferArmConfig, earlier: Mapping[str, str]) -> list[str]:
        """The source must be an earlier arm whose model is one torch network."""
        if spec.source not in earlier:
            return super().check(spec, earlier)
        kind = earlier[spec.source]
        if kind not in ("bilstm", "transformer"):
            return [f"transfer.from: arm {spec.source} is a {kind!r} model; transfer needs a bilstm or transformer"]
        return []

    def run(self, run: ArmRun) -> ArmResult:
        """Load the source's model, adapt its head, train it on the study's pairs inside the meter, score it."""
        spec: TransferArmConfig = run.spec
        source_dir = run.source_model(spec.source)
        learner = load_learner(source_dir)
        if not isinstance(learner, NetworkLearner):
            raise ConfigError("transfer", [f"arm {spec.source}: a {learner.kind} model cannot be trained further"])
        scheme = SCHEMES[run.train.scheme.name]
        with run.meter() as meter:
            head = adapt_head(learner, scheme, spec.head, run.seed)
            logger.info(
                "arm %s: %s from arm %s (head: %s) on %d pairs",
                run.name,
                learner.kind,
                spec.source,
                head,
                len(run.train),
            )
            with learner.forward_context():
                trained = fine_tune(
                    learner,
                    run.train,
                    dev=run.dev,
                    epochs=spec.epochs,
                    learning_rate=spec.learning_rate or learner.learning_rate,
                    batch_size=spec.batch_size,
                    patience=spec.patience,
                    name=f"{learner.kind} transfer",
                )
            learner.network_.eval()
        learner.history_, learner.best_epoch_ = trained.history, trained.best_epoch
        return run.score(learner, meter, {"transfer": {**spec.model_dump(), "head_used": head}})

    def result_source(self, result: ArmResult) -> str | None:
        """The ``from`` of the result's transfer block."""
        block = result.config.block
        return block.get("from") if isinstance(block, dict) else None

    def report_blocks(self, results: list[ArmResult], images: Mapping[str, bool]) -> list[Block]:
        """Each transfer arm's chain of sources, with the pairs each link trained on."""
        by_arm = {r.arm: r for r in results}
        rows = []
        for r in results:
            if r.arm_type != "transfer":
                continue
            chain, arm, seen = [], r, set()
            while arm is not None and arm.arm not in seen:
                seen.add(arm.arm)
                chain.append(f"{arm.description} ({arm.data.train.rows:,} pairs of {arm.data.train.source})")
                source = self.result_source(arm) if arm.arm_type == "transfer" else None
                arm = by_arm.get(source) if source else None
            rows.append([r.description, " ← ".join(chain), str(r.config.block.get("head_used", "–"))])
        if not rows:
            return []
        return [
            Heading("Transfer"),
            Paragraph(
                "Each transfer arm trained its source's model further on the study's pairs; the chain runs from the "
                "arm back to the first model. Its train time and energy are its own; the verdict adds its sources'."
            ),
            Table(["arm", "chain of sources", "head"], rows),
        ]
