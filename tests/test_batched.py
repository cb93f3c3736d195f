"""The batched ensemble executor: every BiLSTM member in one stacked network. Same weights as members
trained alone (float64, no dropout), no gradient crossing between members, padding that changes
nothing, per-member Adam and clipping, early stopping per member, batched prediction, save and load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import TINY_BILSTM, assert_round_trip, keyword_pairs
from sizewise.data.sampling import bootstrap_indices
from sizewise.ensembles.batched import (
    MemberIds,
    StackedAdam,
    StackedBiLSTM,
    _aligned,
    clip_member_gradients,
    member_flops_per_pair,
    stackable,
    train_stacked,
)
from sizewise.ensembles.ensemble import member_seeds
from sizewise.errors import ConfigError
from sizewise.learners import create_learner
from sizewise.learners.bilstm import BiLSTMConfig, BiLSTMLearner, BiLSTMNet

BASE = {**TINY_BILSTM, "embedding_dim": 10, "hidden_size": 6, "mlp_hidden": 12, "batch_size": 8}


@pytest.fixture
def float64() -> Any:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _members(train: Any, seeds: list[int], **settings: Any) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    specs = [{**BASE, **settings, "seed": s} for s in seeds]
    samples = [bootstrap_indices(len(train), np.random.default_rng(s)) for s in seeds]
    return specs, samples


def _alone(spec: dict[str, Any], train: Any, rows: np.ndarray, dev: Any) -> BiLSTMLearner:
    return BiLSTMLearner(**{k: v for k, v in spec.items() if k != "kind"}).fit(train.subset(rows), dev)


@pytest.mark.parametrize("layers", [1, 2])
def test_members_end_with_the_weights_they_reach_alone(float64: Any, layers: int) -> None:
    # float64, dropout 0: the batched run and each member's own fit take the same steps on the same
    # batches; with dev data each member keeps its own best epoch.
    train, dev = keyword_pairs(60, seed=0), keyword_pairs(24, seed=1)
    specs, samples = _members(train, [3, 11, 29], dropout=0.0, epochs=3, num_layers=layers, patience=0)
    run = train_stacked(specs, train, samples, dev)
    for spec, rows, member in zip(specs, samples, run.members):
        alone = _alone(spec, train, rows, dev)
        assert member.vocab_.words == alone.vocab_.words
        assert [h["dev_accuracy"] for h in member.history_] == [h["dev_accuracy"] for h in alone.history_]
        assert member.best_epoch_ == alone.best_epoch_
        for name, expected in alone.network_.state_dict().items():
            got = member.network_.state_dict()[name]
            assert got.shape == expected.shape
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-9, msg=name)


def test_members_stop_early_on_their_own(float64: Any) -> None:
    # Patience 1: a member whose dev accuracy stalls stops (and is no longer updated) while the others
    # go on; each ends with its own best epoch's weights, as when trained alone.
    train, dev = keyword_pairs(45, seed=2), keyword_pairs(30, seed=3)
    specs, samples = _members(train, member_seeds(5, 4), dropout=0.0, epochs=6, patience=1, learning_rate=3e-2)
    run = train_stacked(specs, train, samples, dev)
    lengths = []
    for spec, rows, member in zip(specs, samples, run.members):
        alone = _alone(spec, train, rows, dev)
        assert len(member.history_) == len(alone.history_)
        lengths.append(len(alone.history_))
        for name, expected in alone.network_.state_dict().items():
            torch.testing.assert_close(member.network_.state_dict()[name], expected, rtol=0, atol=1e-9, msg=name)
    assert len(set(lengths)) > 1, f"the test needs members that stop at different epochs: {lengths}"


def _stack(seeds: list[int], cfg: BiLSTMConfig, vocab: int = 30) -> tuple[StackedBiLSTM, list[BiLSTMNet]]:
    nets = []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(BiLSTMNet(vocab - s % 3, 3, cfg))  # vocabularies of different sizes
    return StackedBiLSTM.from_members(nets, cfg, 3), nets


def _ragged(members: int, batch: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size, width = max(batch), 9
    ids = torch.zeros(members, 2 * size, width, dtype=torch.long)
    lengths = torch.ones(members, 2 * size, dtype=torch.long)
    for m, b in enumerate(batch):
        for row in [*range(b), *range(size, size + b)]:
            n = int(torch.randint(1, width + 1, (1,), generator=g))
            lengths[m, row] = n
            ids[m, row, :n] = torch.randint(2, 27, (n,), generator=g)
    return ids, lengths


@pytest.mark.parametrize("layers", [1, 2])
def test_stacked_forward_is_each_members_forward_on_ragged_batches(float64: Any, layers: int) -> None:
    cfg = BiLSTMConfig(embedding_dim=7, hidden_size=5, mlp_hidden=6, num_layers=layers, dropout=0.0)
    stacked, nets = _stack([0, 1, 2], cfg)
    batch = [4, 2, 3]  # member 1 and 2 have fewer pairs: dummy rows fill their batch
    ids, lengths = _ragged(3, batch)
    logits = stacked.eval()(ids, lengths)
    assert logits.shape == (3, 4, 3)
    size = ids.shape[1] // 2
    for m, (net, b) in enumerate(zip(nets, batch)):
        rows = [*range(b), *range(size, size + b)]
        width = int(lengths[m, rows].max())
        alone = net.eval()(ids[m, rows, :width], lengths[m, rows])
        torch.testing.assert_close(logits[m, :b], alone, rtol=0, atol=1e-12)


def test_padding_changes_nothing(float64: Any) -> None:
    cfg = BiLSTMConfig(embedding_dim=7, hidden_size=5, mlp_hidden=6, num_layers=2, dropout=0.0)
    stacked, _ = _stack([4, 5], cfg)
    ids, lengths = _ragged(2, [3, 3], seed=1)
    before = stacked.eval()(ids, lengths)
    # More padding columns, and garbage word ids on every padded position: the logits stay the same.
    wider = torch.nn.functional.pad(ids, (0, 5))
    noisy = wider.clone()
    padded = torch.arange(wider.shape[2]).view(1, 1, -1) >= lengths.unsqueeze(2)
    noisy[padded] = torch.randint(2, 27, (int(padded.sum()),))
    torch.testing.assert_close(stacked(wider, lengths), before, rtol=0, atol=0)
    torch.testing.assert_close(stacked(noisy, lengths), before, rtol=0, atol=0)


def test_no_gradient_crosses_between_members(float64: Any) -> None:
    cfg = BiLSTMConfig(embedding_dim=7, hidden_size=5, mlp_hidden=6, num_layers=2, dropout=0.0)
    stacked, _ = _stack([0, 1, 2], cfg)
    ids, lengths = _ragged(3, [4, 4, 4], seed=2)
    stacked.train()(ids, lengths)[1].sum().backward()  # member 1's loss only
    for name, p in stacked.weights.items():
        assert p.grad is not None
        assert torch.count_nonzero(p.grad[[0, 2]]) == 0, f"{name}: gradient leaked into another member"
        assert torch.count_nonzero(p.grad[1]) > 0, name
    # And member 0's logits do not depend on what member 1 reads.
    other = ids.clone()
    other[1] = torch.randint(2, 27, other[1].shape)
    torch.testing.assert_close(stacked(other, lengths)[0], stacked(ids, lengths)[0], rtol=0, atol=0)


def test_stacked_adam_is_per_member_adam_and_skips_inactive_members(float64: Any) -> None:
    torch.manual_seed(0)
    stacked = [torch.nn.Parameter(torch.randn(3, 4, 5)), torch.nn.Parameter(torch.randn(3, 6))]
    alone = [[torch.nn.Parameter(p[m].detach().clone()) for p in stacked] for m in range(3)]
    optimizers = [torch.optim.Adam(ps, lr=0.01, weight_decay=0.1) for ps in alone]
    ours = StackedAdam(stacked, 3, lr=0.01, weight_decay=0.1)
    activity = [[True, True, True], [True, False, True], [False, True, True], [True, True, True]]
    for active in activity:
        grads = [torch.randn_like(p) for p in stacked]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        ours.step(torch.tensor(active))
        for m in range(3):
            if active[m]:
                for p, g in zip(alone[m], grads):
                    p.grad = g[m].clone()
                optimizers[m].step()
    for m in range(3):
        for p, q in zip(stacked, alone[m]):
            torch.testing.assert_close(p[m].detach(), q.detach(), rtol=0, atol=1e-12)
    assert ours.steps.tolist() == [3, 3, 4]


def test_clipping_is_per_member(float64: Any) -> None:
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.zeros(2, 3, 3)), torch.nn.Parameter(torch.zeros(2, 4))]
    grads = [torch.randn(2, 3, 3) * torch.tensor([10.0, 0.01]).view(2, 1, 1), torch.randn(2, 4)]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    clip_member_gradients(params, 1.0)
    for m in range(2):
        alone = [torch.nn.Parameter(torch.zeros_like(p[m])) for p in params]
        for p, g in zip(alone, grads):
            p.grad = g[m].clone()
        torch.nn.utils.clip_grad_norm_(alone, 1.0)
        for p, q in zip(params, alone):
            torch.testing.assert_close(p.grad[m], q.grad, rtol=0, atol=1e-12)


def test_aligned_order_keeps_each_members_batches() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 40, size=200)
    orders = [[rng.choice(200, size=8) for _ in range(6)] for _ in range(3)]
    aligned = _aligned(orders, lengths, np.random.default_rng(1))
    for before, after in zip(orders, aligned):
        assert sorted(map(tuple, before)) == sorted(map(tuple, after))  # the same batches
    # At every step, every member runs its batch of the same length rank: a step whose batch is
    # strictly longer than another step's for one member is at least as long for every member.
    longest = np.array([[int(lengths[b].max()) for b in a] for a in aligned])
    for k1 in range(6):
        for k2 in range(6):
            if longest[0, k1] < longest[0, k2]:
                assert np.all(longest[:, k1] <= longest[:, k2]), longest
    assert not np.array_equal(longest[0], np.sort(longest[0])), "the shared order is random, not sorted"


def _ensemble(**settings: Any) -> Any:
    return create_learner({"kind": "ensemble", "n_learners": 3, "base": BASE, "seed": 7, **settings})


def test_auto_picks_batched_for_bagged_bilstms_only(tiny_bert: Path) -> None:
    from conftest import TINY_TRANSFORMER

    assert _ensemble().executor == "batched"
    assert _ensemble(workers=2).executor == "local"
    assert _ensemble(method="boosting").executor == "local"
    assert create_learner({"kind": "ensemble", "base": TINY_TRANSFORMER}).executor == "local"
    with pytest.raises(ConfigError, match="executor: batched trains bilstm members"):
        create_learner({"kind": "ensemble", "base": TINY_TRANSFORMER, "executor": "batched"})
    with pytest.raises(ConfigError, match="boosting trains one per round"):
        _ensemble(method="boosting", executor="batched")


def test_batched_ensemble_predicts_saves_and_loads(tmp_path: Path) -> None:
    train, test = keyword_pairs(60, seed=0), keyword_pairs(30, seed=1)
    ens = _ensemble(epoch_curve=True).fit(train, keyword_pairs(15, seed=2), monitor=test)
    assert stackable(ens.learners_)
    # Batched prediction is each member's own prediction.
    one_by_one = np.stack([m.predict_proba(test) for m in ens.learners_])
    np.testing.assert_allclose(ens.member_probas(test), one_by_one, rtol=0, atol=1e-6)
    # The stacked copy is kept between calls, and made again when a member's weights change in place.
    with torch.no_grad():
        ens.learners_[1].network_.classifier[-1].weight.mul_(-1.0)
    changed = np.stack([m.predict_proba(test) for m in ens.learners_])
    assert not np.allclose(changed, one_by_one)
    np.testing.assert_allclose(ens.member_probas(test), changed, rtol=0, atol=1e-6)
    with torch.no_grad():
        ens.learners_[1].network_.classifier[-1].weight.mul_(-1.0)
    proba, sections = ens.predict_with_sections(test)
    assert sections["members"]["executor"] == "batched"
    assert "epoch_size" in sections["curves"]
    loaded = assert_round_trip(ens, test, tmp_path / "ensemble")
    np.testing.assert_allclose(loaded.predict_proba(test), proba, rtol=0, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "ensemble").iterdir()) == [
        "learner.json", "member_000", "member_001", "member_002"
    ]  # fmt: skip


def test_with_dropout_members_learn_as_well_as_alone() -> None:
    # Dropout masks are drawn differently, so weights differ; the members' accuracy must not.
    train, test = keyword_pairs(90, seed=4), keyword_pairs(60, seed=5)
    settings = {"n_learners": 6, "base": {**BASE, "dropout": 0.3, "epochs": 8, "learning_rate": 2e-2}}
    accs = {}
    for executor in ("batched", "local"):
        ens = _ensemble(executor=executor, **settings).fit(train)
        accs[executor] = ens.member_probas(test).argmax(2).__eq__(test.labels).mean(1)
    assert accs["local"].mean() > 0.6, accs
    assert abs(accs["batched"].mean() - accs["local"].mean()) < 0.1, accs


def test_bf16_forward_trains() -> None:
    train, test = keyword_pairs(90, seed=6), keyword_pairs(60, seed=7)
    ens = _ensemble(precision="bf16", base={**BASE, "epochs": 8, "learning_rate": 2e-2}).fit(train)
    assert all(p.dtype == torch.float32 for m in ens.learners_ for p in m.network_.parameters())
    assert (ens.predict_proba(test).argmax(1) == test.labels).mean() > 0.6


def test_member_ids_share_lengths_across_vocabularies() -> None:
    from sizewise.text.vocab import WordVocabulary

    data = keyword_pairs(12, seed=8)
    vocabs = [WordVocabulary.build(data.premises[:k] + data.hypotheses[:k]) for k in (3, 12)]
    enc = MemberIds(vocabs, data, max_length=5)
    assert enc.premises.shape[:2] == (2, 12)
    for m, vocab in enumerate(vocabs):
        for i, sentence in enumerate(vocab.encode(data.premises, 5)):
            assert enc.premise_lengths[i] == len(sentence)
            np.testing.assert_array_equal(enc.premises[m, i, : len(sentence)], sentence)


def test_flops_per_pair_by_hand() -> None:
    cfg = BiLSTMConfig(embedding_dim=2, hidden_size=1, mlp_hidden=3, num_layers=1)
    # 10 words, 2 directions, 2 FLOPs per multiply-add, 4·1·2 + 4·1·1 = 12 per word and direction;
    # MLP 8·1·3 + 3·3 = 33 multiply-adds.
    assert member_flops_per_pair(cfg, 10, 3) == 10 * 2 * 2 * 12 + 2 * 33


def test_batched_members_split_over_worker_processes() -> None:
    # workers: 2 with executor batched: two processes, each training its share of the members in one
    # stacked network; every member is the same as in a one-process batched run up to dropout (off here).
    train, test = keyword_pairs(48, seed=0), keyword_pairs(30, seed=1)
    base = {**BASE, "dropout": 0.0}
    split = _ensemble(executor="batched", workers=2, base=base).fit(train)
    whole = _ensemble(executor="batched", base=base).fit(train)
    assert split.executor_ == "batched (2 processes)" and whole.executor_ == "batched"
    assert [m.config.seed for m in split.learners_] == member_seeds(7, 3)
    np.testing.assert_allclose(split.member_probas(test), whole.member_probas(test), rtol=0, atol=1e-4)
