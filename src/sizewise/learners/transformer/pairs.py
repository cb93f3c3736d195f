"""Sentence pairs tokenized for the ``transformer`` learner: ``[CLS] premise [SEP] hypothesis [SEP]``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sizewise.data.pairs import PairData


class TokenizedPairs:
    """Token ids of a PairData, tokenized once (truncated, not padded) so epochs do not re-tokenize (the
    transformer's encoded pairs)."""

    def __init__(self, tokenizer: Any, data: PairData, max_length: int) -> None:
        self.keys = [k for k in tokenizer.model_input_names if k in ("input_ids", "token_type_ids", "attention_mask")]
        self.features: dict[str, list[np.ndarray]] = {k: [] for k in self.keys}
        chunk = 4096  # bounds the tokenizer's python lists on large sets
        for start in range(0, len(data), chunk):
            enc = tokenizer(
                data.premises[start : start + chunk],
                data.hypotheses[start : start + chunk],
                truncation=True,
                max_length=max_length,
            )
            for k in self.keys:
                self.features[k].extend(np.asarray(row, dtype=np.int64) for row in enc[k])
        self.labels = data.labels
        self.lengths = np.fromiter((len(r) for r in self.features["input_ids"]), dtype=np.int64, count=len(data))
        self.pad_values = {
            "input_ids": tokenizer.pad_token_id,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0),
            "attention_mask": 0,
        }
        self.pad_left = tokenizer.padding_side == "left"

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        """Pad the pairs of ``idx`` to the longest pair in this batch only."""
        width = int(self.lengths[idx].max())
        out = {}
        for k in self.keys:
            arr = np.full((len(idx), width), self.pad_values[k], dtype=np.int64)
            for row, i in enumerate(idx):
                seq = self.features[k][i]
                if self.pad_left:
                    arr[row, width - len(seq) :] = seq
                else:
                    arr[row, : len(seq)] = seq
            out[k] = torch.from_numpy(arr).to(device, non_blocking=True)
        return out
