"""The learner contract, run over every registered learner kind, and the aggregator contract.

Every kind is fitted once per label scheme on a dozen hand-written pairs with tiny settings
(``TINY_SETTINGS`` in conftest); a kind registered without an entry there fails here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from conftest import TINY_SETTINGS, assert_round_trip, dozen_pairs
from sizewise.data.labels import SCHEMES
from sizewise.ensembles.aggregate import AGGREGATORS
from sizewise.errors import ConfigError, ModelError
from sizewise.learners import create_learner, learner_kinds, load_learner
from sizewise.learners.base import (
    LEARNERS,
    BaseLearner,
    check_is_fitted,
    compressible_kinds,
    learner_class,
    register_learner,
    spec_with_seed,
)
from sizewise.learners.network import NetworkLearner

KINDS = learner_kinds()
SCHEME_NAMES = ["nli3", "binary"]


def test_every_kind_has_tiny_settings() -> None:
    missing = sorted(set(learner_kinds()) - set(TINY_SETTINGS))
    assert not missing, f"learner kinds without tiny settings in tests/conftest.py: {missing}"
    assert {"bilstm", "ensemble"} <= set(KINDS)


@pytest.fixture(autouse=True, scope="module")
def _tiny_models(tiny_bert: Path) -> None:
    """The tiny local BERT the ``transformer`` tiny settings point at (nothing downloads)."""


def _spec(kind: str) -> dict[str, Any]:
    if kind not in TINY_SETTINGS:
        pytest.fail(f"learner kind {kind!r} has no tiny settings in tests/conftest.py TINY_SETTINGS")
    return {"kind": kind, **TINY_SETTINGS[kind]}


@pytest.fixture(scope="module", params=[(k, s) for k in KINDS for s in SCHEME_NAMES], ids=lambda p: "-".join(p))
def fitted(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A learner of each kind fitted on the dozen under each scheme, fitted once per module."""
    kind, scheme = request.param
    data = dozen_pairs(scheme)
    learner = create_learner(_spec(kind))
    returned = learner.fit(data)
    return {"kind": kind, "scheme": scheme, "data": data, "learner": learner, "returned": returned}


def test_fit_returns_self(fitted: dict[str, Any]) -> None:
    assert fitted["returned"] is fitted["learner"]
    assert fitted["learner"].kind == fitted["kind"]


def test_predict_proba_is_a_distribution_per_row(fitted: dict[str, Any]) -> None:
    data, learner = fitted["data"], fitted["learner"]
    proba = learner.predict_proba(data)
    assert proba.shape == (len(data), SCHEMES[fitted["scheme"]].num_labels)
    assert np.all(np.isfinite(proba))
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)


def test_labels_are_the_scheme_labels(fitted: dict[str, Any]) -> None:
    assert tuple(fitted["learner"].labels_) == SCHEMES[fitted["scheme"]].labels


def test_parameter_count(fitted: dict[str, Any]) -> None:
    counts = fitted["learner"].parameter_count()
    assert set(counts) >= {"total", "trainable"}
    for key in ("total", "trainable"):
        assert isinstance(counts[key], int) and not isinstance(counts[key], bool)
        assert counts[key] > 0
    assert counts["total"] >= counts["trainable"]


def test_save_load_round_trip(fitted: dict[str, Any], tmp_path: Path) -> None:
    assert_round_trip(fitted["learner"], fitted["data"], tmp_path / "model")


def test_every_kind_shares_the_base_learner(fitted: dict[str, Any]) -> None:
    learner = fitted["learner"]
    assert isinstance(learner, BaseLearner)
    check_is_fitted(learner)
    with pytest.raises(ModelError, match="not fitted yet"):
        check_is_fitted(create_learner(_spec(fitted["kind"])))
    proba, sections = learner.predict_with_sections(fitted["data"])
    assert proba.shape[0] == len(fitted["data"]) and isinstance(sections, dict)


def test_torch_learners_share_the_network_spine(fitted: dict[str, Any]) -> None:
    """Compression, self-training and distillation reach a torch learner only through these pieces."""
    learner, data = fitted["learner"], fitted["data"]
    if not isinstance(learner, NetworkLearner):
        pytest.skip(f"{fitted['kind']} learners have no network of their own")
    assert isinstance(learner.network_, nn.Module) and learner.compressible
    proba = learner.predict_proba(data)
    encoded = learner.encode(data)
    assert len(encoded) == len(data) and encoded.lengths.shape == (len(data),)
    np.testing.assert_array_equal(encoded.labels, data.labels)
    learner.network_.eval()
    with torch.no_grad():
        logits = learner.logits(encoded.batch(np.arange(len(data)), learner.device))
    assert logits.shape == (len(data), SCHEMES[fitted["scheme"]].num_labels)
    np.testing.assert_allclose(torch.softmax(logits.float(), dim=1).numpy(), proba, rtol=0, atol=1e-5)
    assert learner.learning_rate > 0 and learner.max_grad_norm > 0
    assert isinstance(learner.batch_size, int) and isinstance(learner.seed, int)


def test_torch_learners_load_with_a_network_given(fitted: dict[str, Any], tmp_path: Path) -> None:
    """``save(network=False)`` + ``load(network=...)``: how a network stored another way (compressed) comes back."""
    learner, data = fitted["learner"], fitted["data"]
    if not isinstance(learner, NetworkLearner):
        pytest.skip(f"{fitted['kind']} learners have no network of their own")
    learner.save(tmp_path / "model", network=False)
    assert not list((tmp_path / "model").glob("*.safetensors"))
    loaded = type(learner).load(tmp_path / "model", network=copy.deepcopy(learner.network_))
    np.testing.assert_allclose(loaded.predict_proba(data), learner.predict_proba(data), rtol=0, atol=1e-6)


def test_the_torch_kinds_are_network_learners() -> None:
    network_kinds = [k for k in KINDS if issubclass(learner_class(k), NetworkLearner)]
    assert network_kinds == ["bilstm", "transformer"]
    assert compressible_kinds() == ["bilstm", "compressed", "ensemble", "transformer"]


def test_spec_with_seed_sets_a_seed_where_the_kind_has_one() -> None:
    assert spec_with_seed({"kind": "bilstm"}, 7, override=False) == {"kind": "bilstm", "seed": 7}
    assert spec_with_seed({"kind": "bilstm", "seed": 1}, 7, override=False)["seed"] == 1
    assert spec_with_seed({"kind": "bilstm", "seed": 1}, 7, override=True)["seed"] == 7
    # A compressed learner's seed is optional (None: the base's own); an ensemble derives its members'.
    assert spec_with_seed({"kind": "compressed"}, 7, override=False)["seed"] == 7


def test_registering_a_kind_twice_fails_loudly() -> None:
    with pytest.raises(ValueError, match="'bilstm' is already registered"):
        register_learner("bilstm", LEARNERS["bilstm"].config_cls)(type("Other", (), {}))


def test_load_with_missing_weights_is_a_model_error(fitted: dict[str, Any], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    fitted["learner"].save(folder)
    weights = sorted(folder.rglob("*.safetensors"))
    weights[0].unlink()
    with pytest.raises(ModelError, match=weights[0].name):
        load_learner(folder)


def test_load_of_a_folder_that_is_no_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a saved sizewise model"):
        load_learner(tmp_path)


def test_predict_under_another_scheme_is_a_config_error(fitted: dict[str, Any]) -> None:
    other = "binary" if fitted["scheme"] == "nli3" else "nli3"
    with pytest.raises(ConfigError, match=f"read as '{other}'.*predicts '{fitted['scheme']}'"):
        fitted["learner"].predict_proba(dozen_pairs(other))


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_setting_is_a_config_error(kind: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_learner({**_spec(kind), "no_such_setting": 3})
    assert "no_such_setting" in str(info.value)
    assert "unknown setting" in str(info.value)


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'no_such_kind' is not a learner kind"):
        create_learner({"kind": "no_such_kind"})


# --- aggregators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_aggregator_contract(name: str) -> None:
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.ones(3), size=(4, 6))  # 4 members, 6 rows, 3 classes
    out = AGGREGATORS[name](probas)
    assert out.shape == (6, 3)
    assert out.dtype == np.float64
    assert np.all(np.isfinite(out)) and np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    # Weights are accepted and keep the rows distributions.
    weighted = AGGREGATORS[name](probas, weights=[3.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(weighted.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("name", ["geometric_mean", "mean"])
def test_single_member_is_returned_normalised(name: str) -> None:
    # Rows that do not sum to 1 come back divided by their sum.
    member = np.array([[0.2, 0.6, 0.2], [0.1, 0.1, 0.3], [0.5, 0.25, 0.25]])
    out = AGGREGATORS[name]([member])
    np.testing.assert_allclose(out, member / member.sum(axis=1, keepdims=True), rtol=1e-12)


def test_single_member_vote_is_its_argmax() -> None:
    member = np.array([[0.2, 0.6, 0.2], [0.1, 0.1, 0.8], [0.5, 0.25, 0.25]])
    np.testing.assert_array_equal(AGGREGATORS["vote"]([member]), np.eye(3)[[1, 2, 0]])
