"""Learning-curve comparisons: significance states, crossings, the one-sentence summary, cheapest arm."""

from __future__ import annotations

import math

import pytest

from sizewise.evaluation.curves import Candidate, Crossing, cheapest_not_worse, crossings, describe_pair, order_states

SIZES = [48, 96, 384, 1536, 6000]


# --- order_states ----------------------------------------------------------------------------------


def test_order_states_by_sign_and_significance() -> None:
    differences = [0.05, -0.04, 0.01, -0.02, 0.0, 0.03, 0.02]
    p_values = [0.001, 0.01, 0.2, 0.05, 0.0, math.nan, 0.049]
    # 0.05 is not below alpha; a zero difference or a NaN p-value is never significant.
    assert order_states(differences, p_values) == [1, -1, 0, 0, 0, 0, 1]
    assert order_states(differences, p_values, alpha=0.1) == [1, -1, 0, -1, 0, 0, 1]
    assert order_states([], []) == []


def test_order_states_checks_input() -> None:
    with pytest.raises(ValueError, match="p-values"):
        order_states([0.1, 0.2], [0.01])
    with pytest.raises(ValueError, match="alpha"):
        order_states([0.1], [0.01], alpha=0.0)


# --- crossings and describe_pair on synthetic curves -----------------------------------------------


def test_ahead_everywhere() -> None:
    states = [1, 1, 1, 1, 1]
    assert crossings(SIZES, states) == []
    assert crossings(SIZES, states, weak=True) == []
    assert describe_pair("A", "B", SIZES, states) == "A is ahead of B at every size from 48 to 6,000 pairs."
    assert describe_pair("A", "B", SIZES, [-1] * 5) == "A is behind B at every size from 48 to 6,000 pairs."


def test_ahead_from_the_second_size() -> None:
    states = [0, 1, 1, 1, 1]
    assert crossings(SIZES, states) == []
    assert crossings(SIZES, states, weak=True) == [Crossing(48, 96, 0, 1)]
    assert crossings(SIZES, states, weak=True)[0].kind == "separate"
    sentence = describe_pair("MiniLM-L6 + LoRA", "11 bagged BiLSTMs", SIZES, states)
    assert sentence == (
        "MiniLM-L6 + LoRA is ahead of 11 bagged BiLSTMs at every size from 96 pairs; "
        "at 48 pairs they are not distinguishable."
    )


def test_never_distinguishable() -> None:
    states = [0, 0, 0, 0, 0]
    assert crossings(SIZES, states, weak=True) == []
    assert describe_pair("A", "B", SIZES, states) == "A and B are not distinguishable at any size."
    assert describe_pair("A", "B", [48], [0]) == "A and B are not distinguishable at 48 pairs."


def test_one_crossing() -> None:
    states = [1, 1, -1, -1, -1]
    found = crossings(SIZES, states)
    assert found == [Crossing(96, 384, 1, -1)]
    assert found[0].kind == "order"
    assert crossings(SIZES, states, weak=True) == found  # no step through 0
    assert describe_pair("A", "B", SIZES, states) == (
        "A is ahead of B up to 96 pairs and behind from 384 pairs (the order changes between 96 and 384 pairs)."
    )


def test_crossing_with_a_tie_in_between() -> None:
    states = [1, 1, 1, 0, -1]
    # One crossing, from the last size of one sign to the first of the other, over the tie.
    assert crossings(SIZES, states) == [Crossing(384, 6000, 1, -1)]
    weak = crossings(SIZES, states, weak=True)
    assert weak == [Crossing(384, 1536, 1, 0), Crossing(384, 6000, 1, -1), Crossing(1536, 6000, 0, -1)]
    assert [c.kind for c in weak] == ["merge", "order", "separate"]
    assert describe_pair("A", "B", SIZES, states) == (
        "A is ahead of B up to 384 pairs and behind from 6,000 pairs (the order changes between 384 and "
        "6,000 pairs); at 1,536 pairs they are not distinguishable."
    )


def test_crossing_after_behind_with_ties_on_both_sides() -> None:
    states = [0, -1, 0, 1, 0]
    assert crossings(SIZES, states) == [Crossing(96, 1536, -1, 1)]
    assert describe_pair("A", "B", SIZES, states) == (
        "A is behind B at 96 pairs and ahead at 1,536 pairs (the order changes between 96 and 1,536 pairs); "
        "at 48, 384 and 6,000 pairs they are not distinguishable."
    )


def test_several_crossings() -> None:
    states = [1, -1, -1, 1, 1]
    assert crossings(SIZES, states) == [Crossing(48, 96, 1, -1), Crossing(384, 1536, -1, 1)]
    assert describe_pair("A", "B", SIZES, states) == (
        "A is ahead of B at 48 pairs, behind from 96 to 384 pairs and ahead from 1,536 pairs "
        "(the order changes between 48 and 96 pairs and between 384 and 1,536 pairs)."
    )


def test_ties_inside_one_sign_are_not_crossings() -> None:
    states = [1, 0, 1, 0, 0]
    assert crossings(SIZES, states) == []
    assert [c.kind for c in crossings(SIZES, states, weak=True)] == ["merge", "separate", "merge"]
    assert describe_pair("A", "B", SIZES, states) == (
        "A is ahead of B at 48 and 384 pairs; at 96, 1,536 and 6,000 pairs they are not distinguishable."
    )
    # Runs of three or more sizes read as ranges.
    assert describe_pair("A", "B", SIZES, [0, 1, 0, 0, 0]) == (
        "A is ahead of B at 96 pairs; at 48 pairs and from 384 to 6,000 pairs they are not distinguishable."
    )


def test_ahead_only_in_the_middle() -> None:
    states = [0, 1, 1, 0, 0]
    assert describe_pair("A", "B", SIZES, states) == (
        "A is ahead of B at every size from 96 to 384 pairs; at 48, 1,536 and 6,000 pairs they are not distinguishable."
    )
    assert describe_pair("A", "B", SIZES, [-1, -1, 0, 0, 0]) == (
        "A is behind B at every size up to 96 pairs; at every size from 384 pairs they are not distinguishable."
    )


def test_sizes_with_separators_and_another_unit() -> None:
    sizes = [1000.0, 12_000.0, 250_000.0]
    assert describe_pair("A", "B", sizes, [0, 0, 1], unit="examples") == (
        "A is ahead of B at 250,000 examples; at every size up to 12,000 examples they are not distinguishable."
    )
    assert crossings(sizes, [1, 0, -1]) == [Crossing(1000.0, 250_000.0, 1, -1)]


def test_curves_check_input() -> None:
    with pytest.raises(ValueError, match="states"):
        crossings(SIZES, [1, 1])
    with pytest.raises(ValueError, match="ascending"):
        crossings([96, 48], [1, 1])
    with pytest.raises(ValueError, match="-1, 0 or"):
        describe_pair("A", "B", [48], [2])
    with pytest.raises(ValueError, match="at least one size"):
        describe_pair("A", "B", [], [])


# --- cheapest_not_worse ----------------------------------------------------------------------------


def test_cheapest_not_worse_skips_significantly_worse_arms() -> None:
    candidates = [
        ("minilm-lora", 0.86, 40.0, None),  # the best
        ("bilstm", 0.80, 1.0, 0.001),  # cheapest, but significantly worse
        ("bagged-bilstm", 0.84, 11.0, 0.20),  # not distinguishable from the best
        ("distil-lora", 0.85, 20.0, 0.60),
    ]
    got = cheapest_not_worse(candidates)
    assert got == Candidate("bagged-bilstm", 0.84, 11.0, 0.20)
    assert got.arm == "bagged-bilstm"
    # With a stricter alpha the bilstm is no longer significantly worse, and it is the cheapest.
    assert cheapest_not_worse(candidates, alpha=0.001).arm == "bilstm"


def test_cheapest_not_worse_boundary_and_ties() -> None:
    # p_value == alpha is not significant, so the arm qualifies; equal costs go to higher accuracy.
    candidates = [
        ("best", 0.90, 10.0, None),
        ("a", 0.85, 2.0, 0.05),
        ("b", 0.87, 2.0, 0.30),
        ("c", 0.95, 2.0, math.nan),
    ]
    assert cheapest_not_worse(candidates).arm == "b"
    # A full tie keeps the earlier candidate.
    assert cheapest_not_worse([("best", 0.9, 5.0, None), ("x", 0.8, 1.0, 0.5), ("y", 0.8, 1.0, 0.5)]).arm == "x"
    # Alone, or when every other arm is worse, the best arm is the answer.
    assert cheapest_not_worse([("best", 0.9, 5.0, None)]).arm == "best"
    assert cheapest_not_worse([("best", 0.9, 5.0, None), ("x", 0.5, 1.0, 0.01)]).arm == "best"


def test_cheapest_not_worse_checks_input() -> None:
    with pytest.raises(ValueError, match="no candidate"):
        cheapest_not_worse([])
    with pytest.raises(ValueError, match="no candidate"):
        cheapest_not_worse([("x", 0.5, 1.0, 0.01)])
    with pytest.raises(ValueError, match="alpha"):
        cheapest_not_worse([("best", 0.9, 5.0, None)], alpha=1.5)
