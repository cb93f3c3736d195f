"""Pretrained word vectors from a GloVe-format text file (``word v1 v2 ... vd`` per line)."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np

from sizewise.errors import DataError

logger = logging.getLogger(__name__)


def load_word_vectors(path: str | Path, words: list[str], dim: int, *, seed: int = 0) -> tuple[np.ndarray, float]:
    """An embedding matrix for ``words`` (row i for word i) and the share of words found in the file.

    Words missing from the file keep a small random vector; row 0 (padding) is zero. Only the
    vectors of ``words`` are kept, so a large file costs one pass and little memory.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (word vectors)")
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, 0.1, size=(len(words), dim)).astype(np.float32)
    matrix[0] = 0.0
    wanted = {w: i for i, w in enumerate(words)}
    found = 0
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 0
    with opener(path, "rt", encoding="utf-8", errors="strict") as fh:
        try:
            for line_no, line in enumerate(fh, start=1):
                parts = line.rstrip("\n").rstrip(" ").split(" ")
                if line_no == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                    continue  # word2vec-style header: "<count> <dim>"
                word = parts[0]
                i = wanted.pop(word, None)  # the vocabulary is lower-cased; first entry wins
                if i is None:
                    continue
                if len(parts) - 1 != dim:
                    raise DataError(
                        f"{path} line {line_no}: vector: has {len(parts) - 1} values, expected {dim} "
                        f"(set embedding_dim to the file's dimension)"
                    )
                try:
                    matrix[i] = np.asarray(parts[1:], dtype=np.float32)
                except ValueError:
                    raise DataError(f"{path} line {line_no}: vector: not a number") from None
                found += 1
        except UnicodeDecodeError as exc:
            raise DataError(f"{path} line {line_no + 1}: not valid UTF-8 ({exc.reason})") from None
    coverage = found / max(1, len(words) - 2)
    logger.info("word vectors: %d of %d words found in %s", found, len(words) - 2, path)
    return matrix, coverage
