"""Corrupt and hostile model folders: every one is a one-line ModelError (exit code 2 through the
command line), read offline from inside the folder, with no code of the folder run."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import TINY_TRANSFORMER, dozen_pairs, run_cli
from sizewise.errors import ModelError
from sizewise.learners import create_learner, load_learner
from test_bad_input import GOOD, HEADER, _assert_one_clean_error


def _edit_json(name: str, change: Callable[[Any], None]) -> Callable[[Path], None]:
    def mutate(folder: Path) -> None:
        path = folder / name
        data = json.loads(path.read_text(encoding="utf-8"))
        change(data)
        path.write_text(json.dumps(data), encoding="utf-8")

    return mutate


def _set(key: str, value: Any, name: str = "learner.json") -> Callable[[Path], None]:
    return _edit_json(name, lambda meta: meta.__setitem__(key, value))


def _set_config(key: str, value: Any) -> Callable[[Path], None]:
    return _edit_json("learner.json", lambda meta: meta["config"].__setitem__(key, value))


def _truncate(name: str, keep: int) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])


# case: (which model, mutation, a fragment the message must hold besides the folder)
CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "garbage_weights": ("bilstm", lambda f: (f / "model.safetensors").write_bytes(b"garbage" * 10), "safetensors"),
    "truncated_weights": ("bilstm", _truncate("model.safetensors", 600), "safetensors"),
    "empty_weights": ("bilstm", _truncate("model.safetensors", 0), "safetensors"),
    "hidden_size_edited": ("bilstm", _set_config("hidden_size", 16), "do not fit the saved settings"),
    "setting_of_wrong_type": ("bilstm", _set_config("hidden_size", "wide"), "config.hidden_size"),
    "unknown_setting": ("bilstm", _set_config("colour", "blue"), "config.colour: unknown setting"),
    "config_not_a_mapping": ("bilstm", _set("config", [1, 2]), "config: expected a mapping"),
    "corrupt_vocab": ("bilstm", lambda f: (f / "vocab.json").write_text("{not json"), "vocab.json"),
    "binary_vocab": ("bilstm", lambda f: (f / "vocab.json").write_bytes(b"\xff\xfe\x00\x01"), "vocab.json"),
    "kind_ensemble": ("bilstm", _set("kind", "ensemble"), "unknown setting"),
    "kind_transformer": ("bilstm", _set("kind", "transformer"), "unknown setting"),
    "kind_not_a_string": ("bilstm", _set("kind", 3), "kind: expected a string"),
    "scheme_not_a_string": ("bilstm", _set("scheme", ["nli3"]), "scheme"),
    "member_up_and_out": ("ensemble", _set("members", ["../../elsewhere", "member_001"]), "members[0]"),
    "member_absolute": ("ensemble", _set("members", ["/tmp", "member_001"]), "members[0]"),
    "member_is_itself": ("ensemble", _set("members", [".", "member_001"]), "members[0]"),
    "member_not_a_string": ("ensemble", _set("members", [0, 1]), "members[0]"),
    "weights_not_numbers": ("ensemble", _set("weights", ["a", "b"]), "weights"),
    "ensemble_setting_of_wrong_type": ("ensemble", _set_config("n_learners", "many"), "config.n_learners"),
    "member_of_another_scheme": (
        "ensemble",
        _edit_json("member_000/learner.json", lambda m: m.__setitem__("scheme", "binary")),
        "member_000",
    ),
}


def _copy(saved: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_a_corrupt_model_folder_is_one_model_error(
    case: str, saved_bilstm: Path, saved_ensemble: Path, tmp_path: Path
) -> None:
    which, mutate, fragment = CASES[case]
    folder = _copy(saved_bilstm if which == "bilstm" else saved_ensemble, tmp_path)
    mutate(folder)
    before = _snapshot(folder)
    with pytest.raises(ModelError) as info:
        load_learner(folder).predict_proba(dozen_pairs())
    message = str(info.value)
    assert "\n" not in message
    assert str(folder) in message and fragment in message, message
    assert _snapshot(folder) == before  # nothing written into the folder


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_one_model_error(saved_bilstm: Path, tmp_path: Path) -> None:
    folder = _copy(saved_bilstm, tmp_path)
    for name in ("vocab.json", "model.safetensors", "learner.json"):
        (folder / name).chmod(0)
        try:
            with pytest.raises(ModelError, match=f"{name}.*(cannot read|Permission denied)"):
                load_learner(folder)
        finally:
            (folder / name).chmod(0o644)


def test_predict_and_evaluate_on_corrupt_models_are_one_line_and_exit_2(
    saved_bilstm: Path, saved_ensemble: Path, tmp_path: Path
) -> None:
    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(HEADER + GOOD)
    garbled = _copy(saved_bilstm, tmp_path)
    (garbled / "model.safetensors").write_bytes(b"\x00" * 64)
    proc = run_cli("predict", str(garbled), str(pairs))
    _assert_one_clean_error(proc, [str(garbled / "model.safetensors"), "not a readable safetensors file"])
    assert proc.stdout == ""
    escaping = tmp_path / "ensemble"
    shutil.copytree(saved_ensemble, escaping)
    _set("members", [str(saved_bilstm), "member_001"])(escaping)
    proc = run_cli("evaluate", str(escaping), str(pairs))
    _assert_one_clean_error(proc, [str(escaping / "learner.json"), "members[0]"])


# --- transformers: offline, inside the folder, no remote code --------------------------------------
@pytest.fixture(scope="module")
def saved_adapter(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("adapter") / "lora"
    create_learner({**TINY_TRANSFORMER, "model": str(tiny_bert), "epochs": 1}).fit(dozen_pairs()).save(folder)
    return folder


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every attempt to reach the network fails at once, and is recorded."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args[:2])
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_an_adapter_naming_a_hub_base_model_is_refused_offline(
    saved_adapter: Path, tmp_path: Path, no_network: list[Any]
) -> None:
    folder = _copy(saved_adapter, tmp_path)
    _set_config("model", "someone/some-model")(folder)
    with pytest.raises(ModelError, match="'someone/some-model' is neither a folder nor in the local Hugging Face"):
        load_learner(folder)
    assert no_network == []


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_the_base_model_path_recorded_at_training_is_not_read(
    saved_adapter: Path, tiny_bert: Path, tmp_path: Path, no_network: list[Any]
) -> None:
    folder = _copy(saved_adapter, tmp_path)
    _set_config("model", str(tmp_path / "gone"))(folder)
    _set("base_model_path", str(tiny_bert))(folder)  # a folder elsewhere that would load
    with pytest.raises(ModelError, match="base model .* is not available"):
        load_learner(folder)
    assert no_network == []


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("adapter_config.json", "auto_mapping", {"base_model_class": "Evil", "parent_library": "evil"}),
        ("tokenizer_config.json", "auto_map", {"AutoTokenizer": ["evil.EvilTokenizer", None]}),
        ("tokenizer_config.json", "trust_remote_code", True),
    ],
)
def test_a_model_asking_to_run_its_own_code_is_refused(
    name: str, key: str, value: Any, saved_adapter: Path, tmp_path: Path
) -> None:
    folder = _copy(saved_adapter, tmp_path)
    _set(key, value, name)(folder)
    (folder / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n", encoding="utf-8")
    with pytest.raises(ModelError, match=f"{name}: {key}: the model asks to run code of its own"):
        load_learner(folder)
    assert not (tmp_path / "ran").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_a_full_model_with_auto_map_is_refused(tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / "full"
    spec = {**TINY_TRANSFORMER, "model": str(tiny_bert), "mode": "full", "epochs": 1}
    create_learner(spec).fit(dozen_pairs()).save(folder)
    _set("auto_map", {"AutoModelForSequenceClassification": "modeling.Evil"}, "config.json")(folder)
    with pytest.raises(ModelError, match="config.json: auto_map"):
        load_learner(folder)


def test_a_file_that_cannot_be_read_is_one_model_error_even_as_root(
    saved_bilstm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy(saved_bilstm, tmp_path)
    read_text = Path.read_text

    def refuse(self: Path, *args: Any, **kwargs: Any) -> str:
        if self.name == "vocab.json":
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ModelError, match="vocab.json: cannot read \\(Permission denied\\)"):
        load_learner(folder)


def test_a_compressed_model_naming_modules_it_lacks_is_one_model_error(tmp_path: Path) -> None:
    from conftest import TINY_SETTINGS

    folder = tmp_path / "compressed"
    create_learner({"kind": "compressed", **TINY_SETTINGS["compressed"]}).fit(dozen_pairs()).save(folder)
    _set("quantized_modules", ["encoder", "no.such.module"])(folder)
    with pytest.raises(ModelError, match="quantized_modules: .* do not match the saved weights"):
        load_learner(folder)


def test_a_link_out_of_the_model_folder_is_refused(saved_bilstm: Path, saved_ensemble: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    for which, name in ((saved_bilstm, "vocab.json"), (saved_ensemble, "member_001/vocab.json")):
        folder = _copy(which, tmp_path / which.name)
        outside.write_bytes((folder / name).read_bytes())  # the same content: only where it lies is wrong
        (folder / name).unlink()
        (folder / name).symlink_to(outside)
        with pytest.raises(ModelError, match="outside the model folder") as info:
            load_learner(folder)
        assert "\n" not in str(info.value) and name.split("/")[-1] in str(info.value)
    # A link that stays inside the folder, and a model folder reached through a link, load.
    folder = _copy(saved_bilstm, tmp_path / "inside")
    (folder / "vocab.copy.json").write_bytes((folder / "vocab.json").read_bytes())
    (folder / "vocab.json").unlink()
    (folder / "vocab.json").symlink_to("vocab.copy.json")
    (tmp_path / "via-link").symlink_to(folder)
    load_learner(tmp_path / "via-link").predict_proba(dozen_pairs())
