#!/usr/bin/env bash
# Core benchmark: one BiLSTM vs 11 bagged vs 11 boosted BiLSTMs on SNLI (nli3 and binary) and
# MultiNLI, then the tables of BENCHMARKS.md. Needs SIZEWISE_DATA pointing at a data home with
# snli and mnli. About 2.5 hours on 2 CPU cores; arms already finished are skipped on re-runs.
#
# One arm at a time, nothing else running: energy is read for the whole machine (see BENCHMARKS.md),
# so an arm's energy is its own only when it has the machine to itself. Bagging uses both cores
# (2 worker processes, 1 thread each; the batched arm: one process, 2 threads); boosting trains its
# members in sequence with 2 threads.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZEWISE="${SIZEWISE:-.venv/bin/sizewise}"
for study in core-snli-nli3 core-snli-binary core-mnli; do
  "$SIZEWISE" study run "benchmarks/$study.yaml" --arm bilstm --arm bagged-11 --arm boosted-11
done
# The bagged arm again with every member in one stacked network (executor: batched), SNLI nli3 only.
"$SIZEWISE" study run benchmarks/core-snli-nli3.yaml --arm bagged-11-batched
# Keep the result files (metrics, intervals, costs, curves, test predictions; not the models)
# beside the benchmark, and write the tables.
for study in core-snli-nli3 core-snli-binary core-mnli; do
  for arm in bilstm bagged-11 bagged-11-batched boosted-11; do
    [ -f "runs/$study/$arm/result.json" ] || continue
    mkdir -p "benchmarks/results/$study/$arm"
    cp "runs/$study/$arm/result.json" "benchmarks/results/$study/$arm/"
  done
done
"${PYTHON:-.venv/bin/python}" benchmarks/summarize.py benchmarks/results/core-snli-nli3 \
  benchmarks/results/core-snli-binary benchmarks/results/core-mnli --write BENCHMARKS.md
