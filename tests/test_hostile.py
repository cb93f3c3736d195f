"""Property-based hostile input (hypothesis, derandomized, fixed budgets): pair files, study files and
saved model folders, valid or mutated or random. Each input either works (and the result is sane) or
raises the one-line SizewiseError of its kind naming the file; never any other exception.

Every input tried is counted by outcome in :data:`OUTCOMES` (``ok``, ``clean error``, ``other``); the
last test prints the table. ``benchmarks/hostile_inputs.py`` runs the same properties with a larger
budget and prints the same table.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import DOZEN_ROWS, TINY_BILSTM, dozen_pairs, run_cli
from sizewise.errors import ConfigError, DataError, ModelError, SizewiseError

#: Examples per property in the test suite (the benchmark script passes its own).
BUDGET = {"pairs_random": 150, "pairs_mutated": 250, "study": 150, "models": 120}
#: ``area -> Counter(outcome -> inputs)``: what the properties met, for the table.
OUTCOMES: dict[str, Counter[str]] = {}

_SETTINGS = {"derandomize": True, "deadline": None, "suppress_health_check": list(HealthCheck), "database": None}


def _record(area: str, outcome: str) -> None:
    OUTCOMES.setdefault(area, Counter())[outcome] += 1


@contextmanager
def outcome_of(area: str, error: type[SizewiseError], names: str) -> Iterator[None]:
    """Count the outcome of the block: ``ok``, ``clean error`` (``error``, one line, naming ``names``)
    or ``other`` (anything else, which then fails the test)."""
    try:
        yield
    except error as exc:
        message = str(exc)
        if "\n" in message or names not in message:
            _record(area, "other")
            raise AssertionError(f"not one line naming {names}: {message!r}") from exc
        _record(area, "clean error")
    except BaseException:
        _record(area, "other")
        raise
    else:
        _record(area, "ok")


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="sizewise-hostile-"))


# --- pair files ------------------------------------------------------------------------------------
SUFFIXES = [".tsv", ".csv", ".jsonl", ".tsv.gz", ".jsonl.gz"]


def _valid_pair_text(fmt: str, rows: list[tuple[str, str, str]]) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(dict(zip(("premise", "hypothesis", "label"), r))) + "\n" for r in rows)
    sep = "\t" if fmt == "tsv" else ","
    quote = (lambda s: s) if fmt == "tsv" else (lambda s: '"' + s.replace('"', '""') + '"')
    lines = [sep.join(["premise", "hypothesis", "label"])]
    lines += [sep.join(quote(x) for x in r) for r in rows]
    return "\n".join(lines) + "\n"


def _check_pairs(path: Path, area: str) -> None:
    from sizewise.data import read_pairs

    with outcome_of(area, DataError, str(path)):
        data = read_pairs(path)
        n = len(data)
        assert n > 0 and len(data.premises) == len(data.hypotheses) == len(data.labels) == n
        assert all(0 <= y < data.scheme.num_labels for y in data.labels)
        assert all(p.strip() and h.strip() for p, h in zip(data.premises, data.hypotheses))


def check_pair_file(case: tuple[str, bytes], area: str) -> None:
    """Write ``case`` (suffix, bytes) as a pair file and read it."""
    suffix, raw = case
    folder = _scratch()
    try:
        path = folder / f"pairs{suffix}"
        path.write_bytes(raw)
        _check_pairs(path, area)
    finally:
        shutil.rmtree(folder)


RANDOM_PAIR_FILES = st.tuples(st.sampled_from(SUFFIXES), st.binary(max_size=400))


@settings(max_examples=BUDGET["pairs_random"], **_SETTINGS)
@given(case=RANDOM_PAIR_FILES)
def test_random_bytes_as_a_pair_file(case: tuple[str, bytes]) -> None:
    check_pair_file(case, "pair files: random bytes")


CONTROL = st.sampled_from(["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\t", "\r", "\ufeff"])


@st.composite
def mutated_pair_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid TSV / CSV / JSONL file of a few dozen-pair rows, then a few of: inserted or deleted
    bytes, swapped fields, a control character, a very long field, CRLF line ends, another encoding,
    a BOM, gzip."""
    suffix = draw(st.sampled_from(SUFFIXES))
    fmt = suffix.split(".")[1]
    rows = [list(r) for r in draw(st.lists(st.sampled_from(DOZEN_ROWS), min_size=1, max_size=5))]
    for _ in range(draw(st.integers(0, 2))):
        row, i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 2)), draw(st.integers(0, 2))
        rows[row][i], rows[row][j] = rows[row][j], rows[row][i]
    if draw(st.booleans()):
        row, i = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 1))
        rows[row][i] = draw(st.sampled_from(["x" * 100_000, "word " * 20_000, "é" * 5000]))
    text = _valid_pair_text(fmt, [tuple(r) for r in rows])  # type: ignore[misc]
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(CONTROL | st.text(max_size=3)) + text[at:]
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "latin-1", "cp1252"]))
    raw = text.encode(encoding, errors="replace")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(raw)))
        if draw(st.booleans()):
            raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
        else:
            raw = raw[:at] + raw[at + draw(st.integers(1, 8)) :]
    if suffix.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
        if draw(st.integers(0, 4)) == 0:  # a truncated archive
            raw = raw[: draw(st.integers(0, len(raw)))]
    return suffix, raw


@settings(max_examples=BUDGET["pairs_mutated"], **_SETTINGS)
@given(case=mutated_pair_files())
def test_mutated_pair_files(case: tuple[str, bytes]) -> None:
    check_pair_file(case, "pair files: mutated")


# --- study files -----------------------------------------------------------------------------------
VALID_STUDY: dict[str, Any] = {
    "name": "hostile",
    "seed": 0,
    "data": {"train": "train.tsv", "test": "test.tsv", "scheme": "nli3", "train_size": 6},
    "arms": [
        {"name": "bilstm", "learner": dict(TINY_BILSTM)},
        {"name": "bagged", "learner": {"kind": "ensemble", "n_learners": 2, "base": dict(TINY_BILSTM)}},
        {"name": "floor", "majority": {}},
    ],
    "evaluation": {"baseline": "bilstm"},
}

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["bilstm", "ensemble", "snli:train", "../../etc/passwd", "nli3", "-1", "1e999", "~"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj = json.loads(json.dumps(obj))  # a deep copy
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


_DELETE = object()


@st.composite
def study_texts(draw: st.DrawFn) -> str:
    """A study file: the valid one with values replaced or deleted, a random YAML document, or YAML
    text with characters inserted."""
    kind = draw(st.sampled_from(["mutated", "mutated", "random", "text"]))
    if kind == "random":
        return yaml.safe_dump(draw(VALUES), allow_unicode=True)
    study: Any = VALID_STUDY
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(study)
        path = draw(st.sampled_from(paths))
        value = _DELETE if path and draw(st.integers(0, 3)) == 0 else draw(VALUES)
        study = _replace(study, path, value)
    text = yaml.safe_dump(study, allow_unicode=True, sort_keys=False)
    if kind == "text":
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            text = (
                text[:at]
                + draw(
                    st.sampled_from(
                        [":", "-", "[", "{", "'", '"', "\t", "&a", "*a", "!!python/object:os.system", "\x00", "\n  "]
                    )
                )
                + text[at:]
            )
    return text


@pytest.fixture(scope="module")
def study_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("study")
    for name in ("train.tsv", "test.tsv"):
        (folder / name).write_text(_valid_pair_text("tsv", DOZEN_ROWS), encoding="utf-8")
    return folder


def check_study(folder: Path, text: str) -> None:
    from sizewise.config import load_study

    path = folder / "study.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    with outcome_of("study files", ConfigError, str(path)):
        study = load_study(path)
        assert study.arms and all(isinstance(a.name, str) for a in study.arms)
        for arm in study.arms:
            study.units(arm)


@settings(max_examples=BUDGET["study"], **_SETTINGS)
@given(text=study_texts())
def test_study_files(study_folder: Path, text: str) -> None:
    check_study(study_folder, text)


# --- model folders ---------------------------------------------------------------------------------
_SAVED: dict[str, Path] = {}


def saved_models() -> dict[str, Path]:
    """A tiny BiLSTM and a tiny ensemble of two, trained and saved once per process."""
    if not _SAVED:
        from sizewise.learners import create_learner

        root = _scratch()
        create_learner(dict(TINY_BILSTM, epochs=1)).fit(dozen_pairs()).save(root / "bilstm")
        spec = {"kind": "ensemble", "n_learners": 2, "base": dict(TINY_BILSTM, epochs=1)}
        create_learner(spec).fit(dozen_pairs()).save(root / "ensemble")
        _SAVED.update(bilstm=root / "bilstm", ensemble=root / "ensemble")
    return _SAVED


HOSTILE_VALUES = VALUES | st.sampled_from(
    [
        "ensemble",
        "bilstm",
        "transformer",
        "compressed",
        "binary",
        "../../x",
        "/etc",
        ".",
        "..",
        "member_000",
        "member_001",
        {"AutoModel": "evil.Evil"},
        [1e308, -1e308],
        -1,
        0,
        2**31,
    ]
)


@st.composite
def model_mutations(draw: st.DrawFn) -> tuple[str, list[tuple[str, Any, Any]]]:
    """Which saved model, and a few changes to its files: ``(file, what, argument)``."""
    which = draw(st.sampled_from(["bilstm", "ensemble"]))
    files = sorted(str(p.relative_to(saved_models()[which])) for p in saved_models()[which].rglob("*") if p.is_file())
    changes = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(files))
        what = draw(st.sampled_from(["delete", "truncate", "flip", "edit", "edit", "edit", "garbage"]))
        if what in ("edit",) and not name.endswith(".json"):
            what = "flip"
        if what == "edit":
            changes.append((name, what, (draw(st.integers(0, 10_000)), draw(HOSTILE_VALUES), draw(st.booleans()))))
        elif what in ("truncate", "flip"):
            changes.append((name, what, (draw(st.integers(0, 10_000)), draw(st.integers(1, 255)))))
        else:
            changes.append((name, what, draw(st.binary(max_size=64))))
    return which, changes


def _apply(folder: Path, name: str, what: str, arg: Any) -> None:
    path = folder / name
    if not path.is_file():
        return
    raw = path.read_bytes()
    if what == "delete":
        path.unlink()
    elif what == "garbage":
        path.write_bytes(arg)
    elif what == "truncate":
        path.write_bytes(raw[: arg[0] % (len(raw) + 1)])
    elif what == "flip" and raw:
        at = arg[0] % len(raw)
        path.write_bytes(raw[:at] + bytes([raw[at] ^ arg[1]]) + raw[at + 1 :])
    elif what == "edit":
        index, value, delete = arg
        try:
            data = json.loads(raw)
        except ValueError:  # an earlier change broke it: nothing to edit
            return
        paths = [p for p in _paths(data) if p]
        if not paths:
            data = value
        else:
            data = _replace(data, paths[index % len(paths)], _DELETE if delete and index % 5 == 0 else value)
        path.write_text(json.dumps(data), encoding="utf-8")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_model(which: str, changes: list[tuple[str, str, Any]]) -> None:
    from sizewise.learners import load_learner

    root = _scratch()
    try:
        folder = root / which
        shutil.copytree(saved_models()[which], folder)
        for change in changes:
            _apply(folder, *change)
        sentinel = root / "ran"
        (folder / "evil.py").write_text(f"open({str(sentinel)!r}, 'w').close()\n", encoding="utf-8")
        before = _snapshot(folder)
        with outcome_of("model folders", ModelError, str(folder)):
            learner = load_learner(folder)
            proba = learner.predict_proba(dozen_pairs(learner.scheme_))
            assert proba.shape == (len(DOZEN_ROWS), learner.scheme_.num_labels)
        assert not sentinel.exists()
        assert _snapshot(folder) == before
    finally:
        shutil.rmtree(root)


@settings(max_examples=BUDGET["models"], **_SETTINGS)
@given(case=model_mutations())
def test_mutated_model_folders(case: tuple[str, list[tuple[str, str, Any]]]) -> None:
    check_model(*case)


# --- a handful through the real command line -------------------------------------------------------
CLI_FILES: dict[str, bytes] = {
    "utf16.tsv": _valid_pair_text("tsv", DOZEN_ROWS[:2]).encode("utf-16"),
    "nul.csv": _valid_pair_text("csv", DOZEN_ROWS[:2]).replace("man", "m\x00an").encode(),
    "cut.jsonl.gz": gzip.compress(_valid_pair_text("jsonl", DOZEN_ROWS).encode(), mtime=0)[:40],
    "random.tsv": bytes(range(256)) * 2,
}


@pytest.mark.parametrize("name", list(CLI_FILES))
def test_hostile_pair_files_through_data_info(name: str, tmp_path: Path) -> None:
    path = tmp_path / name
    path.write_bytes(CLI_FILES[name])
    proc = run_cli("data", "info", str(path))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(path) in errors[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written
    _record("command line", "clean error")


def format_outcomes(outcomes: dict[str, Counter[str]]) -> str:
    """The table of inputs tried by area and outcome."""
    columns = ["ok", "clean error", "other"]
    lines = [f"{'inputs':<28}{'tried':>7}" + "".join(f"{c:>13}" for c in columns)]
    for area, counts in outcomes.items():
        lines.append(f"{area:<28}{sum(counts.values()):>7}" + "".join(f"{counts[c]:>13}" for c in columns))
    return "\n".join(lines)


def test_zz_outcome_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the properties above met (run last, in file order); no input may end in ``other``."""
    if not OUTCOMES:
        pytest.skip("no property ran in this session")
    with capsys.disabled():
        print("\n" + format_outcomes(OUTCOMES))
    assert all(counts["other"] == 0 for counts in OUTCOMES.values())


def run_all(budget: dict[str, int], report: Callable[[str], None] = print) -> dict[str, Counter[str]]:
    """Run every property with ``budget[key]`` examples (keys of :data:`BUDGET`), for
    ``benchmarks/hostile_inputs.py``; returns the outcome counts. A property that fails is reported
    through ``report`` (its first line) and the next one runs."""
    folder = _scratch()
    for name in ("train.tsv", "test.tsv"):
        (folder / name).write_text(_valid_pair_text("tsv", DOZEN_ROWS), encoding="utf-8")
    runs: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], None]]] = {
        "pairs_random": (RANDOM_PAIR_FILES, lambda case: check_pair_file(case, "pair files: random bytes")),
        "pairs_mutated": (mutated_pair_files(), lambda case: check_pair_file(case, "pair files: mutated")),
        "study": (study_texts(), lambda text: check_study(folder, text)),
        "models": (model_mutations(), lambda case: check_model(*case)),
    }
    try:
        for key, (strategy, check) in runs.items():
            run = settings(max_examples=budget[key], **_SETTINGS)(given(strategy)(check))
            try:
                run()
            except Exception as exc:  # a failing input is reported, and the other properties still run
                report(f"{key}: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}")
    finally:
        shutil.rmtree(folder)
    return OUTCOMES


# --- what the properties found, kept as plain tests --------------------------------------------------
def test_a_study_baseline_that_is_not_a_string_is_a_config_error(study_folder: Path) -> None:
    from sizewise.config import load_study

    path = study_folder / "baseline.yaml"
    path.write_text(yaml.safe_dump({**VALID_STUDY, "evaluation": {"baseline": ["bilstm"]}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="evaluation.baseline: Input should be a valid string"):
        load_study(path)


def test_a_line_break_in_a_study_key_stays_on_one_line(study_folder: Path) -> None:
    from sizewise.config import load_study

    path = study_folder / "key.yaml"
    path.write_text("? 'a\n\n  b'\n: null\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_study(path)
    assert "\n" not in str(info.value) and "a\\nb: unknown setting" in str(info.value)
