"""Comparing two learning curves: where one arm is significantly ahead, and where the order changes.

Pure functions over numbers. A comparison at each training-set size is reduced to a *state*:
+1 where arm A is significantly ahead of arm B, -1 where it is significantly behind, 0 where the
two are not distinguishable. ``crossings`` finds where the significant order flips,
``describe_pair`` says it in one English sentence, and ``cheapest_not_worse`` picks, for one
budget, the cheapest arm not significantly worse than the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

Size = int | float


def order_states(differences: Sequence[float], p_values: Sequence[float], alpha: float = 0.05) -> list[int]:
    """The state at each size: +1 (A significantly ahead), -1 (behind) or 0 (not distinguishable).

    A size is significant where its ``p_value < alpha``; the sign of its ``difference`` (A minus
    B) then gives the direction. A zero difference, or a NaN difference or p-value, is state 0.
    """
    if len(differences) != len(p_values):
        raise ValueError(f"{len(differences)} differences but {len(p_values)} p-values")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    states = []
    for diff, p in zip(differences, p_values):
        if p < alpha and diff > 0:  # comparisons with NaN are False, so NaN gives state 0
            states.append(1)
        elif p < alpha and diff < 0:
            states.append(-1)
        else:
            states.append(0)
    return states


@dataclass(frozen=True)
class Crossing:
    """A change of state, from ``from_state`` at ``low_size`` to ``to_state`` at ``high_size``.

    ``kind`` is ``"order"`` for a flip of the significant order (+1 to -1 or -1 to +1, with any
    not-distinguishable sizes in between: ``low_size`` is the last size of the old sign and
    ``high_size`` the first of the new one); ``"separate"`` where the arms become distinguishable
    (0 to ±1) and ``"merge"`` where they stop being distinguishable (±1 to 0), both between
    neighbouring sizes.
    """

    low_size: Size
    high_size: Size
    from_state: int
    to_state: int

    @property
    def kind(self) -> str:
        """``"order"``, ``"separate"`` or ``"merge"``; see the class docstring."""
        if self.from_state == 0:
            return "separate"
        if self.to_state == 0:
            return "merge"
        return "order"


def _check_curve(sizes: Sequence[Size], states: Sequence[int]) -> None:
    if len(sizes) != len(states):
        raise ValueError(f"{len(sizes)} sizes but {len(states)} states")
    if any(s not in (-1, 0, 1) for s in states):
        raise ValueError(f"states must be -1, 0 or +1, got {list(states)}")
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"sizes must be strictly ascending, got {list(sizes)}")


def crossings(sizes: Sequence[Size], states: Sequence[int], *, weak: bool = False) -> list[Crossing]:
    """Where the significant order of the two arms changes, as ``Crossing``s of kind ``"order"``.

    ``sizes`` are strictly ascending and ``states`` are ``order_states``'s, one per size. A flip
    from +1 to -1 (or back), possibly with 0s between, is one crossing located between the last
    size of the old sign and the first of the new one. With ``weak=True`` the weaker events are
    listed too: every step from 0 to ±1 (``"separate"``) and from ±1 to 0 (``"merge"``) between
    neighbouring sizes. The list is sorted by ``low_size`` then ``high_size``.
    """
    _check_curve(sizes, states)
    found: list[Crossing] = []
    last_signed: int | None = None  # index of the most recent nonzero state
    for i, state in enumerate(states):
        if state != 0:
            if last_signed is not None and states[last_signed] == -state:
                found.append(Crossing(sizes[last_signed], sizes[i], states[last_signed], state))
            last_signed = i
        if weak and i > 0 and (states[i - 1] == 0) != (state == 0):
            found.append(Crossing(sizes[i - 1], sizes[i], states[i - 1], state))
    return sorted(found, key=lambda c: (c.low_size, c.high_size))


def _fmt(size: Size) -> str:
    """A size with thousands separators; whole floats print as integers."""
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    return f"{size:,}"


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs of sorted indices as (first, last) pairs."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _join(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _where(indices: list[int], sizes: Sequence[Size], unit: str, *, every: bool) -> str:
    """Where in the curve ``indices`` lie, as a phrase: "at every size from 96 pairs", "at 48 pairs".

    One run of consecutive sizes reads "at X", "up to X", "from X" or "from X to Y", prefixed with
    "at every size" when ``every`` (a sentence about one sign). Without ``every`` (a sentence
    listing several segments) a lone last size reads "from X" too. Several runs are listed, runs of
    one or two sizes by name and longer ones as ranges: "at 48 pairs and from 384 to 6,000 pairs",
    "at 48, 96 and 6,000 pairs".
    """
    m = len(sizes)
    runs = _runs(indices)
    if len(runs) > 1:
        phrases: list[str] = []
        named: list[str] = []  # consecutive sizes named one by one, flushed before a range
        for a, b in runs:
            if b - a < 2:
                named.extend(_fmt(sizes[i]) for i in range(a, b + 1))
                continue
            if named:
                phrases.append(f"at {_join(named)} {unit}")
                named = []
            phrases.append(f"from {_fmt(sizes[a])} to {_fmt(sizes[b])} {unit}")
        if named:
            phrases.append(f"at {_join(named)} {unit}")
        return _join(phrases)
    first, last = runs[0]
    if first == 0 and last == m - 1:
        return (
            f"at {_fmt(sizes[0])} {unit}"
            if m == 1
            else f"at every size from {_fmt(sizes[0])} to {_fmt(sizes[-1])} {unit}"
        )
    if first == last and (every or last < m - 1):
        return f"at {_fmt(sizes[first])} {unit}"
    lead = "at every size " if every else ""
    if first == 0:
        return f"{lead}up to {_fmt(sizes[last])} {unit}"
    if last == m - 1:
        return f"{lead}from {_fmt(sizes[first])} {unit}"
    return f"{lead}from {_fmt(sizes[first])} to {_fmt(sizes[last])} {unit}"


def describe_pair(name_a: str, name_b: str, sizes: Sequence[Size], states: Sequence[int], unit: str = "pairs") -> str:
    """One English sentence on how arm A compares with arm B along the curve.

    ``sizes`` are strictly ascending training-set sizes and ``states`` ``order_states``'s. For
    example "A is ahead of B at every size from 96 pairs; at 48 pairs they are not
    distinguishable.", "A is ahead of B up to 384 pairs and behind from 6,000 pairs (the order
    changes between 384 and 6,000 pairs); at 1,536 pairs they are not distinguishable." or "A and
    B are not distinguishable at any size." Sizes print with thousands separators, followed by
    ``unit``.
    """
    _check_curve(sizes, states)
    if not sizes:
        raise ValueError("describe_pair needs at least one size")
    signed = [i for i, s in enumerate(states) if s != 0]
    zeros = [i for i, s in enumerate(states) if s == 0]
    if not signed:
        where = "at any size" if len(sizes) > 1 else f"at {_fmt(sizes[0])} {unit}"
        return f"{name_a} and {name_b} are not distinguishable {where}."

    # Segments: maximal groups of signed sizes of one sign (0s inside a segment do not split it).
    segments: list[list[int]] = []
    for i in signed:
        if segments and states[segments[-1][-1]] == states[i]:
            segments[-1].append(i)
        else:
            segments.append([i])

    def verb(state: int, first: bool) -> str:
        if state > 0:
            return f"ahead of {name_b}" if first else "ahead"
        return f"behind {name_b}" if first else "behind"

    if len(segments) == 1:
        sentence = f"{name_a} is {verb(states[signed[0]], True)} {_where(signed, sizes, unit, every=True)}"
    else:
        parts = [
            f"{verb(states[seg[0]], k == 0)} {_where(seg, sizes, unit, every=False)}" for k, seg in enumerate(segments)
        ]
        changes = [
            f"between {_fmt(sizes[prev[-1]])} and {_fmt(sizes[nxt[0]])} {unit}"
            for prev, nxt in zip(segments, segments[1:])
        ]
        sentence = f"{name_a} is {_join(parts)} (the order changes {_join(changes)})"
    if zeros:
        sentence += f"; {_where(zeros, sizes, unit, every=True)} they are not distinguishable"
    return sentence + "."


class Candidate(NamedTuple):
    """One arm at one budget: its mean accuracy, its cost and its p-value against the best arm.

    ``p_value`` is ``None`` for the best arm itself.
    """

    arm: str
    accuracy: float
    cost: float
    p_value: float | None


def cheapest_not_worse(candidates: Sequence[tuple[str, float, float, float | None]], alpha: float = 0.05) -> Candidate:
    """The cheapest arm not significantly worse than the best, among one budget's ``candidates``.

    Each candidate is ``(arm, mean accuracy, cost, p_value)`` where ``p_value`` tests it against
    the best arm and is ``None`` for the best arm itself. An arm qualifies when it is the best
    (``None``) or its ``p_value >= alpha`` (a NaN p-value does not qualify). Among those, the
    lowest ``cost`` wins; equal costs go to the higher accuracy, and a full tie to the earlier
    candidate. Returns that candidate as a ``Candidate``; raises ``ValueError`` when none
    qualifies (only possible when the best arm is missing from the list).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    rows = [Candidate(*c) for c in candidates]
    fit = [c for c in rows if c.p_value is None or c.p_value >= alpha]
    if not fit:
        raise ValueError("no candidate qualifies: include the best arm with p_value None")
    return min(fit, key=lambda c: (c.cost, -c.accuracy))
