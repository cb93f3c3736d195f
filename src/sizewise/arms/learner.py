"""The trained arm (``learner: {kind: ..., settings}``): one learner trained on the study's train
pairs (early-stopping on dev where its kind does) and scored on its test pairs."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import RootModel, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from sizewise.arms.registry import ArmRun, ArmType, register_arm_type
from sizewise.learners.base import create_learner, learner_config_class, learner_kinds, spec_with_seed
from sizewise.result import ArmResult

logger = logging.getLogger(__name__)


class LearnerSpec(RootModel[dict[str, Any]]):
    """A learner spec: ``{kind: bilstm|ensemble|transformer|..., settings...}``; the settings are
    checked by the kind's own config class."""

    @model_validator(mode="after")
    def _valid_settings(self) -> LearnerSpec:
        kind = self.root.get("kind")
        try:
            config_cls = learner_config_class(kind)  # type: ignore[arg-type]
        except KeyError:
            context = {"kind": repr(kind), "known": ", ".join(learner_kinds())}
            message = PydanticCustomError(
                "learner_kind", "{kind} is not a learner kind; choose one of {known}", context
            )
            error = {"type": message, "loc": ("kind",), "input": kind}
            raise ValidationError.from_exception_data("LearnerSpec", [error]) from None  # type: ignore[list-item]
        config_cls.model_validate({k: v for k, v in self.root.items() if k != "kind"})
        return self


@register_arm_type("learner")
class TrainedArm(ArmType):
    """An arm that trains a learner. The learner gets the study seed unless its spec names one; a
    learner whose settings ask for an epoch curve is scored on the test pairs after each epoch (for
    the curve only, never for model selection)."""

    config_model = LearnerSpec

    def parse(self, block: Any) -> dict[str, Any]:
        """The learner spec, checked (as the mapping it was given, not filled with defaults)."""
        return super().parse(block).root

    def dump(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The spec as written in the study file."""
        return spec

    def learner_kind(self, spec: dict[str, Any]) -> str:
        """The spec's kind."""
        return str(spec.get("kind"))

    def distributed(self, spec: dict[str, Any]) -> bool:
        """Transformers train across the processes of an accelerate / torchrun launch."""
        return spec.get("kind") == "transformer"

    def run(self, run: ArmRun) -> ArmResult:
        """Train the learner inside the cost meter, then score it."""
        spec = spec_with_seed(run.spec, run.seed, override=False)
        learner = create_learner(spec)
        fit_kwargs: dict[str, Any] = {"monitor": run.test} if spec.get("epoch_curve") else {}
        logger.info("arm %s: training %s on %d pairs", run.name, spec["kind"], len(run.train))
        with run.meter() as meter:
            learner.fit(run.train, run.dev, **fit_kwargs)
        return run.score(learner, meter, {"learner": spec})

    def help_train(self, run: ArmRun) -> None:
        """Train alongside the main process (which scores and writes)."""
        create_learner(spec_with_seed(run.spec, run.seed, override=False)).fit(run.train, run.dev)
