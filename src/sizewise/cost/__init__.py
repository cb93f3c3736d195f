"""Cost of an arm: time, memory, parameters, size on disk, inference speed."""

from sizewise.cost.meter import CostMeter, measure_throughput

__all__ = ["CostMeter", "measure_throughput"]
