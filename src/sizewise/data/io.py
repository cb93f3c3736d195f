"""Reading and validating pair files: TSV, CSV and JSON lines, each optionally gzip-compressed.

Every problem in a file is collected first and raised together as one :class:`DataError`, each
problem naming the file, the line and the field (``train.tsv line 14: label: "entails" is not one
of entailment, neutral, contradiction``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from sizewise.data.labels import NO_GOLD_LABELS, LabelScheme, get_scheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: The fields of a pair row; ``columns`` maps these onto a file's own column names.
FIELDS = ("premise", "hypothesis", "label")
#: File formats :func:`read_pairs` understands, and the suffixes that imply them.
FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}

_GZIP_MAGIC = b"\x1f\x8b"
_UNLABELLED = -1
_SKIP = -2  # a no-consensus label ("-"): the row is left out and counted
#: Characters a text may not hold: the C0 controls but tab, line feed and carriage return (which a
#: quoted CSV field or a JSON string may hold), and DEL. NUL is the usual sign of a UTF-16 file or
#: binary data read as text; the others (escape sequences, bells) are not sentence text either.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def infer_format(path: str | os.PathLike[str]) -> str:
    """The format (``tsv``, ``csv`` or ``jsonl``) implied by a file name, ignoring a ``.gz`` suffix."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in FORMATS:
        return FORMATS[suffixes[-1]]
    raise DataError(
        f"{path}: cannot tell the format from the file name; name it .tsv, .csv or .jsonl "
        "(optionally .gz) or pass the format explicitly"
    )


def read_pairs(
    path: str | os.PathLike[str],
    scheme: str | LabelScheme = "nli3",
    *,
    columns: dict[str, str] | None = None,
    fmt: str | None = None,
    require_labels: bool = True,
) -> PairData:
    """Read and validate a file of sentence pairs.

    ``columns`` maps our field names (``premise``, ``hypothesis``, ``label``) to the file's column
    names; ``fmt`` overrides the format inferred from the suffix. Rows whose label is SNLI's
    no-consensus ``-`` are left out and counted in ``PairData.skipped``. With
    ``require_labels=False`` (prediction input) a missing label column, an empty label or ``-``
    gives label -1 and every row is kept. A text holding a control character other than tab, line
    feed or carriage return (NUL, escape, ...) is a bad row. Raises :class:`DataError` listing every
    problem found.
    """
    label_scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    names = _column_names(columns)
    name = str(path)
    fmt = _check_format(fmt)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a folder, not a file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({exc.strerror or exc})") from None
    text, problems, bad_lines = _decode(raw, name)
    fmt = fmt or infer_format(path)
    return _parse_text(text, problems, bad_lines, name, label_scheme, fmt, names, require_labels)


def parse_pairs(
    raw: bytes,
    name: str,
    scheme: str | LabelScheme = "nli3",
    *,
    fmt: str,
    columns: dict[str, str] | None = None,
    require_labels: bool = True,
) -> PairData:
    """Validate the bytes of a pair file (gzip-compressed or not) in format ``fmt``, as
    :func:`read_pairs` does; ``name`` stands for the file in messages and as the data's source
    (``<stdin>`` for standard input)."""
    label_scheme = get_scheme(scheme) if isinstance(scheme, str) else scheme
    names = _column_names(columns)
    fmt = _check_format(fmt) or "tsv"
    text, problems, bad_lines = _decode(raw, name)
    return _parse_text(text, problems, bad_lines, name, label_scheme, fmt, names, require_labels)


def _parse_text(
    text: str,
    problems: list[str],
    bad_lines: set[int],
    name: str,
    label_scheme: LabelScheme,
    fmt: str,
    names: dict[str, str],
    require_labels: bool,
) -> PairData:
    if not text.strip():
        raise DataError(problems or [f"{name}: file is empty"])

    reader = _Rows(name, label_scheme, names, require_labels, problems, bad_lines)
    # The common case: one fast scan of the text finds no control character, and no row is checked
    # for them (a JSON string may hold one escaped: \u0000).
    reader.check_controls = _CONTROL.search(text) is not None or (fmt == "jsonl" and "\\u" in text)
    if fmt == "jsonl":
        reader.read_jsonl(text)
    else:
        reader.read_table(text, fmt)

    if reader.problems:
        raise DataError(reader.problems)
    if not reader.premises:
        if reader.skipped:
            raise DataError(f'{name}: no rows with a gold label ({reader.skipped} skipped with "-")')
        raise DataError(f"{name}: no rows" + ("" if fmt == "jsonl" else " (only a header)"))
    data = PairData(
        reader.premises,
        reader.hypotheses,
        np.asarray(reader.labels, dtype=np.int64),
        label_scheme,
        source=name,
        skipped=reader.skipped,
    )
    logger.debug("read %d pairs from %s (%d skipped)", len(data), name, data.skipped)
    return data


def _check_format(fmt: str | None) -> str | None:
    """``fmt`` as one of tsv, csv, jsonl (a suffix such as ``.json`` names its format); None stays None."""
    if fmt is None:
        return None
    known = FORMATS.get("." + fmt.lower().lstrip("."), fmt.lower())
    if known not in set(FORMATS.values()):
        raise ConfigError("read_pairs", [f"unknown format {fmt!r}; choose one of tsv, csv, jsonl"])
    return known


def _column_names(columns: dict[str, str] | None) -> dict[str, str]:
    names = {f: f for f in FIELDS}
    if columns:
        unknown = sorted(set(columns) - set(FIELDS))
        if unknown:
            raise ConfigError("columns", [f"unknown field {u!r}; map only {', '.join(FIELDS)}" for u in unknown])
        names.update(columns)
    return names


def _is_gzip(raw: bytes, name: str) -> bool:
    return raw[:2] == _GZIP_MAGIC or name.lower().endswith(".gz")


def _decode(raw: bytes, name: str) -> tuple[str, list[str], set[int]]:
    """The decoded text of a file's bytes, plus one problem per undecodable line and those line numbers."""
    if _is_gzip(raw, name):
        if not raw:
            raise DataError(f"{name}: file is empty")
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{name}: not a valid gzip file ({exc})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), [], set()
    except UnicodeDecodeError:
        pass
    # Slow path, only for broken files: decode line by line to name every bad line.
    problems: list[str] = []
    bad: set[int] = set()
    for number, line in enumerate(raw.split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.add(number)
            byte = f"0x{line[exc.start]:02x}"
            problems.append(f"{name} line {number}: not valid UTF-8 (byte {byte} at column {exc.start + 1})")
    return raw.decode("utf-8", errors="replace"), problems, bad


class _Rows:
    """Accumulates validated rows and problems while one file is parsed."""

    def __init__(
        self,
        name: str,
        scheme: LabelScheme,
        names: dict[str, str],
        require_labels: bool,
        problems: list[str],
        bad_lines: set[int],
    ) -> None:
        self.name = name
        self.scheme = scheme
        self.names = names
        self.require_labels = require_labels
        self.problems = problems
        self.bad_lines = bad_lines
        self.premises: list[str] = []
        self.hypotheses: list[str] = []
        self.labels: list[int] = []
        self.skipped = 0
        #: Whether the text holds a control character somewhere, so that each text must be checked.
        self.check_controls = True
        self._label_cache: dict[str, int | None] = {}
        self._choices = ", ".join(scheme.labels)

    def add(self, line: int, premise: str, hypothesis: str, label: str | None) -> None:
        """Validate one row and keep it, or record its problems."""
        if line in self.bad_lines:
            return  # already reported as undecodable
        ok = True
        for field, text in (("premise", premise), ("hypothesis", hypothesis)):
            if not text.strip():
                self.problems.append(f"{self.name} line {line}: {field}: empty text")
                ok = False
            elif self.check_controls and (found := _CONTROL.search(text)) is not None:
                self.problems.append(
                    f"{self.name} line {line}: {field}: control character {_codepoint(found.group())} "
                    f"at character {found.start() + 1} of the text"
                )
                ok = False
        y = self._label(line, label)
        if y is None or not ok:
            return
        if y == _SKIP:
            self.skipped += 1
            return
        self.premises.append(premise)
        self.hypotheses.append(hypothesis)
        self.labels.append(y)

    def _label(self, line: int, raw: str | None) -> int | None:
        if raw is None or not raw.strip():
            if self.require_labels:
                self.problems.append(f"{self.name} line {line}: label: empty label")
                return None
            return _UNLABELLED
        try:
            y = self._label_cache[raw]
        except KeyError:
            if raw.strip() in NO_GOLD_LABELS:
                y = _SKIP if self.require_labels else _UNLABELLED
            else:
                y = self.scheme.index(raw)
            self._label_cache[raw] = y
        if y is None:
            self.problems.append(f'{self.name} line {line}: label: "{_excerpt(raw)}" is not one of {self._choices}')
        return y

    def _header_positions(self, header: list[str]) -> dict[str, int] | None:
        """Column index of each field, or None (with a problem recorded) when a column is missing."""
        found = [h.strip() for h in header]
        positions: dict[str, int] = {}
        missing = False
        for field in FIELDS:
            column = self.names[field]
            if column in found:
                positions[field] = found.index(column)
            elif field == "label" and not self.require_labels:
                continue
            else:
                self.problems.append(
                    f'{self.name} line 1: header: missing column "{column}" (found: {", ".join(found)})'
                )
                missing = True
        return None if missing else positions

    def read_table(self, text: str, fmt: str) -> None:
        """Parse TSV (no quoting, as the shared files are written) or CSV (standard quoting)."""
        rows = _tsv_rows(text) if fmt == "tsv" else _csv_rows(text, self.name)
        first = next(rows, None)
        if first is None:
            return
        if 1 in self.bad_lines:
            return  # an unreadable header: nothing else can be checked
        positions = self._header_positions(first[1])
        if positions is None:
            return
        width = len(first[1])
        p, h = positions["premise"], positions["hypothesis"]
        y = positions.get("label")
        for line, fields in rows:
            if len(fields) != width:
                if line not in self.bad_lines:
                    self.problems.append(
                        f"{self.name} line {line}: row: expected {width} fields as in the header, "
                        f"found {len(fields)}" + (" (a tab inside a text?)" if fmt == "tsv" else "")
                    )
                continue
            self.add(line, fields[p], fields[h], None if y is None else fields[y])

    def read_jsonl(self, text: str) -> None:
        """Parse one JSON object per line."""
        pk, hk, yk = self.names["premise"], self.names["hypothesis"], self.names["label"]
        for line, raw in enumerate(text.split("\n"), start=1):
            if not raw.strip() or line in self.bad_lines:
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                hint = " (one JSON object per line is expected)" if raw.lstrip().startswith("[") else ""
                self.problems.append(f"{self.name} line {line}: not valid JSON ({exc.msg} at column {exc.colno}){hint}")
                continue
            if not isinstance(obj, dict):
                self.problems.append(f"{self.name} line {line}: not a JSON object (found {type(obj).__name__})")
                continue
            values: list[str | None] = []
            ok = True
            for field, key in (("premise", pk), ("hypothesis", hk), ("label", yk)):
                value = obj.get(key)
                if key not in obj and (field != "label" or self.require_labels):
                    found = ", ".join(map(str, obj)) or "none"
                    self.problems.append(f'{self.name} line {line}: {field}: missing field "{key}" (found: {found})')
                    ok = False
                elif value is not None and not isinstance(value, (str, int)):
                    self.problems.append(
                        f"{self.name} line {line}: {field}: expected a string, found {type(value).__name__}"
                    )
                    ok = False
                values.append(None if value is None else str(value))
            if ok:
                self.add(line, values[0] or "", values[1] or "", values[2])


def _codepoint(char: str) -> str:
    """``U+0000 (NUL)``: a control character as it can be named in a message."""
    names = {0: "NUL", 7: "BEL", 8: "backspace", 0x1B: "escape", 0x7F: "DEL"}
    code = ord(char)
    return f"U+{code:04X}" + (f" ({names[code]})" if code in names else "")


def _excerpt(raw: str, limit: int = 40) -> str:
    """A field's value fit for a one-line message: whitespace runs as one space, control characters
    as ``\\xNN``, cut at ``limit`` characters and marked ``…`` (a shifted column can put a whole
    sentence, or a quoted newline, in the label field)."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", " ".join(raw.split()))
    return text if len(text) <= limit else text[:limit].rstrip() + "…"


def _tsv_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line, split on tabs with no quoting (csv.QUOTE_NONE)."""
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if "\t" in line or line.strip():  # a line of tabs is a row of empty fields, not a blank line
            yield number, line.split("\t")


def _csv_rows(text: str, name: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) of each non-blank CSV record; quoted fields may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    try:
        for fields in reader:
            if len(fields) > 1 or (fields and fields[0].strip()):
                yield start, fields
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{name} line {reader.line_num}: not valid CSV ({exc})") from None
