"""Metrics: hand-computed values on a small example, each also equal to scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from sizewise.evaluation import METRIC_NAMES, compute_metrics, confusion_matrix

# Six rows, three classes. Predictions (argmax): 0, 0, 1, 1, 2, 2.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
PROBA = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.6, 0.3, 0.1],
        [0.3, 0.5, 0.2],
        [0.2, 0.6, 0.2],
        [0.1, 0.4, 0.5],
        [0.1, 0.1, 0.8],
    ]
)
Y_PRED = PROBA.argmax(axis=1)

# Per class (tp, fp, fn):  class 0: (2, 0, 1) -> P 1,   R 2/3, F1 0.8
#                          class 1: (1, 1, 1) -> P 1/2, R 1/2, F1 1/2
#                          class 2: (1, 1, 0) -> P 1/2, R 1,   F1 2/3
# Supports 3, 2, 1.
HAND = {
    "accuracy": 4 / 6,  # rows 0, 1, 3, 5 right
    "f1_macro": (0.8 + 0.5 + 2 / 3) / 3,  # 0.655556
    "f1_weighted": (3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6,  # 0.677778
    "precision_macro": (1 + 0.5 + 0.5) / 3,  # 0.666667
    "recall_macro": (2 / 3 + 0.5 + 1) / 3,  # 0.722222
    # One-vs-rest AUC per class = share of (positive, negative) pairs ranked right:
    # class 0: positives .7 .6 .3 all above negatives .2 .1 .1 -> 1
    # class 1: positives .6 .4 vs negatives .2 .3 .5 .1 -> (4 + 3) / 8 = 0.875
    # class 2: positive .8 above negatives .1 .2 .2 .5 .1 -> 1
    "roc_auc_macro": (1 + 0.875 + 1) / 3,  # 0.958333
}


def test_metric_names_in_poster_order() -> None:
    assert METRIC_NAMES == (
        "accuracy",
        "f1_macro",
        "f1_weighted",
        "precision_macro",
        "recall_macro",
        "roc_auc_macro",
    )


def test_metrics_by_hand() -> None:
    got = compute_metrics(Y_TRUE, PROBA, 3)
    assert tuple(got) == METRIC_NAMES
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(HAND[name], rel=1e-12), name
        assert isinstance(got[name], float)


def test_metrics_equal_scikit_learn() -> None:
    got = compute_metrics(Y_TRUE, PROBA, 3)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(Y_TRUE, Y_PRED))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="macro"))
    assert got["f1_weighted"] == pytest.approx(skm.f1_score(Y_TRUE, Y_PRED, average="weighted"))
    assert got["precision_macro"] == pytest.approx(skm.precision_score(Y_TRUE, Y_PRED, average="macro"))
    assert got["recall_macro"] == pytest.approx(skm.recall_score(Y_TRUE, Y_PRED, average="macro"))
    assert got["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(Y_TRUE, PROBA, multi_class="ovr"))


def test_binary_roc_auc_uses_column_one() -> None:
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    proba = np.column_stack([1 - p1, p1])
    # Pairs (positive, negative): .35 > .1 yes, .35 > .4 no, .8 > .1 yes, .8 > .4 yes -> 3/4.
    got = compute_metrics(y, proba, 2)
    assert got["roc_auc_macro"] == pytest.approx(0.75)
    assert got["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y, p1))
    # Predictions 0, 0, 0, 1: accuracy 3/4.
    assert got["accuracy"] == pytest.approx(0.75)


def test_absent_class_does_not_crash() -> None:
    # Class 2 never occurs in y_true; it is predicted once (row 2).
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    got = compute_metrics(y, proba, 3)
    assert got["roc_auc_macro"] is None
    pred = proba.argmax(axis=1)
    kw = {"labels": [0, 1, 2], "zero_division": 0}
    assert got["accuracy"] == pytest.approx(0.75)
    # F1 per class: 1, 2/3 (tp 1, fp 0, fn 1), 0 (absent) -> (1 + 2/3 + 0) / 3 = 0.555556.
    assert got["f1_macro"] == pytest.approx((1 + 2 / 3) / 3)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y, pred, average="macro", **kw))
    assert got["precision_macro"] == pytest.approx(skm.precision_score(y, pred, average="macro", **kw))
    assert got["recall_macro"] == pytest.approx(skm.recall_score(y, pred, average="macro", **kw))


def test_binary_with_one_class_has_no_roc_auc() -> None:
    got = compute_metrics([1, 1, 1], [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]], 2)
    assert got["roc_auc_macro"] is None
    assert got["accuracy"] == pytest.approx(2 / 3)


def test_confusion_matrix_by_hand() -> None:
    # True 0: predicted 0, 0, 1; true 1: predicted 1, 2; true 2: predicted 2.
    expected = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    got = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert got == expected
    assert got == skm.confusion_matrix(Y_TRUE, Y_PRED, labels=[0, 1, 2]).tolist()
    assert all(type(v) is int for row in got for v in row)
    # A class nobody uses still gets its row and column.
    assert confusion_matrix([0, 1], [1, 1], 3) == [[0, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_bad_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(Y_TRUE, PROBA[:, :2], 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        compute_metrics([0, 3], [[1, 0, 0], [0, 1, 0]], 3)
    with pytest.raises(ValueError, match="rows"):
        confusion_matrix([0, 1], [0], 2)
