"""Bagged and boosted ensembles: member data and seeds, determinism, process workers, SAMME weights,
the size and epoch curves, and the diversity identity on real fitted members."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import sizewise.ensembles.ensemble as ensemble_module
from conftest import TINY_BILSTM, keyword_pairs
from sizewise.data.sampling import bootstrap_indices, weighted_resample_indices
from sizewise.ensembles.aggregate import geometric_mean
from sizewise.ensembles.ensemble import member_seeds
from sizewise.learners import create_learner

BASE = {**TINY_BILSTM, "embedding_dim": 12, "hidden_size": 12, "mlp_hidden": 12, "batch_size": 8}


def _ensemble(**settings: Any) -> Any:
    return create_learner({"kind": "ensemble", "n_learners": 3, "base": BASE, "seed": 7, **settings})


@pytest.fixture(scope="module")
def train() -> Any:
    return keyword_pairs(48, seed=0)


@pytest.fixture(scope="module")
def test_data() -> Any:
    return keyword_pairs(30, seed=1)


def test_member_seeds_are_distinct_and_deterministic() -> None:
    seeds = member_seeds(7, 11)
    assert len(seeds) == 11 == len(set(seeds))
    assert seeds == member_seeds(7, 11)
    assert member_seeds(7, 3) == seeds[:3]  # a bigger ensemble extends a smaller one
    assert member_seeds(8, 11) != seeds
    assert all(0 <= s < 2**31 for s in seeds)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every member task the ensemble hands to its executor, in order."""
    tasks_seen: list[Any] = []
    original = ensemble_module.run_member_tasks

    def spy(tasks: Any, shared: Any, **kwargs: Any) -> Any:
        tasks_seen.extend(tasks)
        return original(tasks, shared, **kwargs)

    monkeypatch.setattr(ensemble_module, "run_member_tasks", spy)
    return tasks_seen


@pytest.fixture
def bagged(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every bagged member task the ensemble draws (for any executor), in order."""
    tasks_seen: list[Any] = []
    original = ensemble_module.EnsembleLearner._bagging_tasks

    def spy(self: Any, n: int) -> Any:
        tasks = original(self, n)
        tasks_seen.extend(tasks)
        return tasks

    monkeypatch.setattr(ensemble_module.EnsembleLearner, "_bagging_tasks", spy)
    return tasks_seen


@pytest.mark.parametrize("executor", ["local", "batched"])
def test_bagging_members_get_their_own_bootstrap_and_seed(bagged: list[Any], train: Any, executor: str) -> None:
    ens = _ensemble(executor=executor).fit(train)
    seen = bagged
    seeds = member_seeds(7, 3)
    assert [m.config.seed for m in ens.learners_] == seeds
    assert [t.spec["seed"] for t in seen] == seeds
    for task, seed in zip(seen, seeds):
        np.testing.assert_array_equal(task.indices, bootstrap_indices(len(train), np.random.default_rng(seed)))
    samples = [tuple(t.indices) for t in seen]
    assert len(set(samples)) == 3, "every member must see a different sample"


def test_bagging_is_deterministic(train: Any, test_data: Any) -> None:
    a = _ensemble().fit(train).predict_proba(test_data)
    b = _ensemble().fit(train).predict_proba(test_data)
    np.testing.assert_array_equal(a, b)
    c = _ensemble(seed=8).fit(train).predict_proba(test_data)
    assert not np.allclose(a, c)


def test_worker_processes_match_in_process_training(train: Any, test_data: Any) -> None:
    local = _ensemble(n_learners=2, executor="local").fit(train)
    pooled = _ensemble(n_learners=2, workers=2).fit(train)
    # Same seeds, samples and thread count (1 per worker, 1 here via conftest): bit-identical on this
    # machine; the tolerance only leaves room for a BLAS that picks kernels per process.
    np.testing.assert_allclose(pooled.predict_proba(test_data), local.predict_proba(test_data), atol=1e-4)
    assert [len(h) for h in pooled.member_histories_] == [2, 2]


def test_boosting_weights_are_samme_alphas(train: Any, test_data: Any) -> None:
    ens = _ensemble(method="boosting", boosting_error="train").fit(train)
    assert ens.config.boosting_error == "train"
    assert ens.weights_.shape == (3,)
    assert np.all(ens.weights_ > 0)
    # Recompute SAMME from the members' own predictions on the full train set.
    n, k = len(train), train.scheme.num_labels
    w = np.full(n, 1.0 / n)
    expected = []
    for member in ens.learners_:
        wrong = member.predict_proba(train).argmax(1) != train.labels
        err = min(max(float(np.dot(w, wrong) / w.sum()), 1e-10), 1 - 1e-10)
        alpha = float(np.log((1 - err) / err) + np.log(k - 1))
        assert alpha > 0, "a tiny BiLSTM should beat chance on the keyword task"
        expected.append(alpha)
        w = w * np.exp(alpha * wrong)
        w /= w.sum()
    np.testing.assert_allclose(ens.weights_, expected, rtol=1e-12)


def test_boosting_out_of_sample_error_is_the_default(seen: list[Any], train: Any) -> None:
    ens = _ensemble(method="boosting").fit(train)
    assert ens.config.boosting_error == "out_of_sample"
    # Each member's alpha comes from its error on the pairs its resample left out; only those
    # pairs' weights move, and the next resample is drawn from the moved weights.
    n, k = len(train), train.scheme.num_labels
    w = np.full(n, 1.0 / n)
    for member, task, alpha in zip(ens.learners_, seen, ens.weights_):
        rng = np.random.default_rng(task.spec["seed"])
        np.testing.assert_array_equal(task.indices, weighted_resample_indices(w, rng))
        held_out = np.setdiff1d(np.arange(n), task.indices)
        assert 0 < len(held_out) < n
        wrong = member.predict_proba(train).argmax(1) != train.labels
        err = float(np.dot(w[held_out], wrong[held_out]) / w[held_out].sum())
        if err >= 1 - 1 / k:  # at chance: kept with a token weight, pair weights start afresh
            assert alpha == 1e-3
            w = np.full(n, 1.0 / n)
            continue
        assert alpha == pytest.approx(np.log((1 - err) / err) + np.log(k - 1), rel=1e-12)
        factor = np.ones(n)
        factor[held_out] = np.where(wrong[held_out], np.exp(alpha), 1.0)
        w = w * factor / np.dot(w, factor)


def test_samme_step_by_hand() -> None:
    w = np.full(4, 0.25)
    wrong = np.array([True, False, False, False])
    # All pairs scored, K = 3: err = 0.25, alpha = log(3) + log(2) = log(6); the wrong pair's weight
    # becomes 0.25 * 6 = 1.5 before renormalizing by 1.5 + 0.75 = 2.25.
    alpha, new = ensemble_module.samme_step(w, wrong, np.ones(4, dtype=bool), 3)
    assert alpha == pytest.approx(np.log(6))
    np.testing.assert_allclose(new, [1.5 / 2.25, 0.25 / 2.25, 0.25 / 2.25, 0.25 / 2.25])
    # Only pairs 0 and 1 scored: err = 0.5, alpha = log(1) + log(2) = log(2); pair 0 doubles.
    alpha, new = ensemble_module.samme_step(w, wrong, np.array([True, True, False, False]), 3)
    assert alpha == pytest.approx(np.log(2))
    np.testing.assert_allclose(new, [0.4, 0.2, 0.2, 0.2])
    # At chance (binary, err = 0.5): no alpha, weights unchanged.
    alpha, new = ensemble_module.samme_step(w, np.array([True, True, False, False]), np.ones(4, dtype=bool), 2)
    assert alpha is None
    np.testing.assert_array_equal(new, w)


def test_boosting_error_must_fit_the_mode() -> None:
    assert _ensemble(method="boosting", boosting_mode="reweight").config.boosting_error == "train"
    with pytest.raises(Exception, match="out_of_sample needs boosting_mode: resample"):
        _ensemble(method="boosting", boosting_mode="reweight", boosting_error="out_of_sample")


def test_boosted_members_combine_by_alpha(train: Any, test_data: Any) -> None:
    ens = _ensemble(method="boosting").fit(train)
    # combine() weights members by alpha.
    mp = ens.member_probas(test_data)
    np.testing.assert_allclose(ens.combine(mp), geometric_mean(mp, ens.weights_), rtol=1e-12)
    ens.weights_ = np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(ens.combine(mp), mp[0] / mp[0].sum(1, keepdims=True), rtol=1e-9)


@pytest.fixture(scope="module")
def curved(train: Any, test_data: Any) -> Any:
    """A bagged ensemble fitted with epoch_curve and the test data as monitor."""
    return _ensemble(epoch_curve=True).fit(train, monitor=test_data)


def test_size_curve(curved: Any, test_data: Any) -> None:
    mp = curved.member_probas(test_data)
    assert mp.shape == (3, len(test_data), 3)
    curve = curved.size_curve(mp, test_data.labels)
    assert len(curve) == 3
    assert curve[-1] == pytest.approx(float((curved.predict_proba(test_data).argmax(1) == test_data.labels).mean()))
    assert curve[0] == pytest.approx(float((mp[0].argmax(1) == test_data.labels).mean()))


def test_epoch_size_curve(curved: Any, test_data: Any) -> None:
    curves = curved.epoch_size_curve(test_data.labels)
    assert sorted(curves) == [1, 2]  # one entry per epoch (BASE trains 2 epochs)
    assert all(len(c) == 3 for c in curves.values())
    # Without a dev set the last epoch's weights are the final ones: the curves agree.
    mp = curved.member_probas(test_data)
    assert curves[2] == pytest.approx(curved.size_curve(mp, test_data.labels))


def test_no_epoch_curve_without_monitor(train: Any, test_data: Any) -> None:
    ens = _ensemble(n_learners=1).fit(train)
    assert ens.epoch_size_curve(test_data.labels) == {}


def test_with_members_rebuilds_the_ensemble_around_new_members(curved: Any, test_data: Any) -> None:
    reversed_members = list(reversed(curved.learners_))
    spec = {**TINY_BILSTM, "hidden_size": 4}
    other = curved.with_members(reversed_members, spec)
    assert other is not curved and other.learners_ == reversed_members and other.config.base == spec
    assert curved.config.base == curved.member_spec != spec  # the original is left as it was
    np.testing.assert_array_equal(other.weights_, curved.weights_)
    np.testing.assert_allclose(other.predict_proba(test_data), curved.predict_proba(test_data), atol=1e-12)
    with pytest.raises(ValueError, match="cannot take 2"):
        curved.with_members(reversed_members[:2], spec)


def test_diversity_identity_on_fitted_members(curved: Any, test_data: Any) -> None:
    mp = curved.member_probas(test_data)
    div = curved.diversity(mp, test_data.labels)
    assert div["ensemble_ce"] == pytest.approx(div["member_ce"] - div["diversity"], abs=1e-9)
    assert div["diversity"] > 0  # bagged members disagree somewhat
    rows = np.arange(len(test_data))
    ce = -np.log(curved.predict_proba(test_data)[rows, test_data.labels]).mean()
    assert div["ensemble_ce"] == pytest.approx(ce, abs=1e-9)
    assert len(div["per_member_ce"]) == 3


@pytest.mark.parametrize("method", ["bagging", "boosting"])
def test_progress_bars_nest_on_a_terminal(monkeypatch: pytest.MonkeyPatch, train: Any, method: str) -> None:
    """On a terminal the members' bar and each member's epoch bar share one live display;
    two live displays at once would raise rich's LiveError."""
    import sizewise.progress as progress

    monkeypatch.setattr(progress, "progress_enabled", lambda: True)
    learner = _ensemble(method=method, n_learners=2).fit(train, train)
    assert len(learner.learners_) == 2
    assert progress._ACTIVE is None  # the shared display is closed again afterwards
