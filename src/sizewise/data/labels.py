"""Label schemes: the ordered label names of a task and how raw labels map onto them."""

from __future__ import annotations

from dataclasses import dataclass, field

from sizewise.errors import ConfigError


@dataclass(frozen=True)
class LabelScheme:
    """An ordered set of label names; column ``i`` of every probability array is ``labels[i]``.

    ``aliases`` maps other spellings (and the labels of a finer scheme) onto these names, e.g.
    ``neutral -> not_entailment`` in the ``binary`` scheme.
    """

    name: str
    labels: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        """How many classes the scheme has."""
        return len(self.labels)

    def index(self, raw: str) -> int | None:
        """The class index of a raw label string, or ``None`` if the scheme does not know it."""
        key = raw.strip().lower()
        key = self.aliases.get(key, key)
        try:
            return self.labels.index(key)
        except ValueError:
            return None


NLI3 = LabelScheme(
    name="nli3",
    labels=("entailment", "neutral", "contradiction"),
    aliases={"0": "entailment", "1": "neutral", "2": "contradiction"},
)
BINARY = LabelScheme(
    name="binary",
    labels=("entailment", "not_entailment"),
    aliases={
        "neutral": "not_entailment",
        "contradiction": "not_entailment",
        "not entailment": "not_entailment",
        "non-entailment": "not_entailment",
        "0": "entailment",
        "1": "not_entailment",
    },
)

SCHEMES: dict[str, LabelScheme] = {s.name: s for s in (NLI3, BINARY)}

#: Raw labels meaning "annotators did not agree": such rows are skipped and counted, not errors.
NO_GOLD_LABELS = frozenset({"-"})


def get_scheme(name: str) -> LabelScheme:
    """Look up a label scheme by name (``nli3`` or ``binary``)."""
    try:
        return SCHEMES[name]
    except KeyError:
        problem = f"unknown scheme {name!r}; choose one of {', '.join(SCHEMES)}"
        raise ConfigError("label scheme", [problem]) from None
