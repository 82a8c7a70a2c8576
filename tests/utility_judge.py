"""A simulated judge that knows each candidate's utility, for measuring ranking strategies.

Each candidate's text carries its utility u ("... (quality +0.734)"), drawn from N(0, 1). Shown
two candidates, the judge answers P(first better) = σ((u_first − u_second) / τ + β + ε): τ its
resolution, β its advantage for whatever it is shown first (position bias), ε ~ N(0, σ²) noise
drawn afresh for every distinct request. Asked to rate one candidate (pointwise), it puts its
label probabilities around 3 + u + ε on the 1-5 scale. The loopback server serves it through
the real `openai` client (`Loopback(verdict_probs=judge)`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

QUALITY = re.compile(r"\(quality ([+-]\d+\.\d+)\)")


@dataclass(frozen=True)
class UtilityJudge:
    tau: float = 0.7
    beta: float = 1.0
    sigma: float = 0.7
    seed: int = 0

    def _noise(self, prompt: str) -> float:
        return random.Random(hashlib.sha256(f"{self.seed}:{prompt}".encode()).hexdigest()).gauss(0.0, self.sigma)

    def __call__(self, prompt: str) -> dict[str, float]:
        found = [float(x) for x in QUALITY.findall(prompt)]
        if len(found) == 1:  # a rating of one candidate
            centre = 3 + found[0] + self._noise(prompt)
            weights = {str(k): math.exp(-((k - centre) ** 2)) for k in range(1, 6)}
            total = sum(weights.values())
            return {k: w / total for k, w in weights.items()}
        first, second = found[-2:]
        p = 1 / (1 + math.exp(-((first - second) / self.tau + self.beta + self._noise(prompt))))
        return {"1": p, "2": 1 - p}


def utility(text) -> float:
    text = text[-1]["content"] if isinstance(text, list) else text
    return float(QUALITY.search(text).group(1))  # type: ignore[union-attr]


def candidate_rows(prompts: int, n: int, seed: int = 0) -> list[dict]:
    """Prompts with n candidates each, every candidate's utility in its text."""
    rng = random.Random(seed)
    return [{"id": f"p{p}", "prompt": f"Question {p}: what should I do?",
             "responses": [f"Answer {k} to question {p} (quality {rng.gauss(0, 1):+.3f})." for k in range(n)]} for p in range(prompts)]


def scores(out: Path, rows: list[dict]) -> dict[str, float]:
    """What a labeling run's written pairs got right, against the true utilities: calls per prompt
    (rankings.jsonl), the share of pairs ordered right, of prompts whose pair is exactly the
    true best against the true worst, and the share of each prompt's best-worst utility gap
    its pair captures (0 for a prompt with no pair), averaged over prompts."""
    truth = {r["id"]: [utility(t) for t in r["responses"]] for r in rows}
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    rankings = [json.loads(line) for line in (out / "rankings.jsonl").read_text().splitlines()]
    gap = dict.fromkeys(truth, 0.0)
    right, exact = [], []
    for row in pairs:
        u = truth[row["id"].rsplit(":", 1)[0]]
        chosen, rejected = utility(row["chosen"]), utility(row["rejected"])
        right.append(chosen > rejected)
        exact.append((chosen, rejected) == (max(u), min(u)))
        gap[row["id"].rsplit(":", 1)[0]] = (chosen - rejected) / (max(u) - min(u))
    return {"calls_per_prompt": mean(r["calls"] for r in rankings), "ordered_right": mean(right), "exactly_best_worst": mean(exact),
            "gap_share": mean(gap.values()), "pairs": len(pairs)}
