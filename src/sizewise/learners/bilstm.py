"""A BiLSTM sentence-pair classifier (InferSent-style): one shared encoder, max pooling, an MLP.

The premise u and hypothesis v are encoded by the same bidirectional LSTM, max-pooled over time,
and classified from the features [u, v, |u - v|, u * v] (Conneau et al., 2017).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sizewise.data.labels import LabelScheme
from sizewise.data.pairs import PairData
from sizewise.errors import ModelError
from sizewise.files import atomic_directory, atomic_write_json
from sizewise.learners.base import (
    LEARNER_FILE,
    MODEL_FILES,
    LearnerConfig,
    check_is_fitted,
    check_training_data,
    learner_from_meta,
    read_learner_meta,
    register_learner,
    saved_meta,
    scheme_from_meta,
)
from sizewise.learners.network import NetworkLearner, load_weights
from sizewise.learners.training import gradient_step, length_bucketed_batches, resolve_device, train_epochs
from sizewise.text.vectors import load_word_vectors
from sizewise.text.vocab import WordVocabulary

logger = logging.getLogger(__name__)

_WEIGHTS_FILE = "model.safetensors"
_VOCAB_FILE = "vocab.json"


class BiLSTMConfig(LearnerConfig):
    """Settings of the ``bilstm`` learner."""

    embedding_dim: int = Field(100, ge=1, description="Word embedding size (must match `vectors` if given).")
    hidden_size: int = Field(64, ge=1, description="LSTM hidden units per direction.")
    num_layers: int = Field(1, ge=1, le=8, description="Stacked LSTM layers.")
    mlp_hidden: int = Field(256, ge=1, description="Hidden units of the classifier MLP.")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on embeddings and in the MLP.")
    epochs: int = Field(8, ge=1, description="Maximum training epochs.")
    batch_size: int = Field(64, ge=1, description="Pairs per training batch.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    max_grad_norm: float = Field(5.0, gt=0, description="Gradient-norm clipping threshold.")
    max_length: int = Field(64, ge=1, description="Words kept per sentence (the rest is cut).")
    min_frequency: int = Field(2, ge=1, description="A word enters the vocabulary if seen this often in train.")
    max_vocab: int | None = Field(20_000, ge=1, description="Vocabulary size cap (most frequent words kept).")
    patience: int = Field(
        2,
        ge=0,
        description="Stop after this many epochs without dev improvement; 0 turns early stopping off.",
    )
    restore_best: bool = Field(True, description="End with the weights of the best dev epoch (needs dev data).")
    vectors: str | None = Field(None, description="GloVe-format text file of pretrained word vectors.")
    freeze_vectors: bool = Field(False, description="Keep pretrained word vectors fixed during training.")
    seed: int = Field(0, description="Seed for initialisation, shuffling and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to train; auto picks a GPU if any.")
    eval_batch_size: int = Field(512, ge=1, description="Pairs per batch when predicting.")

    @field_validator("vectors")
    @classmethod
    def _vectors_exist(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(f"word vector file {value!r} does not exist")
        return value


class BiLSTMNet(nn.Module):
    """The network: embedding → shared BiLSTM → max pool → [u, v, |u−v|, u∗v] → MLP."""

    def __init__(self, vocab_size: int, num_labels: int, cfg: BiLSTMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, cfg.embedding_dim, padding_idx=0)
        self.encoder = nn.LSTM(
            cfg.embedding_dim,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Sequential(
            nn.Linear(8 * cfg.hidden_size, cfg.mlp_hidden),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.mlp_hidden, num_labels),
        )

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``ids`` holds the premises of the batch, then its hypotheses: ``[2B, T]``."""
        x = self.dropout(self.embedding(ids))
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, padding_value=float("-inf"))
        pooled = out.max(dim=1).values
        u, v = pooled.chunk(2, dim=0)
        return self.classifier(torch.cat([u, v, (u - v).abs(), u * v], dim=1))


class WordIdPairs:
    """Word ids of a PairData, kept once so epochs do not re-tokenize (the bilstm's encoded pairs)."""

    def __init__(self, vocab: WordVocabulary, data: PairData, max_length: int) -> None:
        self.premises = vocab.encode(data.premises, max_length)
        self.hypotheses = vocab.encode(data.hypotheses, max_length)
        self.labels = data.labels
        self.lengths = np.array([len(p) + len(h) for p, h in zip(self.premises, self.hypotheses)])

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad the premises and hypotheses of ``idx`` to the longest sentence in this batch only."""
        seqs = [self.premises[i] for i in idx] + [self.hypotheses[i] for i in idx]
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        ids = np.zeros((len(seqs), int(lengths.max())), dtype=np.int64)
        for row, s in enumerate(seqs):
            ids[row, : len(s)] = s
        return torch.from_numpy(ids).to(device), torch.from_numpy(lengths)


@register_learner("bilstm", BiLSTMConfig)
class BiLSTMLearner(NetworkLearner):
    """The ``bilstm`` learner. ``fit`` learns ``vocab_``, ``network_``, ``scheme_`` and ``history_``."""

    def __init__(self, **settings: Any) -> None:
        self.config = BiLSTMConfig(**settings)

    # -- training ---------------------------------------------------------------------------
    def fit(
        self,
        train: PairData,
        dev: PairData | None = None,
        *,
        monitor: PairData | None = None,
        sample_weight: np.ndarray | None = None,
        soft_labels: np.ndarray | None = None,
    ) -> BiLSTMLearner:
        """Build the vocabulary from ``train`` and train the network from scratch (Adam), early-stopping on
        ``dev`` accuracy. ``monitor`` is scored after every epoch into ``monitor_probas_`` (for epoch
        curves); ``sample_weight`` weights the loss per pair; ``soft_labels`` (probabilities per pair) replace
        the labels as targets (distillation)."""
        cfg = self.config
        check_training_data(train, "bilstm")
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        device = resolve_device(cfg.device, "bilstm")
        self.scheme_ = train.scheme
        self.vocab_ = WordVocabulary.build(
            train.premises + train.hypotheses, min_frequency=cfg.min_frequency, max_size=cfg.max_vocab
        )
        self.network_ = BiLSTMNet(len(self.vocab_), train.scheme.num_labels, cfg).to(device)
        if cfg.vectors:
            matrix, coverage = load_word_vectors(cfg.vectors, self.vocab_.words, cfg.embedding_dim, seed=cfg.seed)
            self.network_.embedding.weight.data.copy_(torch.from_numpy(matrix))
            self.network_.embedding.weight.requires_grad_(not cfg.freeze_vectors)
            logger.info("word vectors cover %.1f%% of the vocabulary", 100 * coverage)
        params = [p for p in self.network_.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        run = train_epochs(
            self,
            train,
            gradient_step(self.logits, optimizer, params, cfg.max_grad_norm),
            lambda encoded: length_bucketed_batches(encoded.lengths, cfg.batch_size, rng),
            epochs=cfg.epochs,
            device=device,
            dev=dev,
            monitor=monitor,
            sample_weight=sample_weight,
            soft_labels=soft_labels,
            patience=cfg.patience,
            restore_best=cfg.restore_best,
        )
        self.history_, self.monitor_probas_, self.best_epoch_ = run.history, run.monitor_probas, run.best_epoch
        self.network_.to("cpu")
        return self

    # -- the network spine ------------------------------------------------------------------
    def encode(self, data: PairData) -> WordIdPairs:
        """``data`` as word ids of the fitted vocabulary."""
        return WordIdPairs(self.vocab_, data, self.config.max_length)

    def logits(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The network's logits for one batch of :meth:`WordIdPairs.batch`."""
        return self.network_(*inputs)

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path, *, network: bool = True) -> None:
        """Write ``model.safetensors``, ``vocab.json`` and ``learner.json`` (atomically); ``network=False``
        leaves the weights out, for a caller that stores them its own way."""
        check_is_fitted(self)
        with atomic_directory(directory, owner=MODEL_FILES) as tmp:
            if network:
                state = {k: v.detach().cpu().contiguous() for k, v in self.network_.state_dict().items()}
                save_file(state, str(tmp / _WEIGHTS_FILE))
            (tmp / _VOCAB_FILE).write_text(self.vocab_.to_json(), encoding="utf-8")
            meta = saved_meta(self, parameters=self.parameter_count(), history=self.history_)
            atomic_write_json(tmp / LEARNER_FILE, meta)

    @classmethod
    def load(cls, directory: str | Path, *, network: nn.Module | None = None) -> BiLSTMLearner:
        """Read a folder written by :meth:`save` (no pickle: safetensors + JSON only); ``network``
        stands in for the saved weights."""
        directory = Path(directory)
        meta = read_learner_meta(directory)
        needed = [_VOCAB_FILE] if network is not None else [_WEIGHTS_FILE, _VOCAB_FILE]
        for name in needed:
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing")
        cfg = dict(meta.get("config", {}))
        cfg.pop("vectors", None)  # the vectors are already inside the saved embedding
        learner = learner_from_meta(cls, directory, cfg)
        scheme: LabelScheme = scheme_from_meta(meta)
        learner.scheme_ = scheme
        learner.vocab_ = WordVocabulary.read(directory / _VOCAB_FILE)
        if network is None:
            network = load_weights(
                BiLSTMNet(len(learner.vocab_), scheme.num_labels, learner.config), directory / _WEIGHTS_FILE
            )
        learner.network_ = network.eval()
        learner.history_ = meta.get("history", [])
        learner.monitor_probas_ = []
        return learner
