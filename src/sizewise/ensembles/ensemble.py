"""The ``ensemble`` learner: bagged or boosted members combined by an aggregator.

* **bagging** — member i trains on a bootstrap sample (or a random fraction) of the training
  set, drawn with a seed derived from the ensemble's seed; members are independent, so they
  train in parallel (``workers``, or a Ray cluster).
* **boosting** — SAMME (Zhu et al., 2009): each next member trains on data resampled (or
  reweighted) toward the pairs the previous members got wrong, and gets the weight
  ``alpha = log((1 - err) / err) + log(K - 1)`` in the combination; members train in sequence.
  A BiLSTM trained for several epochs nearly memorizes its sample, so its error on the pairs it
  trained on says little: by default (``boosting_error: out_of_sample``, resample mode) ``err`` is
  the weighted error on the pairs the member's resample left out, only those pairs' weights are
  raised when wrong, and pairs it trained on keep theirs. ``boosting_error: train`` is textbook
  SAMME (error and update on the whole training set).

Members are combined by ``aggregator`` (default: the normalized geometric mean), weighted by
``alpha`` for boosting.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from sizewise.data.pairs import PairData
from sizewise.data.sampling import bootstrap_indices, fraction_indices, weighted_resample_indices
from sizewise.ensembles.aggregate import AGGREGATORS, diversity_decomposition, get_aggregator
from sizewise.ensembles.executors import (
    MemberGroup,
    MemberResult,
    MemberTask,
    SharedData,
    materialize,
    run_member_groups,
    run_member_tasks,
)
from sizewise.errors import ModelError
from sizewise.files import atomic_directory, atomic_write_json
from sizewise.learners.base import (
    LEARNER_FILE,
    MODEL_FILES,
    CompositeLearner,
    LearnerConfig,
    check_is_fitted,
    check_scheme,
    check_training_data,
    learner_from_meta,
    learner_spec_problems,
    load_learner,
    member_folder,
    read_learner_meta,
    register_learner,
    saved_meta,
    scheme_from_meta,
    spec_with_seed,
)

logger = logging.getLogger(__name__)


class EnsembleConfig(LearnerConfig):
    """Settings of the ``ensemble`` learner."""

    method: Literal["bagging", "boosting"] = Field("bagging", description="How members get their data.")
    n_learners: int = Field(11, ge=1, le=1000, description="Number of members.")
    base: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "bilstm"}, description="Learner spec of every member ({kind, ...})."
    )
    aggregator: str = Field("geometric_mean", description="How member probabilities combine: " + ", ".join(AGGREGATORS))
    sample: Literal["bootstrap", "fraction"] = Field(
        "bootstrap", description="Bagging: bootstrap sample (with replacement) or a random fraction without."
    )
    fraction: float = Field(0.8, gt=0.0, le=1.0, description="Bagging with sample=fraction: share of rows per member.")
    boosting_mode: Literal["resample", "reweight"] = Field(
        "resample", description="Boosting: resample the train set by weight, or weight each pair's loss."
    )
    boosting_error: Literal["out_of_sample", "train"] | None = Field(
        None,
        description="Boosting: where a member's error (its alpha) is measured: out_of_sample or train "
        "(textbook SAMME). out_of_sample: on the pairs its resample left out; train: on the whole train set. "
        "Default: out_of_sample for resample, train for reweight.",
    )
    seed: int = Field(0, description="Seed from which every member's data sample and own seed are derived.")
    workers: int = Field(1, ge=1, description="Local processes training bagged members in parallel (executor local).")
    executor: Literal["auto", "batched", "local", "ray"] = Field(
        "auto",
        description="Where members train: batched = all bagged bilstm members in one stacked network in this "
        "process (with workers > 1: split over that many processes, one stacked network each); local = one by "
        "one, or on `workers` processes; ray = on a Ray cluster. auto = batched for bagged bilstm members when "
        "workers is 1, else local.",
    )
    batch_order: Literal["independent", "aligned"] = Field(
        "independent",
        description="Executor batched: each member's batches in its own random order (as when trained alone), or "
        "aligned: the same batches, ordered so every member runs a batch of the same length rank at each step "
        "(less padding, faster; the members' orders are then tied by length).",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="Executor batched: bf16 runs the forward pass under bfloat16 autocast (weights stay fp32)."
    )
    ray_address: str | None = Field(None, description="Ray cluster address (None: start or join a local one).")
    epoch_curve: bool = Field(
        False, description="Record every member's predictions after each epoch (for the epoch × size curve)."
    )

    @field_validator("aggregator")
    @classmethod
    def _known_aggregator(cls, value: str) -> str:
        if value not in AGGREGATORS:
            raise ValueError(f"unknown aggregator {value!r}; choose one of {', '.join(AGGREGATORS)}")
        return value

    @model_validator(mode="after")
    def _boosting_error_fits_mode(self) -> EnsembleConfig:
        if self.boosting_error is None:
            self.boosting_error = "out_of_sample" if self.boosting_mode == "resample" else "train"
        elif self.boosting_error == "out_of_sample" and self.boosting_mode == "reweight":
            raise ValueError(
                "boosting_error: out_of_sample needs boosting_mode: resample (reweighting trains on every pair)"
            )
        return self

    @model_validator(mode="after")
    def _batched_fits(self) -> EnsembleConfig:
        if self.executor == "batched":
            kind = self.base.get("kind") if isinstance(self.base, dict) else None
            if kind != "bilstm":
                raise ValueError(f"executor: batched trains bilstm members in one network; base kind is {kind!r}")
            if self.method != "bagging":
                raise ValueError("executor: batched trains bagged members together; boosting trains one per round")
        return self

    @model_validator(mode="after")
    def _valid_base(self) -> EnsembleConfig:
        if isinstance(self.base, dict) and self.base.get("kind") == "ensemble":
            raise ValueError("base: an ensemble cannot be the member of an ensemble")
        problems = learner_spec_problems(self.base, "base")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def member_seeds(seed: int, n: int) -> list[int]:
    """Independent 31-bit seeds for n members, derived from the ensemble seed (numpy SeedSequence)."""
    return [int(s.generate_state(1)[0] & 0x7FFFFFFF) for s in np.random.SeedSequence(seed).spawn(n)]


def samme_step(
    weights: np.ndarray, wrong: np.ndarray, scored: np.ndarray, num_labels: int
) -> tuple[float | None, np.ndarray]:
    """One SAMME round: the member's ``alpha`` and the next pair weights.

    ``err`` is the weighted error over the ``scored`` pairs; ``alpha = log((1-err)/err) + log(K-1)``;
    scored pairs the member got wrong have their weight multiplied by ``exp(alpha)``, all others keep
    theirs; weights are renormalized. Returns ``(None, weights)`` when the member is no better than
    chance (``alpha <= 0``) or nothing was scored.
    """
    ws = weights[scored]
    if ws.sum() <= 0:
        return None, weights
    err = float(np.dot(ws, wrong[scored]) / ws.sum())
    err = min(max(err, 1e-10), 1 - 1e-10)
    alpha = float(np.log((1 - err) / err) + np.log(num_labels - 1))
    if alpha <= 0:
        return None, weights
    new = weights * np.exp(alpha * (wrong & scored))
    return alpha, new / new.sum()


@register_learner("ensemble", EnsembleConfig)
class EnsembleLearner(CompositeLearner):
    """The ``ensemble`` learner. ``fit`` learns ``learners_``, ``weights_`` and ``scheme_``."""

    def __init__(self, **settings: Any) -> None:
        self.config = EnsembleConfig(**settings)

    # -- training ---------------------------------------------------------------------------
    @property
    def executor(self) -> str:
        """Where ``fit`` trains the members: ``batched``, ``local`` or ``ray`` (``auto`` resolved)."""
        cfg = self.config
        if cfg.executor != "auto":
            return cfg.executor
        batched = cfg.method == "bagging" and cfg.base.get("kind") == "bilstm" and cfg.workers == 1
        return "batched" if batched else "local"

    def fit(self, train: PairData, dev: PairData | None = None, *, monitor: PairData | None = None) -> EnsembleLearner:
        """Train all members. ``monitor`` (with ``epoch_curve``) is scored after each member epoch."""
        check_training_data(train, "ensemble")
        self.scheme_ = train.scheme
        monitor = monitor if self.config.epoch_curve else None
        self.executor_ = self.executor
        if self.executor_ == "batched":
            return self._fit_batched(train, dev, monitor)
        shared = SharedData(train, dev, monitor)
        if self.config.method == "bagging":
            results = self._fit_bagging(shared)
            weights = np.ones(len(results))
        else:
            results, weights = self._fit_boosting(shared)
        if self.executor_ == "local" and self.config.workers > 1 and self.config.method == "bagging":
            self.executor_ = f"local ({self.config.workers} processes)"
        self.learners_ = [self._load_member(r) for r in results]
        self.weights_ = np.asarray(weights, dtype=np.float64)
        self.member_histories_ = [r.history for r in results]
        self.member_seconds_ = [r.seconds for r in results]
        self.monitor_probas_ = [r.monitor_probas for r in results]
        return self

    def _bagging_tasks(self, n: int) -> list[MemberTask]:
        """Each bagged member's spec (its own seed) and rows, drawn from its seed: the same for every executor."""
        cfg = self.config
        tasks = []
        for i, seed in enumerate(member_seeds(cfg.seed, cfg.n_learners)):
            rng = np.random.default_rng(seed)
            idx = bootstrap_indices(n, rng) if cfg.sample == "bootstrap" else fraction_indices(n, cfg.fraction, rng)
            tasks.append(MemberTask(index=i, spec=spec_with_seed(cfg.base, seed, override=True), indices=idx))
        return tasks

    def _fit_bagging(self, shared: SharedData) -> list[MemberResult]:
        cfg = self.config
        tasks = self._bagging_tasks(len(shared.train))
        return run_member_tasks(tasks, shared, workers=cfg.workers, executor=cfg.executor, ray_address=cfg.ray_address)

    def _fit_batched(self, train: PairData, dev: PairData | None, monitor: PairData | None) -> EnsembleLearner:
        from sizewise.ensembles.batched import train_stacked

        cfg = self.config
        tasks = self._bagging_tasks(len(train))
        settings = {"precision": cfg.precision, "batch_order": cfg.batch_order}
        workers = min(cfg.workers, len(tasks))
        if workers > 1:
            # The members split over worker processes, each group in one stacked network.
            groups = [
                MemberGroup(g, [tasks[i] for i in part], {**settings, "seed": cfg.seed * 1_000 + g})
                for g, part in enumerate(np.array_split(np.arange(len(tasks)), workers))
            ]
            results = run_member_groups(groups, SharedData(train, dev, monitor), workers=workers)
            self.learners_ = [self._load_member(r) for r in results]
            self.member_histories_ = [r.history for r in results]
            self.member_seconds_ = [r.seconds for r in results]
            self.monitor_probas_ = [r.monitor_probas for r in results]
            self.executor_ = f"batched ({workers} processes)"
        else:
            run = train_stacked(
                [t.spec for t in tasks],
                train,
                [t.indices for t in tasks],  # type: ignore[misc]
                dev,
                monitor=monitor,
                seed=cfg.seed,
                **settings,
            )
            self.learners_ = run.members
            self.member_histories_ = [m.history_ for m in run.members]
            # The members trained together: each is given an equal share of the run's time.
            self.member_seconds_ = [run.seconds / len(run.members)] * len(run.members)
            self.monitor_probas_ = [m.monitor_probas_ for m in run.members]
        self.weights_ = np.ones(len(self.learners_))
        return self

    def _fit_boosting(self, shared: SharedData) -> tuple[list[MemberResult], list[float]]:
        cfg, train = self.config, shared.train
        n, k = len(train), train.scheme.num_labels
        w = np.full(n, 1.0 / n)
        results, alphas = [], []
        for i, seed in enumerate(member_seeds(cfg.seed, cfg.n_learners)):
            rng = np.random.default_rng(seed)
            spec = spec_with_seed(cfg.base, seed, override=True)
            if cfg.boosting_mode == "resample":
                task = MemberTask(i, spec, indices=weighted_resample_indices(w, rng))
            else:
                task = MemberTask(i, spec, sample_weight=w * n)
            executor = "ray" if cfg.executor == "ray" else "local"
            (res,) = run_member_tasks([task], shared, workers=1, executor=executor, ray_address=cfg.ray_address)
            wrong = self._load_member(res).predict_proba(train).argmax(1) != train.labels
            scored = np.ones(n, dtype=bool)
            if cfg.boosting_error == "out_of_sample":
                scored[task.indices] = False
            alpha, w = samme_step(w, wrong, scored, k)
            if alpha is None:
                # No better than chance on the weighted data (err >= 1 - 1/K): SAMME cannot use
                # it. Keep it with a tiny weight and start the weights afresh.
                logger.warning("boosting member %d: weighted error is at chance; weights reset", i + 1)
                alpha, w = 1e-3, np.full(n, 1.0 / n)
            logger.info("boosting member %d/%d · alpha %.3f", i + 1, cfg.n_learners, alpha)
            results.append(res)
            alphas.append(alpha)
        return results, alphas

    @staticmethod
    def _load_member(result: MemberResult) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            return load_learner(materialize(result, Path(tmp) / "member"))

    # -- members -----------------------------------------------------------------------------
    @property
    def member_spec(self) -> dict[str, Any]:
        """The learner spec of every member (each gets its own seed)."""
        return dict(self.config.base)

    def with_members(self, members: list[Any], member_spec: dict[str, Any]) -> EnsembleLearner:
        """A copy of this ensemble whose members are ``members``, built from ``member_spec`` (a
        transformation applied member by member, such as compression); weights stay as they were."""
        check_is_fitted(self)
        if len(members) != len(self.learners_):
            raise ValueError(f"an ensemble of {len(self.learners_)} members cannot take {len(members)}")
        out = copy.copy(self)
        out.learners_ = list(members)
        out.config = self.config.model_copy(update={"base": member_spec})
        return out

    # -- prediction -------------------------------------------------------------------------
    def member_probas(self, data: PairData) -> np.ndarray:
        """Every member's probabilities on ``data``: ``[n_members, len(data), num_labels]``; BiLSTM members
        of the same sizes predict together, in one stacked network."""
        from sizewise.ensembles.batched import predict_members, stack_members, stackable

        check_is_fitted(self)
        if len(self.learners_) > 1 and stackable(self.learners_):
            check_scheme(self.scheme_, data)
            # The stacked copy of the members' weights is built once, and again only when a member's
            # weights changed (compression prunes them in place): a latency measurement predicts one
            # pair at a time.
            key = tuple((id(m.network_), *(p._version for p in m.network_.parameters())) for m in self.learners_)
            cached = getattr(self, "_stacked", None)
            if cached is None or cached[0] != key:
                self._stacked = (key, stack_members(self.learners_))
            return predict_members(self.learners_, data, self._stacked[1])
        return np.stack([m.predict_proba(data) for m in self.learners_])

    def combine(self, member_probas: np.ndarray, k: int | None = None) -> np.ndarray:
        """Aggregate the first ``k`` members' probabilities (all when None) with their weights."""
        k = len(member_probas) if k is None else k
        return get_aggregator(self.config.aggregator)(member_probas[:k], self.weights_[:k])

    def predict_proba(self, data: PairData) -> np.ndarray:
        """The aggregated class probabilities of all members."""
        return self.combine(self.member_probas(data))

    def predict_passes(
        self, data: PairData, passes: int, *, seed: int = 0, embeddings: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``passes`` stochastic predictions of the whole ensemble: in pass t every member predicts with
        dropout on, and the members are combined as usual; with ``embeddings``, each pair's embedding in
        pass t is its members' embeddings side by side."""
        check_is_fitted(self)
        per_member = []
        for i, member in enumerate(self.learners_):
            if not hasattr(member, "predict_passes"):
                raise ModelError(f"ensemble member {i} ({member.kind}) cannot make stochastic passes")
            per_member.append(member.predict_passes(data, passes, seed=seed * 1_000 + i, embeddings=embeddings))
        probas = np.stack([self.combine(np.stack([p[t] for p, _ in per_member])) for t in range(passes)])
        feats = np.concatenate([f for _, f in per_member], axis=2) if embeddings else None  # type: ignore[misc]
        return probas, feats

    def size_curve(self, member_probas: np.ndarray, labels: np.ndarray) -> list[float]:
        """Accuracy of the ensemble of the first k members, for k = 1..n, without retraining."""
        return [
            float((self.combine(member_probas, k).argmax(1) == labels).mean()) for k in range(1, len(member_probas) + 1)
        ]

    def epoch_size_curve(self, labels: np.ndarray) -> dict[int, list[float]]:
        """``{epoch: size curve}`` from the monitor predictions recorded with ``epoch_curve``.

        A member that stopped early contributes its last recorded epoch to the later ones.
        """
        check_is_fitted(self)
        if not self.monitor_probas_ or not all(self.monitor_probas_):
            return {}
        epochs = max(len(p) for p in self.monitor_probas_)
        out = {}
        for e in range(epochs):
            stacked = np.stack([p[min(e, len(p) - 1)] for p in self.monitor_probas_])
            out[e + 1] = self.size_curve(stacked, labels)
        return out

    def diversity(self, member_probas: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Ensemble cross-entropy = mean member cross-entropy − diversity (exact for geometric_mean)."""
        return diversity_decomposition(member_probas, labels, self.weights_)

    def predict_with_sections(self, data: PairData) -> tuple[np.ndarray, dict[str, Any]]:
        """The aggregated probabilities on labelled ``data``, and the result sections of an ensemble:
        ``curves`` (accuracy against the number of members; per epoch too when recorded with
        ``epoch_curve``), ``diversity`` and ``members`` (weights, accuracies; training time and epochs
        when this ensemble was fitted rather than loaded)."""
        member_probas = self.member_probas(data)
        proba = self.combine(member_probas)
        labels = data.labels
        curves: dict[str, Any] = {
            "size": {"k": list(range(1, len(member_probas) + 1)), "accuracy": self.size_curve(member_probas, labels)}
        }
        epoch_curve = self.epoch_size_curve(labels)
        if epoch_curve:
            curves["epoch_size"] = {str(e): accs for e, accs in epoch_curve.items()}
        div = self.diversity(member_probas, labels)
        members: dict[str, Any] = {
            "weights": self.weights_.tolist(),
            "accuracy": [float((p.argmax(1) == labels).mean()) for p in member_probas],
        }
        if hasattr(self, "member_seconds_"):  # set by fit; a loaded (e.g. compressed) ensemble has none
            members["train_seconds"] = [round(s, 2) for s in self.member_seconds_]
            members["epochs"] = [len(h) for h in self.member_histories_]
            members["executor"] = self.executor_
        sections = {
            "curves": curves,
            "diversity": {
                key: (np.round(v, 6).tolist() if isinstance(v, list) else round(float(v), 6)) for key, v in div.items()
            },
            "members": members,
        }
        return proba, sections

    def parameter_count(self) -> dict[str, int]:
        """Parameters summed over all members (``nonzero`` too when every member is compressed)."""
        check_is_fitted(self)
        counts = [m.parameter_count() for m in self.learners_]
        keys = [k for k in ("total", "trainable", "nonzero") if all(k in c for c in counts)]
        return {key: sum(c[key] for c in counts) for key in keys}

    # -- persistence ------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Write ``learner.json`` and one sub-folder per member (atomically, as a whole)."""
        check_is_fitted(self)
        with atomic_directory(directory, owner=MODEL_FILES) as tmp:
            names = []
            for i, member in enumerate(self.learners_):
                name = f"member_{i:03d}"
                member.save(tmp / name)
                names.append(name)
            meta = saved_meta(self, members=names, weights=self.weights_.tolist(), parameters=self.parameter_count())
            atomic_write_json(tmp / LEARNER_FILE, meta)

    @classmethod
    def load(cls, directory: str | Path) -> EnsembleLearner:
        """Read a folder written by :meth:`save`."""
        directory = Path(directory)
        meta = read_learner_meta(directory)
        learner = learner_from_meta(cls, directory, dict(meta.get("config", {})))
        learner.scheme_ = scheme_from_meta(meta)
        names = meta.get("members") or []
        weights = meta.get("weights") or []
        path = directory / LEARNER_FILE
        if not isinstance(names, list) or not isinstance(weights, list) or not names or len(names) != len(weights):
            raise ModelError(f"{path}: 'members' and 'weights' must be equally long and non-empty lists")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in weights):
            raise ModelError(f"{path}: weights: every weight must be a finite number")
        folders = [member_folder(directory, name, f"members[{i}]") for i, name in enumerate(names)]
        learner.learners_ = [load_learner(folder) for folder in folders]
        for folder, member in zip(folders, learner.learners_):
            if member.scheme_.name != learner.scheme_.name:
                raise ModelError(
                    f"{folder}: the member predicts {member.scheme_.name!r}, the ensemble {learner.scheme_.name!r}"
                )
        learner.weights_ = np.asarray(weights, dtype=np.float64)
        learner.monitor_probas_ = []
        learner.member_histories_ = [getattr(m, "history_", []) for m in learner.learners_]
        return learner
