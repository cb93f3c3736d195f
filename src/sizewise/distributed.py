"""Several processes training one transformer together (data parallel), as launched by
``accelerate launch`` or ``torchrun``.

Each process reads the launcher's environment (``WORLD_SIZE``, ``RANK``); with one process
everything here is a no-op. In a multi-process run every process trains on its own share of each
epoch's batches, gradients are averaged across processes (PyTorch DDP, set up by ``accelerate``),
and only the main process (rank 0) writes files or draws progress bars.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import Any

from sizewise.errors import ConfigError


def world_size() -> int:
    """Number of processes in this launch (1 when not launched by accelerate / torchrun)."""
    return max(int(os.environ.get("WORLD_SIZE", "1") or 1), 1)


def rank() -> int:
    """This process's index in the launch (0 when alone)."""
    return int(os.environ.get("RANK", "0") or 0)


def is_main_process() -> bool:
    """True for the process that writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def shard(items: list[Any], index: int, count: int) -> list[Any]:
    """Process ``index``'s share of ``items``: every ``count``-th item from ``index`` on, cut so that
    every process gets the same number (a collective step that one process skips would hang)."""
    per_process = len(items) // count
    return items[index::count][:per_process]


def accelerator(cpu: bool) -> Any:
    """The ``accelerate.Accelerator`` of a multi-process launch (it sets up the process group)."""
    try:
        from accelerate import Accelerator
    except ImportError:
        raise ConfigError("distributed training", ["needs the 'accelerate' package: pip install accelerate"]) from None
    acc = Accelerator(cpu=cpu, mixed_precision="no")  # the learner runs its own autocast
    atexit.register(_close_process_group)
    return acc


def _close_process_group() -> None:
    """Take the process group down before the interpreter exits (what :func:`close` cannot reach)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def close(code: int = 0) -> None:
    """End this process of a multi-process launch with exit status ``code``, once its work is done and
    written: the process group is taken down, output flushed, and the process ends without the
    interpreter's teardown. PyTorch keeps a Gloo process group's threads running after
    ``destroy_process_group`` (its C++ object stays referenced), and the interpreter's teardown then
    aborts the process now and then ("terminate called without an active exception", exit -6), which
    makes the launcher report a finished run as failed. The command line calls this itself; a script
    using the Python API under ``torchrun`` or ``accelerate launch`` calls it last. Outside a
    multi-process launch it does nothing and returns."""
    import torch.distributed as dist

    if world_size() <= 1 or not (dist.is_available() and dist.is_initialized()):
        return
    _close_process_group()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
