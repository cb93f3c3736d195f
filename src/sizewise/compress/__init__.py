"""Compression of fitted learners: pruning (unstructured and structured) and dynamic int8 quantization.

Each transform takes a fitted learner and returns a compressed copy that meets the learner
contract (``predict_proba``, ``save`` / ``load_learner``, ``parameter_count``, ``labels_``) and is
saved in a form whose size on disk is the size of the compression (see :mod:`.storage`).
"""

from sizewise.compress.learner import (
    CompressedConfig,
    CompressedLearner,
    compress,
    prune,
    prune_structured,
    quantize_dynamic_int8,
)
from sizewise.compress.storage import read_state, storage_summary
from sizewise.compress.transforms import PruneStep, QuantizeStep, StructuredPruneStep

__all__ = [
    "CompressedConfig",
    "CompressedLearner",
    "PruneStep",
    "QuantizeStep",
    "StructuredPruneStep",
    "compress",
    "prune",
    "prune_structured",
    "quantize_dynamic_int8",
    "read_state",
    "storage_summary",
]
