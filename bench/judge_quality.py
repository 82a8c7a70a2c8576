"""Label quality against human labels, beside the last recorded release: run it after any change
to judging, encoding, packing, the reward trainer or a default they read.

It trains the documented reward-model judge (`examples/rm-judge.toml`, the recipe `make rm-judge`
runs: human-labeled HH-harmless pairs 0-599), labels pairs 600-999 with it as a `reward_model`
judge at its default settings, and prints agreement with the human labels, lift over the best
rule that needs no judge ("always the shorter response", ...) and the expected calibration
error, each beside the figure recorded in `bench/judge_quality_record.json` for the previous
release, with a paired 95% interval on the same pairs: agreement by the paired normal interval,
ECE by a paired bootstrap over pairs. It exits 1 when agreement is clearly lower than the
record's (its paired interval below zero). `--record` makes this run the new record;
`--labels DIR` compares an existing labeling run of pairs 600-999 instead of making one.

Usage: python bench/judge_quality.py [--output outputs/judge-quality] [--record] [--labels DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np

from rlaif.labeling.quality import label_run_report, lift_text, read_run
from rlaif.labeling.run import LabelConfig, label
from rlaif.stats import expected_calibration_error, paired_interval
from rlaif.storage.files import write_json_atomic
from rlaif.trainers import TrainConfig, read_config_file, train

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "examples" / "rm-judge.toml"
RECORD = Path(__file__).resolve().parent / "judge_quality_record.json"
HELD_OUT = "examples/hh-harmless.jsonl.gz?rows=600:1000"


def per_pair(run_dir: Path) -> dict[str, dict[str, float]]:
    """Each human-labeled pair's agreement with the human (1 or 0) and the judge's confidence."""
    rows, _ = read_run(run_dir)
    return {r["id"]: {"agrees": float(r["human_preference"] > 0.5), "confidence": r["ai_preference"]}
            for r in rows if r.get("human_preference") is not None}


def paired_ece_interval(now: list[dict], before: list[dict], resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """ECE(now) − ECE(before) on the same pairs, with a 95% percentile interval from a paired
    bootstrap (each resample draws pairs, and both judges' ECE is taken on the same draw)."""

    def ece(items: list[dict], index) -> float:
        return expected_calibration_error([items[i]["confidence"] for i in index], [items[i]["agrees"] for i in index])[0]

    rng = np.random.default_rng(seed)
    n = len(now)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    differences = sorted(ece(now, d) - ece(before, d) for d in draws)
    return ece(now, range(n)) - ece(before, range(n)), differences[int(0.025 * resamples)], differences[int(0.975 * resamples) - 1]


def commit() -> str:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "rlaif", "judges", "examples"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout
    return sha + ("+changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="outputs/judge-quality")
    parser.add_argument("--record", action="store_true", help="write this run as the record that later runs are compared with")
    parser.add_argument("--labels", default=None,
                        help="an existing labeling run of pairs 600-999 to compare, instead of training and labeling")
    args = parser.parse_args()
    out = Path(args.output)
    recipe = read_config_file(RECIPE)
    labels = Path(args.labels or out / "labels")
    if not args.labels:
        start = time.time()
        train(TrainConfig(**{**recipe, "output": str(out / "rm")}))
        trained = time.time()
        judge = out / "judge.toml"
        judge.write_text(f'backend = "reward_model"\nmodel = {json.dumps(str((out / "rm").resolve()))}\n')
        label(LabelConfig(input=HELD_OUT, judge=str(judge), output=str(labels)))
        print(f"\ntrained in {trained - start:.0f} s, labeled in {time.time() - trained:.0f} s")

    report = label_run_report(labels)
    pairs = per_pair(labels)
    now = {"commit": commit(), "recipe": None if args.labels else recipe, "agreement": report["agreement"],
           "agreement_low": report["agreement_low"], "agreement_high": report["agreement_high"],
           "lift_over_best_baseline": report["lift_over_best_baseline"], "ece": report["calibration"]["ece"], "pairs": pairs}
    clearly_worse = False
    if RECORD.exists():
        before = json.loads(RECORD.read_text())
        ids = sorted(set(pairs) & set(before["pairs"]))
        a, b = [pairs[i] for i in ids], [before["pairs"][i] for i in ids]
        agreement = paired_interval([x["agrees"] for x in a], [x["agrees"] for x in b])
        ece, ece_low, ece_high = paired_ece_interval(a, b)
        clearly_worse = agreement["high"] < 0
        print(f"\nthe reward-model judge on HH-harmless pairs 600-999 ({len(ids)} pairs in both runs), "
              f"against the record at {before['commit']}\n")
        print(f"| figure | this run ({now['commit']}) | record ({before['commit']}) | difference [paired 95% CI] |\n|---|---|---|---|")
        print("| agreement with the human labels [95% CI] "
              f"| {now['agreement']:.1%} [{now['agreement_low']:.1%}, {now['agreement_high']:.1%}] "
              f"| {before['agreement']:.1%} [{before['agreement_low']:.1%}, {before['agreement_high']:.1%}] "
              f"| {100 * agreement['difference']:+.1f} points [{100 * agreement['low']:+.1f}, {100 * agreement['high']:+.1f}] |")
        print(f"| lift over the best rule that needs no judge | {lift_text(now['lift_over_best_baseline'])} "
              f"| {lift_text(before['lift_over_best_baseline'])} | (as agreement: the rule's labels are the same) |")
        print(f"| expected calibration error | {now['ece']:.3f} | {before['ece']:.3f} | {ece:+.3f} [{ece_low:+.3f}, {ece_high:+.3f}] |")
        print("\nright only in this run: {}; right only in the record: {}".format(
            sum(x["agrees"] > y["agrees"] for x, y in zip(a, b)), sum(x["agrees"] < y["agrees"] for x, y in zip(a, b))))
    else:
        print(f"\nagreement {now['agreement']:.1%} [{now['agreement_low']:.1%}, {now['agreement_high']:.1%}], "
              f"lift {lift_text(now['lift_over_best_baseline'])}, ECE {now['ece']:.3f} (no record to compare with)")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "result.json", now)
    if args.record:
        write_json_atomic(RECORD, now)
        print(f"recorded as {RECORD.relative_to(ROOT)}")
    if clearly_worse:
        raise SystemExit("agreement is clearly lower than the record's: the change costs label quality")


if __name__ == "__main__":
    main()
