"""The spine of the learners whose model is one torch network (``bilstm``, ``transformer``).

Compression, self-training and distillation work through these public pieces only: the network
(``network_``), the learner's encoded pairs (:meth:`NetworkLearner.encode`), the logits of one batch
of them (:meth:`NetworkLearner.logits`) and the settings a fine-tuning run reuses (learning rate in
effect, batch size, clipping, seed). A new torch kind subclasses :class:`NetworkLearner`, defines
``encode``, ``logits``, ``fit`` (with :func:`sizewise.learners.training.train_epochs`), ``save`` and
``load``, and is then predicted, compressed and fine-tuned like the built-in ones.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from sizewise.data.pairs import PairData
from sizewise.errors import ModelError
from sizewise.learners.base import BaseLearner, check_is_fitted, check_scheme
from sizewise.progress import progress_bar


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (no pickle); a missing, truncated or garbled file is a ModelError."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from None


def load_weights(network: nn.Module, path: str | Path) -> nn.Module:
    """Load the safetensors file ``path`` into ``network``, every weight and of the same shape: weights
    that do not fit the network the saved settings describe (an edited size) are a ModelError."""
    state = read_weights(path)
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        problem = (
            f"weight {shapes[0]!r} has shape {list(state[shapes[0]].shape)}, the settings make it "
            f"{list(own[shapes[0]].shape)}"
            if shapes
            else f"weight {missing[0]!r} is missing"
            if missing
            else f"weight {unexpected[0]!r} is not part of the network"
        )
        raise ModelError(f"{path}: the weights do not fit the saved settings: {problem}")
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:  # pragma: no cover - shapes and names were checked above
        raise ModelError(f"{path}: the weights do not fit the saved settings ({exc})") from None
    return network


class EncodedPairs(Protocol):
    """Pairs encoded once for a network (word ids, token ids), so epochs do not encode them again."""

    labels: np.ndarray
    lengths: np.ndarray

    def __len__(self) -> int: ...

    def batch(self, idx: np.ndarray, device: torch.device) -> Any:
        """The network inputs of the pairs ``idx``, padded to the longest in this batch only."""
        ...


class NetworkLearner(BaseLearner):
    """A learner whose model is one torch network, ``network_``; its ``config`` has ``seed``,
    ``batch_size``, ``max_grad_norm`` and ``eval_batch_size``."""

    compressible: ClassVar[bool] = True
    network_: nn.Module
    config: Any

    # -- what each kind defines -------------------------------------------------------------
    def encode(self, data: PairData) -> EncodedPairs:  # pragma: no cover - every kind defines it
        """``data`` encoded for the fitted network."""
        raise NotImplementedError

    def logits(self, inputs: Any) -> torch.Tensor:  # pragma: no cover - every kind defines it
        """The network's logits ``[batch, num_labels]`` for one batch as :meth:`EncodedPairs.batch` makes it."""
        raise NotImplementedError

    def save(self, directory: str | Path, *, network: bool = True) -> None:  # pragma: no cover
        """Write the learner into ``directory``; ``network=False`` leaves the network's weights out (for a
        caller that stores a compressed network its own way)."""
        raise NotImplementedError

    @classmethod
    def load(cls, directory: str | Path, *, network: nn.Module | None = None) -> NetworkLearner:  # pragma: no cover
        """Read a saved learner; ``network`` stands in for the weights of ``directory``, which then need
        not hold them."""
        raise NotImplementedError

    # -- hooks a kind may override ----------------------------------------------------------
    def forward_context(self) -> contextlib.AbstractContextManager[bool]:
        """The context the learner trains and predicts in (a transformer: its last layer run for the
        first token only); yields whether it changes the computation."""
        return contextlib.nullcontext(False)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The mixed-precision context of one forward pass on ``device`` (none by default)."""
        return contextlib.nullcontext()

    def head_layers(self) -> list[tuple[nn.Module, str, nn.Linear]]:
        """Every linear layer of the network with one output per label, as (parent, attribute, layer): the
        classification head (under an adapter, both its trained copy and the original)."""
        k = self.scheme_.num_labels
        return [
            (parent, name, child)
            for parent in self.network_.modules()
            for name, child in parent.named_children()
            if isinstance(child, nn.Linear) and child.out_features == k
        ]

    def prepare_to_train(self) -> None:
        """Make the fitted network ready to train further (:func:`~sizewise.learners.training.fine_tune`):
        nothing by default; a transformer takes back an adapter it folded into its weights to predict."""

    def merge_adapter(self) -> dict[str, Any] | None:
        """Fold an adapter into the network's weights, so every weight can be changed by compression;
        returns the record of what was done, or None when there is no adapter (the default)."""
        return None

    # -- the settings fine-tuning reuses ----------------------------------------------------
    @property
    def learning_rate(self) -> float:
        """The learning rate the learner trained with."""
        return float(self.config.learning_rate)

    @property
    def batch_size(self) -> int:
        """Pairs per training batch."""
        return int(self.config.batch_size)

    @property
    def max_grad_norm(self) -> float:
        """The gradient-norm clipping threshold."""
        return float(self.config.max_grad_norm)

    @property
    def seed(self) -> int:
        """The seed of initialisation, shuffling and dropout."""
        return int(self.config.seed)

    @property
    def device(self) -> torch.device:
        """Where the network is now (the CPU for a network without parameters, such as an ONNX session)."""
        first = next(self.network_.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    # -- prediction -------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_encoded(self, encoded: EncodedPairs) -> np.ndarray:
        """Probabilities ``[len(encoded), num_labels]``, batch by batch: only the result is held whole."""
        network, device = self.network_, self.device
        was_training = network.training
        network.eval()
        out = np.zeros((len(encoded), self.scheme_.num_labels), dtype=np.float64)
        order = np.argsort(encoded.lengths, kind="stable")  # similar lengths together: little padding
        size = self.config.eval_batch_size
        with progress_bar() as bar, self.forward_context():
            task = bar.add_task(f"{self.kind} predicting", total=len(order), info="")
            for start in range(0, len(order), size):
                idx = order[start : start + size]
                with self.autocast(device):
                    logits = self.logits(encoded.batch(idx, device))
                out[idx] = torch.softmax(logits.float(), dim=1).cpu().numpy()
                bar.update(task, completed=start + len(idx))
            bar.remove_task(task)
        network.train(was_training)
        return out

    def predict_proba(self, data: PairData) -> np.ndarray:
        """Class probabilities ``[len(data), num_labels]`` in the scheme's label order."""
        check_is_fitted(self)
        check_scheme(self.scheme_, data)
        return self.predict_encoded(self.encode(data))

    @torch.no_grad()
    def predict_passes(
        self, data: PairData, passes: int, *, seed: int = 0, embeddings: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``passes`` stochastic predictions (dropout on, pass t seeded by ``seed`` and t): probabilities
        ``[passes, len(data), num_labels]`` and, with ``embeddings``, what the network's last layer reads
        for each pair ``[passes, len(data), D]`` (its penultimate representation, dropout applied)."""
        check_is_fitted(self)
        check_scheme(self.scheme_, data)
        encoded = self.encode(data)
        network, device = self.network_, self.device
        was_training = network.training
        heads = [layer for _, _, layer in self.head_layers()]
        seen: list[torch.Tensor] = []
        hooks = (
            [h.register_forward_pre_hook(lambda _m, args: seen.append(args[0])) for h in heads] if embeddings else []
        )
        probas = np.zeros((passes, len(encoded), self.scheme_.num_labels), dtype=np.float64)
        feats: np.ndarray | None = None
        order = np.argsort(encoded.lengths, kind="stable")
        size = self.config.eval_batch_size
        try:
            network.train()
            with progress_bar() as bar, self.forward_context():
                task = bar.add_task(f"{self.kind} {passes} stochastic passes", total=passes * len(order), info="")
                for t in range(passes):
                    torch.manual_seed(seed * 1_000_003 + t)
                    for start in range(0, len(order), size):
                        idx = order[start : start + size]
                        seen.clear()
                        with self.autocast(device):
                            logits = self.logits(encoded.batch(idx, device))
                        probas[t, idx] = torch.softmax(logits.float(), dim=1).cpu().numpy()
                        if embeddings:
                            if not seen:
                                raise RuntimeError(f"{self.kind}: no layer with {self.scheme_.num_labels} outputs ran")
                            last = seen[-1].float().reshape(len(idx), -1).cpu().numpy()
                            if feats is None:
                                feats = np.zeros((passes, len(encoded), last.shape[1]), dtype=np.float32)
                            feats[t, idx] = last
                        bar.update(task, completed=t * len(order) + start + len(idx))
                bar.remove_task(task)
        finally:
            for hook in hooks:
                hook.remove()
            network.train(was_training)
        return probas, feats

    def parameter_count(self) -> dict[str, int]:
        """Total and trainable parameters of the fitted network."""
        check_is_fitted(self)
        params = list(self.network_.parameters())
        return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}
