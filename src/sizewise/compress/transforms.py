"""The registry of compression transforms, and the steps that name them.

A transform is registered once, with the decorator :func:`register_transform` on the function that
applies it, under its name (the ``transform`` of a step: ``{"transform": "prune", "sparsity": 0.5}``),
with its step settings (a :class:`Step` subclass), its short label for reports ("prune 50%") and,
for a transform no other may follow (int8 quantization), ``final``. A built-in transform's module is
imported on the first lookup of its name (:data:`sizewise.builtins.TRANSFORMS`), so this module
imports none of them. A new transform is one module::

    class HalveStep(Step):
        transform: Literal["halve"] = Field("halve", description="The transform: halve every weight.")

    @register_transform("halve", HalveStep, label=lambda step: "halve")
    def halve(learner: NetworkLearner, step: HalveStep, train: PairData | None) -> dict[str, Any]:
        ...  # change learner.network_ in place
        return {"transform": "halve"}

Every apply function changes the learner it is given (callers hand it a private copy) and returns a
JSON record of what it did and what it reached. A learner is reached through the network spine
(:class:`~sizewise.learners.network.NetworkLearner`: ``network_``, ``encode``, ``logits``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from sizewise.builtins import TRANSFORMS, lookup
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError
from sizewise.learners.base import format_validation_error
from sizewise.learners.network import NetworkLearner

__all__ = [
    "TRANSFORM_REGISTRY",
    "ApplyFunction",
    "Step",
    "Transform",
    "apply_step",
    "get_transform",
    "misplaced_final_step",
    "parse_step",
    "register_transform",
    "step_label",
    "transform_names",
    "validate_step",
    "validate_steps",
]


class Step(BaseModel):
    """Base of every transform's step settings: unknown keys are errors, and so are NaN and infinity.

    A subclass declares ``transform: Literal["<name>"]`` with the name as its default, so a dumped
    step says which transform it is."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    transform: str = Field(description="The name the transform is registered under.")


#: Applies a step to a fitted network learner in place (``train``: the pairs a fine-tuning step
#: trains on, None when none were given); returns the step's JSON record.
ApplyFunction = Callable[[NetworkLearner, Any, PairData | None], dict[str, Any]]
_F = TypeVar("_F", bound=ApplyFunction)


@dataclass(frozen=True)
class Transform:
    """A registered transform: its name, step settings, apply function, report label and ``final``
    (None, or what a model is after it when no transform may follow it, such as ``"quantized"``)."""

    name: str
    step_cls: type[Step]
    apply: ApplyFunction
    label: Callable[[Any], str]
    final: str | None = None


#: Every registered transform by name.
TRANSFORM_REGISTRY: dict[str, Transform] = {}


def register_transform(
    name: str, step_cls: type[Step], *, label: Callable[[Any], str], final: str | None = None
) -> Callable[[_F], _F]:
    """Decorator that registers the function applying transform ``name``, whose steps are ``step_cls``.

    ``label(step)``: the step in a few words for reports ("prune 50%"). ``final``: for a transform no
    other may follow, what the model is after it (``"quantized"``): it must be a recipe's last step,
    and a model it made takes no further step. Registering a name twice is a ValueError.
    """
    field = step_cls.model_fields.get("transform")
    if field is None or field.default != name:
        raise ValueError(f"{step_cls.__name__}.transform must default to {name!r}, the name it is registered under")

    def decorate(fn: _F) -> _F:
        if name in TRANSFORM_REGISTRY:
            other = TRANSFORM_REGISTRY[name].apply
            raise ValueError(f"transform {name!r} is already registered by {other.__module__}.{other.__qualname__}")
        TRANSFORM_REGISTRY[name] = Transform(name, step_cls, fn, label, final)
        return fn

    return decorate


def _entry(name: Any) -> Transform | None:
    """The registered transform ``name``; a built-in one's module is imported on its first lookup."""
    return lookup(TRANSFORM_REGISTRY, TRANSFORMS, name)


def transform_names() -> list[str]:
    """Names of every transform: the built-in ones (not imported for this), then the others registered."""
    return [*TRANSFORMS, *(name for name in TRANSFORM_REGISTRY if name not in TRANSFORMS)]


def get_transform(name: str) -> Transform:
    """The registered transform ``name`` (KeyError for an unknown name)."""
    entry = _entry(name)
    if entry is None:
        raise KeyError(name)
    return entry


# --- steps from specs ----------------------------------------------------------------------------

_KNOWN_ERROR_TYPES = frozenset(get_args(ErrorType))
_DISCRIMINATOR = "'transform'"


def _error(
    kind: str | PydanticCustomError, loc: tuple[Any, ...], value: Any, ctx: dict[str, Any] | None = None
) -> InitErrorDetails:
    details = InitErrorDetails(type=kind, loc=loc, input=value)
    if ctx is not None:
        details["ctx"] = ctx
    return details


def _step_errors(spec: Any, loc: tuple[Any, ...]) -> tuple[Step | None, list[InitErrorDetails]]:
    """The step ``spec`` describes, or the errors a union of every step model tagged by ``transform``
    would give (pydantic's own messages), located under ``loc``."""
    if isinstance(spec, Step):
        return spec, []
    if not isinstance(spec, dict):
        return None, [_error("model_attributes_type", loc, spec)]
    if "transform" not in spec:
        return None, [_error("union_tag_not_found", loc, spec, {"discriminator": _DISCRIMINATOR})]
    name = spec["transform"]
    entry = _entry(name)
    if entry is None:
        tags = ", ".join(repr(n) for n in transform_names())
        ctx = {"discriminator": _DISCRIMINATOR, "tag": str(name), "expected_tags": tags}
        return None, [_error("union_tag_invalid", loc, spec, ctx)]
    try:
        return entry.step_cls.model_validate(spec), []
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            where = (*loc, name, *err["loc"])
            if err["type"] in _KNOWN_ERROR_TYPES:
                errors.append(_error(err["type"], where, err["input"], err.get("ctx")))
            else:  # a PydanticCustomError raised by a step's validator
                errors.append(_error(PydanticCustomError(err["type"], err["msg"]), where, err["input"]))
        return None, errors


def validate_step(spec: Any) -> Step:
    """The step ``{"transform": ..., **settings}`` describes (a step is returned as it is); a bad spec
    raises pydantic's ValidationError, its errors located under the transform's name."""
    step, errors = _step_errors(spec, ())
    if errors:
        raise ValidationError.from_exception_data("step", errors)
    assert step is not None
    return step


def validate_steps(value: Any) -> Any:
    """Every step of the list ``value`` validated (for a settings field holding steps); errors are
    located at the step's index. Anything but a list or tuple is returned as it is."""
    if not isinstance(value, (list, tuple)):
        return value
    steps, errors = [], []
    for i, spec in enumerate(value):
        step, problems = _step_errors(spec, (i,))
        steps.append(step)
        errors += problems
    if errors:
        raise ValidationError.from_exception_data("steps", errors)
    return steps


def parse_step(spec: Any) -> Step:
    """A step from ``{"transform": ..., **settings}`` (or a step); bad specs raise ConfigError."""
    if isinstance(spec, Step):
        return spec
    name = spec.get("transform") if isinstance(spec, dict) else None
    source = name if name in transform_names() else "compress"
    try:
        return validate_step(spec)
    except ValidationError as exc:
        problems = [p.removeprefix(f"{source}.") for p in format_validation_error(exc)]
        raise ConfigError(str(source), problems) from None


def misplaced_final_step(steps: Sequence[Step]) -> str | None:
    """The problem with a recipe that has a final transform (int8) before its last step, or None."""
    for step in steps[:-1]:
        entry = _entry(step.transform)
        if entry is not None and entry.final:
            return f"steps: {step.transform} must be the last step (a {entry.final} model takes no further step)"
    return None


# --- applying steps ------------------------------------------------------------------------------


def apply_step(
    learner: NetworkLearner, step: Step, train: PairData | None = None, done: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    """Apply ``step`` to ``learner`` in place (a fine-tuning step trains on ``train``); returns its record.

    ``done``: the records of the transforms the learner went through already; after a final one
    (int8 quantization) no step may run."""
    for record in done:
        finished = _entry(record.get("transform"))
        if finished is not None and finished.final:
            raise ConfigError(
                step.transform, [f"the model is already {finished.final}; {step.transform} must come before it"]
            )
    entry = _entry(step.transform)
    if entry is None:
        raise ConfigError(step.transform, [f"not a transform; choose one of {', '.join(transform_names())}"])
    learner.network_.eval()
    return entry.apply(learner, step, train)


def step_label(step: dict[str, Any] | Step) -> str:
    """A step in a few words for reports ("prune 50%", "int8", "recover 1 ep"); a step whose transform
    is unknown here, or whose settings do not parse, by its transform's name."""
    try:
        parsed = validate_step(step)
    except ValidationError:
        return str(step.get("transform") if isinstance(step, dict) else step)
    entry = _entry(parsed.transform)
    return entry.label(parsed) if entry is not None else str(parsed.transform)
