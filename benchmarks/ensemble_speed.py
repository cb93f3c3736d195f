"""Training a bagged BiLSTM ensemble four ways, side by side, in one invocation.

    python benchmarks/ensemble_speed.py [--train-size 31639] [--members 11] [--epochs 2] \
        [--rounds 1] [--ways batched aligned pool torchensemble] [--out runs/ensemble-speed]

The same members (the default ``bilstm``: 100-d embeddings, 64 hidden units per direction, MLP 256,
dropout 0.1, Adam 1e-3, batches of 64) on the same SNLI training pairs, for the same epochs (no dev
set, so no early stopping), trained as

1. ``batched``       — sizewise, ``executor: batched``: all members in one stacked network, one process;
2. ``aligned``       — the same with ``batch_order: aligned`` (each member's batches ordered so that all
   members run batches of the same length rank at each step);
3. ``pool``          — sizewise, ``executor: local, workers: 2``: members on two worker processes;
4. ``torchensemble`` — TorchEnsemble's ``BaggingClassifier`` (``pip install --no-deps torchensemble==0.2.0``)
   with the same network module (sizewise's ``BiLSTMNet``, one vocabulary built from the whole training
   set), the same optimizer, batch size and epochs, ``n_jobs=2``, no model saving; its batches are its own
   (random, padded to the longest pair of the batch).

Each way runs in a fresh process; with ``--rounds`` above 1 the ways alternate round by round, in an
order that rotates, so a slow spell of the machine does not fall on one way only. Recorded per way:
training wall time (the ``fit`` call only: data already loaded), member-pairs per second (members ×
pairs × epochs / wall time), peak resident memory of the process and its workers (sampled every
0.1 s), test accuracy of the ensemble (sizewise: normalized geometric mean; TorchEnsemble: its own
mean of probabilities) on the SNLI test set, and the achieved GFLOP/s (forward FLOPs of a pair × 3
for a training step, from the mean words per pair) against the float32 matrix-product peak measured
in the same invocation. Writes ``<out>/ensemble_speed.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

WAYS = ("batched", "aligned", "pool", "torchensemble")


def _data(s: dict[str, Any]) -> tuple[Any, Any]:
    from sizewise.data.catalog import load_dataset
    from sizewise.data.sampling import sample_subset

    train = load_dataset("snli", "train", "nli3")
    if s["train_size"] < len(train):
        train = sample_subset(train, s["train_size"], seed=0)
    test = load_dataset("snli", "test", "nli3")
    if s["test_size"] and s["test_size"] < len(test):
        test = sample_subset(test, s["test_size"], seed=0)
    return train, test


def _base(s: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "bilstm", "epochs": s["epochs"], "device": "cpu"}


def run_sizewise(s: dict[str, Any], way: str) -> dict[str, Any]:
    from sizewise.learners import create_learner

    train, test = _data(s)
    executor = {"batched": {"executor": "batched"}, "aligned": {"executor": "batched", "batch_order": "aligned"}}
    settings = executor.get(way, {"executor": "local", "workers": 2})
    learner = create_learner({"kind": "ensemble", "n_learners": s["members"], "seed": 0, "base": _base(s), **settings})
    start = time.perf_counter()
    learner.fit(train)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    member = learner.member_probas(test)
    predict_seconds = time.perf_counter() - start
    proba = learner.combine(member)
    return {
        "train_seconds": seconds,
        "predict_seconds": predict_seconds,
        "accuracy": float((proba.argmax(1) == test.labels).mean()),
        "member_accuracy": [float((p.argmax(1) == test.labels).mean()) for p in member],
        "executor": learner.executor_,
    }


def run_torchensemble(s: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from torchensemble import BaggingClassifier

    from sizewise.learners.bilstm import BiLSTMConfig, BiLSTMNet
    from sizewise.text.vocab import WordVocabulary

    train, test = _data(s)
    cfg = BiLSTMConfig(**{k: v for k, v in _base(s).items() if k != "kind"})
    vocab = WordVocabulary.build(
        train.premises + train.hypotheses, min_frequency=cfg.min_frequency, max_size=cfg.max_vocab
    )

    def dataset(data: Any) -> list[tuple[np.ndarray, np.ndarray, int]]:
        p, h = vocab.encode(data.premises, cfg.max_length), vocab.encode(data.hypotheses, cfg.max_length)
        return list(zip(p, h, data.labels.tolist()))

    def collate(items: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seqs = [p for p, _, _ in items] + [h for _, h, _ in items]
        lengths = torch.tensor([len(x) for x in seqs])
        ids = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
        for row, x in enumerate(seqs):
            ids[row, : len(x)] = torch.from_numpy(x)
        return ids, lengths, torch.tensor([y for _, _, y in items])

    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset(train), batch_size=cfg.batch_size, shuffle=True, collate_fn=collate)
    test_loader = torch.utils.data.DataLoader(dataset(test), batch_size=512, collate_fn=collate)
    model = BaggingClassifier(
        estimator=BiLSTMNet,
        n_estimators=s["members"],
        estimator_args={"vocab_size": len(vocab), "num_labels": train.scheme.num_labels, "cfg": cfg},
        cuda=False,
        n_jobs=2,
    )
    model.set_optimizer("Adam", lr=cfg.learning_rate)
    start = time.perf_counter()
    model.fit(loader, epochs=s["epochs"], log_interval=10**9, save_model=False)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    correct, member_correct = 0, np.zeros(s["members"])
    model.eval()
    with torch.no_grad():
        for ids, lengths, y in test_loader:
            probas = [torch.softmax(e(ids, lengths), dim=1) for e in model.estimators_]
            correct += int((torch.stack(probas).mean(0).argmax(1) == y).sum())
            member_correct += [int((p.argmax(1) == y).sum()) for p in probas]
    predict_seconds = time.perf_counter() - start
    return {
        "train_seconds": seconds,
        "predict_seconds": predict_seconds,
        "accuracy": correct / len(test),
        "member_accuracy": (member_correct / len(test)).tolist(),
        "executor": "torchensemble BaggingClassifier, n_jobs=2",
    }


def words_per_pair(s: dict[str, Any]) -> float:
    """Mean words a training pair feeds a member (premise + hypothesis, as the BiLSTM cuts them)."""
    from sizewise.learners.bilstm import BiLSTMConfig
    from sizewise.text.vocab import WordVocabulary

    train, _ = _data(s)
    vocab = WordVocabulary.build(train.premises + train.hypotheses)
    cut = BiLSTMConfig().max_length
    words = [len(x) for x in vocab.encode(train.premises, cut)] + [len(x) for x in vocab.encode(train.hypotheses, cut)]
    return sum(words) / len(train)


def matmul_peak(threads: int) -> float:
    """The best float32 GFLOP/s of a 2048 × 2048 matrix product over ten tries."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def _child(way: str, s: dict[str, Any], out: Path) -> None:
    import torch

    from sizewise.progress import set_quiet

    set_quiet(True)
    torch.set_num_threads(s["threads"])
    result = run_torchensemble(s) if way == "torchensemble" else run_sizewise(s, way)
    out.write_text(json.dumps(result), encoding="utf-8")


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_way(way: str, s: dict[str, Any], out: Path, index: int) -> dict[str, Any]:
    target = out / f"{way}-{index}.json"
    cmd = [sys.executable, __file__, "--child", way, "--settings", json.dumps(s), "--child-out", str(target)]
    proc = subprocess.Popen(cmd)
    peak = 0

    def watch() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.1)

    thread = threading.Thread(target=watch, daemon=True)
    start = time.perf_counter()
    thread.start()
    rc = proc.wait()
    thread.join()
    if rc != 0:
        raise SystemExit(f"{way} failed (exit {rc})")
    result = json.loads(target.read_text(encoding="utf-8"))
    result.update(way=way, round=index, process_seconds=time.perf_counter() - start, peak_rss_mb=peak / 2**20)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=31_639)
    ap.add_argument("--test-size", type=int, default=0, help="0: the whole SNLI test set")
    ap.add_argument("--members", type=int, default=11)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    ap.add_argument("--out", type=Path, default=Path("runs/ensemble-speed"))
    ap.add_argument("--table", type=Path, help="Only print the table of a kept ensemble_speed.json.")
    ap.add_argument("--write", type=Path, help="Also replace the ensemble-speed block of this Markdown file.")
    ap.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, json.loads(args.settings), args.child_out)
        return
    if args.table:
        _show(json.loads(args.table.read_text(encoding="utf-8")), args.write)
        return
    s = {
        "train_size": args.train_size,
        "test_size": args.test_size,
        "members": args.members,
        "epochs": args.epochs,
        "threads": args.threads,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    from sizewise.data.labels import SCHEMES
    from sizewise.ensembles.batched import member_flops_per_pair
    from sizewise.environment import environment
    from sizewise.learners.bilstm import BiLSTMConfig

    words = words_per_pair(s)
    n = min(args.train_size, 31_639)
    train_flops = 3 * member_flops_per_pair(BiLSTMConfig(), words, SCHEMES["nli3"].num_labels)
    peak = matmul_peak(args.threads)
    machine = environment()  # before the runs: the commit they run
    runs = []
    for r in range(args.rounds):
        ways = args.ways[r % len(args.ways) :] + args.ways[: r % len(args.ways)]
        for way in ways:
            res = run_way(way, s, args.out, r)
            member_pairs = args.members * n * args.epochs
            res["member_pairs_per_s"] = member_pairs / res["train_seconds"]
            res["gflops"] = member_pairs * train_flops / res["train_seconds"] / 1e9
            runs.append(res)
            rate = f"{res['member_pairs_per_s']:,.0f} member-pairs/s"
            print(f"{way} (round {r + 1}): {res['train_seconds']:.0f} s, {rate}, accuracy {res['accuracy']:.4f}")
    report = {
        "settings": {**s, "words_per_pair": words, "train_gflop_per_member_pair": train_flops / 1e9},
        "matmul_peak_gflops": peak,
        "environment": machine,
        "runs": runs,
    }
    (args.out / "ensemble_speed.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    _show(report, args.write)


def _show(report: dict[str, Any], write: Path | None) -> None:
    text = table(report)
    print(text)
    if write:
        from summarize import write_block  # benchmarks/summarize.py, beside this script

        write_block(write, "ensemble-speed", text)


def table(report: dict[str, Any]) -> str:
    """The Markdown table of a report: per way, the median over rounds."""
    import statistics

    runs = report["runs"]
    env = report.get("environment", {})
    ways = list(dict.fromkeys(r["way"] for r in runs))

    def med(way: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["way"] == way)

    pool = med("pool", "member_pairs_per_s") if "pool" in ways else None
    te = med("torchensemble", "member_pairs_per_s") if "torchensemble" in ways else None
    header = "| way | train wall (s) | member-pairs/s | × pool | × TorchEnsemble | GFLOP/s (% of peak) "
    lines = [header + "| peak RSS (MB) | test acc | mean member acc |", "|---|" + "---:|" * 8]
    for way in ways:
        rate = med(way, "member_pairs_per_s")
        member = statistics.median(
            sum(r["member_accuracy"]) / len(r["member_accuracy"]) for r in runs if r["way"] == way
        )
        gflops = med(way, "gflops")
        cells = [
            way,
            f"{med(way, 'train_seconds'):.0f}",
            f"{rate:,.0f}",
            f"{rate / pool:.2f}" if pool else "–",
            f"{rate / te:.2f}" if te else "–",
            f"{gflops:.1f} ({100 * gflops / report['matmul_peak_gflops']:.0f}%)",
            f"{med(way, 'peak_rss_mb'):,.0f}",
            f"{med(way, 'accuracy'):.4f}",
            f"{member:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Matrix-product peak (float32, 2048², {report['settings']['threads']} threads): "
        f"{report['matmul_peak_gflops']:.0f} GFLOP/s; {report['settings']['words_per_pair']:.1f} words a pair, "
        f"{1000 * report['settings']['train_gflop_per_member_pair']:.1f} MFLOP per member-pair trained. "
        f"{report['settings']['members']} members, {report['settings']['train_size']:,} SNLI train pairs, "
        f"{report['settings']['epochs']} epochs, test accuracy on "
        f"{'all SNLI test pairs' if not report['settings']['test_size'] else report['settings']['test_size']}; "
        f"{env.get('cpu', '?')}, torch {env.get('torch', '?')}, sizewise {env.get('git_commit', '?')}."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
