"""The documents agree with the code: README's learner settings tables are the generated ones, and
every command, option, file and study the README, BENCHMARKS.md and benchmarks/NOTES.md show exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import yaml

from sizewise.cli import app
from sizewise.config import load_study
from sizewise.learners.base import learner_config_class
from sizewise.learners.describe import (
    BLOCK_BEGIN,
    BLOCK_END,
    builtin_kinds,
    first_sentence,
    replace_block,
    settings_table,
    settings_tables,
)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "benchmarks" / "NOTES.md"]
REGENERATE = "sizewise learners --write README.md"


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(BLOCK_BEGIN) == 1 and text.count(BLOCK_END) == 1, f"README.md needs one {BLOCK_BEGIN} block"
    return text.split(BLOCK_BEGIN)[1].split(BLOCK_END)[0].strip("\n")


# -- the generated learner settings -----------------------------------------------------------------


def test_readme_learner_settings_are_the_generated_ones() -> None:
    assert _readme_block() == settings_tables(), (
        f"README.md's learner settings tables are out of date: run `{REGENERATE}`"
    )


def test_every_builtin_setting_has_help_text() -> None:
    missing = [
        f"{kind}.{name}"
        for kind in builtin_kinds()
        for name, field in learner_config_class(kind).model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not missing, f"settings without a description: {', '.join(missing)}"


def test_settings_table_has_one_row_per_setting() -> None:
    for kind in builtin_kinds():
        rows = settings_table(kind).splitlines()[2:]
        assert [row.split("`")[1] for row in rows] == list(learner_config_class(kind).model_fields)


@pytest.mark.parametrize(
    ("text", "sentence"),
    [
        ("Maximum training epochs.", "Maximum training epochs."),
        ("Stop early. 0 turns it off.", "Stop early."),
        (
            "Keep the first N layers (e.g. 3 of 6); None keeps all. More.",
            "Keep the first N layers (e.g. 3 of 6); None keeps all.",
        ),
        ("Spec ({kind, ...}): bilstm.  Rest", "Spec ({kind, ...}): bilstm."),
        ("Learning rate 1.5e-3 by default", "Learning rate 1.5e-3 by default"),
        ("  Wrapped\n   over lines. Next.", "Wrapped over lines."),
    ],
)
def test_first_sentence(text: str, sentence: str) -> None:
    assert first_sentence(text) == sentence


def test_replace_block() -> None:
    doc = f"head\n{BLOCK_BEGIN}\nold\n{BLOCK_END}\ntail\n"
    assert replace_block(doc, "new") == f"head\n{BLOCK_BEGIN}\nnew\n{BLOCK_END}\ntail\n"


def test_learners_command_prints_the_tables() -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["learners", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == settings_tables()
    result = CliRunner().invoke(app, ["learners", "bilstm"])
    assert result.exit_code == 0 and "hidden_size" in result.stdout


def test_learners_write_replaces_only_the_block(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    doc = tmp_path / "README.md"
    doc.write_text(f"# title\n\n{BLOCK_BEGIN}\nstale\n{BLOCK_END}\n\nrest\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["learners", "--write", str(doc)])
    assert result.exit_code == 0, result.output
    assert doc.read_text(encoding="utf-8") == f"# title\n\n{BLOCK_BEGIN}\n{settings_tables()}\n{BLOCK_END}\n\nrest\n"


# -- every command the documents show exists ----------------------------------------------------------


def _fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def _shell_commands(text: str) -> list[str]:
    """Commands of the bash blocks (continuation lines joined, comments and $(...) dropped) and inline ones."""
    commands = []
    for block in _fenced(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\$\([^)]*\)", "", line.split(" #")[0] if not line.startswith("#") else "")
            if line.strip():
                commands.append(line.strip())
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`]+)`", prose):  # an inline command may be wrapped over lines
        span = " ".join(span.split())
        if re.match(r"(\S+=\S+ )*(\.venv/bin/)?(sizewise|python|make) ", span):
            commands.append(span.replace("\\|", "|"))
    return commands


def _words(command: str) -> list[str]:
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # SIZEWISE_DATA=... before the command
        words = words[1:]
    return words


def _options(words: list[str]) -> list[str]:
    return [w.strip("[]").split("=")[0] for w in words if w.strip("[]").startswith("--")]


def _check_sizewise(words: list[str], where: str) -> list[str]:
    command = typer.main.get_command(app)  # groups have .commands (typer vendors its own click)
    path = ["sizewise"]
    for word in words:
        if not hasattr(command, "commands") or word.startswith("-"):
            break
        sub = command.commands.get(word)
        if sub is None:
            if word.isupper() or word.startswith("["):  # a placeholder: `sizewise COMMAND --help`
                return []
            return [f"{where}: `{' '.join(path)}` has no command {word!r}"]
        command, path = sub, [*path, word]
    if hasattr(command, "commands"):
        return []
    known = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]} | {"--help"}
    return [f"{where}: `{' '.join(path)}` has no option {opt}" for opt in _options(words) if opt not in known]


def _check_script(words: list[str], where: str) -> list[str]:
    script = ROOT / words[0]
    if not script.is_file():
        return [f"{where}: no script {words[0]}"]
    source = script.read_text(encoding="utf-8")
    return [f"{where}: {words[0]} has no option {opt}" for opt in _options(words) if f'"{opt}"' not in source]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), flags=re.M))


def _check_command(command: str, where: str) -> list[str]:
    words = _words(command)
    if not words:
        return []
    head, rest = words[0], words[1:]
    if head in ("sizewise", ".venv/bin/sizewise"):
        return _check_sizewise(rest, where)
    if head in ("python", ".venv/bin/python", "python3") and rest and rest[0].startswith("benchmarks/"):
        return _check_script(rest, where)
    if head in ("accelerate", "torchrun") and "sizewise.cli" in rest:
        return _check_sizewise(rest[rest.index("sizewise.cli") + 1 :], where)
    if head == "make":
        return [f"{where}: no make target {t}" for t in rest if not t.startswith("-") and t not in _make_targets()]
    if head.startswith("benchmarks/") and not (ROOT / head).is_file():
        return [f"{where}: no script {head}"]
    return []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    commands = _shell_commands(text)
    assert commands, f"{doc.name}: no commands found"
    problems = [p for command in commands for p in _check_command(command, doc.name)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_files_exist(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    paths = set(re.findall(r"\]\(([^)#:]+)\)", text))  # relative links
    paths |= set(re.findall(r"`((?:configs|benchmarks)/[\w./-]+\.(?:yaml|py|sh|json|md|png))`", text))
    missing = [p for p in sorted(paths) if not (doc.parent / p).exists() and not (ROOT / p).exists()]
    assert not missing, f"{doc.name} names files that do not exist: {', '.join(missing)}"


def test_readme_study_files_parse(tmp_path: Path) -> None:
    quickstart = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text(encoding="utf-8"))
    blocks = [yaml.safe_load(b) for b in _fenced((ROOT / "README.md").read_text(encoding="utf-8"), "yaml")]
    studies = [b for b in blocks if isinstance(b, dict) and "arms" in b]
    assert studies, "README.md shows no study"
    for i, study in enumerate(studies):
        # A snippet of arms only is checked inside the quickstart's name and data.
        full = {"name": f"readme-{i}", "data": quickstart["data"], **study}
        path = tmp_path / f"readme-{i}.yaml"
        path.write_text(yaml.safe_dump(full), encoding="utf-8")
        load_study(path)
