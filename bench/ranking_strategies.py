"""Which ranking strategy buys the most correct best-worst pairs per judge call.

N candidates for each of P prompts, each with a known utility, judged through `rlaif label` and
the real `openai` client by a loopback server that answers from those utilities with a position
bias and noise (tests/utility_judge.py), at three judge strengths. For every strategy: the calls
per prompt, the share of written pairs ordered right, the share of prompts whose pair is exactly
the true best against the true worst, and the share of each prompt's best-worst utility gap its
pair captures (0 where it wrote none), averaged over prompts; and how often the judge preferred
whatever it was shown first, over every call of the all-pairs run.

Usage: python bench/ranking_strategies.py [--prompts 200] [--candidates 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rlaif.judging.ranking import STRATEGIES
from rlaif.labeling.run import LabelConfig, label
from tests.conftest import write_jsonl
from tests.loopback import Loopback
from tests.utility_judge import UtilityJudge, candidate_rows, scores

JUDGES = {  # name: (τ, β, σ)
    "strong": UtilityJudge(tau=0.5, beta=0.5, sigma=0.5),
    "moderate (the test's)": UtilityJudge(tau=0.7, beta=1.0, sigma=0.7),
    "weak": UtilityJudge(tau=1.0, beta=1.0, sigma=0.7),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--candidates", type=int, default=8)
    args = parser.parse_args()
    rows = candidate_rows(args.prompts, args.candidates)
    print(f"{args.prompts} prompts, {args.candidates} candidates each, --pairs best-worst\n")
    print("| judge (τ, β, σ) | first-position rate | strategy | calls per prompt | pairs ordered right "
          "| exactly the true best vs the true worst | share of the best-worst gap captured |\n|---|---|---|---|---|---|---|")
    for name, judge in JUDGES.items():
        with tempfile.TemporaryDirectory() as tmp, Loopback(verdict_probs=judge) as srv:
            data = str(write_jsonl(Path(tmp) / "candidates.jsonl", rows))
            config = Path(tmp) / "judge.toml"
            config.write_text('backend = "openai"\nmodel = "utility"\n[options]\n'
                              f'base_url = "{srv.url}/v1"\napi_key_env = ""\nconcurrency = 16\n')
            bias = None
            for strategy in ("all-pairs", *[s for s in STRATEGIES if s != "all-pairs"]):
                out = Path(tmp) / strategy
                manifest = label(LabelConfig(data, str(out), judge=str(config), ranking=strategy, progress=False)).manifest
                bias = bias or f"{manifest['first_position_rate']['raw']:.0%}"  # over every call of the all-pairs run
                s = scores(out, rows)
                print(f"| {name}: {judge.tau}, {judge.beta}, {judge.sigma} | {bias} | `{strategy}` | {s['calls_per_prompt']:.1f} "
                      f"| {s['ordered_right']:.1%} | {s['exactly_best_worst']:.1%} | {s['gap_share']:.1%} |", flush=True)


if __name__ == "__main__":
    main()
