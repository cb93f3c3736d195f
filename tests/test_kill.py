"""The kill -9 suite at a size for CI: 10 kills of a small study (4 at the failpoints inside writes, 6 at
random moments), each resumed, ending with results identical to an uninterrupted run and no process of
a killed run left running. ``benchmarks/kill_suite.py`` runs it with more kills."""

from __future__ import annotations

from pathlib import Path

from conftest import SHARED_DATA
from killing import environment, kill_suite, summary, write_study


def test_ten_kills_resume_to_the_results_of_an_uninterrupted_run(tiny_tsv: Path, tmp_path: Path) -> None:
    study = write_study(tmp_path, tiny_tsv / "train.tsv", tiny_tsv / "dev.tsv", tiny_tsv / "test.tsv")
    reference, trials = kill_suite(study, tmp_path, environment(SHARED_DATA), kills=10, seed=0)
    report = summary(reference, trials)
    print(report)
    kills = [run for trial in trials for run in trial.runs if run.killed_by]
    assert len(kills) == 10, report
    assert {run.killed_by for run in kills} >= {
        f"failpoint {p}" for p in ("write-file:2", "fill-folder:1", "swap-folder:1", "report:1")
    }, report
    assert [run.orphans for run in kills] == [[]] * 10, report
    assert [trial.problems for trial in trials] == [[]] * len(trials), report
    assert report.endswith("10 of 10 kills resumed to identical results with no process left running")
