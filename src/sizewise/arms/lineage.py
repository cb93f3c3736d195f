"""Where a result's model comes from: an arm made from another arm's model (a compress arm) descends
from it, and its cost includes that arm's. Each arm type says what a result of its own was made from
(:meth:`ArmType.result_source`); these functions follow the chain."""

from __future__ import annotations

from collections.abc import Mapping

from sizewise.arms.registry import get_arm_type
from sizewise.result import ArmResult


def source_arm(result: ArmResult) -> str | None:
    """The arm whose model ``result``'s arm was made from (None when it made its own)."""
    return get_arm_type(result.arm_type).result_source(result)


def root_arm(result: ArmResult, by_arm: Mapping[str, ArmResult]) -> str:
    """The arm at the start of ``result``'s chain of sources (the arm itself when it made its own
    model, or the last arm of the chain found in ``by_arm``)."""
    arm, seen = result.arm, set()
    while arm in by_arm and arm not in seen:
        seen.add(arm)
        source = source_arm(by_arm[arm])
        if source is None or source not in by_arm:
            return arm
        arm = source
    return arm


def cumulative_cost(
    result: ArmResult, by_arm: Mapping[str, ArmResult], key: str, size: str | None = None
) -> float | None:
    """A cost field (``train_seconds``, ``train_energy_kwh``, ...) of an arm plus that of every arm it
    descends from: a compressed model costs its source's training and then the compression. With
    ``size`` (a learning-curve size key), each source counts its training at that size where it has
    one. None if any of them lacks the field."""
    total, arm, seen = 0.0, result, set()
    while arm is not None and arm.arm not in seen:
        seen.add(arm.arm)
        value = getattr(arm.cost, key, None)
        if value is None:
            return None
        total += float(value)
        source = source_arm(arm)
        arm = by_arm.get(source) if source is not None else None
        point = next((p for p in arm.curve or [] if p.size == size), None) if arm is not None and size else None
        arm = point.result if point is not None else arm
    return total
