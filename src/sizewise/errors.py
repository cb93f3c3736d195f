"""Errors a user can act on. The CLI prints them as one line each and exits with code 2."""

from __future__ import annotations


class SizewiseError(Exception):
    """Base class of every error sizewise raises for bad input or bad configuration."""


class DataError(SizewiseError):
    """A data file or dataset is missing, unreadable or has bad rows.

    ``problems`` holds one message per bad row (``file line N: field: reason``); the string of the
    error is the first problem, followed by a count of the others and a few of them.
    """

    def __init__(self, problems: list[str] | str, *, shown: int = 10) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        head = self.problems[0] if self.problems else "bad data"
        more = len(self.problems) - 1
        if more > 0:
            rest = "; ".join(self.problems[1:shown])
            tail = f" (and {more} more problem{'s' if more > 1 else ''}: {rest}"
            tail += ", ...)" if more >= shown else ")"
            head += tail
        super().__init__(head)


class ConfigError(SizewiseError):
    """A study file or learner specification is invalid; ``problems`` lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(f"{source}: " + "; ".join(self.problems))


class ModelError(SizewiseError):
    """A saved model folder is missing, incomplete or of an unknown kind."""
