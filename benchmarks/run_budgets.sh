#!/usr/bin/env bash
# The learning-curve, size-question and out-of-domain sections of BENCHMARKS.md: run the two studies
# (every unit that is not finished yet; MPNet-base must be assembled first, see curve-snli.yaml), keep
# their result files beside the benchmark (not the models), and write the tables and the figure.
# RUN=0 skips the runs and only keeps and summarizes what runs/ holds (every finished unit).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZEWISE="${SIZEWISE:-.venv/bin/sizewise}"
PYTHON="${PYTHON:-.venv/bin/python}"
export SIZEWISE_DATA="${SIZEWISE_DATA:-../shared/data}"
if [ "${RUN:-1}" = 1 ]; then
  "$SIZEWISE" study run benchmarks/curve-snli.yaml
  "$SIZEWISE" study run benchmarks/ood-snli.yaml
fi
for study in curve-snli ood-snli; do
  rm -rf "benchmarks/results/$study"
  mkdir -p "benchmarks/results/$study"
  cp "runs/$study/study.json" "benchmarks/results/$study/"
  "$PYTHON" - "$study" <<'PY'
import shutil
import sys
from pathlib import Path

from sizewise.config import load_study
from sizewise.study import unit_folder, unit_is_done

study = sys.argv[1]
config = load_study(f"benchmarks/{study}.yaml")
runs, kept = Path("runs") / study, Path("benchmarks/results") / study
for arm in config.arms:
    units = config.units(arm)
    done = [(u, unit_folder(config, arm, u, runs)) for u in units]
    done = [(u, f) for u, f in done if unit_is_done(config, arm, u, f)]
    if len(done) < len(units):
        missing = ", ".join(u.key for u in units if u not in {d for d, _ in done})
        print(f"{study}: arm {arm.name} lacks {missing}; its finished units are kept")
    for _, folder in done:
        target = kept / folder.relative_to(runs)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "result.json", target / "result.json")
PY
done
"$PYTHON" benchmarks/summarize.py --curves benchmarks/results/curve-snli --write BENCHMARKS.md
"$PYTHON" benchmarks/summarize.py --curves benchmarks/results/curve-snli --figures benchmarks/figures
"$PYTHON" benchmarks/summarize.py --budget k128 benchmarks/results/curve-snli --write BENCHMARKS.md
"$PYTHON" benchmarks/summarize.py --tests benchmarks/results/ood-snli --write BENCHMARKS.md
