"""The majority-class baseline (``majority: {}``): it predicts the training set's label distribution
for every pair, so its accuracy is the test share of the most frequent training label — the floor
every trained arm has to clear, measured under the same harness."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from sizewise.arms.registry import ArmRun, ArmType, register_arm_type
from sizewise.data.pairs import PairData
from sizewise.files import atomic_write_json
from sizewise.result import ArmResult

logger = logging.getLogger(__name__)


class MajorityArmConfig(BaseModel):
    """The majority baseline has no settings: write ``majority: {}``."""

    model_config = ConfigDict(extra="forbid")


class LabelDistribution:
    """A 'model' that answers every pair with the label distribution it was fitted on."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        total = sum(counts.values())
        self.distribution_ = np.array([n / total for n in counts.values()], dtype=np.float64)

    @classmethod
    def fit(cls, train: PairData) -> LabelDistribution:
        """The label distribution of ``train``'s pairs."""
        return cls(train.label_counts())

    def predict_proba(self, data: PairData) -> np.ndarray:
        """The fitted distribution, one row per pair."""
        return np.tile(self.distribution_, (len(data), 1))

    def predict_with_sections(self, data: PairData) -> tuple[np.ndarray, dict[str, Any]]:
        """The probabilities; the baseline adds no result sections."""
        return self.predict_proba(data), {}

    def save(self, directory: str | Path) -> None:
        """Write the label counts as ``majority.json``."""
        atomic_write_json(Path(directory) / "majority.json", {"label_counts": self.counts})

    def parameter_count(self) -> dict[str, int]:
        """None: a label distribution is not a model with weights (the plots against parameters leave it out)."""
        return {"total": 0, "trainable": 0}


@register_arm_type("majority")
class MajorityArm(ArmType):
    """The majority-class baseline arm."""

    config_model = MajorityArmConfig

    def learner_kind(self, spec: MajorityArmConfig) -> str:
        """Not a learner kind: nothing can be made from its model."""
        return "majority"

    def run(self, run: ArmRun) -> ArmResult:
        """Count the training labels inside the cost meter, then score the distribution."""
        logger.info("arm %s: counting the labels of %d training pairs", run.name, len(run.train))
        with run.meter() as meter:
            model = LabelDistribution.fit(run.train)
        return run.score(model, meter, {"majority": self.dump(run.spec)})
