"""Scoring under another label scheme: which scheme, and nli3 probabilities collapsed onto binary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sizewise.data.labels import BINARY, NLI3
from sizewise.errors import ConfigError, DataError
from sizewise.evaluation.schemes import (
    COLLAPSE_NOTE,
    collapse_proba,
    load_scoring_pairs,
    model_inputs,
    scoring_note,
    scoring_scheme,
)


def test_scoring_scheme() -> None:
    assert scoring_scheme("nli3", "nli3") == "nli3"
    assert scoring_scheme("binary", "binary") == "binary"
    assert scoring_scheme("nli3", "binary") == "binary"


def test_binary_model_is_never_scored_on_three_classes() -> None:
    with pytest.raises(ConfigError) as info:
        scoring_scheme("binary", "nli3")
    message = str(info.value)
    assert "\n" not in message
    assert "cannot tell neutral from contradiction" in message
    assert "read with scheme 'binary'" in message


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown scheme 'nli4'"):
        scoring_scheme("nli4", "nli3")
    with pytest.raises(ConfigError, match="unknown scheme 'three'"):
        collapse_proba(np.ones((1, 3)) / 3, "nli3", "three")


def test_collapse_nli3_onto_binary() -> None:
    # columns: entailment, neutral, contradiction -> entailment, not_entailment
    proba = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.1, 0.6, 0.3],
            [0.25, 0.25, 0.5],
            [0.0, 0.0, 1.0],
            [1.0, 0.0, 0.0],
        ]
    )
    expected = np.array(
        [
            [0.7, 0.3],
            [0.1, 0.9],
            [0.25, 0.75],
            [0.0, 1.0],
            [1.0, 0.0],
        ]
    )
    out = collapse_proba(proba, "nli3", "binary")
    assert out.shape == (5, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    assert BINARY.labels == ("entailment", "not_entailment")  # the column order asserted above
    # argmax: rows 2 and 3 are "not entailment" although neither neutral nor contradiction won alone
    assert out.argmax(1).tolist() == [0, 1, 1, 1, 0]
    np.testing.assert_array_equal(proba, [[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5], [0, 0, 1], [1, 0, 0]])


def test_collapse_takes_lists_and_float32() -> None:
    out = collapse_proba(np.array([[0.5, 0.25, 0.25]], dtype=np.float32), "nli3", "binary")
    np.testing.assert_allclose(out, [[0.5, 0.5]])
    np.testing.assert_allclose(collapse_proba([[0.2, 0.8]], "binary", "binary"), [[0.2, 0.8]])


def test_collapse_identity_when_the_schemes_agree() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    assert collapse_proba(proba, "nli3", "nli3") is proba
    binary = np.array([[0.9, 0.1], [0.4, 0.6]])
    assert collapse_proba(binary, "binary", "binary") is binary


def test_collapse_binary_onto_nli3_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot tell neutral from contradiction"):
        collapse_proba(np.array([[0.9, 0.1]]), "binary", "nli3")


def test_collapse_checks_the_width() -> None:
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        collapse_proba(np.array([[0.9, 0.1]]), "nli3", "binary")
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        collapse_proba(np.array([0.9, 0.1]), "binary", "binary")


def test_scoring_note() -> None:
    assert scoring_note("nli3", "binary") == COLLAPSE_NOTE
    assert COLLAPSE_NOTE == "scored as binary: p(entailment) against 1 − p(entailment)"
    assert scoring_note("nli3", "nli3") is None
    assert scoring_note("binary", "binary") is None


# --- reading a set to score on -------------------------------------------------------------------

NLI3_ROWS = "premise\thypothesis\tlabel\nA.\tB.\tentailment\nC.\tD.\tneutral\nE.\tF.\tcontradiction\n"
BINARY_ROWS = "premise\thypothesis\tlabel\nA.\tB.\tentailment\nC.\tD.\tnot_entailment\nE.\tF.\tnot_entailment\n"


def test_load_scoring_pairs_from_files(tmp_path: Path) -> None:
    nli3_file, binary_file = tmp_path / "nli3.tsv", tmp_path / "binary.tsv"
    nli3_file.write_text(NLI3_ROWS, encoding="utf-8")
    binary_file.write_text(BINARY_ROWS, encoding="utf-8")

    pairs = load_scoring_pairs(nli3_file, "nli3")
    assert pairs.scheme is NLI3 and pairs.labels.tolist() == [0, 1, 2]
    pairs = load_scoring_pairs(nli3_file, "nli3", "binary")  # nli3 labels collapse
    assert pairs.scheme is BINARY and pairs.labels.tolist() == [0, 1, 1]
    pairs = load_scoring_pairs(nli3_file, "binary")  # a binary model: binary without asking
    assert pairs.scheme is BINARY and pairs.labels.tolist() == [0, 1, 1]
    pairs = load_scoring_pairs(binary_file, "nli3", "binary")
    assert pairs.scheme is BINARY and pairs.labels.tolist() == [0, 1, 1]

    with pytest.raises(ConfigError, match="cannot tell neutral from contradiction"):
        load_scoring_pairs(nli3_file, "binary", "nli3")
    # A binary file for an nli3 model without a scheme: one line saying what to do, not one per row.
    with pytest.raises(DataError) as info:
        load_scoring_pairs(binary_file, "nli3")
    assert str(info.value) == (
        f"{binary_file}: labels are binary (entailment / not_entailment), not nli3 (2 problems reading them "
        "as nli3); score the nli3 model on them as binary with scheme binary (--scheme binary)"
    )
    # A file that fits neither keeps the nli3 problems.
    bad = tmp_path / "bad.tsv"
    bad.write_text(NLI3_ROWS + "G.\tH.\tentails\n", encoding="utf-8")
    with pytest.raises(DataError, match=r'line 5: label: "entails" is not one of entailment, neutral, contradiction$'):
        load_scoring_pairs(bad, "nli3")


def test_load_scoring_pairs_from_named_datasets(shared_home: Path) -> None:
    rte = load_scoring_pairs("rte:dev", "nli3")  # a binary dataset: binary for an nli3 model
    assert rte.scheme is BINARY and rte.source == "rte:dev"
    snli = load_scoring_pairs("snli:dev", "binary")  # an nli3 dataset for a binary model: collapsed
    assert snli.scheme is BINARY and set(np.unique(snli.labels).tolist()) == {0, 1}
    assert load_scoring_pairs("snli:dev", "nli3").scheme is NLI3
    with pytest.raises(ConfigError, match="rte has binary labels"):
        load_scoring_pairs("rte:dev", "nli3", "nli3")
    with pytest.raises(ConfigError, match="cannot tell neutral from contradiction"):
        load_scoring_pairs("rte:dev", "binary", "nli3")


def test_model_inputs_unlabel_rows_read_under_another_scheme(tmp_path: Path) -> None:
    path = tmp_path / "nli3.tsv"
    path.write_text(NLI3_ROWS, encoding="utf-8")
    same = load_scoring_pairs(path, "nli3")
    assert model_inputs(same, "nli3") is same
    binary = load_scoring_pairs(path, "nli3", "binary")
    inputs = model_inputs(binary, "nli3")
    assert inputs.scheme is NLI3 and inputs.labels.tolist() == [-1, -1, -1]
    assert inputs.premises == binary.premises and inputs.hypotheses == binary.hypotheses
    assert binary.scheme is BINARY and binary.labels.tolist() == [0, 1, 1]  # the scored pairs are untouched
