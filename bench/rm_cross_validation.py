"""Cross-validated held-out accuracy of a head-only reward model (`--train-layers 0`).

K folds: fold k trains `rlaif train --method rm --eval-split 1/K --eval-fold k` and scores the
pairs it held out, so every pair is held out exactly once (fold 0 is the split that
`--eval-split 1/K` alone makes). One feature cache serves all folds: the frozen backbone runs
once per sequence. Beside it, in the same run, the length heuristics on the same held-out pairs.
Fold models are deleted after scoring; metrics stay.

Usage: python bench/rm_cross_validation.py --data examples/hh-harmless.jsonl.gz
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rlaif.stats import wilson_interval
from rlaif.trainers import TrainConfig, trainer_for
from rlaif.trainers.pairs import train_eval_pairs


def fit_kept(cache: dict, train_layers: int = 0, **settings) -> tuple[dict[str, float], TrainConfig]:
    """Train a reward model's top `train_layers` blocks and head (prompts truncated to fit) sharing
    the frozen blocks' `cache`; returns its results and config. Its weights are deleted (each is
    a whole backbone); metrics stay."""
    config = TrainConfig(method="rm", truncate_prompt=True, train_layers=train_layers, progress=False, **settings)
    results = trainer_for(config, frozen_cache=cache).train()
    for weights in Path(config.output).glob("*.safetensors"):
        weights.unlink()
    return results, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--output", default="outputs/rm-cv")
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--max-length", type=int, default=192)
    args = parser.parse_args()

    cache: dict = {}
    rows = []
    totals = {"rm": 0, "shorter": 0, "longer": 0, "n": 0}
    for fold in range(args.folds):
        start = time.time()
        results, config = fit_kept(
            cache, data=args.data, model=args.model, output=f"{args.output}/fold-{fold}", epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, weight_decay=args.weight_decay, max_length=args.max_length, eval_split=1 / args.folds, eval_fold=fold,
        )
        _, held = train_eval_pairs(config)
        n = len(held)
        correct = round(results["eval/accuracy"] * n)
        shorter = sum(len(p.chosen) < len(p.rejected) for p in held)
        longer = sum(len(p.chosen) > len(p.rejected) for p in held)
        for key, value in (("rm", correct), ("shorter", shorter), ("longer", longer), ("n", n)):
            totals[key] += value
        rows.append(f"| {fold} | {n} | {correct / n:.0%} | {shorter / n:.0%} | {longer / n:.0%} | {time.time() - start:.0f} s |")

    n = totals["n"]
    print(f"{args.folds}-fold cross-validation, {n} pairs: head-only reward model, {args.epochs} epochs, batch {args.batch_size}, "
          f"lr {args.lr}, weight decay {args.weight_decay}, max length {args.max_length}\n")
    print("| fold | held-out pairs | reward model | the shorter wins | the longer wins | time |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    low, high = wilson_interval(totals["rm"], n)
    print(f"| all | {n} | **{totals['rm'] / n:.1%}** (95% CI {low:.1%}–{high:.1%}) "
          f"| {totals['shorter'] / n:.1%} | {totals['longer'] / n:.1%} | |")


if __name__ == "__main__":
    main()
