"""A BiLSTM sentence-pair classifier (InferSent-style): one shared encoder, max pooling, an MLP.

The premise u and hypothesis v are encoded by the same bidirectional LSTM, max-pooled over time,
and classified from the features [u, v, |u - v|, u * v] (Conneau et al., 2017).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sizewise.data.labels import LabelScheme
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, ModelError
from sizewise.files import atomic_directory, atomic_write_json
from sizewise.learners.base import (
    LEARNER_FILE,
    LearnerConfig,
    check_scheme,
    read_learner_meta,
    register_learner,
    saved_meta,
    scheme_from_meta,
)
from sizewise.progress import progress_bar
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


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("bilstm", ["device: 'cuda' was asked for but no GPU is visible"])
    return torch.device(name)


class _Encoded:
    """Word ids of a PairData, kept once so epochs do not re-tokenize."""

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


def length_bucketed_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, order: str = "random"
) -> list[np.ndarray]:
    """Shuffle, sort by length within pools of 50 batches, cut into batches, then order the batches.

    Pairs of similar length share a batch, so little compute goes to padding, while every epoch
    still sees a different order. ``order="random"`` shuffles the batches of all pools together;
    ``order="longest_first"`` keeps the pools (random subsets) in turn and runs each pool's batches
    from the longest to the shortest, as transformers.Trainer's ``group_by_length`` runs its
    mega-batches (consecutive batches then have similar shapes).
    """
    if order not in ("random", "longest_first"):
        raise ValueError(f"order must be 'random' or 'longest_first', not {order!r}")
    perm = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(perm), pool):
        chunk = perm[start : start + pool]
        key = lengths[chunk] if order == "random" else -lengths[chunk]
        chunk = chunk[np.argsort(key, kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    if order == "random":
        rng.shuffle(batches)
    return batches


@register_learner("bilstm", BiLSTMConfig)
class BiLSTMLearner:
    """The ``bilstm`` learner. ``fit`` learns ``vocab_``, ``net_``, ``scheme_`` and ``history_``."""

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
    ) -> BiLSTMLearner:
        """Train; early-stop on ``dev`` accuracy. ``monitor`` is scored after every epoch into
        ``monitor_probas_`` (for epoch curves); ``sample_weight`` weights the loss per pair."""
        cfg = self.config
        if len(train) == 0 or not train.has_labels:
            raise ConfigError("bilstm", [f"{train.source}: training data needs at least one labelled pair"])
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        device = _resolve_device(cfg.device)
        self.scheme_ = train.scheme
        self.vocab_ = WordVocabulary.build(
            train.premises + train.hypotheses, min_frequency=cfg.min_frequency, max_size=cfg.max_vocab
        )
        self.net_ = BiLSTMNet(len(self.vocab_), train.scheme.num_labels, cfg).to(device)
        if cfg.vectors:
            matrix, coverage = load_word_vectors(cfg.vectors, self.vocab_.words, cfg.embedding_dim, seed=cfg.seed)
            self.net_.embedding.weight.data.copy_(torch.from_numpy(matrix))
            self.net_.embedding.weight.requires_grad_(not cfg.freeze_vectors)
            logger.info("word vectors cover %.1f%% of the vocabulary", 100 * coverage)
        enc_train = _Encoded(self.vocab_, train, cfg.max_length)
        enc_dev = _Encoded(self.vocab_, dev, cfg.max_length) if dev is not None and len(dev) else None
        enc_monitor = _Encoded(self.vocab_, monitor, cfg.max_length) if monitor is not None else None
        weights = None
        if sample_weight is not None:
            weights = torch.as_tensor(np.asarray(sample_weight, dtype=np.float32))
            if len(weights) != len(train):
                raise ValueError("sample_weight must have one weight per training pair")

        params = [p for p in self.net_.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        labels = torch.from_numpy(train.labels)
        self.history_: list[dict[str, float]] = []
        self.monitor_probas_: list[np.ndarray] = []
        best_dev, best_state, since_best, best_epoch = -1.0, None, 0, 0
        with progress_bar() as bar:
            for epoch in range(1, cfg.epochs + 1):
                batches = length_bucketed_batches(enc_train.lengths, cfg.batch_size, rng)
                task = bar.add_task(f"bilstm epoch {epoch}/{cfg.epochs}", total=len(batches), info="")
                self.net_.train()
                start, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
                for step, idx in enumerate(batches, start=1):
                    ids, lengths = enc_train.batch(idx, device)
                    y = labels[idx].to(device)
                    logits = self.net_(ids, lengths)
                    if weights is None:
                        loss = F.cross_entropy(logits, y)
                    else:
                        w = weights[idx].to(device)
                        loss = (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                    optimizer.step()
                    seen += len(idx)
                    loss_sum += loss.item() * len(idx)
                    correct += int((logits.argmax(1) == y).sum())
                    if step % 20 == 0 or step == len(batches):
                        rate = seen / max(time.perf_counter() - start, 1e-9)
                        info = f"loss {loss_sum / seen:.3f} · acc {correct / seen:.3f} · {rate:,.0f} pairs/s"
                        bar.update(task, completed=step, info=info)
                bar.remove_task(task)
                seconds = time.perf_counter() - start
                record = {
                    "epoch": epoch,
                    "train_loss": loss_sum / seen,
                    "train_accuracy": correct / seen,
                    "seconds": seconds,
                    "pairs_per_s": seen / max(seconds, 1e-9),
                }
                if enc_dev is not None:
                    dev_pred = self._predict(enc_dev, device).argmax(1)
                    record["dev_accuracy"] = float((dev_pred == enc_dev.labels).mean())
                if enc_monitor is not None:
                    self.monitor_probas_.append(self._predict(enc_monitor, device))
                self.history_.append(record)
                logger.info(
                    "bilstm epoch %d/%d · loss %.3f · acc %.3f%s · %.0f pairs/s",
                    epoch,
                    cfg.epochs,
                    record["train_loss"],
                    record["train_accuracy"],
                    f" · dev acc {record['dev_accuracy']:.3f}" if "dev_accuracy" in record else "",
                    record["pairs_per_s"],
                )
                if enc_dev is not None:
                    if record["dev_accuracy"] > best_dev:
                        best_dev, since_best, best_epoch = record["dev_accuracy"], 0, epoch
                        if cfg.restore_best:
                            best_state = copy.deepcopy(self.net_.state_dict())
                    else:
                        since_best += 1
                        if cfg.patience and since_best >= cfg.patience and epoch < cfg.epochs:
                            logger.info("early stop after epoch %d (best dev acc %.3f)", epoch, best_dev)
                            break
        if best_state is not None and best_epoch != len(self.history_):
            self.net_.load_state_dict(best_state)
            logger.info("kept the weights of epoch %d (best dev acc %.3f)", best_epoch, best_dev)
        self.best_epoch_ = best_epoch if best_state is not None else len(self.history_)
        self.net_.to("cpu")
        return self

    # -- prediction -------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise ModelError("this bilstm learner is not fitted yet: call fit() or load() first")

    @torch.no_grad()
    def _predict(self, enc: _Encoded, device: torch.device) -> np.ndarray:
        was_training = self.net_.training
        self.net_.eval()
        out = np.zeros((len(enc), self.scheme_.num_labels), dtype=np.float64)
        order = np.argsort(enc.lengths, kind="stable")
        bs = self.config.eval_batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            ids, lengths = enc.batch(idx, device)
            out[idx] = torch.softmax(self.net_(ids, lengths).float(), dim=1).cpu().numpy()
        self.net_.train(was_training)
        return out

    def predict_proba(self, data: PairData) -> np.ndarray:
        """Class probabilities ``[len(data), num_labels]`` in the scheme's label order."""
        self._check_fitted()
        check_scheme(self.scheme_, data)
        device = next(self.net_.parameters()).device
        return self._predict(_Encoded(self.vocab_, data, self.config.max_length), device)

    def parameter_count(self) -> dict[str, int]:
        """Total and trainable parameters of the fitted network."""
        self._check_fitted()
        total = sum(p.numel() for p in self.net_.parameters())
        trainable = sum(p.numel() for p in self.net_.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}

    @property
    def labels_(self) -> tuple[str, ...]:
        """Label names, in the column order of :meth:`predict_proba`."""
        return self.scheme_.labels

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``model.safetensors``, ``vocab.json`` and ``learner.json`` (atomically)."""
        self._check_fitted()
        with atomic_directory(directory) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
            save_file(state, str(tmp / _WEIGHTS_FILE))
            (tmp / _VOCAB_FILE).write_text(self.vocab_.to_json(), encoding="utf-8")
            meta = saved_meta(self, parameters=self.parameter_count(), history=self.history_)
            atomic_write_json(tmp / LEARNER_FILE, meta)

    @classmethod
    def load(cls, directory: str | Path) -> BiLSTMLearner:
        """Read a folder written by :meth:`save` (no pickle: safetensors + JSON only)."""
        directory = Path(directory)
        meta = read_learner_meta(directory)
        for name in (_WEIGHTS_FILE, _VOCAB_FILE):
            if not (directory / name).is_file():
                raise ModelError(f"{directory}: {name} is missing")
        cfg = dict(meta.get("config", {}))
        cfg.pop("vectors", None)  # the vectors are already inside the saved embedding
        learner = cls(**cfg)
        scheme: LabelScheme = scheme_from_meta(meta)
        learner.scheme_ = scheme
        learner.vocab_ = WordVocabulary.from_json((directory / _VOCAB_FILE).read_text(encoding="utf-8"))
        learner.net_ = BiLSTMNet(len(learner.vocab_), scheme.num_labels, learner.config)
        learner.net_.load_state_dict(load_file(str(directory / _WEIGHTS_FILE)))
        learner.net_.eval()
        learner.history_ = meta.get("history", [])
        learner.monitor_probas_ = []
        return learner


def describe_config() -> str:
    """Every bilstm setting with its default and help text (for ``sizewise train --help``)."""
    return json.dumps(
        {n: {"default": f.default, "help": f.description} for n, f in BiLSTMConfig.model_fields.items()},
        indent=1,
    )
