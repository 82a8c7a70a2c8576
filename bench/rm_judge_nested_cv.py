"""The reward-model judge's agreement with human labels, by nested cross-validation, for each
training length (`--max-length`) and `--train-layers` setting.

Outer K folds over the human-labeled pairs: each fold's pairs are held out once. Inside the
other K − 1 folds only, an inner J-fold cross-validation picks the learning rate and the number
of epochs with the best mean inner accuracy; a model with that setting then trains on the whole
outer training part and judges the held-out fold. So no held-out pair ever influences the model
or the choice of its settings. The learning rate is constant after a short warm-up, so one run
of E epochs, evaluated after each, stands for the runs of 1 … E epochs (the data order of an
epoch does not depend on how many follow). Held-out pairs are read whole, as the judge reads
them, whatever length the training pairs are cut at.

Every setting shares one pass of the frozen model: what enters block n − k is kept for each k
on the way (for k = 0, the final states where the head reads), so each fit runs only its top
blocks. A pair that fits several training lengths is computed once for all of them.

Usage: python bench/rm_judge_nested_cv.py --data examples/hh-harmless.jsonl.gz --max-lengths 192,384,0 --train-layers 0,1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from statistics import mean

import jsonlines
from rm_cross_validation import fit_kept  # this folder's own script (bench/ is on the path when run)

from rlaif.inputs import read_records
from rlaif.models.loading import load_reward_model, load_tokenizer, pick_device, position_limit
from rlaif.stats import wilson_interval
from rlaif.storage.files import write_jsonl_atomic
from rlaif.trainers import TrainConfig
from rlaif.trainers.pairs import encoded_train_eval_pairs, split, train_eval_pairs
from rlaif.trainers.reward import keep_frozen_states, score_pad_token


def epoch_metrics(cache: dict, k: int, length: int, data: str, output: str, lr: float, epochs: int, args,
                  **where) -> list[dict[str, float]]:
    """Held-out accuracy and loss after each of `epochs` epochs of a reward model training its
    top `k` blocks and head on `data` cut at `length` tokens (`where`: which pairs are held out)."""
    settings = dict(data=data, model=args.model, output=output, epochs=epochs, batch_size=args.batch_size, lr=lr,
                    lr_scheduler="constant", warmup_steps=args.warmup_steps, max_length=length, **where)
    n_train = len(train_eval_pairs(TrainConfig(method="rm", **settings))[0])
    fit_kept(cache, train_layers=k, eval_steps=n_train // args.batch_size, **settings)
    with jsonlines.open(Path(output) / "metrics.jsonl") as rows:
        return [{"accuracy": row["eval/accuracy"], "loss": row["eval/loss"]} for row in rows if "eval/accuracy" in row]


def select(cache: dict, k: int, length: int, data: str, output: str, args) -> tuple[tuple[float, int], float]:
    """The (learning rate, epochs) of the grid with the best mean held-out `--select-by` figure
    over an `--inner-folds`-fold cross-validation on `data`, and its mean held-out accuracy."""
    lrs = [float(x) for x in (args.head_lrs if k == 0 else args.block_lrs).split(",")]
    most = args.head_epochs if k == 0 else args.block_epochs
    inner: dict[tuple[float, int], dict[str, float]] = {}
    for lr in lrs:
        curves = [epoch_metrics(cache, k, length, data, output, lr, most, args, eval_split=1 / args.inner_folds, eval_fold=j)
                  for j in range(args.inner_folds)]
        inner.update({(lr, e + 1): {name: mean(c[e][name] for c in curves) for name in ("accuracy", "loss")} for e in range(most)})
    sign = 1 if args.select_by == "accuracy" else -1  # the loss is best low
    best = max(inner, key=lambda setting: sign * inner[setting][args.select_by])
    return best, inner[best]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--output", default="outputs/rm-judge-nested-cv")
    parser.add_argument("--train-layers", default="0,1,2,4", help="the settings compared, separated by commas")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--inner-folds", type=int, default=3)
    parser.add_argument("--head-lrs", default="1e-3,3e-3,1e-2", help="learning rates tried for the head alone (k = 0)")
    parser.add_argument("--block-lrs", default="1e-4,3e-4", help="learning rates tried when blocks train too")
    parser.add_argument("--head-epochs", type=int, default=10, help="most epochs tried for the head alone")
    parser.add_argument("--block-epochs", type=int, default=3, help="most epochs tried when blocks train too")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-lengths", default="192", help="the training lengths compared, separated by commas (0: the model's limit)")
    parser.add_argument("--select-by", choices=("loss", "accuracy"), default="loss",
                        help="what the inner cross-validation picks a setting by: the held-out Bradley-Terry loss (a proper score: "
                             "smoother than accuracy on a few hundred pairs, and it rewards calibration) or accuracy")
    parser.add_argument("--select", action="store_true", help="run only the inner cross-validation, over all of --data, and print the "
                        "setting it picks for each length and --train-layers (how make rm-judge's recipe is chosen on its training pairs)")
    args = parser.parse_args()

    records = [record for _, record in read_records(args.data)]
    ks = [int(x) for x in args.train_layers.split(",")]
    limit = position_limit(args.model)
    lengths = [int(x) or limit for x in args.max_lengths.split(",")]
    start = time.time()
    cache: dict = {}
    tokenizer = load_tokenizer(args.model, padding_side="right")
    tokenizer.pad_token = score_pad_token(tokenizer)
    pairs = [p for length in {*lengths, limit} for p in  # the limit: how every held-out pair is read
             encoded_train_eval_pairs(tokenizer, TrainConfig(method="rm", data=args.data, output=args.output, max_length=length))[0]]
    device = pick_device()  # where each fit's trainer runs, so the kept states are where its model is
    keep_frozen_states(load_reward_model(args.model, device, tokenizer.pad_token_id), pairs, ks, cache,
                       tokenizer.pad_token_id, device, progress=True)
    frozen_pass = time.time() - start
    print(f"frozen pass for --train-layers {args.train_layers} at lengths {lengths}: {frozen_pass:.0f} s", flush=True)

    if args.select:
        for length in lengths:
            for k in ks:
                setting, accuracy = select(cache, k, length, args.data, f"{args.output}/select-k{k}", args)
                print(f"--max-length {length} --train-layers {k}: "
                      f"lr {setting[0]:g}, {setting[1]} epochs (inner {accuracy:.1%})", flush=True)
        return

    folds = [split(list(range(len(records))), 1 / args.folds, seed=0, fold=fold) for fold in range(args.folds)]
    for fold, (train_idx, held_idx) in enumerate(folds):
        folder = Path(args.output) / f"fold-{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        write_jsonl_atomic(folder / "train.jsonl", [records[i] for i in train_idx])
        write_jsonl_atomic(folder / "held-out.jsonl", [records[i] for i in held_idx])

    summary, rows = [], []
    for length in lengths:
        for k in ks:
            most = args.head_epochs if k == 0 else args.block_epochs
            correct, total, begun = 0, 0, time.time()
            for fold, (train_idx, held_idx) in enumerate(folds):
                folder = Path(args.output) / f"fold-{fold}"
                (lr, epochs), inner = select(cache, k, length, str(folder / "train.jsonl"), str(folder / f"inner-k{k}"), args)
                accuracy = epoch_metrics(cache, k, length, str(folder / "train.jsonl"), str(folder / f"final-k{k}"), lr, epochs, args,
                                         eval_data=str(folder / "held-out.jsonl"))[-1]["accuracy"]
                n = len(held_idx)
                correct += round(accuracy * n)
                total += n
                rows.append(f"| {length} | {k} | {fold} | lr {lr:g}, {epochs} epochs (inner {inner:.1%}) | {accuracy:.1%} |")
                print(rows[-1], flush=True)
            low, high = wilson_interval(correct, total)
            summary.append(f"| {length} | {k} | {args.head_lrs if k == 0 else args.block_lrs} × 1–{most} epochs "
                           f"| **{correct / total:.1%}** [{low:.1%}, {high:.1%}] | {time.time() - begun:.0f} s |")

    print(f"\nNested {args.folds}×{args.inner_folds}-fold cross-validation of the reward-model judge on {len(records)} pairs "
          f"(batch {args.batch_size}, constant lr after {args.warmup_steps} warm-up steps, held-out pairs read whole; "
          f"one frozen pass for all settings: {frozen_pass:.0f} s; {time.time() - start:.0f} s in all)\n")
    print("| --max-length | --train-layers | grid (chosen inside the training folds) | held-out agreement [95% CI] | fitting time |\n"
          "|---|---|---|---|---|")
    print("\n".join(summary))
    print("\n| --max-length | --train-layers | outer fold | setting chosen inside the training folds | held-out agreement |\n"
          "|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
