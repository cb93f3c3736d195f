"""Work units of a study: each arm is trained once per (training seed, training-set size).

A study with one seed and no learning curve has one unit per arm, kept in the arm's own folder
(``<output>/<arm>/result.json``, the layout of every study before seeds and curves existed). Any
other arm keeps one folder per unit under its own: ``<output>/<arm>/seed-1/``, or
``<output>/<arm>/n1536-seed-1/`` and ``<output>/<arm>/k8-seed-1/`` on a learning curve (1,536 pairs;
8 pairs of every label). A finished unit is skipped on resume, so a study interrupted in the middle
of a curve redoes only the unit it was in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: ``train_sizes`` entry meaning the whole training set.
ALL = "all"


@dataclass(frozen=True)
class TrainSize:
    """One size of a learning curve: ``pairs`` (stratified), ``per_class`` (K-shot), or all pairs
    (both None)."""

    pairs: int | None = None
    per_class: int | None = None

    @property
    def key(self) -> str:
        """The size in folder names and fingerprints: ``n1536``, ``k8`` or ``all``."""
        if self.per_class is not None:
            return f"k{self.per_class}"
        return ALL if self.pairs is None else f"n{self.pairs}"

    @property
    def label(self) -> str:
        """The size for people: ``1,536 pairs``, ``8 per class``, ``all pairs``."""
        if self.per_class is not None:
            return f"{self.per_class:,} per class"
        return "all pairs" if self.pairs is None else f"{self.pairs:,} pairs"

    def labelled_pairs(self, pool: int, num_labels: int) -> int:
        """How many labelled pairs the size takes from a training pool of ``pool`` pairs."""
        if self.per_class is not None:
            return min(pool, self.per_class * num_labels)
        return pool if self.pairs is None else min(pool, self.pairs)

    @classmethod
    def parse(cls, key: str) -> TrainSize:
        """The size a :attr:`key` names."""
        if key == ALL:
            return cls()
        if key[:1] in ("n", "k") and key[1:].isdigit():
            n = int(key[1:])
            return cls(per_class=n) if key[0] == "k" else cls(pairs=n)
        raise ValueError(f"not a training-size key: {key!r}")


def sizes_from(train_sizes: list[int | str] | None, shots_per_class: list[int] | None) -> list[TrainSize]:
    """The sizes of ``train_sizes`` and ``shots_per_class`` (duplicates dropped, in the order given)."""
    sizes = [TrainSize(pairs=None if s == ALL else int(s)) for s in train_sizes or []]
    sizes += [TrainSize(per_class=int(k)) for k in shots_per_class or []]
    return list(dict.fromkeys(sizes))


@dataclass(frozen=True)
class Unit:
    """One training of one arm: a seed and, on a learning curve, a training-set size."""

    seed: int
    size: TrainSize | None = None

    @property
    def key(self) -> str:
        """The unit's folder name under its arm's folder: ``seed-3``, ``n1536-seed-3``, ``k8-seed-3``."""
        return f"seed-{self.seed}" if self.size is None else f"{self.size.key}-seed-{self.seed}"

    @classmethod
    def parse(cls, key: str) -> Unit | None:
        """The unit a folder name names; None for another name."""
        size_key, sep, seed = key.rpartition("seed-")
        if not sep or not seed.lstrip("-").isdigit():
            return None
        if not size_key:
            return cls(int(seed))
        try:
            return cls(int(seed), TrainSize.parse(size_key.removesuffix("-")))
        except ValueError:
            return None


def unit_dir(arm_dir: Path, unit: Unit, single: bool) -> Path:
    """The folder of ``unit``: the arm's own folder when it is the arm's ``single`` unit."""
    return arm_dir if single else arm_dir / unit.key
