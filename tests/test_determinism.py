"""The same study and seeds twice on the same machine (same thread count) give identical metrics,
predictions and saved weights: a BiLSTM, bagged BiLSTMs (batched and on worker processes), boosted
BiLSTMs and a LoRA transformer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from conftest import TINY_BILSTM, TINY_TRANSFORMER, run_cli


def _study(folder: Path, tiny_tsv: Path) -> Path:
    base = {**TINY_BILSTM, "epochs": 3}
    arms = [
        {"name": "bilstm", "learner": base},
        {"name": "bagged", "learner": {"kind": "ensemble", "n_learners": 3, "base": base}},
        {"name": "bagged-pool", "learner": {"kind": "ensemble", "n_learners": 3, "workers": 2, "base": base}},
        {"name": "boosted", "learner": {"kind": "ensemble", "method": "boosting", "n_learners": 3, "base": base}},
        {"name": "lora", "learner": TINY_TRANSFORMER},
    ]
    study = {
        "name": "twice",
        "data": {k: str(tiny_tsv / f"{k}.tsv") for k in ("train", "dev", "test")},
        "arms": arms,
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    return path


def _outcomes(out: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in sorted(out.rglob("result.json")):
        unit = path.parent
        record = json.loads(path.read_text(encoding="utf-8"))
        weights = {str(p.relative_to(unit)): p.read_bytes() for p in sorted(unit.rglob("*.safetensors"))}
        found[str(unit.relative_to(out))] = (record["metrics"], record["predictions"], weights)
    return found


def test_the_same_study_twice_gives_identical_results(tiny_bert: Path, tiny_tsv: Path, tmp_path: Path) -> None:
    study = _study(tmp_path, tiny_tsv)
    for out in ("first", "second"):
        proc = run_cli("study", "run", str(study), "-o", str(tmp_path / out))
        assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = _outcomes(tmp_path / "first"), _outcomes(tmp_path / "second")
    assert len(first) == 5 and all(weights for _, _, weights in first.values())
    for unit, outcome in first.items():
        assert second[unit] == outcome, unit
