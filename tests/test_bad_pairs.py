"""Hostile pair input: control characters in texts, and `sizewise predict` on odd sources and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from sizewise.data import read_pairs
from sizewise.errors import DataError
from test_bad_input import GOOD, HEADER, _assert_one_clean_error


# --- control characters ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("nul.tsv", HEADER + GOOD + b"A cat\x00 sleeps.\tA cat rests.\tentailment\n", "line 3: premise"),
        ("bell.tsv", HEADER + b"A cat sleeps.\tA cat\x07 rests.\tentailment\n", "line 2: hypothesis"),
        ("nul.csv", b'premise,hypothesis,label\n"A cat\x00 sleeps.",A cat rests.,entailment\n', "line 2: premise"),
        ("nul.jsonl", b'{"premise": "A\\u0000 cat", "hypothesis": "A cat rests.", "label": "neutral"}\n', "line 1"),
        ("esc.jsonl", b'{"premise": "A cat", "hypothesis": "A \\u001b[31m cat", "label": "neutral"}\n', "line 1"),
    ],
)
def test_control_characters_in_a_text_name_file_line_and_field(name: str, content: bytes, where: str, tmp_path: Path):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_pairs(path)
    message = str(info.value)
    assert message.startswith(f"{path} {where}"), message
    assert "control character" in message
    assert "\x00" not in message and "\x1b" not in message and "\n" not in message


def test_tabs_and_newlines_inside_quoted_csv_and_json_texts_are_accepted(tmp_path: Path) -> None:
    csv_path = tmp_path / "ok.csv"
    csv_path.write_bytes(b'premise,hypothesis,label\r\n"A cat\tsleeps\r\non a mat.",A cat rests.,entailment\r\n')
    jsonl_path = tmp_path / "ok.jsonl"
    jsonl_path.write_text(json.dumps({"premise": "A\tcat\nsleeps.", "hypothesis": "A cat.", "label": "neutral"}))
    assert read_pairs(csv_path).premises == ["A cat\tsleeps\r\non a mat."]
    assert read_pairs(jsonl_path).premises == ["A\tcat\nsleeps."]


def test_a_control_character_in_a_bad_label_is_not_copied_into_the_message(tmp_path: Path) -> None:
    path = tmp_path / "label.tsv"
    path.write_bytes(HEADER + b"A cat sleeps.\tA cat rests.\tentail\x00ment\n")
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert "\x00" not in str(info.value) and "line 2: label" in str(info.value)


# --- sizewise predict -----------------------------------------------------------------------------
def test_predict_reads_a_file_without_extension_in_the_format_given(saved_bilstm: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs"
    pairs.write_bytes(HEADER + GOOD)
    proc = run_cli("predict", str(saved_bilstm), str(pairs), "--format", "tsv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("label\tp_entailment")
    assert len(proc.stdout.splitlines()) == 2


def test_predict_errors_on_standard_input_name_stdin(saved_bilstm: Path) -> None:
    bad = (HEADER + GOOD + b"A dog\x00 runs.\tAn animal moves.\n").decode()
    proc = run_cli("predict", str(saved_bilstm), "-", input=bad)
    line = _assert_one_clean_error(proc, ["<stdin> line 3"])
    assert "tmp" not in line and "stdin.tsv" not in line
    assert proc.stdout == ""


def test_predict_into_an_existing_folder_is_one_clean_error(saved_bilstm: Path, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(HEADER + GOOD)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("predict", str(saved_bilstm), str(pairs), "-o", str(out))
    _assert_one_clean_error(proc, [str(out), "folder"])
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "pairs.tsv"]
