"""A PPO run's policy against the reference it started from, on the run's held-out prompts:
several sampled responses per prompt from each, scored by the run's reward model, and the
per-prompt difference with its standard error (a paired comparison, so the prompts' own
spread in score cancels).

Usage: python bench/ppo_paired_eval.py RUN_DIR [--samples 4]
"""

from __future__ import annotations

import argparse
import math
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from rlaif.trainers.config import read_run_config
from rlaif.trainers.ppo import PPOTrainer


def per_prompt_scores(trainer: PPOTrainer, lm, samples: int) -> torch.Tensor:
    """Mean score over `samples` responses to each held-out prompt (seeds 0 … samples − 1)."""
    return torch.stack([trainer.held_out_scores(lm, seed) for seed in range(samples)]).mean(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        trainer = PPOTrainer(replace(read_run_config(args.run), output=scratch, progress=False))
        trainer.setup(str(args.run))
        policy = per_prompt_scores(trainer, trainer.model.lm, args.samples)
        reference = per_prompt_scores(trainer, trainer.reference, args.samples)
    diff = policy - reference
    n = len(diff)
    se = diff.std().item() / math.sqrt(n)
    print(f"### {args.run}: {n} held-out prompts, {args.samples} responses each\n")
    print("| policy | mean score |\n|---|---|")
    print(f"| trained | {policy.mean():.3f} |\n| reference | {reference.mean():.3f} |")
    print(f"| difference (paired) | {diff.mean():+.3f} ± {se:.3f} (standard error); higher for {(diff > 0).sum()} of {n} prompts |")


if __name__ == "__main__":
    main()
