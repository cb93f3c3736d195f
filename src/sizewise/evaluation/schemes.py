"""Scoring a model under another label scheme than its own: an nli3 model on a binary set.

An nli3 model's probabilities collapse onto the binary scheme as ``[p(entailment), 1 - p(entailment)]``
and the data are read as binary (nli3 labels collapse the same way: neutral and contradiction become
not_entailment). The other way round cannot work: a binary model cannot tell neutral from
contradiction, so it is never scored on three classes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from sizewise.data.catalog import DATASETS, load_pairs
from sizewise.data.labels import BINARY, NLI3, get_scheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, DataError

#: What the title of a table says when an nli3 model's probabilities were collapsed onto binary.
COLLAPSE_NOTE = "scored as binary: p(entailment) against 1 − p(entailment)"

_NO_NLI3_FROM_BINARY = (
    "a binary model cannot tell neutral from contradiction, so it cannot be scored on three classes; "
    "score it on the set read with scheme 'binary' instead"
)


def scoring_scheme(model_scheme: str, data_scheme: str) -> str:
    """The scheme a ``model_scheme`` model's predictions are scored under on a ``data_scheme`` set.

    The same scheme gives that scheme; an nli3 model on a binary set gives ``binary``; a binary
    model on an nli3 set raises :class:`ConfigError` (read the set with scheme ``binary`` instead).
    """
    model, data = get_scheme(model_scheme).name, get_scheme(data_scheme).name
    if model == data:
        return model
    if model == NLI3.name and data == BINARY.name:
        return BINARY.name
    raise ConfigError("scoring", [_NO_NLI3_FROM_BINARY])


def collapse_proba(proba: ArrayLike, model_scheme: str, target_scheme: str) -> np.ndarray:
    """A ``model_scheme`` model's class probabilities (columns in that scheme's label order) under
    ``target_scheme``: unchanged when the schemes are equal; nli3 onto binary as
    ``[p(entailment), 1 - p(entailment)]`` (the binary scheme's column order). Binary onto nli3
    raises :class:`ConfigError`; an array of the wrong shape raises ValueError.
    """
    source, target = get_scheme(model_scheme), get_scheme(target_scheme)
    arr = np.asarray(proba)
    if arr.ndim != 2 or arr.shape[1] != source.num_labels:
        raise ValueError(f"proba must have shape (n, {source.num_labels}) for scheme {source.name!r}, got {arr.shape}")
    if source.name == target.name:
        return arr
    if source.name == NLI3.name and target.name == BINARY.name:
        entailment = arr[:, NLI3.labels.index("entailment")].astype(np.float64)
        out = np.empty((arr.shape[0], BINARY.num_labels), dtype=np.float64)
        out[:, BINARY.labels.index("entailment")] = entailment
        out[:, BINARY.labels.index("not_entailment")] = 1.0 - entailment
        return out
    raise ConfigError("scoring", [_NO_NLI3_FROM_BINARY])


def scoring_note(model_scheme: str, scored_scheme: str) -> str | None:
    """The note for a table title when the probabilities were collapsed, else None."""
    return COLLAPSE_NOTE if get_scheme(model_scheme).name != get_scheme(scored_scheme).name else None


def dataset_scheme(data: str | os.PathLike[str]) -> str | None:
    """The own scheme of ``data`` when it names a dataset (``name`` or ``name:split``), else None."""
    text = os.fspath(data)
    if Path(text).is_file():
        return None
    info = DATASETS.get(text.partition(":")[0].strip().lower())
    return None if info is None else info.scheme


def load_scoring_pairs(data: str | os.PathLike[str], model_scheme: str, scheme: str | None = None) -> PairData:
    """Read labelled pairs (a file, or a dataset ``name:split``) to score a ``model_scheme`` model on.

    The pairs come back read under the scheme they are scored under (``pairs.scheme``):

    - ``scheme`` given: that one, checked with :func:`scoring_scheme` before anything is read (a
      binary model with ``nli3`` raises :class:`ConfigError`);
    - otherwise the model's own scheme, but binary whenever either side is binary: a binary dataset
      such as ``rte`` for an nli3 model, and any set for a binary model (nli3 labels collapse).

    A file that fails to read as nli3 for an nli3 model but reads as binary raises a one-line
    :class:`DataError` saying so, instead of one problem per not_entailment row.
    """
    model = get_scheme(model_scheme).name
    if scheme is not None:
        return load_pairs(data, scheme=scoring_scheme(model, scheme))
    own = dataset_scheme(data)
    target = BINARY.name if BINARY.name in (model, own) else model
    try:
        return load_pairs(data, scheme=target)
    except DataError as exc:
        if own is not None or target != NLI3.name:
            raise
        try:
            binary = load_pairs(data, scheme=BINARY.name)
        except DataError:
            raise exc from None
        raise DataError(
            f"{binary.source}: labels are binary (entailment / not_entailment), not nli3 "
            f"({len(exc.problems):,} problems reading them as nli3); score the nli3 model on them as binary "
            "with scheme binary (--scheme binary)"
        ) from exc


def model_inputs(pairs: PairData, model_scheme: str) -> PairData:
    """``pairs`` as input for a ``model_scheme`` model's ``predict_proba``: the same rows, or, when
    they were read under another scheme, the rows unlabelled under the model's scheme."""
    scheme = get_scheme(model_scheme)
    if pairs.scheme.name == scheme.name:
        return pairs
    return dataclasses.replace(
        pairs, labels=np.full(len(pairs), -1, dtype=np.int64), scheme=scheme, meta=dict(pairs.meta)
    )
