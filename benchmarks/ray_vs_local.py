"""A study run locally and on a Ray instance on the same machine, side by side: wall time of each, and
whether every unit's metrics and predictions are the same.

    python benchmarks/ray_vs_local.py [STUDY] [--work runs/ray-vs-local] [--ways local-1,ray,local-all]
        [--table benchmarks/results/ray-vs-local/ray_vs_local.json] [--write BENCHMARKS.md]

Ways, each a fresh ``sizewise study run`` into a folder of its own (the folder is emptied first):
``local-1``: one unit after another with 1 torch thread; ``ray``: every unit a Ray task asking 1 CPU
(so 1 thread) on a Ray instance started by the run over all cores (its start-up counted);
``local-all``: one unit after another with as many threads as cores (the local default). ``local-1``
and ``ray`` use the same threads per unit, so their results must be identical; ``local-all`` may
differ in the last bits. With ``--table FILE`` the measurements go to FILE; ``--write`` puts the table
between ``<!-- ray-vs-local:begin -->`` and ``<!-- ray-vs-local:end -->`` in BENCHMARKS.md (from FILE
alone when the ways are not run: ``--ways ''``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from summarize import write_block  # noqa: E402  (benchmarks/summarize.py, beside this script)

CORES = os.cpu_count() or 1
WAYS: dict[str, tuple[list[str], int]] = {
    "local-1": ([], 1),
    "ray": (["--executor", "ray", "--num-cpus", "1"], 1),
    "local-all": ([], CORES),
}
LABELS = {
    "local-1": "local, one unit at a time, 1 thread",
    "ray": f"Ray on this machine, {CORES} units at a time, 1 CPU (1 thread) each",
    "local-all": f"local, one unit at a time, {CORES} threads",
}


def outcomes(out: Path) -> dict[str, Any]:
    """Every unit's metrics, predictions and other test sets' scores, by unit folder."""
    found = {}
    for path in sorted(out.rglob("result.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        tests = {name: (t["metrics"], t["predictions"]) for name, t in (record.get("tests") or {}).items()}
        found[str(path.parent.relative_to(out))] = (record["metrics"], record["predictions"], tests)
    return found


def run_way(study: Path, way: str, folder: Path) -> dict[str, Any]:
    """One fresh run of the study; its wall time and units."""
    args, threads = WAYS[way]
    shutil.rmtree(folder, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "sizewise.cli", "study", "run", str(study), "-o", str(folder), *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{way} failed:\n{proc.stderr[-3000:]}")
    found = outcomes(folder)
    train = sum(json.loads((folder / u / "result.json").read_text())["cost"]["train_seconds"] for u in found)
    return {"way": way, "wall_s": round(wall, 1), "units": len(found), "train_s_sum": round(train, 1)}


def _ray_version() -> str:
    from importlib import metadata

    return metadata.version("ray")


def table(record: dict[str, Any]) -> str:
    """The Markdown block: command, machine, one row per way."""
    base = next((r for r in record["ways"] if r["way"] == "local-1"), record["ways"][0])
    lines = [
        f"`python benchmarks/ray_vs_local.py {record['study']}` — {record['machine']}; "
        f"{base['units']} units (arm × seed × size), each way a fresh run.",
        "",
        "| way | wall time | × local, 1 thread | units' training time, summed | units identical to local, 1 thread |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in record["ways"]:
        speed = base["wall_s"] / r["wall_s"]
        same = f"{r['identical']} of {r['units']}"
        wall, train = f"{r['wall_s'] / 60:.1f} min", f"{r['train_s_sum'] / 60:.1f} min"
        lines.append(f"| {LABELS[r['way']]} | {wall} | {speed:.2f}× | {train} | {same} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", type=Path, default=Path("configs/learning-curve.yaml"))
    parser.add_argument("--work", type=Path, default=Path("runs/ray-vs-local"))
    parser.add_argument("--ways", default="local-1,ray,local-all", help="Comma-separated ways, in order.")
    parser.add_argument("--table", type=Path, default=None, help="JSON file of the measurements (read or written).")
    parser.add_argument("--write", type=Path, default=None, help="Markdown file with a ray-vs-local block.")
    args = parser.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    if ways:
        rows = []
        reference: dict[str, Any] | None = None
        for way in ways:
            row = run_way(args.study, way, args.work / way)
            found = outcomes(args.work / way)
            if way == "local-1" or reference is None:
                reference = found
            row["identical"] = sum(1 for unit, outcome in found.items() if reference.get(unit) == outcome)
            rows.append(row)
            print(f"{way}: {row}", flush=True)
        env = json.loads(next((args.work / ways[0]).rglob("result.json")).read_text(encoding="utf-8"))["environment"]
        record = {
            "study": str(args.study),
            "machine": f"{env['cpu']}, {CORES} cores, torch {env['torch']}, ray {_ray_version()}",
            "ways": rows,
        }
        if args.table:
            args.table.parent.mkdir(parents=True, exist_ok=True)
            args.table.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    else:
        if not args.table:
            raise SystemExit("--ways '' reads the measurements from --table FILE")
        record = json.loads(args.table.read_text(encoding="utf-8"))
    text = table(record)
    print(text)
    if args.write:
        write_block(args.write, "ray-vs-local", text)


if __name__ == "__main__":
    main()
