"""Learners: the contract every model kind meets, the registry, and the built-in kinds."""

from sizewise.learners.base import (
    LEARNERS,
    Learner,
    LearnerConfig,
    create_learner,
    learner_kinds,
    load_learner,
    register_learner,
)

__all__ = [
    "LEARNERS",
    "Learner",
    "LearnerConfig",
    "create_learner",
    "learner_kinds",
    "load_learner",
    "register_learner",
]
