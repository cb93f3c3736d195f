"""Where sizewise's built-in registered names live: learner kinds, compression transforms, arm types.

Each kind, transform or arm type registers itself when its module is imported. A registry looks a
name up in its own table first; a built-in name that is not registered yet makes it import the module
listed here (by name, once), as ``transformers``' auto classes load a model's module on first use.
So no registry module imports the things it holds, ``import sizewise.learners.base`` stays light,
and a worker process that receives a spec can build its learner without importing everything first.

Third-party kinds register themselves the same way (``@register_learner``); import their module
before naming them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")

#: Learner kind -> the module that registers it.
LEARNER_KINDS: dict[str, str] = {
    "bilstm": "sizewise.learners.bilstm",
    "transformer": "sizewise.learners.transformer",
    "ensemble": "sizewise.ensembles.ensemble",
    "compressed": "sizewise.compress.learner",
}

#: Arm type (its key in a study file's arm) -> the module that registers it.
ARM_TYPES: dict[str, str] = {
    "learner": "sizewise.arms.learner",
    "compress": "sizewise.arms.compress",
    "majority": "sizewise.arms.majority",
    "selftrain": "sizewise.arms.selftrain",
    "transfer": "sizewise.arms.transfer",
}

#: Compression transform (the ``transform`` of a step) -> the module that registers it.
TRANSFORMS: dict[str, str] = {
    "prune": "sizewise.compress.unstructured",
    "prune_structured": "sizewise.compress.structured",
    "prune_heads": "sizewise.compress.structured",
    "quantize_int8": "sizewise.compress.quantization",
    "recover": "sizewise.compress.recovery",
}


def import_builtin(table: dict[str, str], name: str) -> bool:
    """Import the module that registers the built-in ``name`` of ``table``; False if ``name`` is not built in."""
    module = table.get(name)
    if module is None:
        return False
    importlib.import_module(module)
    return True


def import_all(table: dict[str, str]) -> None:
    """Import every built-in module of ``table`` (to list or check all registered names)."""
    for module in dict.fromkeys(table.values()):
        importlib.import_module(module)


def lookup(registry: Mapping[str, _T], table: dict[str, str], name: Any) -> _T | None:
    """What ``registry`` holds under ``name``, importing the built-in module of ``table`` that registers
    it on its first lookup; None for a name that is neither registered nor built in (or not a string)."""
    if not isinstance(name, str):
        return None
    if name not in registry:
        import_builtin(table, name)
    return registry.get(name)
