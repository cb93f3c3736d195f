"""PairData: premise / hypothesis / label rows under one label scheme."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sizewise.data.labels import LabelScheme


@dataclass
class PairData:
    """Sentence pairs with integer labels (indices into ``scheme.labels``; -1 when unlabelled).

    ``source`` names where the rows came from (a file path or ``snli:test``) for messages and
    result files; ``skipped`` counts rows left out on reading (e.g. SNLI's no-consensus ``-``).
    """

    premises: list[str]
    hypotheses: list[str]
    labels: np.ndarray
    scheme: LabelScheme
    source: str = "<memory>"
    skipped: int = 0
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if not (len(self.premises) == len(self.hypotheses) == len(self.labels)):
            raise ValueError("premises, hypotheses and labels must have the same length")

    def __len__(self) -> int:
        return len(self.premises)

    @property
    def has_labels(self) -> bool:
        """True when every row carries a gold label."""
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    def subset(self, indices: Sequence[int] | np.ndarray, *, source: str | None = None) -> PairData:
        """The rows at ``indices`` (repeats allowed, as in a bootstrap sample), in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        return PairData(
            premises=[self.premises[i] for i in idx],
            hypotheses=[self.hypotheses[i] for i in idx],
            labels=self.labels[idx],
            scheme=self.scheme,
            source=source or self.source,
        )

    def label_counts(self) -> dict[str, int]:
        """How many rows carry each label, in scheme order."""
        counts = np.bincount(self.labels[self.labels >= 0], minlength=self.scheme.num_labels)
        return {name: int(c) for name, c in zip(self.scheme.labels, counts)}

    def fingerprint(self) -> str:
        """A short hash of the rows and labels: two arms are only compared on equal fingerprints."""
        h = hashlib.sha256()
        for p, q, y in zip(self.premises, self.hypotheses, self.labels.tolist()):
            h.update(f"{p}\t{q}\t{y}\n".encode())
        return h.hexdigest()[:16]

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[str, str, str]], scheme: LabelScheme, source: str = "<memory>") -> PairData:
        """Build from ``(premise, hypothesis, label name)`` tuples; unknown labels raise ValueError."""
        labels = []
        for _p, _q, y in rows:
            i = scheme.index(y)
            if i is None:
                raise ValueError(f"label {y!r} is not one of {', '.join(scheme.labels)}")
            labels.append(i)
        return cls([r[0] for r in rows], [r[1] for r in rows], np.array(labels), scheme, source)
