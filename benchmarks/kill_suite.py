"""The kill -9 suite with as many kills as you like: a small study (two seeds of a BiLSTM, of 3 bagged
BiLSTMs on 2 worker processes, and of the BiLSTM compressed) killed with SIGKILL at the failpoints
inside writes and at random moments, resumed after each kill, and compared with an uninterrupted run.

    python benchmarks/kill_suite.py [--kills 40] [--seed 0] [--work DIR]

Prints one line per run and the verdict ("N of N kills resumed to identical results with no process
left running"); exit code 1 if any kill did not. Needs the shared data home (SIZEWISE_DATA or
../shared/data) for its 300 SNLI training pairs.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from killing import environment, kill_suite, summary, write_study  # noqa: E402  (the harness lives with the tests)

DATA = Path(os.environ.get("SIZEWISE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SIZES = {"train": 300, "dev": 60, "test": 100}


def _cut(folder: Path) -> dict[str, Path]:
    """The first labelled pairs of SNLI's splits as small TSV files."""
    files = {}
    for split, n in SIZES.items():
        rows = ["premise\thypothesis\tlabel"]
        with gzip.open(DATA / "snli" / f"{split}.tsv.gz", "rt", encoding="utf-8") as fh:
            next(fh)
            for line in fh:
                if line.rstrip("\n").split("\t")[-1] in ("entailment", "neutral", "contradiction"):
                    rows.append(line.rstrip("\n"))
                    if len(rows) > n:
                        break
        files[split] = folder / f"{split}.tsv"
        files[split].write_text("\n".join(rows) + "\n", encoding="utf-8")
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40, help="Kills in all (the first 4 at the failpoints).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random kill moments.")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the runs (default: a temporary one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sizewise-kill-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files = _cut(work)
        study = write_study(work, files["train"], files["dev"], files["test"])
        reference, trials = kill_suite(study, work, environment(DATA), kills=args.kills, seed=args.seed)
        report = summary(reference, trials)
        print(report)
    return (
        0
        if report.endswith(
            f"{args.kills} of {args.kills} kills resumed to identical results with no process left running"
        )
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
