"""Compression of fitted learners: pruning (unstructured, structured, attention heads), recovery
fine-tuning and dynamic int8 quantization.

Each transform is registered by name (:mod:`.transforms`), one module each (:mod:`.unstructured`,
:mod:`.structured`, :mod:`.recovery`, :mod:`.quantization`). Each takes a fitted learner and returns a
compressed copy that meets the learner contract (``predict_proba``, ``save`` / ``load_learner``,
``parameter_count``, ``labels_``) and is saved in a form whose size on disk is the size of the
compression (see :mod:`.storage`).
"""

from sizewise.compress.learner import (
    CompressedConfig,
    CompressedLearner,
    compress,
    prune,
    prune_heads,
    prune_structured,
    quantize_dynamic_int8,
    recover,
)
from sizewise.compress.quantization import QuantizeStep
from sizewise.compress.recovery import RecoverStep
from sizewise.compress.storage import read_state, storage_summary
from sizewise.compress.structured import HeadPruneStep, StructuredPruneStep
from sizewise.compress.transforms import Step, register_transform, step_label
from sizewise.compress.unstructured import PruneStep

__all__ = [
    "CompressedConfig",
    "CompressedLearner",
    "HeadPruneStep",
    "PruneStep",
    "QuantizeStep",
    "RecoverStep",
    "Step",
    "StructuredPruneStep",
    "compress",
    "prune",
    "prune_heads",
    "prune_structured",
    "quantize_dynamic_int8",
    "read_state",
    "recover",
    "register_transform",
    "step_label",
    "storage_summary",
]
