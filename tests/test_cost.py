"""The cost meter: CPU time, peak memory of the process tree, energy through a (faked) tracker,
latency and throughput; and the energy fields a study writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TINY_BILSTM, keyword_pairs
from sizewise.config import StudyConfig
from sizewise.cost.energy import EnergyReading, EnergySettings, fmt_energy, set_tracker_factory
from sizewise.cost.meter import CostMeter, measure_latency, measure_throughput, tree_rss_mb
from sizewise.study import run_study


class FakeTracker:
    """Reports 2 Wh and 1 g CO2 for whatever ran between start and stop."""

    started = stopped = 0

    def __init__(self, settings: EnergySettings) -> None:
        self.settings = settings

    def start(self) -> None:
        FakeTracker.started += 1

    def stop(self) -> EnergyReading:
        FakeTracker.stopped += 1
        return EnergyReading(
            energy_kwh=0.002,
            co2_kg=0.001,
            cpu_kwh=0.0015,
            gpu_kwh=0.0,
            ram_kwh=0.0005,
            measured=False,
            method="fake",
            country=self.settings.country,
            carbon_intensity_g_per_kwh=500.0,
        )


@pytest.fixture
def fake_energy() -> Any:
    FakeTracker.started = FakeTracker.stopped = 0
    set_tracker_factory(FakeTracker)
    yield FakeTracker
    set_tracker_factory(None)


def test_meter_records_time_memory_and_energy(fake_energy: Any) -> None:
    with CostMeter(EnergySettings(country="FRA")) as meter:
        block = np.ones(60_000_000 // 8)  # 60 MB, held while the sampler looks
        time.sleep(0.5)
        x = 0.0
        for i in range(200_000):
            x += i
    del block
    assert fake_energy.started == fake_energy.stopped == 1
    assert meter.wall_seconds >= 0.5
    assert 0 < meter.cpu_seconds < meter.wall_seconds + 1
    assert meter.peak_rss_mb >= tree_rss_mb() + 40  # the 60 MB block was seen, and is gone now
    d = meter.as_dict("train")
    assert d["train_energy_kwh"] == 0.002 and d["train_co2_kg"] == 0.001
    assert d["train_country"] == "FRA" and d["train_measured"] is False
    assert d["train_seconds"] == round(meter.wall_seconds, 3)


def test_meter_without_energy_settings_tracks_no_energy(fake_energy: Any) -> None:
    with CostMeter() as meter:
        pass
    assert fake_energy.started == 0
    assert meter.energy is None
    assert "train_energy_kwh" not in meter.as_dict("train")


def test_latency_and_throughput() -> None:
    data = keyword_pairs(20)
    calls: list[int] = []

    def predict(pairs: Any) -> np.ndarray:
        calls.append(len(pairs))
        time.sleep(0.002 * len(pairs))
        return np.zeros((len(pairs), 3))

    lat = measure_latency(predict, data, n=10, warmup=2)
    assert calls[:12] == [1] * 12  # single pairs only, warm-up included
    assert 2.0 <= lat["latency_p50_ms"] <= lat["latency_p95_ms"] < 200
    assert lat["latency_calls"] == 10
    tp = measure_throughput(predict, data, n=20)
    assert tp["pairs"] == 20 and 0 < tp["pairs_per_s"] <= 500  # 2 ms a pair at best


def test_fmt_energy() -> None:
    assert fmt_energy(None) == "–"
    assert fmt_energy(0.00123) == "1.23 Wh"
    assert fmt_energy(2.5) == "2.500 kWh"


def test_codecarbon_tracker_reads_a_block() -> None:
    pytest.importorskip("codecarbon")
    from sizewise.cost.energy import CodecarbonTracker

    tracker = CodecarbonTracker(EnergySettings(country="DEU", measure_power_secs=0.5))
    tracker.start()
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        pass
    reading = tracker.stop()
    assert reading is not None
    assert reading.energy_kwh > 0 and reading.co2_kg > 0
    assert reading.energy_kwh == pytest.approx(reading.cpu_kwh + reading.gpu_kwh + reading.ram_kwh, rel=1e-6)
    assert reading.method.startswith("codecarbon ") and reading.country == "DEU"
    # Either way the reading says how it was obtained; estimated readings say so.
    assert reading.measured or "estimated" in reading.method


def test_forced_carbon_intensity_sets_co2() -> None:
    pytest.importorskip("codecarbon")
    from sizewise.cost.energy import CodecarbonTracker

    tracker = CodecarbonTracker(EnergySettings(carbon_intensity_g_per_kwh=100.0, measure_power_secs=0.5))
    tracker.start()
    time.sleep(0.6)
    reading = tracker.stop()
    assert reading is not None
    assert reading.co2_kg == pytest.approx(reading.energy_kwh * 0.1, rel=1e-6)
    assert reading.carbon_intensity_g_per_kwh == pytest.approx(100.0)


def test_study_writes_energy_latency_and_memory(fake_energy: Any, tmp_path: Path) -> None:
    rows = keyword_pairs(40)
    train = tmp_path / "train.tsv"
    lines = ["premise\thypothesis\tlabel"]
    lines += [f"{p}\t{h}\t{rows.scheme.labels[y]}" for p, h, y in zip(rows.premises, rows.hypotheses, rows.labels)]
    train.write_text("\n".join(lines) + "\n")
    config = StudyConfig.model_validate(
        {
            "name": "cost",
            "output": str(tmp_path / "out"),
            "data": {"train": str(train), "test": str(train)},
            "cost": {"country": "SWE"},
            "arms": [{"name": "lstm", "learner": {**TINY_BILSTM, "epochs": 1}}],
        }
    )
    run_study(config)
    cost = json.loads((tmp_path / "out" / "lstm" / "result.json").read_text())["cost"]
    assert cost["train_energy_kwh"] == 0.002 and cost["eval_co2_kg"] == 0.001
    assert cost["train_country"] == "SWE" and cost["energy"]["country"] == "SWE"
    assert 0 < cost["latency_p50_ms"] <= cost["latency_p95_ms"]
    assert cost["peak_rss_mb"] >= cost["train_peak_rss_mb"] > 0
