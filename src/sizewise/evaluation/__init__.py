"""Evaluation: the poster's metrics, bootstrap intervals and paired tests between models."""

from sizewise.evaluation.metrics import METRIC_NAMES, compute_metrics, confusion_matrix
from sizewise.evaluation.stats import bootstrap_intervals, mcnemar_exact, paired_bootstrap

__all__ = [
    "METRIC_NAMES",
    "bootstrap_intervals",
    "compute_metrics",
    "confusion_matrix",
    "mcnemar_exact",
    "paired_bootstrap",
]
