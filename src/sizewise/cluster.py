"""Running on a Ray cluster: a study's units (``sizewise study run FILE --executor ray``) and an
ensemble's members (``executor: ray``).

Every unit (arm, seed, size) is one Ray task. The driver reads the data once and puts it in Ray's
object store; a task trains and scores its unit in a temporary folder on whichever node runs it and
returns the result record and the saved model as bytes (safetensors + JSON); only the driver writes
into the run folder, atomically, as results come back. A unit made from another arm's model (a
compress, self-trained or transfer arm) is sent once its source is finished, with the source's
files. A task whose worker dies is retried by Ray (``max_retries``); a unit's training does not
depend on which node or attempt ran it, so the results equal those of a local run with the same seeds
and the same number of threads per unit (``num_cpus``).

When sizewise starts a local Ray instance itself (no address given), it shuts it down at the end,
and a small watcher process ends what is left of it if the driver is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sizewise.errors import ConfigError, RunError, SizewiseError
from sizewise.files import atomic_directory
from sizewise.progress import progress_bar, set_quiet

if TYPE_CHECKING:
    from sizewise.config import ArmConfig, StudyConfig
    from sizewise.result import ArmResult
    from sizewise.units import Unit

logger = logging.getLogger(__name__)

#: How often Ray runs a task again after its worker process died (a killed worker, a lost node).
MAX_RETRIES = 3


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor: ray", ["needs the ray package: pip install 'sizewise[ray]'"]) from None
    return ray


#: The watcher of the local Ray instance this process started and keeps (see :func:`ray_session`).
_KEPT_WATCHER: subprocess.Popen[bytes] | None = None


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None, keep: bool = False) -> Iterator[Any]:
    """Ray, connected: to the cluster at ``address`` (``auto``: the one started on this machine with
    ``ray start``), to the session this process has already, or to a local instance started here
    (``num_cpus``: its size; default all cores), shut down when the block ends unless ``keep`` (then
    when this process exits)."""
    global _KEPT_WATCHER
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    started_here = address is None
    kwargs: dict[str, Any] = {"include_dashboard": False, "num_cpus": num_cpus} if started_here else {}
    if started_here:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # an instance for this process alone
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise RunError(f"could not connect to {where}: {str(exc).splitlines()[0]}") from None
    watcher = _watch_local_instance() if started_here else None
    if keep:
        _KEPT_WATCHER = watcher  # its pipe closes when this process exits
        yield ray
        return
    try:
        yield ray
    finally:
        ray.shutdown()
        if watcher is not None:
            with contextlib.suppress(OSError):
                watcher.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                watcher.wait(timeout=10)


def _watch_local_instance() -> subprocess.Popen[bytes] | None:
    """Start a watcher that ends the processes of the Ray instance this process started if this process
    ends without shutting it down (SIGKILL): some of them otherwise outlive it for good."""
    import psutil

    ours = psutil.Process().children(recursive=True)
    if not ours:
        return None
    watcher = subprocess.Popen(
        [sys.executable, "-m", "sizewise.reaper"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert watcher.stdin is not None
    lines = "".join(f"{p.pid} {p.create_time()!r}\n" for p in ours)
    watcher.stdin.write(lines.encode())
    watcher.stdin.flush()
    return watcher


# --- a study's units -------------------------------------------------------------------------------


@dataclass
class Resources:
    """What one unit asks of the cluster: CPUs (also its torch threads) and GPUs (a fraction shares one)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def options(self) -> dict[str, Any]:
        """Ray's task options for these resources."""
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "max_retries": MAX_RETRIES}


@dataclass
class UnitOutput:
    """A finished unit as a task returns it: its result record and its saved model's files."""

    result: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    seconds: float = 0.0


#: ``run(config, arm, data, folder, unit)``: train and score one unit (:func:`sizewise.study.run_arm`).
RunUnit = Callable[["StudyConfig", "ArmConfig", Any, Path, "Unit"], "ArmResult"]
#: ``folder_of(config, arm, unit, out)``: a unit's folder in the run folder (:func:`sizewise.study.unit_folder`).
UnitFolder = Callable[["StudyConfig", "ArmConfig", "Unit", Path], Path]


def run_unit_task(
    config: StudyConfig,
    arm_name: str,
    unit: Unit,
    data: Any,
    sources: dict[str, dict[str, bytes]],
    cwd: str,
    threads: int,
    run: RunUnit,
    folder_of: UnitFolder,
) -> UnitOutput:
    """Train and score one unit with ``run`` in a temporary folder (on a Ray worker); ``sources`` are the
    files of the units it is made from, by their path in the run folder."""
    import torch

    start = time.perf_counter()
    set_quiet(True)
    torch.set_num_threads(max(1, threads))
    if Path(cwd).is_dir():  # local model folders named relative to where the study was started
        os.chdir(cwd)
    arm = config.arm(arm_name)
    with tempfile.TemporaryDirectory(prefix="sizewise-unit-") as tmp:
        root = Path(tmp)
        for rel, blob in _flatten(sources).items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)
        folder = folder_of(config, arm, unit, root)
        result = run(config, arm, data, folder, unit)
        model = folder / "model"
        files = {str(p.relative_to(model)): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    return UnitOutput(result=result.to_json(), files=files, seconds=time.perf_counter() - start)


def _flatten(sources: dict[str, dict[str, bytes]]) -> dict[str, bytes]:
    return {f"{folder}/{rel}": blob for folder, files in sources.items() for rel, blob in files.items()}


def unit_files(folder: Path, root: Path) -> dict[str, dict[str, bytes]]:
    """A finished unit's result and model files, keyed by the unit folder's path under ``root``."""
    files = {"result.json": (folder / "result.json").read_bytes()}
    model = folder / "model"
    files.update({f"model/{p.relative_to(model)}": p.read_bytes() for p in model.rglob("*") if p.is_file()})
    return {str(folder.relative_to(root)): files}


def write_model_files(files: dict[str, bytes], model_dir: Path) -> None:
    """Write a model returned as bytes into ``model_dir``, replacing it whole (atomically)."""
    with atomic_directory(model_dir) as tmp:
        for rel, blob in files.items():
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob)


def run_units_on_ray(
    config: StudyConfig,
    todo: list[tuple[ArmConfig, Unit]],
    data_of: Callable[[ArmConfig], Any],
    out: Path,
    *,
    run: RunUnit,
    folder_of: UnitFolder,
    prepare: Callable[[Path], None],
    finish: Callable[[ArmConfig, Unit, ArmResult], None],
    address: str | None = None,
    resources: Resources | None = None,
) -> None:
    """Run every unit of ``todo`` as a Ray task (``run`` on a worker), each once the units it is made from
    are finished; ``prepare`` readies a unit's folder before it is sent, ``finish`` writes its result (on
    the driver) as it comes back."""
    from sizewise.result import ArmResult

    defaults = resources or Resources()
    keys = {(arm.name, unit) for arm, unit in todo}

    def needs(arm: ArmConfig, unit: Unit) -> list[tuple[str, Unit]]:
        return [(name, config.source_unit(arm, unit, name)) for name in arm.type_.sources(arm.spec)]

    with ray_session(address) as ray:
        arms = {arm.name: arm for arm, _ in todo}
        _check_feasible(ray, [(arm, _arm_resources(arm, defaults)) for arm in arms.values()], address)
        remote = ray.remote(run_unit_task)
        data_refs: dict[int, Any] = {}
        config_ref = ray.put(config)
        waiting = list(todo)
        running: dict[Any, tuple[ArmConfig, Unit]] = {}
        finished: set[tuple[str, Unit]] = set()

        def submit_ready() -> None:
            for arm, unit in list(waiting):
                deps = needs(arm, unit)
                if any(d in keys and d not in finished for d in deps):
                    continue
                waiting.remove((arm, unit))
                prepare(folder_of(config, arm, unit, out))
                data = data_of(arm)
                if id(data) not in data_refs:
                    data_refs[id(data)] = ray.put(data)
                sources: dict[str, dict[str, bytes]] = {}
                for name, source_unit in deps:
                    folder = folder_of(config, config.arm(name), source_unit, out)
                    if (folder / "result.json").is_file() and (folder / "model").is_dir():
                        sources.update(unit_files(folder, out))
                res = _arm_resources(arm, defaults)
                ref = remote.options(**res.options(), name=f"sizewise {arm.name} {unit.key}").remote(
                    config_ref,
                    arm.name,
                    unit,
                    data_refs[id(data)],
                    sources,
                    os.getcwd(),
                    max(1, int(res.num_cpus)),
                    run,
                    folder_of,
                )
                running[ref] = (arm, unit)

        submit_ready()
        with progress_bar() as bar:
            job = bar.add_task("study units (ray)", total=len(todo), info="")
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    arm, unit = running.pop(ref)
                    try:
                        output: UnitOutput = ray.get(ref)
                    except Exception as exc:
                        for other in running:
                            ray.cancel(other, force=True)
                        raise task_error(exc, f"arm {arm.name} ({unit.key})") from None
                    folder = folder_of(config, arm, unit, out)
                    if output.files:
                        write_model_files(output.files, folder / "model")
                    finish(arm, unit, ArmResult.model_validate(output.result))
                    finished.add((arm.name, unit))
                    bar.update(job, advance=1, info=f"{arm.name} {unit.key} in {output.seconds:.0f}s")
                submit_ready()
            bar.remove_task(job)
        if waiting:  # pragma: no cover - a source outside todo that is not finished: refused by source_model
            raise RunError(f"units never became ready: {', '.join(f'{a.name} {u.key}' for a, u in waiting)}")


def _check_feasible(ray: Any, asks: list[tuple[ArmConfig, Resources]], address: str | None) -> None:
    """Refuse units that ask more CPUs or GPUs than the cluster has in all (Ray would wait for them for
    ever); on a cluster named by address, which may grow (an autoscaler), only warn."""
    have = ray.cluster_resources()
    problems = [
        f"arm {arm.name}: a unit asks {need:g} {what}, the cluster has {have.get(key, 0):g}"
        for arm, res in asks
        for what, key, need in (("CPUs", "CPU", res.num_cpus), ("GPUs", "GPU", res.num_gpus))
        if need > have.get(key, 0)
    ]
    if not problems:
        return
    if address is None:
        raise RunError("; ".join(problems) + " (lower --num-cpus / --num-gpus or the arm's resources)")
    for problem in problems:
        logger.warning("%s: its units wait until the cluster has them", problem)


def _arm_resources(arm: ArmConfig, defaults: Resources) -> Resources:
    """The arm's own ``resources`` where its block sets them, else the run's defaults."""
    own = arm.resources
    if own is None:
        return defaults
    return Resources(
        num_cpus=defaults.num_cpus if own.num_cpus is None else own.num_cpus,
        num_gpus=defaults.num_gpus if own.num_gpus is None else own.num_gpus,
    )


def task_error(exc: Exception, what: str) -> Exception:
    """What a failed Ray task (``what`` it trained) raises on the driver: the task's own error where it is
    one a user can act on, one line where its worker was lost beyond its retries, else the exception
    the task raised."""
    ray = import_ray()
    cause = getattr(exc, "cause", None)
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, SizewiseError):
        return cause
    if isinstance(exc, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError)):
        return RunError(
            f"{what}: its Ray worker died {MAX_RETRIES + 1} times; what finished so far is kept: run it again to resume"
        )
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(cause, Exception):
        return cause
    return exc
