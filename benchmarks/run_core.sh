#!/usr/bin/env bash
# Core benchmark: one BiLSTM vs 11 bagged vs 11 boosted BiLSTMs on SNLI (nli3 and binary) and
# MultiNLI, then the tables of BENCHMARKS.md. Needs SIZEWISE_DATA pointing at a data home with
# snli and mnli. 2 to 2.5 hours on 2 CPU cores; arms already finished are skipped on re-runs.
#
# Order, as BENCHMARKS.md was measured: the BiLSTM and bagged arms of each study one after the
# other (bagging uses both cores: 2 worker processes, 1 thread each); then the boosted arms, one
# thread each (boosting trains its members in sequence): the two SNLI studies side by side, then
# MultiNLI (beside benchmarks/trainer_speed.py when BENCHMARKS.md was measured).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZEWISE="${SIZEWISE:-.venv/bin/sizewise}"
for study in core-snli-nli3 core-snli-binary core-mnli; do
  "$SIZEWISE" study run "benchmarks/$study.yaml" --arm bilstm --arm bagged-11
done
OMP_NUM_THREADS=1 "$SIZEWISE" study run benchmarks/core-snli-nli3.yaml &
OMP_NUM_THREADS=1 "$SIZEWISE" study run benchmarks/core-snli-binary.yaml &
wait
OMP_NUM_THREADS=1 "$SIZEWISE" study run benchmarks/core-mnli.yaml
# Keep the result files (metrics, intervals, costs, curves, test predictions; not the models)
# beside the benchmark, and write the tables.
for study in core-snli-nli3 core-snli-binary core-mnli; do
  for arm in bilstm bagged-11 boosted-11; do
    mkdir -p "benchmarks/results/$study/$arm"
    cp "runs/$study/$arm/result.json" "benchmarks/results/$study/$arm/"
  done
done
"${PYTHON:-.venv/bin/python}" benchmarks/summarize.py benchmarks/results/core-snli-nli3 \
  benchmarks/results/core-snli-binary benchmarks/results/core-mnli --write BENCHMARKS.md
