"""The BiLSTM learner learns, stops early and keeps its best epoch; its vocabulary and word vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import keyword_pairs
from sizewise.data.labels import NLI3
from sizewise.data.pairs import PairData
from sizewise.errors import ConfigError, DataError
from sizewise.learners import create_learner, load_learner
from sizewise.text.vectors import load_word_vectors
from sizewise.text.vocab import WordVocabulary

SMALL: dict[str, Any] = {
    "kind": "bilstm",
    "embedding_dim": 16,
    "hidden_size": 16,
    "mlp_hidden": 16,
    "batch_size": 16,
    "min_frequency": 1,
    "dropout": 0.0,
    "learning_rate": 0.02,
    "device": "cpu",
}


def _accuracy(learner: Any, data: PairData) -> float:
    return float((learner.predict_proba(data).argmax(1) == data.labels).mean())


def test_learns_a_keyword_task() -> None:
    train = keyword_pairs(210, seed=0)
    learner = create_learner({**SMALL, "epochs": 5}).fit(train)
    assert _accuracy(learner, train) >= 0.9
    # The rule carries over to fresh pairs, so it learned the keyword, not the rows.
    assert _accuracy(learner, keyword_pairs(60, seed=1)) >= 0.9
    assert len(learner.history_) == 5
    assert [h["epoch"] for h in learner.history_] == [1, 2, 3, 4, 5]
    assert learner.history_[-1]["train_loss"] < learner.history_[0]["train_loss"]


def test_best_epoch_is_the_argmax_of_dev_accuracy_and_its_weights_are_kept() -> None:
    train, dev = keyword_pairs(210, seed=0), keyword_pairs(60, seed=1)
    learner = create_learner({**SMALL, "epochs": 4, "patience": 0}).fit(train, dev)
    dev_acc = [h["dev_accuracy"] for h in learner.history_]
    assert len(dev_acc) == 4  # patience 0: no early stop
    assert learner.best_epoch_ == int(np.argmax(dev_acc)) + 1
    assert _accuracy(learner, dev) == pytest.approx(max(dev_acc))


def _constant_dev() -> PairData:
    # Words never seen in training all map to <unk>: the three pairs are identical to the model, so
    # it predicts one class for all of them and dev accuracy is 1/3 at every epoch.
    rows = [("zzz qqq", "qqq zzz", label) for label in NLI3.labels]
    return PairData.from_rows(rows, NLI3, source="constant dev")


def test_early_stopping_and_restore_best() -> None:
    train, dev = keyword_pairs(60, seed=0), _constant_dev()
    spec = {**SMALL, "epochs": 5, "patience": 1}
    stopped = create_learner(spec).fit(train, dev)
    # Epoch 1 sets the best dev accuracy, epoch 2 does not improve on it: stop with patience 1.
    assert len(stopped.history_) == 2
    assert [h["dev_accuracy"] for h in stopped.history_] == pytest.approx([1 / 3, 1 / 3])
    assert stopped.best_epoch_ == 1
    # restore_best (the default) keeps the weights after epoch 1: the same as training one epoch.
    one_epoch = create_learner({**spec, "epochs": 1}).fit(train, dev)
    np.testing.assert_allclose(stopped.predict_proba(train), one_epoch.predict_proba(train), atol=1e-6)
    # Without restore_best the weights of the last epoch stay.
    kept_last = create_learner({**spec, "restore_best": False}).fit(train, dev)
    assert len(kept_last.history_) == 2
    assert not np.allclose(kept_last.predict_proba(train), one_epoch.predict_proba(train), atol=1e-6)


def test_history_never_exceeds_epochs() -> None:
    learner = create_learner({**SMALL, "epochs": 3, "patience": 1}).fit(
        keyword_pairs(60, seed=0), keyword_pairs(30, seed=1)
    )
    assert 1 <= len(learner.history_) <= 3
    assert 1 <= learner.best_epoch_ <= len(learner.history_)


# --- vocabulary ----------------------------------------------------------------------------------


def test_vocabulary_min_frequency() -> None:
    vocab = WordVocabulary.build(["The cat sat", "the cat ran", "the dog"], min_frequency=2)
    # "the" (3) and "cat" (2) are kept, most frequent first; lower-cased; sat / ran / dog seen once.
    assert vocab.words == ["<pad>", "<unk>", "the", "cat"]
    assert [ids.tolist() for ids in vocab.encode(["THE dog cat", ""])] == [[2, 1, 3], [1]]


def test_vocabulary_max_vocab() -> None:
    vocab = WordVocabulary.build(["a a a b b c", "d a"], min_frequency=1, max_size=2)
    assert vocab.words == ["<pad>", "<unk>", "a", "b"]
    assert len(vocab) == 4
    restored = WordVocabulary.from_json(vocab.to_json())
    assert restored.words == vocab.words


def test_vocabulary_settings_reach_the_learner() -> None:
    train = keyword_pairs(60, seed=0)
    learner = create_learner({**SMALL, "epochs": 1, "min_frequency": 1, "max_vocab": 5}).fit(train)
    assert len(learner.vocab_) == 5 + 2  # five words plus <pad> and <unk>
    assert learner.network_.embedding.num_embeddings == 7


# --- word vectors --------------------------------------------------------------------------------

VECTORS = {
    "yes": [0.5, -1.25, 2.0, 0.0],
    "maybe": [1.0, 2.0, 3.0, 4.0],
    "w3": [-0.125, 0.25, -0.375, 0.5],
    "unseen": [9.0, 9.0, 9.0, 9.0],
}


def _write_vectors(path: Path, vectors: dict[str, list[float]], header: bool = True) -> Path:
    lines = [f"{len(vectors)} 4"] if header else []
    lines += [" ".join([word, *map(str, values)]) for word, values in vectors.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_word_vectors_fill_the_embedding_rows(tmp_path: Path) -> None:
    path = _write_vectors(tmp_path / "vectors.txt", VECTORS)
    train = keyword_pairs(60, seed=0)
    spec = {**SMALL, "embedding_dim": 4, "epochs": 1, "vectors": str(path), "freeze_vectors": True}
    learner = create_learner(spec).fit(train)
    words = learner.vocab_.words
    emb = learner.network_.embedding.weight.detach().numpy()
    for word in ("yes", "maybe", "w3"):
        np.testing.assert_array_equal(emb[words.index(word)], np.float32(VECTORS[word]))
    assert "unseen" not in words
    np.testing.assert_array_equal(emb[0], 0.0)  # padding row
    # Frozen vectors are not trainable parameters.
    counts = learner.parameter_count()
    assert counts["total"] - counts["trainable"] == len(words) * 4
    # The saved model carries the vectors inside its embedding; the file is not needed to load it.
    learner.save(tmp_path / "model")
    path.unlink()
    loaded = load_learner(tmp_path / "model")
    np.testing.assert_array_equal(
        loaded.network_.embedding.weight.detach().numpy()[words.index("yes")], np.float32(VECTORS["yes"])
    )


def test_load_word_vectors_rows_and_coverage(tmp_path: Path) -> None:
    path = _write_vectors(tmp_path / "vectors.txt", VECTORS, header=False)
    words = ["<pad>", "<unk>", "maybe", "absent", "yes"]
    matrix, coverage = load_word_vectors(path, words, 4, seed=0)
    assert matrix.shape == (5, 4) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[2], np.float32(VECTORS["maybe"]))
    np.testing.assert_array_equal(matrix[4], np.float32(VECTORS["yes"]))
    np.testing.assert_array_equal(matrix[0], 0.0)
    assert coverage == pytest.approx(2 / 3)  # 2 of the 3 real words


def test_word_vectors_of_the_wrong_dimension(tmp_path: Path) -> None:
    path = tmp_path / "vectors.txt"
    path.write_text("w1 0.1 0.2 0.3 0.4\nyes 0.1 0.2 0.3\n", encoding="utf-8")
    spec = {**SMALL, "embedding_dim": 4, "epochs": 1, "vectors": str(path)}
    with pytest.raises(DataError) as info:
        create_learner(spec).fit(keyword_pairs(30, seed=0))
    message = str(info.value)
    assert f"{path} line 2" in message
    assert "has 3 values, expected 4" in message


def test_missing_word_vector_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="vectors.*does not exist"):
        create_learner({**SMALL, "vectors": str(tmp_path / "nope.txt")})
