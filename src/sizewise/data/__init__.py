"""Pair data: reading and validating files, named datasets, label schemes, sampling."""

from sizewise.data.labels import BINARY, NLI3, SCHEMES, LabelScheme, get_scheme
from sizewise.data.pairs import PairData

__all__ = ["BINARY", "NLI3", "SCHEMES", "LabelScheme", "PairData", "get_scheme"]
