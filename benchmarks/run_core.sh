#!/usr/bin/env bash
# Core benchmark: one BiLSTM vs 11 bagged vs 11 boosted BiLSTMs on SNLI (nli3 and binary) and
# MultiNLI, then the tables of BENCHMARKS.md. Needs SIZEWISE_DATA pointing at a data home with
# snli and mnli. About 80 minutes on 2 CPU cores; arms already finished are skipped on re-runs.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZEWISE="${SIZEWISE:-.venv/bin/sizewise}"
for study in core-snli-nli3 core-snli-binary core-mnli; do
  "$SIZEWISE" study run "benchmarks/$study.yaml"
done
"${PYTHON:-.venv/bin/python}" benchmarks/summarize.py runs/core-snli-nli3 runs/core-snli-binary runs/core-mnli
