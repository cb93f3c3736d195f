"""Every member of a BiLSTM ensemble in one network, trained by one batched forward and backward pass.

A bagged ensemble of small BiLSTMs spends most of its time on overheads that repeat per member:
each member's matrix products are tiny, and M members trained one after the other (or in M
processes) pay them M times. :class:`StackedBiLSTM` holds the parameters of M members stacked on a
leading axis (embedding tables ``[M, V, E]``, LSTM weights ``[M, 4H, ·]`` per direction, classifier
``[M, ·, ·]``) and runs all of them at once: the input projection of every time step of every member
and both directions in one batched product, one batched product per time step for the recurrence,
max pooling, features and MLP by batched products.

The members stay independent, exactly: each has its own bootstrap sample (the same draws as the
other executors), its own vocabulary, batch order, initialisation and dropout masks, its own Adam
state (:class:`StackedAdam`; Adam is element-wise), its own gradient clipping and its own early
stopping (a stopped member's slice is no longer updated; each keeps its best epoch's slice). The
loss is the sum of the members' losses, so no member's gradient is scaled by another's; in float64
with dropout 0 the members end with the weights they reach when trained alone on the same batches.

Padding costs nothing per member: within a member the rows of a batch are sorted by length and a
time step runs only as many rows as the member with the most unfinished rows has (as a packed
sequence does for one network); a row's reverse direction starts at its own end; padded steps are
masked out of the max pooling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sizewise.data.pairs import PairData
from sizewise.learners.bilstm import BiLSTMConfig, BiLSTMLearner, BiLSTMNet
from sizewise.learners.training import at_least_float32, length_bucketed_batches, resolve_device
from sizewise.progress import progress_bar
from sizewise.text.vectors import load_word_vectors
from sizewise.text.vocab import WordVocabulary

logger = logging.getLogger(__name__)

#: The member settings that must agree for members to share one stacked network.
SHAPE_SETTINGS = ("embedding_dim", "hidden_size", "num_layers", "mlp_hidden")


def _key(name: str) -> str:
    return name.replace(".", "__")


class StackedBiLSTM(nn.Module):
    """The parameters of ``members`` :class:`~sizewise.learners.bilstm.BiLSTMNet` networks stacked on a
    leading axis (the embedding tables padded to ``vocab_size`` rows), and their batched forward pass."""

    def __init__(self, members: int, vocab_size: int, num_labels: int, cfg: BiLSTMConfig) -> None:
        super().__init__()
        self.members, self.vocab_size, self.num_labels = members, vocab_size, num_labels
        self.embedding_dim, self.hidden_size, self.num_layers = cfg.embedding_dim, cfg.hidden_size, cfg.num_layers
        self.dropout = cfg.dropout
        template = BiLSTMNet(1, num_labels, cfg).state_dict()  # the names and shapes of one member
        self.names = list(template)
        self._touched: list[torch.Tensor] = []  # embedding rows read since zero_grad
        self.weights = nn.ParameterDict()
        for name, tensor in template.items():
            shape = (vocab_size, *tensor.shape[1:]) if name == "embedding.weight" else tuple(tensor.shape)
            self.weights[_key(name)] = nn.Parameter(torch.zeros(members, *shape, dtype=tensor.dtype))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients; the embedding tables' gradient is kept as one buffer whose rows read
        since the last call are set back to zero (a fresh table-sized zero gradient every step would cost
        more than the step's words)."""
        table = self.weight("embedding.weight")
        if table.grad is not None and self._touched:
            table.grad.view(-1, table.shape[2]).index_fill_(0, torch.cat(self._touched), 0.0)
        self._touched.clear()
        for name, p in self.weights.items():
            if name != _key("embedding.weight"):
                p.grad = None

    # -- members in and out -----------------------------------------------------------------
    @classmethod
    def from_members(cls, networks: Sequence[BiLSTMNet], cfg: BiLSTMConfig, num_labels: int) -> StackedBiLSTM:
        """Stack the weights of ``networks`` (same sizes; vocabularies may differ in size)."""
        sizes = [net.embedding.num_embeddings for net in networks]
        stacked = cls(len(networks), max(sizes), num_labels, cfg)
        stacked.to(next(networks[0].parameters()).dtype)
        with torch.no_grad():
            for m, net in enumerate(networks):
                for name, tensor in net.state_dict().items():
                    target = stacked.weights[_key(name)][m]
                    target[: tensor.shape[0]].copy_(tensor) if name == "embedding.weight" else target.copy_(tensor)
        return stacked

    def member_state(self, m: int, vocab_size: int) -> dict[str, torch.Tensor]:
        """Member ``m``'s weights as a :class:`BiLSTMNet` state dict (its own ``vocab_size`` rows)."""
        out = {}
        for name in self.names:
            tensor = self.weights[_key(name)][m].detach()
            out[name] = (tensor[:vocab_size] if name == "embedding.weight" else tensor).to("cpu", copy=True)
        return out

    def weight(self, name: str) -> torch.Tensor:
        """The stacked parameter of :class:`BiLSTMNet`'s ``name`` (``encoder.weight_hh_l0`` ...)."""
        return self.weights[_key(name)]

    # -- the forward pass -------------------------------------------------------------------
    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, B, num_labels]`` of ``ids`` ``[M, 2B, T]`` (each member's premises, then its
        hypotheses, in that member's word ids) with ``lengths`` ``[M, 2B]`` (at least 1 each)."""
        m, n, width = ids.shape
        device = ids.device
        # Longest rows first within each member; step t then runs only the first rows[t] rows (the most
        # any member still has unfinished), and the words are packed step by step, as a packed sequence.
        order = torch.argsort(lengths, dim=1, descending=True, stable=True)
        lengths = lengths.gather(1, order)
        ids = ids.gather(1, order.unsqueeze(2).expand(-1, -1, width))
        lengths_cpu = lengths.cpu()
        steps = int(lengths_cpu.max())
        rows = (lengths_cpu.unsqueeze(2) > torch.arange(steps)).sum(1).amax(0)  # [steps], non-increasing
        starts = torch.cumsum(rows, 0) - rows
        step_of = torch.repeat_interleave(torch.arange(steps), rows).to(device)  # [P]
        row_of = (torch.arange(int(rows.sum())) - torch.repeat_interleave(starts, rows)).to(device)
        row_length = lengths[:, row_of]  # [M, P]
        valid = step_of < row_length  # a member's own word, not a row another member needed
        # Where each packed word is read by the reverse direction (its row's position L-1-t).
        reverse_step = torch.where(valid, row_length - 1 - step_of, step_of)
        reverse = starts.to(device)[reverse_step] + row_of  # [M, P], a permutation within each member
        v, e = self.vocab_size, self.embedding_dim
        words = ids[:, row_of, step_of] + (torch.arange(m, device=device) * v).unsqueeze(1)
        table = self.weight("embedding.weight")
        if table.requires_grad and torch.is_grad_enabled():
            self._touched.append(words.reshape(-1))
            x = _RowLookup.apply(table, words.reshape(-1))
        else:
            x = table.reshape(m * v, e).index_select(0, words.reshape(-1))
        x = self._dropout(x.view(m, -1, e))  # [M, P, E]
        sizes = rows.tolist()
        for layer in range(self.num_layers):
            out = self._layer(x, reverse, sizes, layer)  # [2, M, P, H]: forward; reverse in reverse order
            if layer < self.num_layers - 1:
                back = out[1].gather(1, reverse.unsqueeze(2).expand(-1, -1, self.hidden_size))
                x = self._dropout(torch.cat([out[0], back], dim=2))
        h = self.hidden_size
        masked = out.masked_fill(~valid.view(1, m, -1, 1), float("-inf"))
        pooled = out.new_full((2, m, n, h), float("-inf")).scatter_reduce(
            2, row_of.view(1, 1, -1, 1).expand(2, m, -1, h), masked, reduce="amax"
        )  # max over each row's own words: [2, M, N, H]
        pooled = torch.cat([pooled[0], pooled[1]], dim=2)
        pooled = pooled.gather(1, torch.argsort(order, dim=1).unsqueeze(2).expand(-1, -1, 2 * h))
        u, w = pooled.chunk(2, dim=1)
        feats = torch.cat([u, w, (u - w).abs(), u * w], dim=2)
        hidden = torch.relu(self._linear(feats, "classifier.0"))
        return self._linear(self._dropout(hidden), "classifier.3")

    def _dropout(self, x: torch.Tensor) -> torch.Tensor:
        # Inverted dropout as F.dropout (keep with probability 1 - p, scale by 1 / (1 - p)), with a mask
        # drawn by rand_like, about twice as fast as F.dropout's bernoulli on a CPU.
        if not self.training or self.dropout == 0:
            return x
        keep = (torch.rand_like(x) >= self.dropout).to(x.dtype).mul_(1 / (1 - self.dropout))
        return x * keep

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return torch.baddbmm(self.weight(f"{name}.bias").unsqueeze(1), x, self.weight(f"{name}.weight").transpose(1, 2))

    def _layer(self, x: torch.Tensor, reverse: torch.Tensor, rows: list[int], layer: int) -> torch.Tensor:
        m, _, d = x.shape
        h = self.hidden_size
        x_rev = x.gather(1, reverse.unsqueeze(2).expand(-1, -1, d))
        suffixes = (f"l{layer}", f"l{layer}_reverse")
        # The gates reordered from torch's (i, f, g, o) to (i, f, o, g): one sigmoid and one tanh per step.
        gate_order = torch.cat([torch.arange(2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)])
        gate_order = gate_order.to(x.device)
        w_ih = torch.cat([self.weight(f"encoder.weight_ih_{s}") for s in suffixes])[:, gate_order]  # [2M, 4H, D]
        w_hh = torch.cat([self.weight(f"encoder.weight_hh_{s}") for s in suffixes])[:, gate_order].transpose(1, 2)
        bias = torch.cat([self.weight(f"encoder.bias_ih_{s}") + self.weight(f"encoder.bias_hh_{s}") for s in suffixes])[
            :, gate_order
        ].unsqueeze(1)
        # Both directions' input projections of every packed word in one product; split by step (its
        # backward concatenates the steps' gradients once).
        proj = torch.baddbmm(bias, torch.cat([x, x_rev]), w_ih.transpose(1, 2)).split(rows, dim=1)
        state_h = x.new_zeros(2 * m, rows[0], h)
        state_c = x.new_zeros(2 * m, rows[0], h)
        outs = []
        for step, size in enumerate(rows):
            gates = torch.baddbmm(proj[step], state_h[:, :size], w_hh)
            i, f, o = torch.sigmoid(gates[:, :, : 3 * h]).chunk(3, dim=2)
            state_c = torch.addcmul(f * state_c[:, :size], i, torch.tanh(gates[:, :, 3 * h :]))
            state_h = o * torch.tanh(state_c)
            outs.append(state_h)
        return torch.cat(outs, dim=1).view(2, m, -1, h)


class _RowLookup(torch.autograd.Function):
    """Rows ``rows`` of the stacked embedding tables ``[M, V, E]`` (flat row indices); the backward adds
    into the tables' persistent gradient buffer (see :meth:`StackedBiLSTM.zero_grad`) instead of
    returning a table-sized gradient."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.table = table
        ctx.save_for_backward(rows)
        return table.reshape(-1, table.shape[2]).index_select(0, rows)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None]:
        (rows,) = ctx.saved_tensors
        table = ctx.table
        if table.grad is None:
            table.grad = torch.zeros_like(table)
        table.grad.view(-1, table.shape[2]).index_add_(0, rows, grad.to(table.grad.dtype))
        return None, None


class StackedAdam:
    """Adam (as ``torch.optim.Adam``, no amsgrad) over stacked parameters, one state per member: a step
    updates only the members marked active, and each member counts its own steps.

    While every active member is at the same step (bagging: always, until a member stops early), the
    step is torch's fused Adam kernel over the whole stack (one pass over each tensor), with the
    inactive members' slices put back afterwards; otherwise each member's own step count is applied
    element-wise."""

    def __init__(
        self, params: Sequence[nn.Parameter], members: int, lr: float, weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
    ) -> None:  # fmt: skip
        self.params, self.lr, self.weight_decay, self.betas, self.eps = list(params), lr, weight_decay, betas, eps
        self.steps = torch.zeros(members, dtype=torch.float64)
        self.fused_steps = 0  # steps the fused optimizer has taken (its bias correction)
        self.optimizer = torch.optim.Adam(
            self.params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=True
        )

    def _state(self, p: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor]:
        state = self.optimizer.state[p]
        if not state:
            state["step"] = torch.tensor(float(self.fused_steps), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["exp_avg"], state["exp_avg_sq"]

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One update of the members where ``active`` ``[M]`` is true."""
        active = active.cpu()
        if not bool(active.any()):
            return
        live = [p for p in self.params if p.grad is not None]
        if bool((self.steps[active] == self.fused_steps).all()):
            idle = torch.nonzero(~active).flatten()
            kept = [(p, *self._state(p)) for p in live]
            saved = [(t, t[idle].clone()) for group in kept for t in group] if len(idle) else []
            for p in live:
                self.optimizer.state[p]["step"].fill_(float(self.fused_steps))
            self.optimizer.step()
            self.fused_steps += 1
            for tensor, values in saved:
                tensor[idle] = values
        else:
            self._step_each(live, active)
        self.steps += active.to(self.steps.dtype)

    def _step_each(self, live: list[nn.Parameter], active: torch.Tensor) -> None:
        # Members at different step counts: Adam element-wise with each member's own bias correction.
        beta1, beta2 = self.betas
        steps = self.steps + 1
        device = live[0].device
        step_size = (self.lr / (1 - beta1**steps)).to(device)
        correction2_sqrt = ((1 - beta2**steps) ** 0.5).to(device)
        for p in live:
            m1, m2 = self._state(p)
            shape = (-1,) + (1,) * (p.dim() - 1)
            keep = active.to(device).view(shape)
            grad = p.grad if not self.weight_decay else p.grad.add(p, alpha=self.weight_decay)
            new_m1 = m1.lerp(grad, 1 - beta1)
            new_m2 = m2.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (new_m2.sqrt() / correction2_sqrt.to(p.dtype).view(shape)).add_(self.eps)
            new_p = p - step_size.to(p.dtype).view(shape) * new_m1 / denom
            m1.copy_(torch.where(keep, new_m1, m1))
            m2.copy_(torch.where(keep, new_m2, m2))
            p.copy_(torch.where(keep, new_p, p))


def clip_member_gradients(params: Sequence[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Scale each member's gradients so their joint norm is at most ``max_norm`` (as
    ``clip_grad_norm_`` does for one network); returns each member's norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # [M]
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)).to(g.dtype))
    return norms


class MemberIds:
    """Word ids of a set of pairs in each member's vocabulary, padded once: ``premises`` and
    ``hypotheses`` ``[M, n, T]``; ``premise_lengths``/``hypothesis_lengths`` ``[n]`` are the same for every
    member (the words are the same, only their ids differ)."""

    def __init__(self, vocabs: Sequence[WordVocabulary], data: PairData, max_length: int) -> None:
        rows = [
            (vocab.encode(data.premises, max_length), vocab.encode(data.hypotheses, max_length)) for vocab in vocabs
        ]
        self.premise_lengths = np.array([len(s) for s in rows[0][0]], dtype=np.int64)
        self.hypothesis_lengths = np.array([len(s) for s in rows[0][1]], dtype=np.int64)
        width = int(max(self.premise_lengths.max(initial=1), self.hypothesis_lengths.max(initial=1)))
        self.premises = np.zeros((len(vocabs), len(data), width), dtype=np.int64)
        self.hypotheses = np.zeros_like(self.premises)
        for m, (prem, hyp) in enumerate(rows):
            for i, (p, h) in enumerate(zip(prem, hyp)):
                self.premises[m, i, : len(p)] = p
                self.hypotheses[m, i, : len(h)] = h
        self.lengths = self.premise_lengths + self.hypothesis_lengths

    def __len__(self) -> int:
        return len(self.premise_lengths)

    def batch(self, rows: Sequence[np.ndarray | None], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``([M, 2B, T] ids, [M, 2B] lengths)`` where member m reads pairs ``rows[m]`` (None: none);
        B is the largest batch, a smaller one is filled with one-word dummy rows."""
        size = max((len(r) for r in rows if r is not None), default=1)
        width = max(
            (int(max(self.premise_lengths[r].max(), self.hypothesis_lengths[r].max())) for r in rows if r is not None),
            default=1,
        )
        ids = np.zeros((len(rows), 2 * size, width), dtype=np.int64)
        lengths = np.ones((len(rows), 2 * size), dtype=np.int64)
        for m, r in enumerate(rows):
            if r is None:
                continue
            ids[m, : len(r)] = self.premises[m, r, :width]
            ids[m, size : size + len(r)] = self.hypotheses[m, r, :width]
            lengths[m, : len(r)] = self.premise_lengths[r]
            lengths[m, size : size + len(r)] = self.hypothesis_lengths[r]
        return torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device)


@torch.inference_mode()
def predict_stacked(network: StackedBiLSTM, encoded: MemberIds, batch_size: int, device: torch.device) -> np.ndarray:
    """Every member's probabilities ``[M, n, num_labels]``: all members read the same pairs per batch
    (similar lengths together), so no member waits on another's padding."""
    was_training = network.training
    network.eval()
    out = np.zeros((network.members, len(encoded), network.num_labels), dtype=np.float64)
    order = np.argsort(encoded.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        logits = network(*encoded.batch([idx] * network.members, device))
        out[:, idx] = torch.softmax(logits.float(), dim=2).cpu().numpy()
    network.train(was_training)
    return out


def stackable(learners: Sequence[Any]) -> bool:
    """Whether ``learners`` can share one :class:`StackedBiLSTM` to predict: plain BiLSTM learners whose
    networks have the same sizes and labels (not a compressed network of another shape)."""
    if not learners or not all(type(m) is BiLSTMLearner and type(m.network_) is BiLSTMNet for m in learners):
        return False
    first = learners[0]
    shapes = {n: tuple(t.shape) for n, t in first.network_.state_dict().items() if n != "embedding.weight"}
    return all(
        m.scheme_.labels == first.scheme_.labels
        and m.config.max_length == first.config.max_length
        and m.config.embedding_dim == first.config.embedding_dim
        and {n: tuple(t.shape) for n, t in m.network_.state_dict().items() if n != "embedding.weight"} == shapes
        for m in learners
    )


def stack_members(learners: Sequence[BiLSTMLearner]) -> StackedBiLSTM:
    """One network holding the weights of :func:`stackable` members, on their device, for prediction."""
    first = learners[0]
    network = StackedBiLSTM.from_members([m.network_ for m in learners], first.config, first.scheme_.num_labels)
    return network.to(first.device)


def predict_members(
    learners: Sequence[BiLSTMLearner], data: PairData, network: StackedBiLSTM | None = None
) -> np.ndarray:
    """The probabilities of :func:`stackable` members on ``data``, all in one batched network (``network``:
    theirs from :func:`stack_members`, built here when None)."""
    first = learners[0]
    network = network if network is not None else stack_members(learners)
    device = first.device
    encoded = MemberIds([m.vocab_ for m in learners], data, first.config.max_length)
    return predict_stacked(network, encoded, first.config.eval_batch_size, device)


@dataclass
class BatchedRun:
    """What :func:`train_stacked` returns: the fitted members (each with its ``history_`` and
    ``monitor_probas_``), and the run's wall time."""

    members: list[BiLSTMLearner]
    seconds: float = 0.0


def train_stacked(
    specs: Sequence[dict[str, Any]],
    train: PairData,
    samples: Sequence[np.ndarray],
    dev: PairData | None = None,
    *,
    monitor: PairData | None = None,
    seed: int = 0,
    precision: str = "fp32",
    batch_order: str = "independent",
    name: str = "ensemble",
) -> BatchedRun:
    """Train one BiLSTM per spec (``specs[m]`` a ``bilstm`` learner spec, same sizes, own seed) on the
    pairs ``samples[m]`` of ``train``, all members in one stacked network; ``seed`` seeds the dropout
    masks; ``precision`` ``bf16`` runs the forward pass under bfloat16 autocast (weights and Adam stay
    float32). Each member is built, initialised and batched exactly as ``BiLSTMLearner.fit`` builds it;
    with ``batch_order`` ``aligned`` each member's batches (the same batches) run in an order that puts
    batches of similar length rank at the same step for every member (see :func:`_aligned`)."""
    start_time = time.perf_counter()
    configs = [BiLSTMConfig(**{k: v for k, v in s.items() if k != "kind"}) for s in specs]
    cfg = configs[0]
    for other in configs[1:]:
        for setting in (*SHAPE_SETTINGS, "max_length", "batch_size", "epochs", "dropout", "device"):
            if getattr(other, setting) != getattr(cfg, setting):
                raise ValueError(
                    f"batched members must share {setting} ({getattr(cfg, setting)} ≠ {getattr(other, setting)})"
                )
    device = resolve_device(cfg.device, "ensemble")
    scheme = train.scheme
    vocabs, networks, rngs = [], [], []
    for c, rows in zip(configs, samples):
        member_train = train.subset(rows)
        torch.manual_seed(c.seed)
        rngs.append(np.random.default_rng(c.seed))
        vocab = WordVocabulary.build(
            member_train.premises + member_train.hypotheses, min_frequency=c.min_frequency, max_size=c.max_vocab
        )
        net = BiLSTMNet(len(vocab), scheme.num_labels, c)
        if c.vectors:
            matrix, _ = load_word_vectors(c.vectors, vocab.words, c.embedding_dim, seed=c.seed)
            net.embedding.weight.data.copy_(torch.from_numpy(matrix))
        vocabs.append(vocab)
        networks.append(net)
    members = len(specs)
    network = StackedBiLSTM.from_members(networks, cfg, scheme.num_labels).to(device)
    if cfg.vectors and cfg.freeze_vectors:
        network.weight("embedding.weight").requires_grad_(False)
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = StackedAdam(params, members, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    torch.manual_seed(seed)
    order_rng = np.random.default_rng(seed)

    encoded = MemberIds(vocabs, train, cfg.max_length)
    enc_dev = MemberIds(vocabs, dev, cfg.max_length) if dev is not None and len(dev) else None
    enc_monitor = MemberIds(vocabs, monitor, cfg.max_length) if monitor is not None else None
    labels = torch.from_numpy(train.labels)
    sample_lengths = [encoded.lengths[rows] for rows in samples]
    running = np.ones(members, dtype=bool)  # not stopped early
    histories: list[list[dict[str, float]]] = [[] for _ in range(members)]
    monitor_probas: list[list[np.ndarray]] = [[] for _ in range(members)]
    best_dev, since_best, best_epoch = np.full(members, -1.0), np.zeros(members, int), np.zeros(members, int)
    best_state: list[dict[str, torch.Tensor] | None] = [None] * members
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with progress_bar() as bar:
        for epoch in range(1, cfg.epochs + 1):
            # Every member draws its batches from its own generator, as its fit would.
            orders = [
                [samples[m][b] for b in length_bucketed_batches(sample_lengths[m], cfg.batch_size, rngs[m])]
                if running[m]
                else []
                for m in range(members)
            ]
            if batch_order == "aligned":
                orders = _aligned(orders, encoded.lengths, order_rng)
            count = max(len(o) for o in orders)
            task = bar.add_task(
                f"{name} epoch {epoch}/{cfg.epochs} ({int(running.sum())} members)", total=count, info=""
            )
            network.train()
            start = time.perf_counter()
            seen, loss_sum, correct = np.zeros(members), np.zeros(members), np.zeros(members)
            for number in range(count):
                rows = [o[number] if number < len(o) else None for o in orders]
                ids, lengths = encoded.batch(rows, device)
                size = ids.shape[1] // 2
                target = torch.zeros(members, size, dtype=torch.long)
                weight = torch.zeros(members, size)
                for m, r in enumerate(rows):
                    if r is not None:
                        target[m, : len(r)] = labels[r]
                        weight[m, : len(r)] = 1.0
                target, weight = target.to(device), weight.to(device)
                network.zero_grad()  # before the forward pass, which notes the embedding rows it reads
                with autocast:
                    logits = network(ids, lengths)
                logits = at_least_float32(logits)
                per_pair = F.cross_entropy(logits.reshape(-1, logits.shape[2]), target.view(-1), reduction="none")
                per_member = (per_pair.view(members, size) * weight).sum(1) / weight.sum(1).clamp(min=1.0)
                per_member.sum().backward()
                embedding = network.weight("embedding.weight")
                if embedding.grad is not None:
                    embedding.grad[:, 0] = 0  # the padding row, as nn.Embedding's padding_idx keeps it
                clip_member_gradients(params, cfg.max_grad_norm)
                stepped = weight.sum(1) > 0
                optimizer.step(stepped)
                with torch.no_grad():
                    hits = ((logits.argmax(2) == target).to(weight.dtype) * weight).sum(1).cpu().numpy()
                    sizes = weight.sum(1).cpu().numpy()
                    seen += sizes
                    loss_sum += per_member.detach().cpu().numpy() * sizes
                    correct += hits
                if (number + 1) % 10 == 0 or number + 1 == count:
                    rate = seen.sum() / max(time.perf_counter() - start, 1e-9)
                    bar.update(task, completed=number + 1, info=f"{rate:,.0f} member-pairs/s")
            bar.remove_task(task)
            seconds = time.perf_counter() - start
            dev_acc = None
            if enc_dev is not None:
                dev_probas = predict_stacked(network, enc_dev, cfg.eval_batch_size, device)
                dev_acc = (dev_probas.argmax(2) == dev.labels).mean(1)
            if enc_monitor is not None:
                mon = predict_stacked(network, enc_monitor, cfg.eval_batch_size, device)
            for m in np.flatnonzero(running):
                record = {
                    "epoch": epoch,
                    "train_loss": float(loss_sum[m] / max(seen[m], 1)),
                    "train_accuracy": float(correct[m] / max(seen[m], 1)),
                    "seconds": seconds,
                    "pairs_per_s": float(seen[m] / max(seconds, 1e-9)),
                }
                if dev_acc is not None:
                    record["dev_accuracy"] = float(dev_acc[m])
                if enc_monitor is not None:
                    monitor_probas[m].append(mon[m])
                histories[m].append(record)
            dev_text = f"dev acc {float(dev_acc[running].mean()):.3f} (mean) · " if dev_acc is not None else ""
            logger.info(
                "%s",
                f"{name} epoch {epoch}/{cfg.epochs} · {int(running.sum())} members · "
                f"loss {float(loss_sum.sum() / max(seen.sum(), 1)):.3f} · {dev_text}"
                f"{seen.sum() / max(seconds, 1e-9):,.0f} member-pairs/s · {seconds:.1f} s",
            )
            if dev_acc is not None:
                for m in np.flatnonzero(running):
                    if dev_acc[m] > best_dev[m]:
                        best_dev[m], since_best[m], best_epoch[m] = dev_acc[m], 0, epoch
                        if cfg.restore_best:
                            best_state[m] = {
                                n: p[m].detach().to("cpu", copy=True)
                                for n, p in network.weights.items()
                                if p.requires_grad
                            }
                    else:
                        since_best[m] += 1
                        if cfg.patience and since_best[m] >= cfg.patience and epoch < cfg.epochs:
                            logger.info(
                                "member %d: early stop after epoch %d (best dev acc %.3f)", m + 1, epoch, best_dev[m]
                            )
                            running[m] = False
            if not running.any():
                break
    with torch.no_grad():
        for m, state in enumerate(best_state):
            if state is not None and best_epoch[m] != len(histories[m]):
                for n, value in state.items():
                    network.weights[n][m].copy_(value)
    fitted = []
    for m, (c, vocab) in enumerate(zip(configs, vocabs)):
        learner = BiLSTMLearner(**c.model_dump())
        learner.scheme_, learner.vocab_ = scheme, vocab
        net = BiLSTMNet(len(vocab), scheme.num_labels, c)
        net.to(network.weight("embedding.weight").dtype)
        net.load_state_dict(network.member_state(m, len(vocab)))
        if c.vectors and c.freeze_vectors:
            net.embedding.weight.requires_grad_(False)
        learner.network_ = net
        learner.history_ = histories[m]
        learner.monitor_probas_ = monitor_probas[m]
        learner.best_epoch_ = int(best_epoch[m]) if best_state[m] is not None else len(histories[m])
        fitted.append(learner)
    return BatchedRun(fitted, time.perf_counter() - start_time)


def _aligned(orders: list[list[np.ndarray]], lengths: np.ndarray, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """The same batches of each member, reordered so that step k runs every member's batch of the same
    length rank: each member's batches sorted by their longest pair, then all put in one shared random
    order. Each member still sees its batches in a uniformly random order, but the members' orders are
    tied by length (long batches of all members at the same steps), so no member waits on another's
    padding. Needs every running member to have the same number of batches (bagging draws equal samples)."""
    counts = {len(o) for o in orders if o}
    if len(counts) != 1:
        return orders
    shared = rng.permutation(counts.pop())
    out = []
    for o in orders:
        if not o:
            out.append(o)
            continue
        by_length = sorted(o, key=lambda b: int(lengths[b].max()))
        out.append([by_length[k] for k in shared])
    return out


def member_flops_per_pair(cfg: BiLSTMConfig, words_per_pair: float, num_labels: int) -> float:
    """Multiply-adds × 2 of one pair's forward pass through one member (both sentences, both directions,
    every layer, the MLP); a training step costs about three times that."""
    h, e = cfg.hidden_size, cfg.embedding_dim
    lstm = 0.0
    for layer in range(cfg.num_layers):
        d = e if layer == 0 else 2 * h
        lstm += 2 * words_per_pair * 2 * (4 * h * d + 4 * h * h)
    mlp = 2 * (8 * h * cfg.mlp_hidden + cfg.mlp_hidden * num_labels)
    return lstm + mlp


__all__ = [
    "BatchedRun",
    "MemberIds",
    "StackedAdam",
    "StackedBiLSTM",
    "clip_member_gradients",
    "member_flops_per_pair",
    "predict_members",
    "predict_stacked",
    "stackable",
    "train_stacked",
]
