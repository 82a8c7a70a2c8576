"""Whether two `rlaif experiment` output directories hold the same results: the same responses,
judgments and report tables, and how far their numbers are apart (log-probabilities, gold
scores, KL estimates, the DPO runs' losses). For a speed change that must not change results.

    python bench/same_outputs.py BEFORE_DIR outputs/compare-demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def largest_difference(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    a, b = (rows(d / "responses.jsonl") for d in (args.before, args.after))
    text = lambda rs: [(r["policy"], r["prompt_id"], r["sample"], r["response"]) for r in rs]
    print(f"responses: {len(a)} and {len(b)}, {'the same' if text(a) == text(b) else 'DIFFERENT'}")
    ja, jb = (rows(d / "judgments.jsonl") for d in (args.before, args.after))
    verdicts = lambda js: [(j["a"], j["b"], j["prompt_id"], j["outcome"]) for j in js]
    print(f"judgments: {len(ja)} and {len(jb)}, outcomes {'the same' if verdicts(ja) == verdicts(jb) else 'DIFFERENT'}")
    tables = lambda d: [line for line in (d / "report.md").read_text().splitlines() if line.startswith("|")]
    print(f"report.md tables: {'the same' if tables(args.before) == tables(args.after) else 'DIFFERENT'}")
    for key in ("logp", "logp_base", "gold_score"):
        print(f"largest difference of {key}: {largest_difference([r[key] for r in a], [r[key] for r in b]):.2g}")
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (args.before, args.after))
    kl = largest_difference(*([m["policies"][p]["kl_to_base"] for p in ma["policies"]] for m in (ma, mb)))
    print(f"largest difference of a KL estimate: {kl:.2g}")
    for run in sorted(d.parent.name for d in args.before.glob("*/eval_results.json")):
        losses = [[r["loss"] for r in rows(d / run / "metrics.jsonl") if "loss" in r] for d in (args.before, args.after)]
        print(f"{run}: largest difference of a step's loss over {len(losses[0])} steps: {largest_difference(*losses):.2g}")


if __name__ == "__main__":
    main()
