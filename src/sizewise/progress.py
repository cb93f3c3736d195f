"""Progress bars for long work: rich bars on a terminal, silent otherwise or when quiet."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Turn progress bars off (``--quiet``) or back on for this process."""
    global _QUIET
    _QUIET = quiet


def progress_enabled() -> bool:
    """Bars show only when not quiet and stderr is a terminal."""
    return not _QUIET and sys.stderr.isatty()


class _NullProgress:
    """Stands in for rich's Progress when bars are off; every call is a no-op."""

    def add_task(self, *args: object, **kwargs: object) -> int:
        return 0

    def update(self, *args: object, **kwargs: object) -> None:
        return None

    def advance(self, *args: object, **kwargs: object) -> None:
        return None

    def remove_task(self, *args: object, **kwargs: object) -> None:
        return None


_ACTIVE: Progress | None = None


@contextmanager
def progress_bar(transient: bool = True) -> Iterator[Progress | _NullProgress]:
    """A rich progress context with a free-text ``info`` field for loss / accuracy / pairs/s.

    Nested calls (an ensemble's member bar around each member's epoch bar) share the outer
    display, since a terminal holds one live display at a time.
    """
    global _ACTIVE
    if not progress_enabled():
        yield _NullProgress()
        return
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
    )
    _ACTIVE = bar
    try:
        with bar:
            yield bar
    finally:
        _ACTIVE = None
