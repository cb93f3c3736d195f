"""Hostile inputs, counted: the properties of ``tests/test_hostile.py`` (random and mutated pair files,
study files, saved model folders) with a budget of your choosing, and a table of inputs × outcomes.

    python benchmarks/hostile_inputs.py [--examples 500] [--pairs-random N] [--pairs-mutated N]
        [--study N] [--models N]

Each input either works (``ok``), ends in the one-line error of its kind naming the file (``clean
error``: DataError, ConfigError, ModelError) or in anything else (``other``: a traceback, the target
being none). Examples are derandomized: the same budget gives the same inputs and the same table. An
input that ends in ``other`` is shown with its property's first failure; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_hostile  # noqa: E402  (the properties and their strategies live with the tests)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="Examples per property (default 500).")
    for key in test_hostile.BUDGET:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"Examples for {key}.")
    args = parser.parse_args()
    budget = {key: getattr(args, key) or args.examples for key in test_hostile.BUDGET}
    start = time.perf_counter()
    outcomes = test_hostile.run_all(budget, report=lambda line: print(f"failure: {line}", file=sys.stderr))
    print(test_hostile.format_outcomes(outcomes))
    print(f"budget {budget}, {time.perf_counter() - start:.0f} s")
    return 1 if any(counts["other"] for counts in outcomes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
