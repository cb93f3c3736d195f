"""The settings of every learner kind as Markdown tables, generated from the kinds' config classes.

One row per setting: its name, its default and the first sentence of its description (the rest
of the description stays in the config class and ``--help``). README.md holds the tables of the
built-in kinds between :data:`BLOCK_BEGIN` and :data:`BLOCK_END`;
``sizewise learners --write README.md`` regenerates that block and ``tests/test_docs.py`` fails
when it is out of date.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import BaseModel

from sizewise.errors import ConfigError
from sizewise.learners.base import learner_config_class, learner_kinds

__all__ = [
    "BLOCK_BEGIN",
    "BLOCK_END",
    "builtin_kinds",
    "first_sentence",
    "replace_block",
    "settings_rows",
    "settings_table",
    "settings_tables",
]

BLOCK_BEGIN = "<!-- learner-settings:begin -->"
BLOCK_END = "<!-- learner-settings:end -->"

# A sentence ends at a full stop followed by white space or the end, except after "e.g" / "i.e".
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)\.(?=\s|$)")


def builtin_kinds() -> list[str]:
    """The registered learner kinds whose config class is part of sizewise (not a test's or a plugin's)."""
    return [kind for kind in learner_kinds() if learner_config_class(kind).__module__.startswith("sizewise.")]


def first_sentence(text: str) -> str:
    """The first sentence of ``text``, white space collapsed (all of it when it has no full stop)."""
    text = " ".join(text.split())
    match = _SENTENCE_END.search(text)
    return text[: match.end()] if match else text


def _format_default(value: Any) -> str:
    # Booleans, mappings and lists as a study file writes them; None as the descriptions name it.
    value = _plain(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _kind_config(kind: str) -> type[BaseModel]:
    try:
        return learner_config_class(kind)
    except KeyError:
        raise ConfigError(kind, [f"not a learner kind; choose one of {', '.join(learner_kinds())}"]) from None


def settings_rows(kind: str, full: bool = False) -> list[tuple[str, str, str]]:
    """(setting, default, description) for every setting of learner ``kind``: the description's first
    sentence, or all of it with ``full``."""
    rows = []
    for name, field in _kind_config(kind).model_fields.items():
        required = field.is_required()
        default = "required" if required else _format_default(field.get_default(call_default_factory=True))
        description = " ".join((field.description or "").split())
        rows.append((name, default, description if full else first_sentence(description)))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_table(kind: str) -> str:
    """Markdown table of learner ``kind``'s settings: setting | default | what it does (one line each)."""
    lines = ["| setting | default | what it does |", "|---|---|---|"]
    for name, default, what in settings_rows(kind):
        lines.append(f"| `{name}` | `{_cell(default)}` | {_cell(what)} |")
    return "\n".join(lines)


def settings_tables(kinds: list[str] | None = None) -> str:
    """A heading and a settings table per kind (default: the built-in kinds): README's generated block."""
    sections = [f"### `{kind}` settings\n\n{settings_table(kind)}" for kind in kinds or builtin_kinds()]
    return "\n\n".join(sections)


def replace_block(document: str, text: str, source: str = "document") -> str:
    """``document`` with the text between :data:`BLOCK_BEGIN` and :data:`BLOCK_END` replaced by ``text``."""
    if document.count(BLOCK_BEGIN) != 1 or document.count(BLOCK_END) != 1:
        raise ConfigError(source, [f"needs exactly one {BLOCK_BEGIN} ... {BLOCK_END} block"])
    head, rest = document.split(BLOCK_BEGIN)
    tail = rest.split(BLOCK_END, 1)[1]
    return f"{head}{BLOCK_BEGIN}\n{text}\n{BLOCK_END}{tail}"
