"""A watcher that ends processes left behind by a process killed without warning.

``python -m sizewise.reaper`` reads lines ``PID CREATE_TIME`` on standard input until it closes,
which happens when the process that started it ends, however it ends (even SIGKILL: the kernel
closes its end of the pipe). It then kills every listed process still running (the create time
guards against a reused PID), and their children first.
"""

from __future__ import annotations

import contextlib
import sys

import psutil


def reap(lines: list[str]) -> int:
    """Kill the processes ``lines`` name that still run (and their descendants); how many were killed."""
    targets: list[psutil.Process] = []
    for line in lines:
        try:
            pid, created = line.split()
            process = psutil.Process(int(pid))
            if abs(process.create_time() - float(created)) > 0.01:
                continue  # the PID now names another process
        except (ValueError, psutil.Error):
            continue
        with contextlib.suppress(psutil.Error):
            targets.extend(process.children(recursive=True))
        targets.append(process)
    killed = 0
    for process in targets:
        try:
            process.kill()
            killed += 1
        except psutil.Error:
            pass
    psutil.wait_procs(targets, timeout=5)
    return killed


def main() -> None:
    """Read the processes to watch until standard input closes, then end those still running."""
    lines = sys.stdin.read().splitlines()
    reap(lines)


if __name__ == "__main__":
    main()
