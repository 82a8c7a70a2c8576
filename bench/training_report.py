"""Summarise training runs for docs/benchmarks.md, each beside a simple peer.

- rm: held-out pairwise accuracy, beside the length heuristics on the same held-out pairs
  (the shorter response wins; the longer wins) and chance.
- dpo: loss, rewards/accuracies and rewards/margins averaged over each quarter of the steps.
- ppo: score and KL averaged over each quarter of the steps, and the held-out mean score of
  the trained policy beside the reference it started from.
- with --eval-steps: the held-out metrics at each evaluated step.

Usage: python bench/training_report.py [--rm DIR] [--dpo DIR ...] [--ppo DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlaif.trainers.config import TrainConfig
from rlaif.trainers.pairs import train_eval_pairs


def is_eval(row: dict) -> bool:
    return any(k.startswith("eval/") for k in row)


def read_metrics(run: Path) -> tuple[list[dict], list[dict], dict]:
    """The training steps' rows, the --eval-steps rows, and the final held-out results."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = json.loads((run / "eval_results.json").read_text()) if (run / "eval_results.json").exists() else {}
    return [r for r in rows if not is_eval(r)], [r for r in rows if is_eval(r)], evals


def eval_table(rows: list[dict]) -> None:
    """The held-out metrics at each evaluated step, when the run had --eval-steps."""
    if len(rows) > 1:
        keys = [k for k in rows[-1] if k != "step"]
        print("\n| step | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
        print("\n".join(f"| {r['step']} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for r in rows))


def quarters(rows: list[dict], keys: list[str]) -> list[str]:
    """Markdown table rows: the mean of each key over each quarter of the steps."""
    out = []
    n = len(rows)
    for q in range(4):
        chunk = rows[q * n // 4:(q + 1) * n // 4]
        if chunk:
            means = [sum(r[k] for r in chunk) / len(chunk) for k in keys]
            out.append(f"| {chunk[0]['step']}–{chunk[-1]['step']} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return out


def reward_model(run: Path) -> None:
    config = TrainConfig(**{**json.loads((run / "train_config.json").read_text()), "progress": False})
    _, held = train_eval_pairs(config)
    *_, evals = read_metrics(run)
    shorter = sum(len(p.chosen) < len(p.rejected) for p in held) / len(held)
    longer = sum(len(p.chosen) > len(p.rejected) for p in held) / len(held)
    print(f"### rm: {run} ({len(held)} held-out pairs)\n")
    print("| predictor | held-out pairwise accuracy |\n|---|---|")
    print(f"| reward model | {evals['eval/accuracy']:.1%} |")
    print(f"| the shorter response wins | {shorter:.1%} |")
    print(f"| the longer response wins | {longer:.1%} |")
    print("| chance | 50.0% |\n")


def step_table(run: Path, method: str, keys: list[str]) -> dict:
    """Print the quarter means of a run's step metrics; returns its held-out results."""
    rows, eval_rows, evals = read_metrics(run)
    print(f"### {method}: {run}\n")
    print("| steps | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    print("\n".join(quarters(rows, keys)))
    eval_table(eval_rows)
    return evals


def dpo(run: Path) -> None:
    evals = step_table(run, "dpo", ["loss", "rewards/accuracies", "rewards/margins"])
    if evals:
        print("\nheld out: " + ", ".join(f"{k} {v:.3f}" for k, v in evals.items()))
    print()


def ppo(run: Path) -> None:
    evals = step_table(run, "ppo", ["score", "kl", "response_length"])
    if evals:
        print(f"\nheld out: trained policy {evals['eval/score']:.3f}, reference {evals['eval/reference_score']:.3f}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rm", type=Path)
    parser.add_argument("--dpo", type=Path, action="append", default=[])
    parser.add_argument("--ppo", type=Path)
    args = parser.parse_args()
    if args.rm:
        reward_model(args.rm)
    for run in args.dpo:
        dpo(run)
    if args.ppo:
        ppo(args.ppo)


if __name__ == "__main__":
    main()
