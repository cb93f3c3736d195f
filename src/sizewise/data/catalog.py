"""Named datasets, the data home they live in, and fetching them from their public sources.

The data home (``$SIZEWISE_DATA``, else ``~/.cache/sizewise/data``) is laid out
``<name>/<split>.tsv.gz`` with header ``premise<TAB>hypothesis<TAB>label`` and a ``SOURCE.md`` per
dataset. :func:`fetch_dataset` downloads an upstream archive; :func:`convert_archive` turns a local
copy of that archive into the layout, so conversion can be tested without a network.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gzip
import io
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sizewise.data.io import read_pairs
from sizewise.data.labels import NO_GOLD_LABELS, LabelScheme, get_scheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, DataError
from sizewise.progress import progress_enabled

logger = logging.getLogger(__name__)

#: Environment variable naming the data home.
DATA_ENV = "SIZEWISE_DATA"
_HEADER = "premise\thypothesis\tlabel\n"


def data_home() -> Path:
    """The folder named datasets live in: ``$SIZEWISE_DATA``, else ``~/.cache/sizewise/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sizewise" / "data"


@dataclass(frozen=True)
class ArchiveConverter:
    """How one upstream archive holds a dataset: which member file is which split, and its fields.

    ``members`` maps a split name to the member's path inside the archive (matched as a path suffix,
    so a leading top folder such as ``repo-<commit>/`` does not matter); ``fmt`` is ``jsonl`` or
    ``tsv`` (header row, tab-separated, no quoting).
    """

    members: dict[str, str]
    fmt: str
    premise: str = "sentence1"
    hypothesis: str = "sentence2"
    label: str = "gold_label"


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: its label scheme, splits, provenance and how to build it from upstream."""

    name: str
    scheme: str
    splits: tuple[str, ...]
    train_split: str
    dev_split: str | None
    test_split: str | None
    description: str
    citation: str
    license: str
    homepage: str
    urls: tuple[str, ...] = ()
    converter: ArchiveConverter | None = None
    manual: str = ""  # where to get it by hand when there is no single stable archive
    notes: tuple[str, ...] = field(default_factory=tuple)

    def default_split(self, role: str) -> str | None:
        """The split playing ``role`` (``train``, ``dev`` or ``test``), or None if there is none."""
        return {"train": self.train_split, "dev": self.dev_split, "test": self.test_split}[role]


_SNLI_CITATION = (
    "Samuel R. Bowman, Gabor Angeli, Christopher Potts, Christopher D. Manning. 2015. A large annotated "
    "corpus for learning natural language inference. In Proceedings of EMNLP 2015, pages 632-642."
)
_MNLI_CITATION = (
    "Adina Williams, Nikita Nangia, Samuel R. Bowman. 2018. A Broad-Coverage Challenge Corpus for Sentence "
    "Understanding through Inference. In Proceedings of NAACL-HLT 2018, pages 1112-1122."
)
_RTE_CITATION = (
    "Dagan, Glickman, Magnini. 2006. The PASCAL Recognising Textual Entailment Challenge; Bar-Haim et al. "
    "2006 (RTE2); Giampiccolo et al. 2007 (RTE3); Bentivogli et al. 2009 (RTE5). As packaged in: Alex Wang, "
    "Amanpreet Singh, Julian Michael, Felix Hill, Omer Levy, Samuel R. Bowman. 2019. GLUE: A Multi-Task "
    "Benchmark and Analysis Platform for Natural Language Understanding. ICLR 2019."
)
_LINGNLI_CITATION = (
    "Alicia Parrish, William Huang, Omar Agha, Soo-Hwan Lee, Nikita Nangia, Alex Warstadt, Karmanya "
    "Aggarwal, Emily Allaway, Tal Linzen, Samuel R. Bowman. 2021. Does Putting a Linguist in the Loop "
    "Improve NLU Data Collection? Findings of EMNLP 2021."
)
_CAD_CITATION = (
    "Divyansh Kaushik, Eduard Hovy, Zachary C. Lipton. 2020. Learning the Difference that Makes a "
    "Difference with Counterfactually-Augmented Data. ICLR 2020."
)
_CAD_COMMIT = "6f232a1d2a11462a30ce08fb4825b734ab30828e"

#: Every named dataset, by name.
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="snli",
            scheme="nli3",
            splits=("train", "dev", "test"),
            train_split="train",
            dev_split="dev",
            test_split="test",
            description="Stanford NLI 1.0: image-caption premises, crowd-written hypotheses.",
            citation=_SNLI_CITATION,
            license="CC BY-SA 4.0",
            homepage="https://nlp.stanford.edu/projects/snli/",
            urls=("https://nlp.stanford.edu/projects/snli/snli_1.0.zip",),
            converter=ArchiveConverter(
                members={
                    "train": "snli_1.0/snli_1.0_train.jsonl",
                    "dev": "snli_1.0/snli_1.0_dev.jsonl",
                    "test": "snli_1.0/snli_1.0_test.jsonl",
                },
                fmt="jsonl",
            ),
        ),
        DatasetInfo(
            name="mnli",
            scheme="nli3",
            splits=("train", "dev_matched", "dev_mismatched"),
            train_split="train",
            dev_split="dev_matched",
            test_split="dev_mismatched",
            description="MultiNLI 1.0: ten genres of written and spoken English (test labels are hidden).",
            citation=_MNLI_CITATION,
            license="mostly the OANC license (free use); fiction genre under several permissive licenses",
            homepage="https://cims.nyu.edu/~sbowman/multinli/",
            urls=("https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip",),
            converter=ArchiveConverter(
                members={
                    "train": "multinli_1.0/multinli_1.0_train.jsonl",
                    "dev_matched": "multinli_1.0/multinli_1.0_dev_matched.jsonl",
                    "dev_mismatched": "multinli_1.0/multinli_1.0_dev_mismatched.jsonl",
                },
                fmt="jsonl",
            ),
        ),
        DatasetInfo(
            name="rte",
            scheme="binary",
            splits=("train", "dev"),
            train_split="train",
            dev_split="dev",
            test_split=None,
            description="Recognizing Textual Entailment (RTE1-3, 5) as packaged by GLUE; test labels hidden.",
            citation=_RTE_CITATION,
            license="no open license stated by the RTE creators; research use",
            homepage="https://gluebenchmark.com/tasks",
            urls=("https://dl.fbaipublicfiles.com/glue/data/RTE.zip",),
            converter=ArchiveConverter(
                members={"train": "RTE/train.tsv", "dev": "RTE/dev.tsv"},
                fmt="tsv",
                label="label",
            ),
        ),
        DatasetInfo(
            name="lingnli",
            scheme="nli3",
            splits=("train", "dev"),
            train_split="train",
            dev_split="dev",
            test_split=None,
            description="LingNLI: MNLI-style pairs collected with linguists in the loop.",
            citation=_LINGNLI_CITATION,
            license="no license stated by the authors; premises come from MNLI",
            homepage="https://github.com/Alicia-Parrish/ling_in_loop",
            manual=(
                "LingNLI has no single stable download archive. Get the per-round JSON lines files from "
                "https://github.com/Alicia-Parrish/ling_in_loop (folder NLI_data/: train_round*_*.jsonl for "
                "train, val_round5_*_combined.jsonl for dev; fields premise, hypothesis, label), then write "
                "<home>/lingnli/train.tsv.gz and dev.tsv.gz as gzip TSV with header "
                "premise<TAB>hypothesis<TAB>label (no quoting; tabs and newlines inside text replaced by "
                "spaces)."
            ),
            notes=("its dev premises overlap MNLI dev_matched: never train on lingnli dev and test on mnli",),
        ),
        DatasetInfo(
            name="cad_snli",
            scheme="nli3",
            splits=("train_revised",),
            train_split="train_revised",
            dev_split=None,
            test_split=None,
            description="Counterfactually revised SNLI train pairs (4 minimal-edit revisions per pair).",
            citation=_CAD_CITATION,
            license="Apache-2.0 (repository); underlying SNLI text CC BY-SA 4.0",
            homepage="https://github.com/acmi-lab/counterfactually-augmented-data",
            # A commit-pinned GitHub archive: stable contents, unlike a branch archive.
            urls=(f"https://github.com/acmi-lab/counterfactually-augmented-data/archive/{_CAD_COMMIT}.zip",),
            converter=ArchiveConverter(
                members={"train_revised": "NLI/revised_combined/train.tsv"},
                fmt="tsv",
            ),
        ),
    )
}


def get_dataset(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a named dataset; an unknown name raises DataError naming the known ones."""
    try:
        return DATASETS[name.strip().lower()]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}") from None


def resolve_split(info: DatasetInfo, split: str | None) -> str:
    """A real split name of ``info``: ``None`` means train; ``dev``/``test`` map to the default ones."""
    if split is None or split == "":
        return info.train_split
    if split in info.splits:
        return split
    if split in ("train", "dev", "test"):
        default = info.default_split(split)
        if default is not None:
            return default
    raise DataError(f"{info.name}: unknown split {split!r}; its splits are {', '.join(info.splits)}")


def dataset_path(name: str, split: str, home: str | os.PathLike[str] | None = None) -> Path:
    """Where ``name:split`` lives in the data home: ``<home>/<name>/<split>.tsv.gz``."""
    info = get_dataset(name)
    root = Path(home) if home is not None else data_home()
    return root / info.name / f"{resolve_split(info, split)}.tsv.gz"


def load_dataset(name: str, split: str | None = None, scheme: str | None = None) -> PairData:
    """Read one split of a named dataset from the data home.

    ``scheme`` defaults to the dataset's own; an ``nli3`` dataset read as ``binary`` collapses
    neutral and contradiction into not_entailment; a ``binary`` dataset cannot be read as ``nli3``.
    """
    info = get_dataset(name)
    split = resolve_split(info, split)
    target = get_scheme(scheme or info.scheme)
    if info.scheme == "binary" and target.name != "binary":
        raise ConfigError(
            f"{info.name}:{split}",
            [f"{info.name} has binary labels (entailment / not_entailment); read it with scheme 'binary'"],
        )
    path = data_home() / info.name / f"{split}.tsv.gz"
    if not path.is_file():
        how = (
            f'run "sizewise data fetch {info.name}" to download it'
            if info.urls
            else f'see "sizewise data fetch {info.name}" for where to get it'
        )
        raise DataError(
            f"{info.name}:{split}: not found at {path}; set {DATA_ENV} to a data home laid out "
            f"<name>/<split>.tsv.gz (now {data_home()}), or {how}"
        )
    data = read_pairs(path, target)
    data.source = f"{info.name}:{split}"
    data.meta.update({"dataset": info.name, "split": split, "path": str(path)})
    return data


def load_pairs(
    spec: str | os.PathLike[str], scheme: str | None = None, columns: dict[str, str] | None = None
) -> PairData:
    """Read pairs from a file path, ``name:split`` or ``name`` (its train split).

    For a file, ``scheme`` defaults to ``nli3`` and ``columns`` maps field names to the file's columns;
    for a named dataset it defaults to the dataset's own scheme and ``columns`` is not used.
    """
    text = os.fspath(spec)
    path = Path(text)
    if path.is_file():
        return read_pairs(path, scheme or "nli3", columns=columns)
    name, _, split = text.partition(":")
    if name.strip().lower() in DATASETS:
        return load_dataset(name, split or None, scheme)
    suffixes = (".tsv", ".csv", ".json", ".gz")
    looks_like_path = os.sep in text or "/" in text or any(s in text.lower() for s in suffixes)
    if path.exists():
        return read_pairs(path, scheme or "nli3", columns=columns)  # not a file: read_pairs says what
    if looks_like_path:
        raise DataError(f"{text}: no such file")
    raise DataError(
        f"{text!r} is neither a file nor a known dataset; known datasets: {', '.join(DATASETS)} (as name or name:split)"
    )


# --- fetching and converting -------------------------------------------------------------------


def fetch_dataset(name: str, home: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Download a named dataset from its canonical source and lay it out in the data home.

    Returns the dataset's folder. Splits already present are not downloaded again unless ``force``.
    Datasets without a stable single archive raise DataError explaining where to get them.
    """
    info = get_dataset(name)
    root = Path(home) if home is not None else data_home()
    folder = root / info.name
    if not force and all((folder / f"{s}.tsv.gz").is_file() for s in info.splits):
        logger.info("%s is already in %s (pass force to download again)", info.name, folder)
        return folder
    if not info.urls or info.converter is None:
        manual = info.manual.replace("<home>", str(root))
        raise DataError(f"{info.name} cannot be downloaded automatically. {manual}")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{info.name}-download-", dir=root) as tmp:
        archive = Path(tmp) / Path(info.urls[0]).name
        errors: list[str] = []
        for url in info.urls:
            try:
                _download(url, archive)
                break
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
        else:
            raise DataError(
                f"could not download {info.name} ({'; '.join(errors)}); on a machine without internet, "
                f"copy a folder laid out <name>/<split>.tsv.gz and point {DATA_ENV} at it"
            )
        return convert_archive(info.name, archive, root, url=url)


def _download(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest`` (via a temporary name), with a progress bar when stderr is a TTY."""
    logger.info("downloading %s", url)
    part = dest.with_name(dest.name + ".part")
    request = urllib.request.Request(url, headers={"User-Agent": "sizewise"})
    with urllib.request.urlopen(request, timeout=60) as response, open(part, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with _progress(f"{Path(url).name}", total) as advance:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                advance(len(chunk))
    os.replace(part, dest)


@contextlib.contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    if not progress_enabled():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def convert_archive(
    name: str, archive_path: str | os.PathLike[str], home: str | os.PathLike[str], *, url: str | None = None
) -> Path:
    """Convert a local copy of a dataset's upstream zip archive into ``<home>/<name>/<split>.tsv.gz``.

    Rows without a gold label (``-``) or with empty text are dropped and counted in SOURCE.md.
    All files are written to temporary names and renamed only once every split converted, so a
    failure leaves the folder as it was. Returns the dataset's folder.
    """
    info = get_dataset(name)
    if info.converter is None:
        raise DataError(f"{info.name} has no archive converter. {info.manual}")
    conv = info.converter
    archive = Path(archive_path)
    folder = Path(home) / info.name
    folder.mkdir(parents=True, exist_ok=True)
    scheme = get_scheme(info.scheme)
    written: dict[str, tuple[int, Counter[str]]] = {}
    temps: list[tuple[Path, Path]] = []
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{archive}: not a readable zip archive ({exc})") from None
        with zf:
            names = [n for n in zf.namelist() if not n.startswith("__MACOSX/") and not n.endswith("/")]
            for split, member_suffix in conv.members.items():
                member = _find_member(names, member_suffix, archive)
                dropped: Counter[str] = Counter()
                final = folder / f"{split}.tsv.gz"
                tmp = folder / f".{split}.tsv.gz.tmp-{os.getpid()}"
                temps.append((tmp, final))
                count = _write_split(tmp, _archive_rows(zf, member, conv, scheme, archive, dropped))
                if count == 0:
                    raise DataError(f"{archive}: {member}: no usable rows")
                written[split] = (count, dropped)
                logger.info("%s:%s: %d pairs (%s dropped)", info.name, split, count, sum(dropped.values()))
        source_tmp = folder / f".SOURCE.md.tmp-{os.getpid()}"
        temps.append((source_tmp, folder / "SOURCE.md"))
        source_tmp.write_text(_source_md(info, url or (info.urls[0] if info.urls else str(archive)), written))
        for tmp, final in temps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return folder


def _find_member(names: list[str], suffix: str, archive: Path) -> str:
    for n in names:
        if n == suffix or n.endswith("/" + suffix):
            return n
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise DataError(f"{archive}: no member {suffix} in the archive (found: {shown or 'nothing'})")


def _clean(text: object) -> str:
    """Text fit for an unquoted TSV cell: tabs and newlines become spaces, ends stripped."""
    if text is None:
        return ""
    return str(text).replace("\t", " ").replace("\r", " ").replace("\n", " ").strip()


def _archive_rows(
    zf: zipfile.ZipFile,
    member: str,
    conv: ArchiveConverter,
    scheme: LabelScheme,
    archive: Path,
    dropped: Counter[str],
) -> Iterator[tuple[str, str, str]]:
    """Clean ``(premise, hypothesis, label name)`` rows of one archive member."""
    where = f"{archive}: {member}"
    problems: list[str] = []
    with zf.open(member) as raw:
        lines = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        if conv.fmt == "jsonl":
            records = _jsonl_records(lines, where, conv, problems)
        else:
            records = _tsv_records(lines, where, conv, problems)
        for line, premise, hypothesis, label in records:
            label = (label or "").strip()
            if label in NO_GOLD_LABELS:
                dropped['no gold label "-"'] += 1
                continue
            premise, hypothesis = _clean(premise), _clean(hypothesis)
            if not premise or not hypothesis:
                dropped["empty text"] += 1
                continue
            index = scheme.index(label)
            if index is None:
                choices = ", ".join(scheme.labels)
                problems.append(f'{where} line {line}: label: "{label}" is not one of {choices}')
                continue
            yield premise, hypothesis, scheme.labels[index]
    if problems:
        raise DataError(problems)


def _jsonl_records(
    lines: io.TextIOWrapper, where: str, conv: ArchiveConverter, problems: list[str]
) -> Iterator[tuple[int, object, object, str | None]]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"{where} line {number}: not valid JSON ({exc.msg})")
            continue
        label = obj.get(conv.label)
        yield number, obj.get(conv.premise), obj.get(conv.hypothesis), None if label is None else str(label)


def _tsv_records(
    lines: io.TextIOWrapper, where: str, conv: ArchiveConverter, problems: list[str]
) -> Iterator[tuple[int, object, object, str | None]]:
    header: list[str] | None = None
    for number, raw in enumerate(lines, start=1):
        raw = raw.rstrip("\r\n")
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if header is None:
            header = [f.strip() for f in fields]
            missing = [c for c in (conv.premise, conv.hypothesis, conv.label) if c not in header]
            if missing:
                raise DataError(f'{where} line 1: header: missing column "{missing[0]}" (found: {", ".join(header)})')
            p, h, y = (header.index(c) for c in (conv.premise, conv.hypothesis, conv.label))
            continue
        if len(fields) != len(header):
            problems.append(f"{where} line {number}: row: expected {len(header)} fields, found {len(fields)}")
            continue
        yield number, fields[p], fields[h], fields[y]


def _write_split(path: Path, rows: Iterator[tuple[str, str, str]]) -> int:
    """Write rows as gzip TSV (fixed mtime, so equal input gives equal bytes); returns the row count."""
    count = 0
    with open(path, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        out = io.TextIOWrapper(gz, encoding="utf-8", newline="\n")
        out.write(_HEADER)
        for premise, hypothesis, label in rows:
            out.write(f"{premise}\t{hypothesis}\t{label}\n")
            count += 1
        out.flush()
        out.detach()
    return count


def _source_md(info: DatasetInfo, url: str, written: dict[str, tuple[int, Counter[str]]]) -> str:
    lines = [
        f"# {info.name}",
        "",
        info.description,
        "",
        f"**Source:** {url}",
        f"**Homepage:** {info.homepage}",
        f"**Citation:** {info.citation}",
        f"**License:** {info.license}",
        f"**Converted:** {_dt.date.today().isoformat()} by sizewise (`sizewise data fetch {info.name}`)",
        "",
        "Layout: gzip TSV, header `premise<TAB>hypothesis<TAB>label`, no quoting; tabs and newlines inside",
        f"text replaced by spaces. Labels: {', '.join(get_scheme(info.scheme).labels)}.",
        "",
        "| split | pairs written | dropped |",
        "|---|---|---|",
    ]
    for split, (count, dropped) in written.items():
        why = ", ".join(f"{n:,} {reason}" for reason, n in sorted(dropped.items())) or "none"
        lines.append(f"| {split} | {count:,} | {why} |")
    lines.extend(f"- Note: {note}" for note in info.notes)
    return "\n".join(lines) + "\n"
