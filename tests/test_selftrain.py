"""Self-training arms end to end on tiny data: each method, the pool kept apart from gold, rounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import TINY_BILSTM, TINY_TRANSFORMER, keyword_pairs, run_cli
from sizewise.config import parse_study
from sizewise.errors import ConfigError
from sizewise.learners.base import create_learner, load_learner
from sizewise.report.render import load_arm, write_report
from sizewise.result import ArmResult
from sizewise.selftrain import PseudoLabelSettings, soften, student_data, teacher_passes
from sizewise.selftrain.editing import PseudoLabels
from sizewise.study import load_study_data, run_study, unit_data, unit_pool
from sizewise.units import TrainSize, Unit
from test_report import _write_tsv

METHODS = ("plain", "confidence", "vote", "simple")
#: A BiLSTM that learns the keyword task from 60 pairs (about 0.95 accuracy), so pseudo-labels mean something.
TEACHER: dict[str, Any] = {**TINY_BILSTM, "epochs": 8, "learning_rate": 0.01, "patience": 0, "hidden_size": 16}


def _raw(folder: Path, **extra: Any) -> dict[str, Any]:
    train = _write_tsv(folder / "train.tsv", keyword_pairs(150, seed=0))
    dev = _write_tsv(folder / "dev.tsv", keyword_pairs(30, seed=2))
    test = _write_tsv(folder / "test.tsv", keyword_pairs(60, seed=1))
    arms: list[dict[str, Any]] = [{"name": "lstm", "description": "BiLSTM", "learner": TEACHER}]
    arms += [
        {"name": f"st-{m}", "selftrain": {"teacher": "lstm", "method": m, "passes": 3, "k": 4, "threshold": 0.5}}
        for m in METHODS
    ]
    return {
        "name": "selftrain",
        "output": str(folder / "run"),
        "seeds": [0, 1],
        "data": {
            "train": str(train),
            "dev": str(dev),
            "test": str(test),
            "train_sizes": [60],
            "unlabelled": str(train),
            "unlabelled_size": 60,
        },
        "arms": arms,
        **extra,
    }


@pytest.fixture(scope="module")
def selftrain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("selftrain")
    config = parse_study(_raw(folder))
    run = run_study(config)
    write_report(run)
    return config, run


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_a_student_on_gold_and_pseudo_labels(selftrain_run: tuple[Any, Path], method: str) -> None:
    _, run = selftrain_run
    for seed in (0, 1):
        result = ArmResult.read(run / f"st-{method}" / f"n60-seed-{seed}" / "result.json")
        st = result.selftraining
        assert st is not None and st.method == method and st.teacher == "lstm" and st.student == "bilstm"
        assert st.pool_rows == 60 and st.removed_overlap == 60  # the unit's 60 labelled pairs are not in the pool
        (rd,) = st.rounds
        assert rd.pool == 60 and rd.gold == 60 and 0 < rd.kept <= 60
        assert result.data.train.rows == 60 and result.unit is not None and result.unit.labelled_pairs == 60
        assert rd.pseudo_accuracy is not None and rd.pseudo_accuracy > 0.45  # above chance (1/3)
        if method == "confidence":
            assert rd.kept_fraction <= 1.0 and rd.decided_by_vote is None
        else:
            assert rd.kept == 60
        if method in ("vote", "simple"):
            assert rd.decided_by_vote is not None
        assert st.teacher_train_seconds is not None and st.teacher_train_seconds > 0


def test_the_pool_is_disjoint_from_every_split_and_hides_its_labels(selftrain_run: tuple[Any, Path]) -> None:
    config, _ = selftrain_run
    data = load_study_data(config)
    unit = Unit(1, TrainSize(pairs=60))
    mine = unit_data(config, data, unit)
    pool = unit_pool(config, mine, unit)
    used = {pair for split in (mine.train, mine.dev, mine.test) for pair in zip(split.premises, split.hypotheses)}
    assert not used & set(zip(pool.pairs.premises, pool.pairs.hypotheses))
    assert (pool.pairs.labels == -1).all() and not pool.pairs.has_labels
    assert (pool.gold >= 0).all() and len(pool.gold) == 60
    # a new draw per seed, the same draw for the same seed
    other = unit_pool(config, unit_data(config, data, Unit(0, TrainSize(pairs=60))), Unit(0, TrainSize(pairs=60)))
    assert other.pairs.premises != pool.pairs.premises
    again = unit_pool(config, mine, unit)
    assert again.pairs.premises == pool.pairs.premises


def test_gold_labels_of_the_pool_never_reach_the_student(tmp_path: Path) -> None:
    # Pseudo-labels that disagree with gold on every pair: the student's data must carry them, not gold.
    train = keyword_pairs(12, seed=0)
    pool = keyword_pairs(9, seed=5)
    gold = pool.labels.copy()
    hidden = pool.subset(np.arange(len(pool)))
    hidden.labels = np.full(len(pool), -1)
    wrong = (gold + 1) % 3
    data = student_data(train, hidden, PseudoLabels(wrong, np.ones(9, dtype=bool)), weight=0.5)
    joined, weights = data.train, data.sample_weight
    assert joined.labels[:12].tolist() == train.labels.tolist()
    assert joined.labels[12:].tolist() == wrong.tolist() and not (joined.labels[12:] == gold).any()
    assert weights is not None and weights.tolist() == [1.0] * 12 + [0.5] * 9
    assert data.soft_labels is None and set(data.fit_kwargs()) == {"sample_weight"}


def test_soft_targets_are_one_hot_for_gold_and_the_teacher_for_kept_pairs() -> None:
    train = keyword_pairs(3, seed=0)
    pool = keyword_pairs(4, seed=5)
    proba = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.3, 0.4]])
    kept = np.array([True, False, True, True])
    data = student_data(train, pool, PseudoLabels(proba.argmax(1), kept), soft=soften(proba, 2.0))
    assert data.soft_labels is not None and data.soft_labels.shape == (6, 3)
    assert data.soft_labels[:3].tolist() == np.eye(3)[train.labels].tolist()
    # T = 2: p^(1/2) renormalised; [0.5, 0.25, 0.25] -> [0.7071, 0.5, 0.5] / 1.7071
    assert data.soft_labels[3] == pytest.approx([0.414214, 0.292893, 0.292893], abs=1e-6)
    assert soften(proba, 1.0) == pytest.approx(proba)
    assert data.train.labels[3:].tolist() == [0, 2, 2]


def test_soft_label_loss_by_hand() -> None:
    import torch

    from sizewise.learners.training import cross_entropy

    logits = torch.tensor([[1.0, 0.0, 0.0]])
    # softmax = [e, 1, 1] / (e + 2) = [0.576117, 0.211942, 0.211942]
    # loss = -(0.5 ln 0.576117 + 0.25 ln 0.211942 + 0.25 ln 0.211942) = 0.275722 + 0.775722
    loss = cross_entropy(logits, torch.tensor([[0.5, 0.25, 0.25]]))
    assert float(loss) == pytest.approx(1.051445, abs=1e-5)
    # one-hot soft targets give the hard-label loss
    hard = cross_entropy(logits, torch.tensor([0]))
    assert float(cross_entropy(logits, torch.tensor([[1.0, 0.0, 0.0]]))) == pytest.approx(float(hard))
    # weighted: sum(w * loss) / sum(w)
    two = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    per_pair = [1.051445, 1.551445]
    weighted = cross_entropy(two, targets, torch.tensor([1.0, 3.0]))
    assert float(weighted) == pytest.approx((per_pair[0] + 3 * per_pair[1]) / 4, abs=1e-5)


def test_a_student_fits_soft_labels() -> None:
    train = keyword_pairs(30, seed=0)
    soft = np.full((30, 3), 1 / 3)
    soft[np.arange(30), train.labels] = 0.9
    soft /= soft.sum(1, keepdims=True)
    learner = create_learner({**TINY_BILSTM, "epochs": 1}).fit(train, soft_labels=soft)
    assert learner.history_[0]["train_loss"] > 0.3  # soft targets keep the loss above the entropy floor
    with pytest.raises(ValueError, match="soft_labels must be"):
        create_learner(TINY_BILSTM).fit(train, soft_labels=soft[:5])


def test_the_teacher_sees_no_gold_label(tmp_path: Path) -> None:
    teacher = create_learner(TINY_BILSTM).fit(keyword_pairs(60, seed=0))
    pool = keyword_pairs(20, seed=4)
    pool.labels = np.full(len(pool), -1)
    seen: list[Any] = []
    original = teacher.predict_passes

    def spy(data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(data.labels.copy())
        return original(data, *args, **kwargs)

    teacher.predict_passes = spy  # type: ignore[method-assign]
    passes = teacher_passes(teacher, pool, PseudoLabelSettings(method="simple", passes=3, k=3), seed=0)
    assert seen and (seen[0] == -1).all()
    assert passes.stochastic is not None and passes.stochastic.shape == (3, 20, 3)
    assert passes.embeddings is not None and passes.embeddings.shape[:2] == (3, 20)


def test_stochastic_passes_differ_and_are_seeded() -> None:
    teacher = create_learner({**TINY_BILSTM, "dropout": 0.5}).fit(keyword_pairs(60, seed=0))
    data = keyword_pairs(30, seed=4)
    before = teacher.network_.training
    a, ea = teacher.predict_passes(data, 3, seed=0, embeddings=True)
    b, _ = teacher.predict_passes(data, 3, seed=0)
    c, _ = teacher.predict_passes(data, 3, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.allclose(a[0], a[1])  # dropout is on
    assert ea is not None and ea.shape[0] == 3 and np.isfinite(ea).all()
    # the deterministic prediction has dropout off, and the network is left in the mode it was in
    assert np.array_equal(teacher.predict_proba(data), teacher.predict_proba(data))
    assert teacher.network_.training == before


def test_an_ensemble_teacher_votes_with_its_members_and_passes_as_a_whole() -> None:
    spec = {"kind": "ensemble", "n_learners": 2, "base": TINY_BILSTM}
    teacher = create_learner(spec).fit(keyword_pairs(60, seed=0))
    pool = keyword_pairs(15, seed=4)
    voted = teacher_passes(teacher, pool, PseudoLabelSettings(method="vote"), seed=0)
    assert voted.stochastic is not None and voted.stochastic.shape == (2, 15, 3)  # one pass per member
    edited = teacher_passes(teacher, pool, PseudoLabelSettings(method="simple", passes=3), seed=0)
    assert edited.stochastic is not None and edited.stochastic.shape == (3, 15, 3)
    assert edited.embeddings is not None and edited.embeddings.shape[:2] == (3, 15)


def test_rounds_and_a_smaller_student(tmp_path: Path, tiny_bert: Path) -> None:
    raw = _raw(tmp_path)
    raw["seeds"] = [0]
    raw["arms"] = [
        {"name": "bert", "learner": {**TINY_TRANSFORMER, "epochs": 1}},
        {
            "name": "distil",
            "selftrain": {"teacher": "bert", "method": "vote", "passes": 3, "student": TINY_BILSTM, "rounds": 2},
        },
        {
            "name": "soft",
            "selftrain": {"teacher": "bert", "method": "plain", "student": TINY_BILSTM, "soft": True, "temperature": 2},
        },
    ]
    run = run_study(parse_study(raw))
    result = ArmResult.read(run / "distil" / "n60-seed-0" / "result.json")
    st = result.selftraining
    assert st is not None and st.student == "bilstm" and [r.round for r in st.rounds] == [1, 2]
    assert st.rounds[0].teacher == "arm bert" and st.rounds[1].teacher == "the round-1 student"
    assert result.config.block["student"]["kind"] == "bilstm"
    soft = ArmResult.read(run / "soft" / "n60-seed-0" / "result.json")
    assert soft.config.block["soft"] is True and soft.config.block["temperature"] == 2
    assert soft.selftraining is not None and soft.selftraining.rounds[0].kept == 60


def test_report_and_combined_seeds_show_the_rounds(selftrain_run: tuple[Any, Path]) -> None:
    _, run = selftrain_run
    combined = load_arm(run / "st-simple")
    assert combined.selftraining is not None and combined.seeds is not None
    per_seed = [ArmResult.read(run / "st-simple" / f"n60-seed-{s}" / "result.json") for s in (0, 1)]
    accs = [r.selftraining.rounds[0].pseudo_accuracy for r in per_seed]  # type: ignore[union-attr]
    assert combined.selftraining.rounds[0].pseudo_accuracy == pytest.approx(np.mean(accs))
    html = (run / "report.html").read_text()
    assert "Self-training" in html and "pseudo-label acc" in html


def test_bad_self_training_settings(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["data"].pop("unlabelled")
    raw["data"].pop("unlabelled_size")
    with pytest.raises(ConfigError, match="needs unlabelled pairs"):
        parse_study(raw)
    raw = _raw(tmp_path)
    raw["arms"][1]["selftrain"]["teacher"] = "nobody"
    with pytest.raises(ConfigError, match="not the name of an earlier arm"):
        parse_study(raw)
    raw = _raw(tmp_path)
    raw["arms"][1]["selftrain"]["method"] = "magic"
    with pytest.raises(ConfigError, match="method"):
        parse_study(raw)
    raw = _raw(tmp_path)
    raw["arms"][1]["selftrain"]["student"] = {"kind": "ensemble", "n_learners": 2, "base": TINY_BILSTM}
    raw["arms"][1]["selftrain"]["soft"] = True
    config = parse_study(raw)
    (tmp_path / "run").mkdir(exist_ok=True)
    with pytest.raises(ConfigError, match="cannot train on soft labels"):
        config.arms[1].type_._student_spec(config.arms[1].spec, tmp_path, 0)  # type: ignore[attr-defined]
    raw = _raw(tmp_path)
    raw["arms"][1]["shots_per_class"] = [4]
    with pytest.raises(ConfigError, match="has no training; give both the same seeds and sizes"):
        parse_study(raw)


def test_a_pool_that_is_all_training_data_is_refused(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["data"].pop("train_sizes")
    raw["data"].pop("unlabelled_size")
    raw["arms"] = raw["arms"][:2]
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(raw), encoding="utf-8")
    proc = run_cli("study", "run", str(study))
    assert proc.returncode != 0
    assert "also trains, tunes or tests unit" in proc.stderr


def test_readme_lists_every_self_training_setting() -> None:
    from sizewise.arms.selftrain import SelfTrainArmConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Self-training", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(" `") for line in section.splitlines() if line.startswith("| `")}
    assert rows == set(SelfTrainArmConfig.model_fields)


def test_a_student_can_start_from_its_teacher(tmp_path: Path) -> None:
    raw = _raw(tmp_path)
    raw["seeds"] = [0]
    raw["arms"] = [
        raw["arms"][0],
        {"name": "warm", "selftrain": {"teacher": "lstm", "method": "plain", "init": "teacher", "weight": 0.5}},
    ]
    run = run_study(parse_study(raw))
    warm = ArmResult.read(run / "warm" / "n60-seed-0" / "result.json")
    assert warm.config.block["init"] == "teacher"
    assert len(warm.training.history or []) == TEACHER["epochs"]  # the teacher's epochs, patience 0
    teacher_model = load_learner(run / "lstm" / "n60-seed-0" / "model")
    student_model = load_learner(run / "warm" / "n60-seed-0" / "model")
    assert student_model.vocab_.words == teacher_model.vocab_.words  # the teacher's model, trained further
    raw["arms"][1]["selftrain"]["student"] = TINY_BILSTM
    config = parse_study(raw)
    with pytest.raises(ConfigError, match="name no student"):
        config.arms[1].type_._student_spec(config.arms[1].spec, run / "lstm" / "n60-seed-0" / "model", 0)  # type: ignore[attr-defined]
