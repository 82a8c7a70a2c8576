"""The preference objectives side by side on human labels: DPO, SimPO, ORPO and KTO each train
the embedded model on the same HH-harmless pairs (KTO on them split into desirable and
undesirable rows), with the same learning rate, batch and epochs, and each trained policy is
read the same way on held-out pairs:

- log-ratio accuracy: how often the policy raised the human-preferred response's log-probability
  more (or lowered it less) than the other's, relative to the base model:
  [log π(y_c) − log π_0(y_c)] − [log π(y_r) − log π_0(y_r)] > 0 (DPO's and KTO's implicit reward);
- length-normalised accuracy: how often the preferred response has the higher mean
  log-probability per token under the policy (SimPO's and ORPO's implicit reward), with the
  base model's own rate beside it.

Each with a 95% interval over the held-out pairs (Wilson), the training time, and the mean
log-ratio margin. One seed and a few hundred pairs: a difference of a few points is noise.

    python bench/objectives_on_hh.py                       # 256 training pairs, 100 held out
    python bench/objectives_on_hh.py --methods dpo kto --train-rows 0:512
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness import ROOT  # this folder's own module (bench/ is on the path when run)

from rlaif.evaluate.scoring import summed_response_logps
from rlaif.models.encoding import encode
from rlaif.models.loading import load_tokenizer
from rlaif.stats import wilson_interval
from rlaif.trainers import TrainConfig, train
from rlaif.trainers.pairs import load_pairs

DATA = ROOT / "examples" / "hh-harmless.jsonl.gz"


def mean_logps(model: str | None, items: list[tuple], tokenizer) -> list[float]:
    """Each response's mean log-probability per token (its EOS counted), under `model`."""
    sums = summed_response_logps(model, items, progress=True)
    lengths = [sum(label != -100 for label in encode(tokenizer, p, r, 4096, "x:0", True)["labels"]) for p, r in items]
    return [s / n for s, n in zip(sums, lengths)]


def share(hits: list[bool]) -> str:
    low, high = wilson_interval(sum(hits), len(hits))
    return f"{sum(hits) / len(hits):.1%} [{low:.1%}, {high:.1%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["dpo", "simpo", "orpo", "kto"])
    parser.add_argument("--train-rows", default="0:256")
    parser.add_argument("--eval-rows", default="900:1000")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--output", type=Path, default=ROOT / "outputs" / "objectives-on-hh")
    args = parser.parse_args()

    held = load_pairs(f"{DATA}?rows={args.eval_rows}")
    items = [(p.prompt, r) for p in held for r in (p.chosen, p.rejected)]
    tokenizer = load_tokenizer(None)
    base_sums = summed_response_logps(None, items, progress=True)
    base_means = mean_logps(None, items, tokenizer)
    base_normalised = [base_means[2 * i] > base_means[2 * i + 1] for i in range(len(held))]
    lines = ["| `--method` | training time | log-ratio accuracy | mean log-ratio margin | length-normalised accuracy |",
             "|---|---|---|---|---|", f"| (the base model) | | | | {share(base_normalised)} |"]
    found = {}
    for method in args.methods:
        out = args.output / method
        start = time.perf_counter()
        train(TrainConfig(method=method, data=f"{DATA}?rows={args.train_rows}", output=str(out), epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, max_length=args.max_length, progress=False))
        seconds = time.perf_counter() - start
        sums = summed_response_logps(str(out), items, progress=True)
        means = mean_logps(str(out), items, tokenizer)
        margins = [(sums[2 * i] - base_sums[2 * i]) - (sums[2 * i + 1] - base_sums[2 * i + 1]) for i in range(len(held))]
        normalised = [means[2 * i] > means[2 * i + 1] for i in range(len(held))]
        found[method] = {"seconds": seconds, "log_ratio_hits": sum(m > 0 for m in margins),
                         "normalised_hits": sum(normalised), "n": len(held)}
        lines.append(f"| `{method}` | {seconds / 60:.1f} min | {share([m > 0 for m in margins])} | "
                     f"{sum(margins) / len(margins):+.3f} | {share(normalised)} |")
        print(lines[-1], flush=True)
    print(json.dumps({**vars(args), "output": str(args.output), "results": found}))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
