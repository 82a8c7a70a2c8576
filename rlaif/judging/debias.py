"""Position debiasing: which orders a pair is shown in, and how the answers combine.

A pair (A, B) judged in both orders gives p1 = P(first better | A first) and
p2 = P(first better | B first). Then P(A ≻ B) = (p1 + (1 − p2)) / 2: a judge that always
prefers whatever it sees first (p1 = p2) lands at exactly 0.5 and decides nothing.
A pointwise judge scores each response alone, so there is no order to debias:
P(A ≻ B) = σ((s_A − s_B) / T).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from rlaif.errors import ConfigError

ORDERINGS = ("both", "random", "none")  # the values of `--debias`: which orders a pair is shown in


def plan_orders(ordering: str, pair_id: str, seed: int = 0) -> list[bool]:
    """The orders to judge a pair in, each as `a_first`: both, one seeded at random, or A first."""
    if ordering == "both":
        return [True, False]
    if ordering == "random":
        return [random.Random(f"{seed}:{pair_id}:order").random() < 0.5]
    if ordering == "none":
        return [True]
    raise ConfigError(f"unknown ordering {ordering!r}: expected one of {', '.join(ORDERINGS)}", key="debias")


def preference_for_a(judgments: Sequence[tuple[bool, float]]) -> float:
    """P(A ≻ B) from (a_first, p_first) judgments: the mean of p_first (A first) and 1 − p_first (B first)."""
    if not judgments:
        raise ValueError("no judgments to combine")
    return sum(p if a_first else 1.0 - p for a_first, p in judgments) / len(judgments)


def consistent(judgments: Sequence[tuple[bool, float]]) -> bool | None:
    """Whether every order picked the same response; None with fewer than two orders."""
    if len(judgments) < 2:
        return None
    picks = {(p > 0.5) == a_first for a_first, p in judgments}  # True means "A was picked"
    ties = any(p == 0.5 for _, p in judgments)
    return len(picks) == 1 and not ties


def calibrated(p: float, temperature: float) -> float:
    """P' = σ(logit(p) / T): a preference made softer (T > 1) or sharper (T < 1), on the same side
    of ½; a hard 0 or 1 stays as it is."""
    if temperature == 1.0 or p in (0.0, 1.0):
        return p
    return pointwise_preference(math.log(p) - math.log1p(-p), 0.0, temperature)


def pointwise_preference(score_a: float, score_b: float, temperature: float = 1.0) -> float:
    """P(A ≻ B) = σ((s_A − s_B) / T) from the two responses' own scores (Bradley–Terry)."""
    z = (score_a - score_b) / temperature
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))  # no overflow either way
