"""The dataset catalog: data home, loading named datasets, and converting upstream archives.

Nothing here downloads: fetch is exercised with the downloader replaced by a local copy.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import urllib.error
import zipfile
from pathlib import Path

import pytest

from sizewise.data import DATASETS, catalog, data_home, load_dataset, load_pairs
from sizewise.data.catalog import convert_archive, fetch_dataset
from sizewise.errors import ConfigError, DataError

SHARED_DATA = Path(os.environ.get("SIZEWISE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture
def shared_home(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SIZEWISE_DATA", str(SHARED_DATA))
    return SHARED_DATA


# --- data home and the shared data --------------------------------------------------------------


def test_data_home_env_and_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIZEWISE_DATA", str(tmp_path))
    assert data_home() == tmp_path
    monkeypatch.delenv("SIZEWISE_DATA")
    assert data_home() == Path.home() / ".cache" / "sizewise" / "data"


def test_registry() -> None:
    assert list(DATASETS) == ["snli", "mnli", "rte", "lingnli", "cad_snli"]
    assert DATASETS["mnli"].splits == ("train", "dev_matched", "dev_mismatched")
    assert DATASETS["rte"].scheme == "binary"
    assert DATASETS["cad_snli"].train_split == "train_revised"
    for info in DATASETS.values():
        assert info.citation and info.license and info.homepage
        assert info.urls or info.manual


@pytest.mark.parametrize(
    ("spec", "rows", "source"),
    [
        ("snli:test", 9_824, "snli:test"),
        ("rte:train", 2_490, "rte:train"),
        ("rte", 2_490, "rte:train"),
        ("mnli:dev", 9_814, "mnli:dev_matched"),
        ("cad_snli", 6_660, "cad_snli:train_revised"),
    ],
)
def test_load_pairs_named(shared_home: Path, spec: str, rows: int, source: str) -> None:
    data = load_pairs(spec)
    assert len(data) == rows
    assert data.source == source
    assert data.meta["path"].startswith(str(shared_home))


def test_native_scheme_and_binary_collapse(shared_home: Path) -> None:
    nli3 = load_dataset("snli", "test")
    assert nli3.label_counts() == {"entailment": 3_368, "neutral": 3_219, "contradiction": 3_237}
    binary = load_dataset("snli", "test", scheme="binary")
    assert binary.label_counts() == {"entailment": 3_368, "not_entailment": 3_219 + 3_237}
    rte = load_dataset("rte", "train")
    assert rte.scheme.name == "binary"
    assert rte.label_counts() == {"entailment": 1_249, "not_entailment": 1_241}
    with pytest.raises(ConfigError, match="rte has binary labels"):
        load_dataset("rte", "train", scheme="nli3")


def test_load_pairs_reads_a_file_path(shared_home: Path) -> None:
    path = shared_home / "rte" / "dev.tsv.gz"
    data = load_pairs(str(path), scheme="binary")
    assert len(data) == 277
    assert data.source == str(path)


def test_missing_split_file_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SIZEWISE_DATA", str(tmp_path))
    with pytest.raises(DataError) as info:
        load_pairs("snli:dev")
    message = str(info.value)
    assert str(tmp_path / "snli" / "dev.tsv.gz") in message
    assert "SIZEWISE_DATA" in message
    assert "sizewise data fetch snli" in message


def test_unknown_names_and_splits(shared_home: Path) -> None:
    with pytest.raises(DataError, match="known datasets: snli, mnli, rte, lingnli, cad_snli"):
        load_pairs("multinli")
    with pytest.raises(DataError, match="known datasets: snli"):
        load_dataset("squad", "train")
    with pytest.raises(DataError, match="its splits are train, dev"):
        load_pairs("rte:test")
    with pytest.raises(DataError, match="no such file"):
        load_pairs("missing/train.tsv")


# --- converting upstream archives ----------------------------------------------------------------


def _snli_line(s1: str, s2: str, gold: str) -> str:
    # The fields of the real snli_1.0_*.jsonl / multinli_1.0_*.jsonl files (parses shortened).
    return json.dumps(
        {
            "annotator_labels": [gold],
            "captionID": "3416050480.jpg#4",
            "gold_label": gold,
            "pairID": "3416050480.jpg#4r1n",
            "sentence1": s1,
            "sentence1_binary_parse": "( ( ( A person ) ... ) )",
            "sentence1_parse": "(ROOT (S ...))",
            "sentence2": s2,
            "sentence2_binary_parse": "( ( A person ) ... )",
            "sentence2_parse": "(ROOT (S ...))",
        }
    )


SNLI_ROWS = [
    (
        "A person on a horse jumps over a broken down airplane.",
        "A person is outdoors, on a horse.",
        "entailment",
    ),
    ("Children smiling and waving at camera", "They are smiling at their parents", "neutral"),
    ("A boy is jumping on skateboard.", "The boy skates down the\tsidewalk.", "contradiction"),
    ("Two women are embracing.", "The sisters are hugging goodbye.", "-"),
    ("A man in a blue shirt.", "", "neutral"),
]


def _snli_zip(path: Path, top: str = "snli_1.0", prefix: str = "snli_1.0") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", "")
        for split in ("train", "dev", "test"):
            lines = "\n".join(_snli_line(*r) for r in SNLI_ROWS) + "\n"
            zf.writestr(f"{top}/{prefix}_{split}.jsonl", lines)
            zf.writestr(f"{top}/{prefix}_{split}.txt", "gold_label\tsentence1_binary_parse\n")
            zf.writestr(f"__MACOSX/{top}/._{prefix}_{split}.jsonl", "junk")
    return path


def _read_gz(path: Path) -> list[list[str]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n").split("\t") for line in fh]


def test_convert_snli_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _snli_zip(tmp_path / "snli_1.0.zip")
    home = tmp_path / "home"
    folder = convert_archive("snli", archive, home)
    assert folder == home / "snli"
    assert sorted(p.name for p in folder.iterdir()) == [
        "SOURCE.md",
        "dev.tsv.gz",
        "test.tsv.gz",
        "train.tsv.gz",
    ]
    rows = _read_gz(folder / "train.tsv.gz")
    assert rows == [
        ["premise", "hypothesis", "label"],
        [
            "A person on a horse jumps over a broken down airplane.",
            "A person is outdoors, on a horse.",
            "entailment",
        ],
        ["Children smiling and waving at camera", "They are smiling at their parents", "neutral"],
        ["A boy is jumping on skateboard.", "The boy skates down the sidewalk.", "contradiction"],
    ]
    source = (folder / "SOURCE.md").read_text()
    assert "https://nlp.stanford.edu/projects/snli/snli_1.0.zip" in source
    assert "Bowman" in source and "CC BY-SA 4.0" in source
    assert '| train | 3 | 1 empty text, 1 no gold label "-" |' in source
    monkeypatch.setenv("SIZEWISE_DATA", str(home))
    assert load_pairs("snli:test").labels.tolist() == [0, 1, 2]
    assert not list(folder.glob(".*tmp*"))


def test_convert_mnli_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "multinli_1.0.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split, rows in {
            "train": SNLI_ROWS[:3],
            "dev_matched": SNLI_ROWS[:2],
            "dev_mismatched": SNLI_ROWS[3:4] + SNLI_ROWS[:1],
        }.items():
            zf.writestr(f"multinli_1.0/multinli_1.0_{split}.jsonl", "".join(_snli_line(*r) + "\n" for r in rows))
        zf.writestr("multinli_1.0/README.txt", "MultiNLI")
    folder = convert_archive("mnli", archive, tmp_path / "home")
    monkeypatch.setenv("SIZEWISE_DATA", str(tmp_path / "home"))
    assert len(load_dataset("mnli", "train")) == 3
    assert load_dataset("mnli", "dev_matched").labels.tolist() == [0, 1]
    assert load_dataset("mnli", "dev_mismatched").labels.tolist() == [0]
    assert "multinli_1.0.zip" in (folder / "SOURCE.md").read_text()


def _rte_zip(path: Path, dev_label: str = "not_entailment") -> Path:
    header = "index\tsentence1\tsentence2\tlabel\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "RTE/train.tsv",
            header + "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\t"
            "Weapons of Mass Destruction Found in Iraq.\tnot_entailment\n"
            + '1\t"A place of sorrow" after Pope John Paul II died.\t'
            "Pope Benedict XVI is the new leader.\tentailment\n",
        )
        zf.writestr(
            "RTE/dev.tsv",
            header + f"0\tDana Reeve died at 44.\tChristopher Reeve had an accident.\t{dev_label}\n",
        )
        zf.writestr("RTE/test.tsv", "index\tsentence1\tsentence2\n0\tMaude died.\tMaude is dead.\n")
    return path


def test_convert_rte_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = convert_archive("rte", _rte_zip(tmp_path / "RTE.zip"), tmp_path / "home")
    assert sorted(p.name for p in folder.glob("*.tsv.gz")) == ["dev.tsv.gz", "train.tsv.gz"]
    rows = _read_gz(folder / "train.tsv.gz")
    assert rows[2] == [
        '"A place of sorrow" after Pope John Paul II died.',
        "Pope Benedict XVI is the new leader.",
        "entailment",
    ]
    monkeypatch.setenv("SIZEWISE_DATA", str(tmp_path / "home"))
    data = load_pairs("rte")
    assert data.scheme.name == "binary"
    assert data.labels.tolist() == [1, 0]


def test_convert_cad_from_github_archive(tmp_path: Path) -> None:
    archive = tmp_path / "cad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(
            f"counterfactually-augmented-data-{catalog._CAD_COMMIT}/NLI/revised_combined/train.tsv",
            "sentence1\tsentence2\tgold_label\nA man rides a red motorcycle. \tA man rides.\tentailment\n",
        )
    folder = convert_archive("cad_snli", archive, tmp_path / "home")
    assert _read_gz(folder / "train_revised.tsv.gz")[1] == [
        "A man rides a red motorcycle.",
        "A man rides.",
        "entailment",
    ]


def test_failed_conversion_leaves_nothing_half_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    convert_archive("rte", _rte_zip(tmp_path / "good.zip"), home)
    before = {p.name: p.read_bytes() for p in (home / "rte").iterdir()}
    with pytest.raises(DataError) as info:
        convert_archive("rte", _rte_zip(tmp_path / "bad.zip", dev_label="maybe"), home)
    assert info.value.problems == [
        f'{tmp_path / "bad.zip"}: RTE/dev.tsv line 2: label: "maybe" is not one of entailment, not_entailment'
    ]
    assert {p.name: p.read_bytes() for p in (home / "rte").iterdir()} == before


def test_archive_problems(tmp_path: Path) -> None:
    wrong = _snli_zip(tmp_path / "wrong.zip", top="multinli_1.0", prefix="multinli_1.0")
    with pytest.raises(DataError, match="no member snli_1.0/snli_1.0_train.jsonl in the archive"):
        convert_archive("snli", wrong, tmp_path / "home")
    assert not list((tmp_path / "home" / "snli").iterdir())
    not_zip = tmp_path / "snli.zip"
    not_zip.write_text("<html>rate limited</html>")
    with pytest.raises(DataError, match="not a readable zip archive"):
        convert_archive("snli", not_zip, tmp_path / "home")
    with pytest.raises(DataError, match="no archive converter"):
        convert_archive("lingnli", not_zip, tmp_path / "home")


# --- fetch, with the downloader replaced ------------------------------------------------------------


def test_fetch_uses_downloader_then_converts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _rte_zip(tmp_path / "RTE.zip")
    calls: list[str] = []

    def fake_download(url: str, dest: Path) -> None:
        calls.append(url)
        shutil.copy(local, dest)

    monkeypatch.setattr(catalog, "_download", fake_download)
    folder = fetch_dataset("rte", tmp_path / "home")
    assert calls == ["https://dl.fbaipublicfiles.com/glue/data/RTE.zip"]
    assert (folder / "train.tsv.gz").is_file()
    assert fetch_dataset("rte", tmp_path / "home") == folder
    assert len(calls) == 1  # already present: no second download
    fetch_dataset("rte", tmp_path / "home", force=True)
    assert len(calls) == 2
    assert sorted(p.name for p in (tmp_path / "home").iterdir()) == ["rte"]  # temp folder cleaned up


def test_fetch_failure_and_manual_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, dest: Path) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(catalog, "_download", offline)
    with pytest.raises(DataError, match="could not download snli .*SIZEWISE_DATA"):
        fetch_dataset("snli", tmp_path)
    with pytest.raises(DataError, match="lingnli cannot be downloaded automatically.*ling_in_loop"):
        fetch_dataset("lingnli", tmp_path)
    assert not list(tmp_path.iterdir())


def test_real_downloader_on_a_file_url(tmp_path: Path) -> None:
    # urllib serves file:// URLs locally, so the real download code runs without a network.
    source = _rte_zip(tmp_path / "RTE.zip")
    dest = tmp_path / "out" / "RTE.zip"
    dest.parent.mkdir()
    catalog._download(source.as_uri(), dest)
    assert dest.read_bytes() == source.read_bytes()
    assert not list(dest.parent.glob("*.part"))
