"""Ensembles of learners and the aggregators that combine their probabilities."""

from sizewise.ensembles.aggregate import (
    AGGREGATORS,
    diversity_decomposition,
    geometric_mean,
    get_aggregator,
    mean,
    register_aggregator,
    vote,
)

__all__ = [
    "AGGREGATORS",
    "diversity_decomposition",
    "geometric_mean",
    "get_aggregator",
    "mean",
    "register_aggregator",
    "vote",
]
