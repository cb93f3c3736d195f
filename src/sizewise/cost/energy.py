"""Energy (kWh) and CO2 (kg) of a block of work, through codecarbon's offline tracker.

codecarbon reads power counters where the machine has them (Intel RAPL, NVIDIA NVML, Apple
powermetrics) and otherwise estimates CPU power from the CPU's load and its rated power (TDP), and
RAM power from the memory size. A reading says which: ``measured`` is true only when every
CPU / GPU figure came from a counter (RAM is always an estimate in codecarbon, and so not counted
against it). CO2 is energy times the grid's carbon intensity: codecarbon's figure for ``country``,
or ``carbon_intensity_g_per_kwh`` when set.

The tracker measures the whole machine (``tracking_mode="machine"``), so that ensemble workers
in child processes are included: on a machine doing other work at the same time the figures
include that work too.

Tests replace the tracker through :func:`set_tracker_factory`; nothing in the test suite depends
on the machine's power counters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

#: CPU power sources in codecarbon that read a hardware counter (the others estimate).
_MEASURED_CPU = ("Intel Rapl", "Intel Power Gadget", "Windows Emi", "Apple", "Powermetrics")


class EnergySettings(BaseModel):
    """How energy and CO2 are obtained (the ``cost:`` block of a study)."""

    model_config = ConfigDict(extra="forbid")

    energy: bool = Field(True, description="Track energy and CO2 with codecarbon (if installed).")
    country: str = Field(
        "USA", min_length=3, max_length=3, description="ISO 3166 alpha-3 code of the grid for the CO2 intensity."
    )
    carbon_intensity_g_per_kwh: float | None = Field(
        None, gt=0, description="Grid carbon intensity in g CO2e per kWh; overrides the country's figure."
    )
    measure_power_secs: float = Field(1.0, gt=0, description="Seconds between power readings.")


@dataclass
class EnergyReading:
    """What one tracked block cost in energy and emissions."""

    energy_kwh: float
    co2_kg: float
    cpu_kwh: float
    gpu_kwh: float
    ram_kwh: float
    measured: bool
    method: str
    country: str
    carbon_intensity_g_per_kwh: float | None

    def as_dict(self, prefix: str) -> dict[str, Any]:
        """Flat fields for a result file: ``{prefix}_energy_kwh``, ``{prefix}_co2_kg``, ... ."""
        return {f"{prefix}_{k}": (round(v, 9) if isinstance(v, float) else v) for k, v in asdict(self).items()}


class EnergyTracker(Protocol):
    """Something that measures the energy of the work between ``start`` and ``stop``."""

    def start(self) -> None: ...

    def stop(self) -> EnergyReading | None: ...


class CodecarbonTracker:
    """codecarbon's ``OfflineEmissionsTracker`` (no network, nothing written to disk)."""

    def __init__(self, settings: EnergySettings) -> None:
        from codecarbon import OfflineEmissionsTracker

        self.settings = settings
        for name in ("codecarbon", "codecarbon.core"):
            logging.getLogger(name).setLevel(logging.ERROR)
        kwargs: dict[str, Any] = {
            "country_iso_code": settings.country.upper(),
            "measure_power_secs": settings.measure_power_secs,
            "output_methods": [],  # nothing written: the reading goes into result.json
            "log_level": "error",
            "tracking_mode": "machine",
            "allow_multiple_runs": True,
        }
        if settings.carbon_intensity_g_per_kwh is not None:
            kwargs["force_carbon_intensity_g_co2e_kwh"] = settings.carbon_intensity_g_per_kwh
        self._tracker = OfflineEmissionsTracker(**kwargs)

    def start(self) -> None:
        self._tracker.start()

    def stop(self) -> EnergyReading | None:
        co2 = self._tracker.stop()
        data = self._tracker.final_emissions_data
        if data is None or co2 is None:
            return None
        hardware = [str(h) for h in self._tracker._conf.get("hardware", [])]
        cpu = [h for h in hardware if h.startswith("CPU")]
        gpu = [h for h in hardware if h.startswith("GPU")]
        measured = bool(cpu or gpu) and all(any(m in h for m in _MEASURED_CPU) for h in cpu)
        energy = float(data.energy_consumed)
        return EnergyReading(
            energy_kwh=energy,
            co2_kg=float(co2),
            cpu_kwh=float(data.cpu_energy),
            gpu_kwh=float(data.gpu_energy),
            ram_kwh=float(data.ram_energy),
            measured=measured,
            method="codecarbon " + ", ".join(hardware) + ("" if measured else " (estimated: no power counters)"),
            country=self.settings.country.upper(),
            carbon_intensity_g_per_kwh=(1000 * float(co2) / energy) if energy > 0 else None,
        )


class NoTracker:
    """Stands in when energy tracking is off or codecarbon is missing: records nothing."""

    def start(self) -> None:
        pass

    def stop(self) -> EnergyReading | None:
        return None


def _default_factory(settings: EnergySettings) -> EnergyTracker:
    if not settings.energy:
        return NoTracker()
    try:
        return CodecarbonTracker(settings)
    except ImportError:
        logger.warning("energy and CO2 not measured: install codecarbon (pip install codecarbon)")
    except Exception as exc:  # codecarbon probes hardware; a probe failing must not stop a study
        logger.warning("energy and CO2 not measured: codecarbon could not start (%s)", exc)
    return NoTracker()


_factory: Callable[[EnergySettings], EnergyTracker] = _default_factory


def set_tracker_factory(factory: Callable[[EnergySettings], EnergyTracker] | None) -> None:
    """Replace how trackers are made (tests pass a fake; None restores codecarbon)."""
    global _factory
    _factory = factory or _default_factory


def make_tracker(settings: EnergySettings) -> EnergyTracker:
    """A tracker for ``settings`` from the current factory."""
    return _factory(settings)


def fmt_energy(kwh: float | None) -> str:
    """kWh for a table: Wh below 1 kWh, else kWh; '–' when not measured."""
    if kwh is None or not math.isfinite(kwh):
        return "–"
    return f"{kwh * 1000:.2f} Wh" if kwh < 1 else f"{kwh:.3f} kWh"
