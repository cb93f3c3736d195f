"""Pair data: reading and validating files, named datasets, label schemes, sampling."""

from sizewise.data.catalog import DATASETS, DatasetInfo, data_home, fetch_dataset, load_dataset, load_pairs
from sizewise.data.io import parse_pairs, read_pairs
from sizewise.data.labels import BINARY, NLI3, SCHEMES, LabelScheme, get_scheme
from sizewise.data.pairs import PairData

__all__ = [
    "BINARY",
    "DATASETS",
    "NLI3",
    "SCHEMES",
    "DatasetInfo",
    "LabelScheme",
    "PairData",
    "data_home",
    "fetch_dataset",
    "get_scheme",
    "load_dataset",
    "load_pairs",
    "parse_pairs",
    "read_pairs",
]
