"""The reward-model judge's agreement with human labels, by nested cross-validation.

Outer K folds over the human-labeled pairs: each fold's pairs are held out once. Inside the
other K − 1 folds only, an inner J-fold cross-validation picks the setting (learning rate ×
epochs) with the best mean inner accuracy; a model with that setting then trains on the
whole outer training part and judges the held-out fold. So no held-out pair ever influences
the model or the choice of its settings. Head-only reward models (`--train-layers 0`) share
one feature cache: the frozen backbone runs once per sequence.

Usage: python bench/rm_judge_nested_cv.py --data examples/hh-harmless.jsonl.gz
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from statistics import mean

from rm_cross_validation import fit_head_only  # this folder's own script (bench/ is on the path when run)

from rlaif.inputs import read_records
from rlaif.stats import wilson_interval
from rlaif.storage.files import write_jsonl_atomic
from rlaif.trainers.pairs import split


def fit(cache: dict, data: str, output: str, lr: float, epochs: int, args, **where) -> float:
    """The held-out accuracy of a head-only reward model trained on `data` (`where`: which pairs are held out)."""
    results, _ = fit_head_only(cache, data=data, model=args.model, output=output, epochs=epochs, batch_size=args.batch_size, lr=lr,
                               max_length=args.max_length, **where)
    return results["eval/accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--output", default="outputs/rm-judge-nested-cv")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    parser.add_argument("--epochs", default="3,10")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=192)
    args = parser.parse_args()

    records = [record for _, record in read_records(args.data)]
    grid = list(itertools.product([float(x) for x in args.lrs.split(",")], [int(x) for x in args.epochs.split(",")]))
    cache: dict = {}
    rows, correct, total = [], 0, 0
    for fold in range(args.folds):
        start = time.time()
        train_idx, held_idx = split(list(range(len(records))), 1 / args.folds, seed=0, fold=fold)
        folder = Path(args.output) / f"fold-{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        train_file, held_file = folder / "train.jsonl", folder / "held-out.jsonl"
        write_jsonl_atomic(train_file, [records[i] for i in train_idx])
        write_jsonl_atomic(held_file, [records[i] for i in held_idx])
        inner = {
            (lr, epochs): mean(fit(cache, str(train_file), str(folder / "inner"), lr, epochs, args, eval_split=1 / args.inner_folds, eval_fold=j)
                               for j in range(args.inner_folds))
            for lr, epochs in grid
        }
        lr, epochs = max(inner, key=inner.get)  # type: ignore[arg-type]
        accuracy = fit(cache, str(train_file), str(folder / "final"), lr, epochs, args, eval_data=str(held_file))
        n = len(held_idx)
        correct += round(accuracy * n)
        total += n
        rows.append(f"| {fold} | {len(train_idx)} / {n} | lr {lr:g}, {epochs} epochs (inner {inner[(lr, epochs)]:.1%}) | {accuracy:.1%} | {time.time() - start:.0f} s |")
        print(rows[-1], flush=True)

    low, high = wilson_interval(correct, total)
    print(f"\nNested {args.folds}×{args.inner_folds}-fold cross-validation of the head-only reward-model judge on {total} pairs "
          f"(grid: lr {args.lrs} × epochs {args.epochs}; batch {args.batch_size}, max length {args.max_length})\n")
    print("| outer fold | train / held-out pairs | setting chosen inside the training folds | held-out agreement | time |\n|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"| all | {total} held out | | **{correct / total:.1%}** [{low:.1%}, {high:.1%}] | |")


if __name__ == "__main__":
    main()
