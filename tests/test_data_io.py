"""read_pairs: formats, compression, validation messages (file, line, field) and speed."""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import fastest_seconds
from sizewise.data import read_pairs
from sizewise.data.labels import BINARY, NLI3
from sizewise.errors import ConfigError, DataError

SHARED_DATA = Path(os.environ.get("SIZEWISE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))

ROWS = [
    ("A man plays a guitar.", "A person makes music.", "entailment"),
    ("A dog runs, in the park.", 'The "dog" sleeps.', "contradiction"),
    ("Two kids eat lunch.", "The kids are at school.", "neutral"),
]


def _write(path: Path, text: str | bytes) -> Path:
    data = text.encode() if isinstance(text, str) else text
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _tsv(rows, header=("premise", "hypothesis", "label")) -> str:
    return "\n".join("\t".join(r) for r in [header, *rows]) + "\n"


def _csv(rows, header=("premise", "hypothesis", "label")) -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _jsonl(rows, keys=("premise", "hypothesis", "label")) -> str:
    return "".join(json.dumps(dict(zip(keys, r, strict=True))) + "\n" for r in rows)


def _problems(path: Path, **kwargs) -> list[str]:
    with pytest.raises(DataError) as info:
        read_pairs(path, **kwargs)
    return info.value.problems


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl", ".json", ".tsv.gz", ".csv.gz", ".jsonl.gz"])
def test_reads_every_format_with_and_without_gzip(tmp_path: Path, suffix: str) -> None:
    fmt = suffix.split(".")[1]
    text = {"tsv": _tsv, "csv": _csv, "jsonl": _jsonl, "json": _jsonl}[fmt](ROWS)
    path = _write(tmp_path / f"pairs{suffix}", text)
    data = read_pairs(path)
    assert data.premises == [r[0] for r in ROWS]
    assert data.hypotheses == [r[1] for r in ROWS]
    assert data.labels.tolist() == [0, 2, 1]
    assert data.scheme is NLI3
    assert data.source == str(path)
    assert data.skipped == 0


def test_tsv_has_no_quoting(tmp_path: Path) -> None:
    path = _write(tmp_path / "q.tsv", _tsv([('"Quoted start', 'ends with "', "neutral")]))
    data = read_pairs(path)
    assert data.premises == ['"Quoted start']
    assert data.hypotheses == ['ends with "']


def test_csv_quoted_newline_keeps_line_numbers(tmp_path: Path) -> None:
    rows = [("line one\nline two", "h", "neutral"), ("p", "h", "entails")]
    path = _write(tmp_path / "multi.csv", _csv(rows))
    assert _problems(path) == [f'{path} line 4: label: "entails" is not one of {", ".join(NLI3.labels)}']


def test_fmt_overrides_suffix_and_unknown_suffix_fails(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.txt", _tsv(ROWS))
    assert len(read_pairs(path, fmt="tsv")) == 3
    assert _problems(path)[0].startswith(f"{path}: cannot tell the format")
    with pytest.raises(ConfigError):
        read_pairs(path, fmt="parquet")


def test_gzip_detected_by_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_bytes(gzip.compress(_tsv(ROWS).encode()))
    assert len(read_pairs(path)) == 3


def test_bom_and_crlf(tmp_path: Path) -> None:
    path = _write(tmp_path / "win.tsv", b"\xef\xbb\xbf" + _tsv(ROWS).replace("\n", "\r\n").encode())
    data = read_pairs(path)
    assert data.labels.tolist() == [0, 2, 1]
    assert data.hypotheses[0] == "A person makes music."


def test_column_mapping(tmp_path: Path) -> None:
    header = ("pairID", "sentence1", "sentence2", "gold_label")
    path = _write(tmp_path / "snli.tsv", _tsv([("x1", *ROWS[0])], header=header))
    columns = {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}
    data = read_pairs(path, columns=columns)
    assert (data.premises[0], data.labels.tolist()) == (ROWS[0][0], [0])
    jpath = _write(tmp_path / "snli.jsonl", _jsonl(ROWS, keys=header[1:]))
    assert read_pairs(jpath, columns=columns).labels.tolist() == [0, 2, 1]
    with pytest.raises(ConfigError):
        read_pairs(path, columns={"premis": "sentence1"})


# --- labels --------------------------------------------------------------------------------------


def test_no_consensus_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = [*ROWS, ("p4", "h4", "-"), ("p5", "h5", "-")]
    path = _write(tmp_path / "snli.tsv.gz", _tsv(rows))
    data = read_pairs(path)
    assert len(data) == 3
    assert data.skipped == 2


def test_only_no_consensus_rows_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "dash.tsv", _tsv([("p", "h", "-")]))
    assert _problems(path) == [f'{path}: no rows with a gold label (1 skipped with "-")']


def test_binary_collapses_nli3_labels(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.tsv", _tsv(ROWS))
    data = read_pairs(path, "binary")
    assert data.scheme is BINARY
    assert data.labels.tolist() == [0, 1, 1]
    assert data.label_counts() == {"entailment": 1, "not_entailment": 2}


def test_numeric_labels_in_jsonl(tmp_path: Path) -> None:
    path = _write(tmp_path / "hf.jsonl", _jsonl([("p", "h", 2), ("p", "h", 0)]))
    assert read_pairs(path).labels.tolist() == [2, 0]


def test_unlabelled_input_when_labels_not_required(tmp_path: Path) -> None:
    no_column = _write(tmp_path / "nolabel.tsv", "premise\thypothesis\np1\th1\np2\th2\n")
    data = read_pairs(no_column, require_labels=False)
    assert data.labels.tolist() == [-1, -1]
    assert not data.has_labels
    empty = _write(tmp_path / "some.tsv", _tsv([("p", "h", ""), ("p", "h", "neutral"), ("p", "h", "-")]))
    data = read_pairs(empty, require_labels=False)
    assert data.labels.tolist() == [-1, 1, -1]
    assert data.skipped == 0
    jsonl = _write(tmp_path / "nolabel.jsonl", '{"premise": "p", "hypothesis": "h"}\n')
    assert read_pairs(jsonl, require_labels=False).labels.tolist() == [-1]


# --- bad input: every problem, with file, line and field ----------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.tsv"
    assert _problems(path) == [f"{path}: no such file"]


@pytest.mark.parametrize("name", ["empty.tsv", "empty.jsonl", "empty.csv.gz"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, "")
    if name.endswith(".gz"):
        path.write_bytes(b"")
    assert _problems(path) == [f"{path}: file is empty"]


def test_header_only(tmp_path: Path) -> None:
    path = _write(tmp_path / "header.tsv", "premise\thypothesis\tlabel\n")
    assert _problems(path) == [f"{path}: no rows (only a header)"]


def test_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "cols.tsv", "a\tb\tc\nx\ty\tz\n")
    problems = _problems(path)
    assert problems[-1] == f'{path} line 1: header: missing column "label" (found: a, b, c)'
    assert problems[0] == f'{path} line 1: header: missing column "premise" (found: a, b, c)'
    assert len(problems) == 3


def test_unknown_label_names_line_and_choices(tmp_path: Path) -> None:
    rows = [ROWS[0]] * 12 + [("p", "h", "entails")]
    path = _write(tmp_path / "train.tsv", _tsv(rows))
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert info.value.problems == [f'{path} line 14: label: "entails" is not one of entailment, neutral, contradiction']
    assert str(info.value) == info.value.problems[0]


def test_empty_texts_and_all_problems_collected(tmp_path: Path) -> None:
    rows = [ROWS[0], ("  ", "h", "neutral"), ("p", "", "neutral"), ("p", "h", "maybe"), ("", "", "")]
    path = _write(tmp_path / "bad.tsv", _tsv(rows))
    assert _problems(path) == [
        f"{path} line 3: premise: empty text",
        f"{path} line 4: hypothesis: empty text",
        f'{path} line 5: label: "maybe" is not one of entailment, neutral, contradiction',
        f"{path} line 6: premise: empty text",
        f"{path} line 6: hypothesis: empty text",
        f"{path} line 6: label: empty label",
    ]


def test_wrong_field_count_in_tsv(tmp_path: Path) -> None:
    text = _tsv(ROWS) + "a premise\twith a tab\ta hypothesis\tneutral\nonly one field\n"
    path = _write(tmp_path / "fields.tsv", text)
    problems = _problems(path)
    assert problems == [
        f"{path} line 5: row: expected 3 fields as in the header, found 4 (a tab inside a text?)",
        f"{path} line 6: row: expected 3 fields as in the header, found 1 (a tab inside a text?)",
    ]


def test_undecodable_bytes_name_the_line(tmp_path: Path) -> None:
    raw = _tsv(ROWS).encode() + b"caf\xe9 au lait\th\tneutral\n" + b"p\th\tneutral\n" + b"\xff\th\tneutral\n"
    for name in ("latin1.tsv", "latin1.tsv.gz"):
        path = _write(tmp_path / name, raw)
        assert _problems(path) == [
            f"{path} line 5: not valid UTF-8 (byte 0xe9 at column 4)",
            f"{path} line 7: not valid UTF-8 (byte 0xff at column 1)",
        ]


def test_bad_gzip_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.tsv.gz"
    path.write_bytes(b"this is not gzip")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}: not a valid gzip file")
    truncated = tmp_path / "truncated.tsv.gz"
    truncated.write_bytes(gzip.compress(_tsv(ROWS * 50).encode())[:60])
    [problem] = _problems(truncated)
    assert problem.startswith(f"{truncated}: not a valid gzip file")


def test_bad_json_lines(tmp_path: Path) -> None:
    text = (
        _jsonl(ROWS[:1])
        + '{"premise": "p", "hypothesis": "h", label: 1}\n'
        + '["p", "h", "neutral"]\n'
        + '{"premise": "p", "label": "neutral"}\n'
        + '{"premise": "p", "hypothesis": ["h"], "label": "neutral"}\n'
    )
    path = _write(tmp_path / "bad.jsonl", text)
    assert _problems(path) == [
        f"{path} line 2: not valid JSON (Expecting property name enclosed in double quotes at column 37)",
        f"{path} line 3: not a JSON object (found list)",
        f'{path} line 4: hypothesis: missing field "hypothesis" (found: premise, label)',
        f"{path} line 5: hypothesis: expected a string, found list",
    ]


def test_data_error_string_summarises_many_problems(tmp_path: Path) -> None:
    rows = [("p", "h", f"bad{i}") for i in range(30)]
    path = _write(tmp_path / "many.tsv", _tsv(rows))
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert len(info.value.problems) == 30
    choices = "is not one of entailment, neutral, contradiction"
    # The first problem in full, three more from "line" on (the file name said once), then the count.
    assert str(info.value) == (
        f'{path} line 2: label: "bad0" {choices} (also line 3: label: "bad1" {choices}; '
        f'line 4: label: "bad2" {choices}; line 5: label: "bad3" {choices}; … and 26 more problems: 30 in all)'
    )


def test_data_error_string_with_few_problems_shows_them_all() -> None:
    assert str(DataError(["a.tsv line 2: x"])) == "a.tsv line 2: x"
    assert str(DataError(["a.tsv line 2: x", "a.tsv line 3: y"])) == "a.tsv line 2: x (also line 3: y)"
    four = ["a.tsv line 2: w", "b.tsv line 3: x", "a.tsv line 4: y", "no line here"]
    assert str(DataError(four)) == "a.tsv line 2: w (also b.tsv line 3: x; line 4: y; no line here)"
    five = [*four, "a.tsv line 9: z"]
    assert str(DataError(five)).endswith("; no line here; … and 1 more problem: 5 in all)")
    assert str(DataError([])) == "bad data"


def test_5000_bad_rows_give_a_short_message_with_the_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An evaluation set of 5,000 rows with a label the scheme does not know: the error names a few
    # of them and how many there are, in one short line; ``problems`` keeps every one.
    monkeypatch.chdir(tmp_path)  # the length checked is the message's own, not that of pytest's folder
    rows = [(f"premise {i}", f"hypothesis {i}", "not_entailment" if i % 2 else "entails") for i in range(5000)]
    _write(tmp_path / "eval.tsv", _tsv(rows))
    with pytest.raises(DataError) as info:
        read_pairs("eval.tsv")
    message = str(info.value)
    assert len(info.value.problems) == 5000
    assert info.value.problems[-1] == 'eval.tsv line 5001: label: "not_entailment" is not one of ' + (
        "entailment, neutral, contradiction"
    )
    assert len(message) < 400, message
    assert "\n" not in message
    assert message.startswith('eval.tsv line 2: label: "entails" is not one of entailment, neutral, contradiction')
    assert message.count("line ") == 4
    assert message.endswith("… and 4,996 more problems: 5,000 in all)")


def test_a_long_bad_label_is_cut_in_the_message(tmp_path: Path) -> None:
    sentence = "A man in a red shirt\nis playing a guitar on a stage in front of a large crowd."
    path = _write(tmp_path / "shifted.csv", _csv([("p", "h", sentence)]))
    (problem,) = _problems(path)
    assert problem == f'{path} line 2: label: "A man in a red shirt is playing a guitar…" is not one of ' + (
        "entailment, neutral, contradiction"
    )


# --- real data -----------------------------------------------------------------------------------


def test_reads_45k_gz_tsv_quickly() -> None:
    path = SHARED_DATA / "lingnli" / "train.tsv.gz"
    elapsed, data = fastest_seconds(lambda: read_pairs(path))
    assert len(data) == 44_932
    assert data.label_counts() == {"entailment": 14_965, "neutral": 14_986, "contradiction": 14_981}
    assert elapsed < 1.0, f"read took {elapsed:.2f}s"
    assert isinstance(data.labels, np.ndarray)


def test_describe_and_format(tmp_path: Path) -> None:
    from sizewise.data.info import describe, format_description

    rows = [("a b c", "x", "entailment"), ("a b c d e", "x y", "entailment"), ("a", "x y z", "neutral")]
    data = read_pairs(_write(tmp_path / "d.tsv", _tsv([*rows, ("p", "h", "-")])))
    desc = describe(data)
    assert (desc["rows"], desc["skipped"]) == (3, 1)
    assert desc["labels"]["entailment"] == {"count": 2, "percent": 66.67}
    assert desc["labels"]["contradiction"] == {"count": 0, "percent": 0.0}
    assert desc["premise_tokens"] == {"mean": 3.0, "median": 3.0, "p95": 4.8, "max": 5}
    assert desc["hypothesis_tokens"]["max"] == 3
    text = format_description(desc)
    assert "entailment 2 66.67" in [" ".join(line.split()) for line in text.splitlines()]
    assert "premise" in text and "p95" in text
