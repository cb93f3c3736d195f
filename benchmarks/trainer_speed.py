"""LoRA fine-tuning three ways, side by side: sizewise vs a transformers.Trainer + peft script.

    python benchmarks/trainer_speed.py [--train-size 4000] [--test-size 2000] [--epochs 1] \
        [--batch-size 32] [--max-length 128] [--lr 2e-3] [--model minilm] [--seeds 0 1 2] \
        [--example-seeds 1] [--batch-order random] [--whole-last-layer] [--out runs/trainer-speed]

The same model, training pairs (an SNLI train subset), test pairs, batch size, epochs, max_length,
learning rate, warm-up, weight decay, LoRA rank / alpha / dropout / target modules and seed, run as

1. ``sizewise``       — the ``transformer`` learner (dynamic padding, length-bucketed batches in
   random order; ``--batch-order longest_first`` runs each random pool of 50 batches from its
   longest batch to its shortest, as the Trainer's ``group_by_length`` runs its mega-batches; its
   last layer runs for the first token only, the one the classification head reads —
   ``--whole-last-layer`` runs it for every token, as the Trainer's model does);
2. ``trainer-example`` — ``transformers.Trainer`` with the defaults of the Hugging Face
   text-classification example: every pair padded to ``max_length``, random batches;
3. ``trainer-best``    — the same Trainer with dynamic padding (``DataCollatorWithPadding``) and
   ``train_sampling_strategy="group_by_length"``.

Each way runs in its own fresh process, one after the other, with the same torch thread count,
once per seed; the ways are interleaved seed by seed (see ``_plan``) so that a slow spell of the
machine does not fall on one way only.
Training wall time (model loaded, data tokenized: only the optimization loop and nothing else
in the ``fit`` / ``train`` call) and test accuracy are recorded; prediction time on the test pairs
is recorded separately. Writes ``<out>/trainer_speed.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from summarize import write_block  # noqa: E402  (benchmarks/summarize.py, beside this script)

WAYS = ("sizewise", "trainer-example", "trainer-best")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "model": args.model,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "max_length": args.max_length,
        "learning_rate": args.lr,
        "warmup_ratio": 0.06,
        "weight_decay": 0.01,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.1,
        "data_seed": 0,
        "threads": args.threads,
        "batch_order": args.batch_order,
        "first_token_last_layer": not args.whole_last_layer,
    }


def _data(s: dict[str, Any]) -> tuple[Any, Any]:
    from sizewise.data.catalog import load_dataset
    from sizewise.data.sampling import sample_subset

    # The same training and test pairs for every way and seed: a seed changes only the training run.
    train = sample_subset(load_dataset("snli", "train"), s["train_size"], seed=s["data_seed"])
    test = sample_subset(load_dataset("snli", "test"), s["test_size"], seed=s["data_seed"])
    return train, test


def run_sizewise(s: dict[str, Any]) -> dict[str, Any]:
    from sizewise.learners import create_learner

    train, test = _data(s)
    learner = create_learner(
        {
            "kind": "transformer",
            "model": s["model"],
            "mode": "lora",
            "lora_r": s["lora_r"],
            "lora_alpha": s["lora_alpha"],
            "lora_dropout": s["lora_dropout"],
            "max_length": s["max_length"],
            "batch_size": s["batch_size"],
            "eval_batch_size": s["eval_batch_size"],
            "epochs": s["epochs"],
            "learning_rate": s["learning_rate"],
            "warmup_ratio": s["warmup_ratio"],
            "weight_decay": s["weight_decay"],
            "batch_order": s["batch_order"],
            "first_token_last_layer": s["first_token_last_layer"],
            "seed": s["seed"],
            "device": "cpu",
        }
    )
    # fit() also loads the model and tokenizes: time those apart from the optimization loop by
    # reading the per-epoch seconds the learner records around its training loop only.
    start = time.perf_counter()
    learner.fit(train)
    fit_seconds = time.perf_counter() - start
    train_seconds = sum(h["seconds"] for h in learner.history_)
    start = time.perf_counter()
    pred = learner.predict_proba(test).argmax(1)
    predict_seconds = time.perf_counter() - start
    return {
        "train_seconds": train_seconds,
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "accuracy": float((pred == test.labels).mean()),
        "trainable_parameters": learner.parameter_count()["trainable"],
    }


def run_trainer(s: dict[str, Any], best: bool) -> dict[str, Any]:
    import numpy as np
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from sizewise.learners.transformer import default_target_modules, resolve_model

    train, test = _data(s)
    path = resolve_model(s["model"])
    set_seed(s["seed"])
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=train.scheme.num_labels)
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=s["lora_r"],
        lora_alpha=s["lora_alpha"],
        lora_dropout=s["lora_dropout"],
        target_modules=default_target_modules(model.config.model_type),
    )
    model = get_peft_model(model, peft_config)
    padding = False if best else "max_length"  # the example's default: pad_to_max_length=True

    class Pairs(torch.utils.data.Dataset):
        def __init__(self, data: Any) -> None:
            self.enc = tokenizer(
                data.premises, data.hypotheses, truncation=True, max_length=s["max_length"], padding=padding
            )
            self.labels = data.labels

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict[str, Any]:
            item = {k: v[i] for k, v in self.enc.items()}
            item["labels"] = int(self.labels[i])
            return item

    train_ds, test_ds = Pairs(train), Pairs(test)
    args = TrainingArguments(
        output_dir=os.path.join(s["workdir"], "trainer-best" if best else "trainer-example"),
        per_device_train_batch_size=s["batch_size"],
        per_device_eval_batch_size=s["eval_batch_size"],
        num_train_epochs=s["epochs"],
        learning_rate=s["learning_rate"],
        warmup_steps=s["warmup_ratio"],  # transformers 5: a float below 1 is a share of the steps
        weight_decay=s["weight_decay"],
        lr_scheduler_type="linear",
        seed=s["seed"],
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if best else "random",
    )
    collator = DataCollatorWithPadding(tokenizer) if best else default_data_collator
    trainer = Trainer(model=model, args=args, train_dataset=train_ds, data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    # transformers 5 applies train_sampling_strategy="group_by_length" to the evaluation sampler as
    # well and returns the predictions in that grouped order, not the dataset's: predict with a
    # Trainer whose sampling is sequential, so row i is test pair i.
    predictor = Trainer(
        model=model,
        args=dataclasses.replace(args, train_sampling_strategy="random"),
        data_collator=collator,
    )
    start = time.perf_counter()
    logits = predictor.predict(test_ds).predictions
    predict_seconds = time.perf_counter() - start
    pred = np.asarray(logits[0] if isinstance(logits, tuple) else logits).argmax(1)
    return {
        "train_seconds": train_seconds,
        "fit_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "accuracy": float((pred == test.labels).mean()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def _one(way: str, settings_json: str) -> None:
    import torch

    s = json.loads(settings_json)
    torch.set_num_threads(s["threads"])
    result = run_sizewise(s) if way == "sizewise" else run_trainer(s, best=way == "trainer-best")
    print("RESULT " + json.dumps(result), flush=True)


def _plan(seeds: list[int], ways: list[str], example_seeds: int) -> list[tuple[int, str]]:
    """The order of the runs: seed by seed, the ways' order reversed on every other seed.

    Interleaving the ways and alternating their order spreads any drift of the shared machine over
    all ways instead of charging it to whichever ran last. The slow example-defaults way runs for
    the first ``example_seeds`` seeds only.
    """
    plan = []
    for i, seed in enumerate(seeds):
        order = [w for w in ways if w != "trainer-example" or i < example_seeds]
        plan += [(seed, w) for w in (order if i % 2 == 0 else order[::-1])]
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Run every way once per seed.")
    parser.add_argument(
        "--example-seeds",
        type=int,
        default=1,
        help="Run the (slow) example-defaults way for only the first N seeds (default 1).",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--batch-order",
        choices=("longest_first", "random"),
        default="random",
        help="sizewise's batch_order (its default: random).",
    )
    parser.add_argument(
        "--whole-last-layer",
        action="store_true",
        help="Run sizewise with first_token_last_layer off (its last layer computed for every token).",
    )
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument("--out", type=Path, default=Path("runs/trainer-speed"))
    parser.add_argument(
        "--table",
        type=Path,
        nargs="+",
        help="Only print the table of earlier trainer_speed.json files (runs of several files with the same "
        "settings and distinct seeds are pooled).",
    )
    parser.add_argument("--write", type=Path, help="Also replace the speed block of this Markdown file.")
    parser.add_argument(
        "--block",
        default="speed",
        help="Name of the block --write replaces: <!-- NAME:begin --> ... <!-- NAME:end --> (default speed).",
    )
    parser.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        _one(args.one, args.settings)
        return
    if args.table:
        record = pool([json.loads(path.read_text()) for path in args.table])
        print(table(record))
        if args.write:
            write_block(args.write, args.block, table(record))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    s = _settings(args)
    s["workdir"] = str(args.out)
    runs: list[dict[str, Any]] = []
    plan = _plan(args.seeds, args.ways, args.example_seeds)
    for n, (seed, way) in enumerate(plan, 1):
        print(f"--- [{n}/{len(plan)}] {way}, seed {seed}", flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--one", way, "--settings", json.dumps({**s, "seed": seed})],
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
        runs.append({"way": way, "seed": seed, **json.loads(line.removeprefix("RESULT "))})
        print(f"    {runs[-1]}", flush=True)
    from sizewise.environment import environment

    s["seeds"] = args.seeds
    record = {"settings": s, "runs": runs, "environment": environment()}
    (args.out / "trainer_speed.json").write_text(json.dumps(record, indent=2) + "\n")
    print(table(record))
    if args.write:
        write_block(args.write, args.block, table(record))


def pool(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from runs made in separate invocations with the same settings and distinct seeds."""

    # Records made before sizewise had these settings trained with random order and the whole last layer.
    before = {"batch_order": "random", "first_token_last_layer": False}
    settings = [{**before, **rec["settings"]} for rec in records]
    same = {k: v for k, v in settings[0].items() if k not in ("seeds", "workdir")}
    seen: set[tuple[str, int]] = set()
    runs = []
    for rec, rec_settings in zip(records, settings, strict=True):
        other = {k: v for k, v in rec_settings.items() if k not in ("seeds", "workdir")}
        if other != same:
            diff = sorted(k for k in same.keys() | other.keys() if same.get(k) != other.get(k))
            raise SystemExit(f"these records differ in settings ({', '.join(diff)}); they cannot be pooled")
        for r in rec["runs"]:
            if (r["way"], r["seed"]) in seen:
                raise SystemExit(f"way {r['way']} seed {r['seed']} appears in more than one record")
            seen.add((r["way"], r["seed"]))
            runs.append(r)
    seeds = sorted({seed for rec in records for seed in rec["settings"]["seeds"]})
    environments = [rec["environment"] for rec in records]
    return {
        "settings": {**settings[0], "seeds": seeds},
        "runs": runs,
        "environment": environments[0],
        "environments": environments,
    }


def summarize(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per way: its runs' train times and accuracies, and its time against sizewise's on the same seeds.

    The ratio is the median over seeds of (this way's train time / sizewise's train time on that
    seed): each ratio compares two runs made next to each other.
    """
    import statistics

    by_way: dict[str, dict[int, dict[str, Any]]] = {}
    for r in sorted(record["runs"], key=lambda r: r["seed"]):  # per-seed lists in seed order
        by_way.setdefault(r["way"], {})[r["seed"]] = r
    ref = by_way.get("sizewise", {})
    out = {}
    for way, runs in by_way.items():
        times = [r["train_seconds"] for r in runs.values()]
        accs = [r["accuracy"] for r in runs.values()]
        ratios = [r["train_seconds"] / ref[seed]["train_seconds"] for seed, r in runs.items() if seed in ref]
        out[way] = {
            "seeds": sorted(runs),
            "train_seconds": times,
            "median_train_seconds": statistics.median(times),
            "ratio": statistics.median(ratios) if ratios else None,
            "ratios": ratios,
            "accuracies": accs,
            "mean_accuracy": statistics.fmean(accs),
            "sd_accuracy": statistics.stdev(accs) if len(accs) > 1 else None,
            "median_predict_seconds": statistics.median(r["predict_seconds"] for r in runs.values()),
        }
    # Accuracy difference to sizewise, paired by seed.
    for way, summary in out.items():
        diffs = [r["accuracy"] - ref[seed]["accuracy"] for seed, r in by_way[way].items() if seed in ref]
        summary["mean_accuracy_difference"] = statistics.fmean(diffs) if diffs and way != "sizewise" else None
    return out


def table(record: dict[str, Any]) -> str:
    """The Markdown table of one comparison: times, ratios against sizewise, accuracies per seed."""
    summary = summarize(record)
    lines = [
        "| way | seeds | train time (median; per seed) | × sizewise's time (median of per-seed ratios) "
        "| test accuracy (mean ± sd; per seed) | accuracy − sizewise's (mean over seeds) | predict time (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for way, w in summary.items():
        per_seed_t = ", ".join(f"{t:.0f}" for t in w["train_seconds"])
        ratio = "–" if w["ratio"] is None else f"{w['ratio']:.2f}× ({', '.join(f'{r:.2f}' for r in w['ratios'])})"
        acc = f"{w['mean_accuracy']:.3f}"
        if w["sd_accuracy"] is not None:
            acc += f" ± {w['sd_accuracy']:.3f}"
        acc += f" ({', '.join(f'{a:.3f}' for a in w['accuracies'])})"
        diff = "–" if w["mean_accuracy_difference"] is None else f"{100 * w['mean_accuracy_difference']:+.1f} pts"
        lines.append(
            f"| {way} | {', '.join(map(str, w['seeds']))} | {w['median_train_seconds']:.0f} s ({per_seed_t}) "
            f"| {ratio} | {acc} | {diff} | {w['median_predict_seconds']:.0f} s |"
        )
    s, env = record["settings"], record["environment"]
    lines += [
        "",
        f"Settings: {s['model']}, LoRA r {s['lora_r']} / alpha {s['lora_alpha']} / dropout {s['lora_dropout']} on "
        f"query and value, {s['train_size']:,} SNLI train pairs, {s['epochs']} epoch(s), batch {s['batch_size']}, "
        f"max_length {s['max_length']}, learning rate {s['learning_rate']} with {s['warmup_ratio']:.0%} linear "
        f"warm-up, weight decay {s['weight_decay']}; test accuracy on {s['test_size']:,} SNLI test pairs (nli3). "
        f"sizewise's batch order: {s['batch_order']}; its last layer: "
        f"{'first token only' if s['first_token_last_layer'] else 'every token'}. "
        f"The same training and test pairs for every run; a seed sets the new classification head's "
        f"initial weights, dropout and the batch order. "
        f"{s['threads']} torch thread(s) on {env['cpu']} ({env['cpu_count']} cores), torch {env['torch']}, "
        f"transformers {env.get('transformers')}, peft {env.get('peft')}.",
    ]
    if len(record.get("environments", [])) > 1:
        commits = ", ".join(e.get("git_commit", "?") for e in record["environments"])
        lines[-1] += f" Pooled from {len(record['environments'])} invocations (sizewise commits {commits})."
    return "\n".join(lines)


if __name__ == "__main__":
    main()
