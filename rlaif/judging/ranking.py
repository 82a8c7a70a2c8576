"""Ranking a prompt's candidates with a judge, within a call budget, and the pairs a ranking gives.

Preference data is made by sampling N candidates per prompt and keeping the best against the
worst. Judging every pair in both orders costs N(N − 1) calls (56 for N = 8); a strategy here
chooses which questions to ask, a round at a time, from what the answers so far say:

- `adaptive` (the default): the tournament's first round, then, a round at a time, for each end
  the two candidates not yet compared that are together the likeliest to hold it, by a
  Bradley–Terry fit of every answer so far (with the judge's first-position advantage as a
  parameter of its own), until the budget is spent or both ends are settled.
- `tournament`: a knockout for the best and one for the worst that share their first round
  (⌈3N/2⌉ − 2 comparisons).
- `pointwise`: a rating of each candidate alone (N calls; the judge in mode pointwise).
- `all-pairs`: every pair, N(N − 1) calls in both orders.

A pair that is written is one the judge compared directly (asked last where the strategy did not
compare it), and only if its orders agree, so its soft label is the judge's own; a judge that
answers pointwise only (a reward model) scores each candidate once and its comparisons follow
from the scores. Every strategy is a pure function of the answers so far: a rerun asks the same
questions and finds their answers in the cache, and a larger budget goes on from there.
docs/benchmarks.md#ranked-candidates measures the strategies against each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

STRATEGIES = ("adaptive", "tournament", "pointwise", "all-pairs")
PAIRINGS = ("best-worst", "best-rest", "all")
PRIOR_SD = 3.0  # θ's prior spread around the ratings (or 0): wide, since how far ratings predict comparisons varies by judge
SETTLED = 0.001  # an end is settled when no two candidates not yet compared hold it with more than this joint probability
DRAWS = 2000  # draws from the fit's posterior that estimate which candidate is the best and the worst


@dataclass
class Evidence:
    """What the judge has said about one prompt's N candidates: pointwise ratings, and the
    answers of each pair compared (i < j): per order, which candidate was shown first and
    P(first better). Questions that got no verdict are kept apart, so they are not asked again."""

    n: int
    ratings: dict[int, float] = field(default_factory=dict)
    answers: dict[tuple[int, int], list[tuple[int, float]]] = field(default_factory=dict)
    failed: set[tuple[int, int]] = field(default_factory=set)  # comparisons with no verdict
    unrated: set[int] = field(default_factory=set)  # ratings with no verdict

    def p(self, i: int, j: int) -> float | None:
        """P(i ≻ j), debiased over the orders asked (their mean, as `judging.debias`), where compared."""
        found = self.answers.get((min(i, j), max(i, j)))
        if not found:
            return None
        return sum(p if first == i else 1.0 - p for first, p in found) / len(found)

    def consistent(self, i: int, j: int) -> bool:
        """Whether every order picked the same candidate, none of them undecided."""
        found = self.answers[min(i, j), max(i, j)]
        return len({first if p > 0.5 else i + j - first for first, p in found}) == 1 and all(p != 0.5 for _, p in found)

    def compared(self, i: int, j: int) -> bool:
        """Whether the pair has been asked (answered or failed)."""
        return (min(i, j), max(i, j)) in self.answers or (min(i, j), max(i, j)) in self.failed

    def to_rate(self) -> list[int]:
        return [i for i in range(self.n) if i not in self.ratings and i not in self.unrated]


@dataclass(frozen=True)
class Ask:
    """One question about a prompt's candidates: rate candidate i alone (j None), or compare i and j."""

    i: int
    j: int | None = None

    @property
    def pair(self) -> tuple[int, int]:
        assert self.j is not None
        return min(self.i, self.j), max(self.i, self.j)


def bradley_terry(ev: Evidence) -> tuple[np.ndarray, np.ndarray]:
    """θ and its covariance: the maximum a posteriori fit of every answer, P(first better) =
    σ(θ_first − θ_second + β), with β the judge's advantage for whatever it is shown first, so
    that each order counts for what it says once its position bias is taken out. Priors:
    θ_i ~ N(m_i, s²), m_i the candidate's rating less the mean rating where every candidate is
    rated (a rating point taken as a logit), else 0, s = PRIOR_SD; β ~ N(0, 1). Newton's method on
        L = Σ_answers [p log σ(z) + (1 − p) log σ(−z)] − Σ_i (θ_i − m_i)² / 2s² − β² / 2,
    z = θ_first − θ_second + β; the covariance of θ is the θ block of H⁻¹, the inverse of the
    negative Hessian at the optimum (Laplace)."""
    n = ev.n
    ratings = np.array([ev.ratings[i] for i in range(n)]) if len(ev.ratings) == n else np.zeros(n)
    m = np.append(ratings - ratings.mean(), 0.0)  # θ's prior means, then β's
    precision = np.append(np.full(n, 1 / PRIOR_SD**2), 1.0)
    calls = [(first, j if first == i else i, p) for (i, j), found in ev.answers.items() for first, p in found]
    x = m.copy()
    for _ in range(100):
        grad, hess = -(x - m) * precision, np.diag(precision)
        for first, second, p in calls:
            q = 1.0 / (1.0 + math.exp(-(x[first] - x[second] + x[n])))
            g = np.zeros(n + 1)
            g[[first, second, n]] = 1.0, -1.0, 1.0
            grad += (p - q) * g
            hess += q * (1.0 - q) * np.outer(g, g)
        step = np.linalg.solve(hess, grad)
        x = x + step
        if np.abs(step).max() < 1e-8:
            break
    return x[:n], np.linalg.inv(hess)[:n, :n]


def order(theta: np.ndarray) -> list[int]:
    """Candidates best first (ties to the lower index)."""
    return sorted(range(len(theta)), key=lambda i: (-theta[i], i))


def knockout(ev: Evidence, players: list[int], top: bool) -> tuple[list[Ask], int | None]:
    """The next round of a knockout among `players` for the best (or the worst): the comparisons
    still to ask, or the winner once every round is decided. A round pairs the survivors in
    order; an odd one out goes through."""
    while len(players) > 1:
        asks, survivors = [], []
        for a, b in zip(players[0::2], players[1::2]):
            if not ev.compared(a, b):
                asks.append(Ask(a, b))
            else:
                p = ev.p(a, b)  # None where the judge gave no verdict: the first goes through
                survivors.append(a if p is None or (p >= 0.5) == top else b)
        if asks:
            return asks, None
        players = survivors + ([players[-1]] if len(players) % 2 else [])
    return [], players[0]


def tournament_asks(ev: Evidence) -> tuple[list[Ask], tuple[int, int] | None]:
    """The tournament's next comparisons, or its (best, worst) once decided: a first round of
    ⌊N/2⌋ pairs, then the winners' knockout for the best and the losers' for the worst."""
    first_round = [(a, a + 1) for a in range(0, ev.n - 1, 2)]
    if asks := [Ask(a, b) for a, b in first_round if not ev.compared(a, b)]:
        return asks, None
    winners = [a if (p := ev.p(a, b)) is None or p >= 0.5 else b for a, b in first_round]
    losers = [b if w == a else a for (a, b), w in zip(first_round, winners)]
    if ev.n % 2:
        winners.append(ev.n - 1)
        losers.append(ev.n - 1)
    top_asks, best = knockout(ev, winners, True)
    bottom_asks, worst = knockout(ev, losers, False)
    if top_asks or bottom_asks:
        return top_asks + bottom_asks, None
    return [], (best, worst)  # type: ignore[return-value]


def adaptive_asks(ev: Evidence, comparisons_left: int) -> list[Ask]:
    """The adaptive strategy's next round: the tournament's first round, then, for each end, the
    two candidates not yet compared that are together the likeliest to hold it (the product of
    their probabilities of being the best, or the worst, under the fit), while that product is
    above SETTLED; at most `comparisons_left` comparisons."""
    if not ev.answers:
        return tournament_asks(ev)[0]
    theta, cov = bradley_terry(ev)
    draws = np.random.default_rng(0).multivariate_normal(theta, cov, size=DRAWS, method="cholesky")
    asks: list[Ask] = []
    for holds in (np.bincount(draws.argmax(1), minlength=ev.n) / DRAWS, np.bincount(draws.argmin(1), minlength=ev.n) / DRAWS):
        open_pairs = [(holds[i] * holds[j], i, j) for i, j in combinations(range(ev.n), 2)
                      if not ev.compared(i, j) and Ask(i, j) not in asks]
        if open_pairs and len(asks) < comparisons_left:
            chance, i, j = max(open_pairs)
            if chance > SETTLED:
                asks.append(Ask(i, j))
    return asks


def ends(ev: Evidence, strategy: str, pointwise_judge: bool) -> list[int]:
    """The candidates best first, by what the strategy decided: a pointwise judge's scores (those
    it could not score last), the knockouts' winners at the two ends of a finished tournament,
    else the Bradley–Terry fit."""
    if pointwise_judge:
        return sorted(range(ev.n), key=lambda i: (i not in ev.ratings, -ev.ratings.get(i, 0.0), i))
    ranked = order(bradley_terry(ev)[0])
    if strategy == "tournament":
        _, decided = tournament_asks(ev)
        if decided is not None and decided[0] != decided[1]:
            best, worst = decided
            return [best, *[i for i in ranked if i not in decided], worst]
    return ranked


def chosen_pairs(ranked: list[int], pairing: str) -> list[tuple[int, int]]:
    """The (better, worse) candidates a ranking gives: the best against the worst, the best
    against each of the rest, or every pair (ordered later by its own comparison)."""
    if pairing == "best-worst":
        return [(ranked[0], ranked[-1])]
    if pairing == "best-rest":
        return [(ranked[0], k) for k in ranked[1:]]
    return [(i, j) for i, j in combinations(sorted(ranked), 2)]


def written_pairs(ev: Evidence, ranked: list[int], pairing: str, pointwise_judge: bool) -> tuple[list[tuple[int, int]], int]:
    """The (chosen, rejected) pairs to write, and how many pairs the pairing asked for were left
    out because the judge did not separate them (compared in orders that agree, or for a
    pointwise judge two different scores). best-worst takes, of the separated pairs, the one
    furthest apart in the ranking: the best against the worst whenever those two were
    separated; best-rest the best against each other one it separated; all every pair compared,
    each labeled by its own comparison whatever its orders say (`--drop-inconsistent` filters)."""
    rank = {c: r for r, c in enumerate(ranked)}

    def separated(a: int, b: int) -> bool:
        if pointwise_judge:
            return a in ev.ratings and b in ev.ratings and ev.ratings[a] != ev.ratings[b]
        return (min(a, b), max(a, b)) in ev.answers and ev.consistent(a, b)

    def oriented(a: int, b: int) -> tuple[int, int]:  # as the written row orders them: the lower index wins a tie
        lo, hi = min(a, b), max(a, b)
        lo_wins = (ev.ratings[lo] >= ev.ratings[hi]) if pointwise_judge else ev.p(lo, hi) >= 0.5  # type: ignore[operator]
        return (lo, hi) if lo_wins else (hi, lo)

    if pairing == "all":  # every pair by its own comparison, separated or not, as a row of two candidates is labeled
        compared = [(a, b) for a, b in combinations(sorted(ranked), 2)
                    if (a, b) in ev.answers or (pointwise_judge and a in ev.ratings and b in ev.ratings)]
        return [oriented(a, b) for a, b in compared], 0
    if pairing == "best-worst":
        found = [(rank[b] - rank[a], a, b) for a, b in combinations(ranked, 2) if separated(a, b)]
        if not found:
            return [], 1
        _, a, b = max(found)
        return [oriented(a, b)], 0
    wanted = chosen_pairs(ranked, pairing)
    kept = [oriented(a, b) for a, b in wanted if separated(a, b)]
    return kept, len(wanted) - len(kept)


def next_asks(ev: Evidence, strategy: str, pairing: str, budget: int, calls: int, pointwise_judge: bool,
              per_comparison: int = 2) -> list[Ask]:
    """What to ask next about one prompt's candidates (empty: done), `calls` of `budget` spent
    and a comparison costing `per_comparison` calls (a rating one). The pairs to be written are
    compared last where the strategy did not compare them, while the budget lasts."""
    if pointwise_judge:
        return [Ask(i) for i in ev.to_rate()]
    if strategy == "all-pairs" or pairing == "all":
        return [Ask(i, j) for i, j in combinations(range(ev.n), 2) if not ev.compared(i, j)]
    if strategy == "pointwise":
        asks = [Ask(i) for i in ev.to_rate()] if not ev.answers else []
    elif strategy == "tournament":
        asks = tournament_asks(ev)[0]
    else:
        written = per_comparison * len(chosen_pairs(list(range(ev.n)), pairing))  # kept for the written pairs' own comparisons
        asks = adaptive_asks(ev, (budget - calls - written) // per_comparison)
    if asks:
        return asks
    confirm = [Ask(a, b) for a, b in chosen_pairs(ends(ev, strategy, False), pairing) if not ev.compared(a, b)]
    return confirm if calls + per_comparison * len(confirm) <= budget else []


def minimum_calls(n: int, strategy: str, pairing: str, pointwise_judge: bool, per_comparison: int = 2) -> int:
    """The calls a strategy needs for N candidates, a comparison costing `per_comparison`: a smaller budget is refused."""
    if pointwise_judge:
        return n
    if strategy == "all-pairs" or pairing == "all":
        return per_comparison * n * (n - 1) // 2
    written = per_comparison * len(chosen_pairs(list(range(n)), pairing))
    if strategy == "tournament":
        return per_comparison * (math.ceil(3 * n / 2) - 2) + written
    return (n if strategy == "pointwise" else per_comparison * (n // 2)) + written


def intransitive_triples(ev: Evidence) -> int:
    """Triples of candidates, every pair of them compared, whose preferences go round in a cycle."""
    count = 0
    for i, j, k in combinations(range(ev.n), 3):
        p = [ev.p(i, j), ev.p(j, k), ev.p(i, k)]
        if None in p or 0.5 in p:
            continue
        ij, jk, ik = (x > 0.5 for x in p)  # type: ignore[operator]
        count += (ij and jk and not ik) or (not ij and not jk and ik)
    return count
