"""Word-level vocabulary built on the ``tokenizers`` library (lower-cased, punctuation split)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer

from sizewise.errors import ModelError

PAD = "<pad>"
UNK = "<unk>"


class WordVocabulary:
    """Maps text to word ids. Id 0 is padding, id 1 the unknown word.

    Build it with :meth:`build` from training text (``min_frequency``, ``max_size``), save it with
    :meth:`to_json` and restore it with :meth:`from_json`.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    @staticmethod
    def _blank() -> Tokenizer:
        tok = Tokenizer(WordLevel({PAD: 0, UNK: 1}, unk_token=UNK))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return tok

    @classmethod
    def build(cls, texts: Iterable[str], *, min_frequency: int = 1, max_size: int | None = None) -> WordVocabulary:
        """Learn the vocabulary from ``texts``: words seen ``min_frequency`` times or more, by frequency."""
        tok = cls._blank()
        trainer = WordLevelTrainer(
            vocab_size=(max_size + 2) if max_size else 10_000_000,
            min_frequency=min_frequency,
            special_tokens=[PAD, UNK],
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> WordVocabulary:
        """Restore a vocabulary saved with :meth:`to_json`."""
        return cls(Tokenizer.from_str(text))

    @classmethod
    def read(cls, path: str | Path) -> WordVocabulary:
        """The vocabulary saved in the file ``path``; a file that is not one (bad JSON, not a tokenizer,
        word ids that do not run 0..n-1) is a ModelError naming it."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ModelError(f"{path}: not a vocabulary file (not UTF-8: {exc.reason})") from None
        try:
            vocab = cls.from_json(text)
        except Exception as exc:  # the tokenizers library raises a bare Exception for any bad file
            raise ModelError(f"{path}: not a vocabulary file ({exc})") from None
        ids = sorted(vocab.tokenizer.get_vocab().values())
        if ids != list(range(len(vocab))):
            raise ModelError(f"{path}: not a vocabulary file (its word ids do not run from 0 to {len(vocab) - 1})")
        return vocab

    def to_json(self) -> str:
        """The whole tokenizer (normalizer, pre-tokenizer, word ids) as a JSON string."""
        return self.tokenizer.to_str()

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def words(self) -> list[str]:
        """Words in id order."""
        vocab = self.tokenizer.get_vocab()
        out = [""] * len(vocab)
        for word, i in vocab.items():
            out[i] = word
        return out

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> list[np.ndarray]:
        """Word ids of each text (at least one id per text: empty text becomes ``[<unk>]``)."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        out = []
        for enc in encodings:
            ids = enc.ids[:max_length] if max_length else enc.ids
            out.append(np.asarray(ids if ids else [1], dtype=np.int64))
        return out
