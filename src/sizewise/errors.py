"""Errors a user can act on. The CLI prints them as one line each and exits with code 2."""

from __future__ import annotations

import re


class SizewiseError(Exception):
    """Base class of every error sizewise raises for bad input or bad configuration."""


class DataError(SizewiseError):
    """A data file or dataset is missing, unreadable or has bad rows.

    ``problems`` holds one message per bad row (``file line N: field: reason``), every one of them;
    the string of the error stays short whatever their number: the first problem, at most
    ``shown`` more (without the file name when it repeats the first one's), then
    ``… and N more problems`` and the count in all.
    """

    def __init__(self, problems: list[str] | str, *, shown: int = 3) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(summarise_problems(self.problems, shown=shown))


def summarise_problems(problems: list[str], *, shown: int = 3) -> str:
    """One short line for any number of problems: the first, up to ``shown`` more and a count of
    the rest, as in ``p1 (also p2; p3; p4; … and 4,996 more problems: 5,000 in all)``. A later
    problem naming the same file as the first (``file line N: ...``) is shown from ``line N`` on.
    """
    if not problems:
        return "bad data"
    head = problems[0]
    if len(problems) == 1:
        return head
    match = re.match(r"(.*?) line \d+: ", head)
    prefix = match.group(1) + " " if match else None
    others = [p[len(prefix) :] if prefix and p.startswith(prefix + "line ") else p for p in problems[1 : 1 + shown]]
    rest = len(problems) - 1 - len(others)
    if rest <= 0:
        return f"{head} (also {'; '.join(others)})"
    tail = f"… and {rest:,} more problem{'s' if rest > 1 else ''}: {len(problems):,} in all"
    return f"{head} (also {'; '.join([*others, tail]) if others else tail})"


class ConfigError(SizewiseError):
    """A study file or learner specification is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        # One line, whatever a problem quotes (a key or value of the file may hold a line break).
        super().__init__(f"{source}: " + "; ".join(self.problems).replace("\r", "\\r").replace("\n", "\\n"))


class OutputError(SizewiseError):
    """An output cannot be written: the place holds something sizewise did not write, or the disk
    refuses it (full, read-only, no permission)."""


class ModelError(SizewiseError):
    """A saved model folder is missing, incomplete, corrupt or of an unknown kind. The message is one
    line whatever it quotes (a library's report, a value read from the folder)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split("\n")).strip())


class RunError(SizewiseError):
    """A run could not finish for a reason outside its input: a worker process died, a cluster was lost."""
