"""How fast MiniLM-L6 starts to learn SNLI: LoRA at several learning rates beside full fine-tuning.

    SIZEWISE_DATA=../shared/data python benchmarks/lora_lr.py [--train-size 3200] [--dev-size 600] \
        [--runs lora:5e-4 lora:2e-3 lora:4e-3 full:5e-5] [--threads 1]

Each run trains the ``transformer`` learner (packaged all-MiniLM-L6-v2, batch 32, max_length 128,
one epoch = train-size / 32 optimizer steps, linear warm-up and decay) on a stratified SNLI train
subset and reports dev accuracy on a stratified SNLI dev subset. This is the measurement behind
the LoRA default learning rate (2e-3). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-size", type=int, default=3200)
    parser.add_argument("--dev-size", type=int, default=600)
    parser.add_argument("--runs", nargs="+", default=["lora:5e-4", "lora:2e-3", "lora:4e-3", "full:5e-5"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import sizewise.learners  # noqa: F401  (registers the learner kinds)
    from sizewise.data.catalog import load_dataset
    from sizewise.data.sampling import sample_subset
    from sizewise.learners.transformer import TransformerLearner

    train = sample_subset(load_dataset("snli", "train", "nli3"), args.train_size, args.seed)
    dev = sample_subset(load_dataset("snli", "dev", "nli3"), args.dev_size, args.seed + 1)
    print("| mode | learning rate | optimizer steps | train loss | dev accuracy | seconds |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        mode, lr = run.split(":")
        start = time.perf_counter()
        learner = TransformerLearner(mode=mode, learning_rate=float(lr), epochs=1, batch_size=32, seed=args.seed)
        learner.fit(train, dev)
        h = learner.history_[-1]
        print(
            f"| {mode} | {float(lr):g} | {h['steps']} | {h['train_loss']:.3f} | {h['dev_accuracy']:.3f} "
            f"| {time.perf_counter() - start:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
