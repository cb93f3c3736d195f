"""Arm types: what one line of a study can be (a trained learner, a compressed model, a baseline).

Each type is one module that registers itself (:func:`register_arm_type`); :mod:`sizewise.builtins`
lists the built-in ones, which load on first use. See :mod:`.registry` for what a type provides.
"""

from sizewise.arms.registry import ArmRun, ArmType, arm_type_names, get_arm_type, register_arm_type

__all__ = ["ArmRun", "ArmType", "arm_type_names", "get_arm_type", "register_arm_type"]
