"""The estimators behind `rlaif compare`, each a small pure function with its formula.

An *outcome* is one judged comparison of a policy's response against the reference's,
from the policy's side: 1 a win, 0 a loss, ½ a tie. Comparisons are grouped by prompt, and
intervals are taken over prompts (the unit that was sampled), not over responses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import mean, stdev

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def outcome(p_policy: float, consistent: bool | None) -> float:
    """A debiased judgment as win (1), loss (0) or tie (½): a pair judged in both orders whose
    orders disagree is a tie (as MT-Bench counts it), as is p = ½; otherwise the side with
    p(policy ≻ reference) above ½ wins."""
    if consistent is False or p_policy == 0.5:
        return 0.5
    return 1.0 if p_policy > 0.5 else 0.0


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and its 95% normal interval, mean ± 1.96 · s / √n (s the sample standard deviation)."""
    m = mean(values)
    half = Z95 * stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return m, m - half, m + half


def win_rate(outcomes_by_prompt: Sequence[Sequence[float]]) -> dict[str, float]:
    """Win rate with ties counted half: the mean over prompts of each prompt's mean outcome,
    with its 95% interval over prompts (clipped to [0, 1]), and the share of ties."""
    per_prompt = [mean(o) for o in outcomes_by_prompt]
    m, low, high = mean_interval(per_prompt)
    flat = [x for o in outcomes_by_prompt for x in o]
    return {"win_rate": m, "low": max(0.0, low), "high": min(1.0, high),
            "ties": sum(x == 0.5 for x in flat) / len(flat), "prompts": len(per_prompt)}


def length_controlled_win_rate(outcomes: Sequence[float], length_differences: Sequence[float]) -> float | None:
    """alpaca_eval's idea: fit P(win) = σ(a + b · tanh(Δ / sd(Δ))) on the length difference Δ
    (policy − reference) by logistic regression with the outcomes as soft targets, and report
    σ(a), the win rate the fit predicts at Δ = 0. None when the lengths never differ.

    A tie counts as half a win and half a loss (two weighted rows), so a fit on outcomes that
    do not depend on length gives back the plain win rate.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    deltas = np.asarray(length_differences, dtype=float)
    spread = deltas.std()
    if spread == 0:
        return None
    if len(set(outcomes)) == 1:
        return float(outcomes[0])  # the fit's limit (an all-win or all-loss fit never converges)
    y = np.asarray(outcomes, dtype=float)
    x = np.tanh(deltas / spread)[:, None]
    fit = LogisticRegression(C=np.inf).fit(  # no penalty: a plain maximum-likelihood fit
        np.concatenate([x, x]), np.concatenate([np.ones_like(y), np.zeros_like(y)]), sample_weight=np.concatenate([y, 1 - y]),
    )
    return float(1 / (1 + math.exp(-fit.intercept_[0])))


def paired_difference(policy: Sequence[float], reference: Sequence[float]) -> dict[str, float]:
    """Mean of the per-prompt differences d_i = policy_i − reference_i and its standard error
    s_d / √n (a paired comparison: the prompts' own spread cancels)."""
    diffs = [p - r for p, r in zip(policy, reference, strict=True)]
    se = stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    return {"difference": mean(diffs), "se": se}


def paired_interval(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """The mean paired difference of a and b on the same items, with its 95% normal interval
    d̄ ± 1.96 · s_d / √n: how much a beats b, and how sure that is."""
    d = paired_difference(a, b)
    half = Z95 * d["se"]
    return {"difference": d["difference"], "low": d["difference"] - half, "high": d["difference"] + half}


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[float],
                               bins: int = 5) -> tuple[float, list[dict[str, float]]]:
    """ECE = Σ_b (n_b / n) · |acc_b − conf_b| over equal-width bins of the confidence in [0.5, 1]
    (a preference's confidence is max(p, 1 − p)); returns it and the bins (their mean confidence,
    accuracy and count: the reliability diagram's points)."""
    edges = [0.5 + 0.5 * i / bins for i in range(bins + 1)]
    table = []
    for i in range(bins):
        members = [(c, k) for c, k in zip(confidence, correct, strict=True) if edges[i] <= c < edges[i + 1] or (i == bins - 1 and c == 1.0)]
        if members:
            table.append({"low": edges[i], "high": edges[i + 1], "confidence": mean(c for c, _ in members),
                          "accuracy": mean(k for _, k in members), "n": len(members)})
    n = sum(b["n"] for b in table)
    return sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in table), table


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion successes / n."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return centre - half, centre + half


def distinct_n(texts: Sequence[str], n: int = 2) -> float | None:
    """distinct-n: distinct word n-grams over all n-grams in `texts` (Li et al., 2016)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def cohen_kappa(pairs: Iterable[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' binary labels: (p_o − p_e) / (1 − p_e)."""
    pairs = list(pairs)
    if not pairs:
        return None
    n = len(pairs)
    p_o = sum(x == y for x, y in pairs) / n
    x1 = sum(x for x, _ in pairs) / n
    y1 = sum(y for _, y in pairs) / n
    p_e = x1 * y1 + (1 - x1) * (1 - y1)
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def fleiss_kappa(votes: Sequence[Sequence[bool]]) -> float | None:
    """Fleiss' kappa of n raters' binary votes on each item (every item rated by all n ≥ 2):
    κ = (P̄ − P̄_e) / (1 − P̄_e), where P_i = (Σ_j n_ij² − n) / (n(n − 1)) is item i's share of
    agreeing rater pairs, P̄ their mean, and P̄_e = Σ_j p_j² with p_j the share of all votes for
    category j. 1: unanimous beyond chance; 0: agreement at chance. None without items, or
    when every vote went one way (chance agreement is then 1 and κ undefined)."""
    if not votes:
        return None
    n = len(votes[0])
    if n < 2 or any(len(v) != n for v in votes):
        raise ValueError("Fleiss' kappa needs the same number (2 or more) of votes on every item")
    yes = [sum(v) for v in votes]
    p_bar = mean((k * k + (n - k) ** 2 - n) / (n * (n - 1)) for k in yes)
    p_yes = sum(yes) / (n * len(votes))
    p_e = p_yes**2 + (1 - p_yes) ** 2
    return None if p_e == 1 else (p_bar - p_e) / (1 - p_e)
