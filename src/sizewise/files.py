"""Writing files and folders so that a failure never leaves anything half-written.

Temporaries are made beside their target, named ``.<target>.<8 characters>.tmp`` (plots:
``.<target>.tmp.png``); a folder being replaced is moved to ``.<target>.old`` for a moment. A write
interrupted by a kill can leave any of these behind: :func:`clean_temporaries` removes them (and puts a
``.<target>.old`` whose target is missing back in its place). An error of the disk (full, read-only,
no permission) is an :class:`~sizewise.errors.OutputError` naming the path, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sizewise.errors import OutputError

#: OSError numbers that say the output cannot be written (rather than that sizewise is wrong).
WRITE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "ENOTDIR", "EISDIR", "EFBIG", "EEXIST", "EIO")
    if hasattr(errno, name)
)

#: Names of the temporaries the writers here make (and plots' ``.<name>.tmp.png``).
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.(?:[a-z0-9_]{8}\.tmp|tmp\.png)$")
_OLD = re.compile(r"^\.(?P<target>.+)\.old$")


def output_error(path: str | Path, exc: OSError) -> OutputError:
    """One line for a write to ``path`` that the disk refused."""
    return OutputError(f"{path}: cannot write there ({exc.strerror or exc})")


#: How often each failpoint was reached in this process (see :func:`failpoint`).
_FAILPOINT_HITS: dict[str, int] = {}


def failpoint(name: str) -> None:
    """A testing hook at the moments a kill hurts most (inside a write): with the environment variable
    ``SIZEWISE_FAILPOINT=NAME[:K]``, the main process kills itself with SIGKILL the K-th time (default
    the first) it reaches point ``NAME``. The kill -9 suite (``tests/killing.py``) lands kills here;
    without the variable this is one dictionary lookup. Points: ``write-file`` (a file written beside its
    target, not yet renamed), ``fill-folder`` (a folder written whole beside its target), ``swap-folder``
    (between the two renames that replace a folder), ``report`` (the report's images moved into place,
    its pages not yet)."""
    spec = os.environ.get("SIZEWISE_FAILPOINT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name or multiprocessing.parent_process() is not None:  # worker processes never stop here
        return
    _FAILPOINT_HITS[name] = _FAILPOINT_HITS.get(name, 0) + 1
    if _FAILPOINT_HITS[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc) from None


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    _make_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file should look like any other
        failpoint("write-file")
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise output_error(path, exc) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def check_replaceable(path: str | Path, owner: str | tuple[str, ...]) -> None:
    """Refuse (OutputError) to replace ``path`` unless it is missing, an empty folder, or a folder
    sizewise wrote: one holding a file named ``owner`` (a model folder's ``learner.json``)."""
    path = Path(path)
    owners = (owner,) if isinstance(owner, str) else tuple(owner)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise OutputError(f"{path}: is a file, not a model folder; name a new or empty folder")
    if any((path / name).is_file() for name in owners) or not any(path.iterdir()):
        return
    raise OutputError(
        f"{path}: holds files sizewise did not write (no {owners[0]}); name a new or empty folder, or a model "
        "folder to replace"
    )


def check_writable(path: str | Path) -> None:
    """Refuse (OutputError) an output ``path`` that cannot be written, before any work is done: its
    nearest existing folder must take a new file (one is made and removed there). Nothing is created."""
    path = Path(path).absolute()
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: cannot write there ({parent} is a file, not a folder)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sizewise-probe.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there ({exc.strerror or exc})") from None


def recover_directory(path: str | Path) -> None:
    """Finish an interrupted swap of :func:`atomic_directory`: a ``.<name>.old`` left without ``path``
    (a kill between its two renames) is put back as ``path``; one left beside ``path`` is removed."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not old.exists():
        return
    if path.exists():
        _remove(old)
    else:
        os.replace(old, path)


def clean_temporaries(folder: str | Path) -> list[str]:
    """Remove the temporaries that interrupted writes left in ``folder`` (only names these writers
    make: ``.<name>.XXXXXXXX.tmp``, ``.<name>.tmp.png``, ``.<name>.old``) and restore a
    ``.<name>.old`` whose ``<name>`` is missing; returns the names handled. Call it only where no other
    writer is at work (a unit being run, a run folder at the start of a run)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    handled = []
    for entry in sorted(folder.iterdir()):
        try:
            if _OLD.match(entry.name):
                recover_directory(folder / _OLD.match(entry.name).group("target"))  # type: ignore[union-attr]
            elif _TEMPORARY.match(entry.name):
                _remove(entry)
            else:
                continue
        except OSError as exc:
            raise output_error(entry, exc) from None
        handled.append(entry.name)
    return handled


def _usual_modes(folder: Path) -> None:
    """Give everything written into ``folder`` the modes any new file or folder gets here (some writers,
    safetensors among them, make their files readable by their owner only)."""
    mask = _umask()
    for entry in folder.rglob("*"):
        if entry.is_symlink():
            continue
        entry.chmod((0o777 if entry.is_dir() else 0o666) & ~mask)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | Path, *, owner: str | tuple[str, ...] | None = None) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success it replaces ``path`` whole.

    On an exception the temporary folder is removed and ``path`` is left as it was. With ``owner``
    (the file that marks a folder as sizewise's), an existing ``path`` that is not an empty folder or
    a folder holding ``owner`` is refused before anything is written (:func:`check_replaceable`).
    """
    path = Path(path)
    try:
        recover_directory(path)
    except OSError as exc:
        raise output_error(path, exc) from None
    if owner is not None:
        check_replaceable(path, owner)
    _make_parent(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        yield tmp
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
            raise output_error(path, exc) from None
        raise
    try:
        _usual_modes(tmp)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise output_error(path, exc) from None
    failpoint("fill-folder")
    try:
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            failpoint("swap-folder")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(OSError):
            recover_directory(path)  # the old folder back in place if the first rename went through
        raise output_error(path, exc) from None


def directory_size(path: str | Path) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def read_json_file(path: str | Path, error: type[Exception], what: str) -> Any:
    """The JSON in ``path``; a missing file or bad JSON raises ``error`` naming the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not a valid {what} ({exc})") from None
