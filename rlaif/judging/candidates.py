"""Ranking each prompt's candidates with a judge: the strategies of `judging.ranking`, asked a
round at a time for many prompts at once (so a local judge batches them and an API judge keeps
its calls in flight), every answer through the answer cache. `rlaif label` (and so `rlaif
iterate`) and GRPO's judge reward rank candidates with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from rlaif.errors import ConfigError
from rlaif.inputs import Example, Pair
from rlaif.judging.base import Verdict
from rlaif.judging.debias import plan_orders, pointwise_preference
from rlaif.judging.engine import JudgeOnce, JudgeSpec, JuryJudgment, PairJudgment, Plan, ask_missing, request_for
from rlaif.judging.ranking import Evidence, bradley_terry, ends, intransitive_triples, minimum_calls, next_asks, written_pairs
from rlaif.judging.rubric import Rubric
from rlaif.storage.cache import AnswerCache, cache_key

CALLS_PER_CANDIDATE = 3  # the adaptive strategy's default budget: 24 calls for 8 candidates, against 56 for every pair


@dataclass(frozen=True)
class RankSettings:
    """How a run ranks candidates: the strategy, the pairs it writes, the calls a prompt may take
    (None: CALLS_PER_CANDIDATE per candidate for `adaptive`, what the strategy needs otherwise),
    and how a comparison is asked."""

    strategy: str = "adaptive"
    pairing: str = "best-worst"
    budget: int | None = None
    debias: str = "both"
    seed: int = 0
    cot: bool = False

    def per_comparison(self, spec: JudgeSpec) -> int:
        """Calls one comparison takes: its orders, or a jury's members' requests (a pointwise
        member scores both responses); for a pointwise judge, the calls of one rating."""
        if spec.pointwise:
            return 1
        members = spec.members or (spec,)
        return sum(2 if m.pointwise else len(plan_orders(self.debias, "")) for m in members)

    def budget_for(self, n: int, spec: JudgeSpec) -> int:
        """The calls a prompt with n candidates may take; a budget below what the strategy needs is an error."""
        need = minimum_calls(n, self.strategy, self.pairing, spec.pointwise, self.per_comparison(spec))
        if self.budget is None:
            return max(need, CALLS_PER_CANDIDATE * n) if self.strategy == "adaptive" else need
        if self.budget < need:
            raise ConfigError(f"--max-calls-per-prompt {self.budget}: ranking {n} candidates with --ranking {self.strategy} "
                              f"and --pairs {self.pairing} takes at least {need} calls", key="max_calls_per_prompt")
        return self.budget


@dataclass
class Ranked:
    """One prompt's candidates ranked. Candidate k is `example.responses[kept[k]]` (the distinct,
    non-empty responses); the judge's evidence, its judgments by pair of candidates and its
    ratings by candidate; the request keys it used (its calls) and what failed; at the end, the
    candidates best first with their scores and standard errors."""

    example: Example
    kept: list[int]
    evidence: Evidence
    budget: int
    judgments: dict[tuple[int, int], PairJudgment | JuryJudgment] = field(default_factory=dict)
    ratings: dict[int, Verdict] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)
    failures: list[dict[str, Any]] = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    errors: list[float | None] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.keys)

    def pair(self, i: int, j: int) -> Pair:
        """Candidates i and j as a pair (A = i), with the human label where the human's pick is one of them."""
        ex = self.example
        a, b = self.kept[i], self.kept[j]
        human = None if ex.human_best not in (a, b) else float(ex.human_best == a)
        return Pair(f"{ex.id}:{a}-{b}", ex.prompt, ex.responses[a], ex.responses[b], human, ex.reference)

    def judgment(self, i: int, j: int, spec: JudgeSpec) -> PairJudgment | JuryJudgment:
        """The evidence for the pair (i, j), i as A: the judge's comparison, or two ratings."""
        if spec.pointwise:
            return PairJudgment([(True, self.ratings[i]), (False, self.ratings[j])], True, spec.temperature, spec.config.calibration)
        if (i, j) in self.judgments:
            return self.judgments[i, j]
        judged = self.judgments[j, i]
        if isinstance(judged, JuryJudgment):
            return JuryJudgment([_swapped(m) for m in judged.members], judged.names, judged.weights, judged.combine, judged.calibration)
        return _swapped(judged)

    def win_shares(self) -> list[float]:
        """Each candidate's mean preference over the others: P(k ≻ j) where the two were
        compared, else σ(score_k − score_j) from the ranking's scores. With every pair compared,
        each candidate's share of the others it beats."""
        n = self.evidence.n
        if n < 2:
            return [0.5] * n
        return [float(np.mean([p if (p := self.evidence.p(k, j)) is not None else pointwise_preference(self.scores[k], self.scores[j])
                               for j in range(n) if j != k])) for k in range(n)]

    def written(self, spec: JudgeSpec, pairing: str) -> tuple[list[tuple[int, int]], int]:
        """The (chosen, rejected) candidates of the pairs to write, and how many pairs the judge left unseparated."""
        return written_pairs(self.evidence, self.order, pairing, spec.pointwise)

    def record(self, settings: RankSettings, written: int, unseparated: int) -> dict[str, Any]:
        """The prompt's line in rankings.jsonl."""
        rank = {c: r + 1 for r, c in enumerate(self.order)}
        met = {k: sum(k in pair for pair in self.evidence.answers) for k in range(self.evidence.n)}
        return {
            "id": self.example.id,
            "strategy": settings.strategy,
            "pairs": settings.pairing,
            "candidates": [{"candidate": self.kept[k], "rank": rank[k], "score": self.scores[k], "se": self.errors[k], "compared": met[k],
                            "response": self.example.responses[self.kept[k]]} for k in self.order],
            "calls": self.calls,
            "budget": self.budget,
            "comparisons": len(self.evidence.answers),
            "intransitive_triples": intransitive_triples(self.evidence),
            "written": written,
            "unseparated": unseparated,
        }


def _swapped(judged: PairJudgment) -> PairJudgment:
    return PairJudgment([(not flag, v) for flag, v in judged.answers], judged.pointwise, judged.temperature, judged.calibration)


def distinct_candidates(ex: Example) -> list[int]:
    """The indices of an example's non-empty responses, each text once."""
    first: dict[str, int] = {}
    for i, response in enumerate(ex.responses):
        if response.strip():
            first.setdefault(response.strip(), i)
    return sorted(first.values())


def rating_plan(pairs: list[Pair], spec: JudgeSpec, rubric: Rubric, cot: bool) -> Plan:
    """The requests rating each pair's response A alone, keyed as pointwise labeling keys them
    (so the two share answers)."""
    plan = Plan(spec, [], [], [], {})
    for pair in pairs:
        request = request_for(pair, True, spec, rubric, cot)
        plan.keys.append([key := cache_key("judge", spec.identity, asdict(request))])
        plan.requests[key] = request
    return plan


def plan_keys(plan: Plan) -> list[list[str]]:
    """Each pair's request keys in a plan (a jury's: every member's)."""
    if plan.members:
        return [[k for keys in each for k in keys] for each in zip(*(plan_keys(m) for m in plan.members))]
    return plan.keys


def every_pair_plan(examples: list[Example], spec: JudgeSpec, rubric: Rubric, settings: RankSettings) -> Plan:
    """The requests of every pair of the examples' candidates (the all-pairs ranking's, asked at once)."""
    states = [Ranked(ex, kept, Evidence(len(kept)), 0) for ex in examples if len(kept := distinct_candidates(ex)) >= 2]
    pairs = [st.pair(i, j) for st in states for i, j in combinations(range(len(st.kept)), 2)]
    return Plan.of(pairs, spec, rubric, settings.debias, settings.seed, settings.cot)


def rank(examples: list[Example], spec: JudgeSpec, rubric: Rubric, settings: RankSettings, cache: AnswerCache, judge: JudgeOnce,
         rating_spec: JudgeSpec | None = None, on_round: Callable[[int], None] = lambda n: None,
         on_answer: Callable[[], None] = lambda: None) -> tuple[list[Ranked], dict[str, Verdict], int]:
    """Rank each example's candidates (examples with fewer than two distinct ones are left out):
    rounds of the strategy's questions for all of them at once, until none has more to ask.
    Returns the rankings, every answer by request key (cached ones too) and the calls made.
    `rating_spec` is the judge in mode pointwise, for the `pointwise` strategy of a run that
    compares; `on_round(n)` hears how many requests a round adds before they are asked."""
    cost = settings.per_comparison(spec)
    states = [Ranked(ex, kept, Evidence(len(kept)), settings.budget_for(len(kept), spec))
              for ex in examples if len(kept := distinct_candidates(ex)) >= 2]
    rater = spec if spec.pointwise else rating_spec
    answers: dict[str, Verdict] = {}
    made = 0
    while True:
        compare: list[tuple[Ranked, tuple[int, int]]] = []
        rate: list[tuple[Ranked, int]] = []
        for st in states:
            for ask in next_asks(st.evidence, settings.strategy, settings.pairing, st.budget, st.calls, spec.pointwise, cost):
                if ask.j is None:
                    rate.append((st, ask.i))
                else:
                    compare.append((st, ask.pair))
        if not compare and not rate:
            break
        if rate and rater is None:
            raise ConfigError(f"--ranking pointwise rates each candidate alone: judge '{spec.name}' cannot "
                              "(a rubric with a rating scale is needed)", key="ranking")
        plans = [Plan.of([st.pair(i, j) for st, (i, j) in compare], spec, rubric, settings.debias, settings.seed, settings.cot)]
        if rate:
            plans.append(rating_plan([st.pair(i, i) for st, i in rate], rater, rubric, settings.cot))  # type: ignore[arg-type]
        for (st, _), keys in zip(compare + rate, [k for plan in plans for k in plan_keys(plan)]):  # type: ignore[operator]
            st.keys.update(keys)
        on_round(len({k for plan in plans for k in plan.requests} - answers.keys()))
        for plan in plans:
            found = {**plan.cached(cache), **{k: answers[k] for k in plan.requests if k in answers}}
            made += ask_missing(judge, plan, found, cache, on_answer)
            answers.update(found)
        for (st, (i, j)), judged in zip(compare, plans[0].judgments(answers)):
            _record_comparison(st, i, j, judged)
        for (st, i), keys in zip(rate, plans[-1].keys if rate else []):
            _record_rating(st, i, answers[keys[0]])
    for st in states:
        _finish(st, settings.strategy, spec.pointwise)
    return states, answers, made


def _record_comparison(st: Ranked, i: int, j: int, judged: PairJudgment | JuryJudgment) -> None:
    """Add a comparison's answers to a ranking's evidence, or its failure."""
    if judged.failed:
        st.evidence.failed.add((i, j))
        st.failures += [{"id": st.pair(i, j).id, **record} for record in judged.failure_records()]
        return
    st.judgments[i, j] = judged
    if isinstance(judged, PairJudgment) and not judged.pointwise:
        st.evidence.answers[i, j] = [(i if a_first else j, v.p_first) for a_first, v in judged.answers]  # type: ignore[misc]
    else:  # a jury's comparison enters as its panel's preference, the same from either side
        st.evidence.answers[i, j] = [(i, judged.p_a), (j, 1.0 - judged.p_a)]


def _record_rating(st: Ranked, i: int, verdict: Verdict) -> None:
    if verdict.score is None:
        st.evidence.unrated.add(i)
        st.failures.append({"id": f"{st.example.id}:{st.kept[i]}", "response": "a", "error": verdict.error, "text": verdict.text})
    else:
        st.evidence.ratings[i] = verdict.score
        st.ratings[i] = verdict


def _finish(st: Ranked, strategy: str, pointwise_judge: bool) -> None:
    """The candidates best first, with their scores (a pointwise judge's own, else the
    Bradley–Terry fit's θ) and standard errors (none for a pointwise judge)."""
    st.order = ends(st.evidence, strategy, pointwise_judge)
    if pointwise_judge:
        st.scores = [st.evidence.ratings.get(k, float("nan")) for k in range(st.evidence.n)]
        st.errors = [None] * st.evidence.n
        return
    theta, cov = bradley_terry(st.evidence)
    st.scores = [float(x) for x in theta]
    st.errors = [float(x) for x in np.sqrt(np.diag(cov))]
