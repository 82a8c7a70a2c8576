"""The pair-judging engine that `rlaif label`, `rlaif compare` and GRPO's judge reward share.

A `JudgeSpec` is a judge as a run uses it, worked out once from its config. A `Plan` turns
pairs into the judge requests their orders (or, pointwise, their responses) need, keyed for
the answer cache; the answers come from the cache or from the judge, and become one
`PairJudgment` per pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rlaif.errors import ConfigError
from rlaif.inputs import Pair
from rlaif.judging.base import MODES, Judge, JudgeConfig, JudgeConfigError, JudgeFatalError, JudgeRequest, Verdict
from rlaif.judging.configs import judge_class, load_judge_config
from rlaif.judging.debias import calibrated, consistent, plan_orders, pointwise_preference, preference_for_a
from rlaif.judging.jury import combine_preferences, is_jury, parse_jury, public_options
from rlaif.judging.rubric import DEFAULT_RUBRIC, Rubric, load_rubric
from rlaif.storage.cache import AnswerCache, cache_key


@dataclass(frozen=True)
class JudgeSpec:
    """A judge as a run uses it, worked out once from its config and checked before any work:
    its backend class, parsed options, identity (half of every cache key), mode and the
    temperature that turns two pointwise scores into a preference. A jury (mode "jury") has
    no backend of its own but its members' specs, their weights and its combine rule."""

    config: JudgeConfig
    backend: type[Judge] | None
    options: Any
    identity: dict[str, Any]
    mode: str
    temperature: float
    members: tuple[JudgeSpec, ...] = ()
    weights: tuple[float, ...] = ()

    @classmethod
    def build(cls, judge: str | Path | JudgeConfig, rubric: Rubric, mode: str | None = None, concurrency: int | None = None) -> JudgeSpec:
        """The spec of a judge (a built-in name, a config file or a `JudgeConfig`) in `mode`
        (default: its config's `mode`, else the backend's first); `concurrency` overrides an API judge's."""
        config = judge if isinstance(judge, JudgeConfig) else load_judge_config(judge)
        mode = mode or config.mode
        if is_jury(config):
            return cls.jury(config, rubric, mode, concurrency)
        backend = judge_class(config)
        if concurrency is not None:
            if "concurrency" not in {f.name for f in fields(backend.Options)}:
                raise ConfigError(f"--concurrency applies to API judges; judge '{config.name}' (backend {config.backend}) "
                                  "has no calls in flight to count")
            config = replace(config, options={**config.options, "concurrency": concurrency})
        options = backend.parse_options(config)
        return cls(config, backend, options, backend.identity(config), resolve_mode(mode, backend, rubric),
                   backend.score_temperature(options))

    @classmethod
    def jury(cls, config: JudgeConfig, rubric: Rubric, mode: str | None, concurrency: int | None) -> JudgeSpec:
        """The spec of a jury config: each member's spec (in its own mode, else `mode`)."""
        if concurrency is not None:
            raise ConfigError(f"{config.source}: --concurrency does not apply to a jury: set `concurrency` in its API members' own configs")
        jury = parse_jury(config)
        members = []
        for i, m in enumerate(jury.members):
            member = load_judge_config(m.judge)
            if is_jury(member):
                raise JudgeConfigError(f"{config.source}: key 'options.members[{i}]': {m.judge}: a jury's member is one judge, not a jury")
            # The run's mode where the member can answer in it (a reward model answers pointwise only).
            members.append(cls.build(member, rubric, m.mode or (mode if mode in judge_class(member).MODES else None)))
        weights = tuple(m.weight for m in jury.members)
        config = replace(config, options=public_options(jury, [s.mode for s in members]))
        identity = {"backend": config.backend, "combine": jury.combine,
                    "members": [{"judge": m.identity, "mode": m.mode, "weight": w} for m, w in zip(members, weights)]}
        return cls(config, None, jury.combine, identity, "jury", 1.0, tuple(members), weights)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pointwise(self) -> bool:
        return self.mode == "pointwise"

    @property
    def reads_rubric(self) -> bool:
        """Whether the judge (any member of a jury) reads the rendered rubric."""
        return any(m.reads_rubric for m in self.members) if self.members else self.backend.READS_RUBRIC  # type: ignore[union-attr]

    def completion_budget(self, cot: bool) -> int:
        """The most tokens one answer may generate (a jury's: its most generous member's)."""
        if self.members:
            return max(m.completion_budget(cot) for m in self.members)
        return self.backend.completion_budget(self.options, cot)  # type: ignore[union-attr]

    def load(self) -> Judge:
        return self.backend(self.config)  # type: ignore[misc]


@dataclass
class PairJudgment:
    """A pair's answers from the judge. Pairwise: (a_first, verdict) for each order it was shown
    in. Pointwise: (True, A's score) and (False, B's score), turned into a preference with
    temperature T."""

    answers: list[tuple[bool, Verdict]]
    pointwise: bool = False
    temperature: float = 1.0
    calibration: float = 1.0  # the judge config's calibration temperature (`rlaif calibrate`)

    @property
    def failed(self) -> list[tuple[bool, Verdict]]:
        return [(flag, v) for flag, v in self.answers if v.value is None]

    @property
    def p_a(self) -> float:
        """P(A ≻ B)."""
        if self.pointwise:
            (_, a), (_, b) = self.answers
            return pointwise_preference(a.score, b.score, self.temperature * self.calibration)  # type: ignore[arg-type]
        return calibrated(preference_for_a([(a_first, v.p_first) for a_first, v in self.answers]), self.calibration)  # type: ignore[misc]

    @property
    def consistent(self) -> bool | None:
        """Whether both orders picked the same response; None pointwise (there is no order)."""
        return None if self.pointwise else consistent([(a_first, v.p_first) for a_first, v in self.answers])  # type: ignore[misc]

    def failure_records(self) -> list[dict[str, Any]]:
        """What failed, for failures.jsonl: the order (or response) and the judge's error and reply."""
        return [({"response": "a" if flag else "b"} if self.pointwise else {"order": "a_first" if flag else "b_first"})
                | {"error": v.error, "text": v.text} for flag, v in self.failed]


@dataclass
class JuryJudgment:
    """A pair's judgments by each member of a jury, and the panel's P(A ≻ B) from them."""

    members: list[PairJudgment]
    names: tuple[str, ...]
    weights: tuple[float, ...]
    combine: str
    calibration: float = 1.0  # the jury config's own, fitted by `rlaif calibrate` on the panel's preferences
    pointwise = False

    @property
    def failed(self) -> list[tuple[bool, Verdict]]:
        """Every member's failed answers: the pair has no panel preference when any member has none."""
        return [f for m in self.members for f in m.failed]

    @property
    def p_a(self) -> float:
        return calibrated(combine_preferences([m.p_a for m in self.members], self.weights, self.combine), self.calibration)

    consistent = None  # a panel has no order of its own: each pairwise member's consistency is in its own answers

    def failure_records(self) -> list[dict[str, Any]]:
        return [{"judge": name, **record} for name, m in zip(self.names, self.members) for record in m.failure_records()]


def judge_and_rubric(judge: str | Path | JudgeConfig, rubric: str | Path | None = None, mode: str | None = None,
                     concurrency: int | None = None) -> tuple[JudgeSpec, Rubric]:
    """A run's judge and the rubric it reads: `rubric` and `mode` as the run asks, else the judge
    config's own (its `rubric` and `mode` keys), else quality and the judge's first mode."""
    config = judge if isinstance(judge, JudgeConfig) else load_judge_config(judge)
    loaded = load_rubric(rubric or config.rubric or DEFAULT_RUBRIC)
    return JudgeSpec.build(config, loaded, mode, concurrency), loaded


def resolve_mode(mode: str | None, backend: type[Judge], rubric: Rubric) -> str:
    """The judging mode: as asked, else the judge's own; one the judge or rubric cannot do is an error."""
    mode = mode or backend.MODES[0]
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode not in backend.MODES:
        raise ConfigError(f"a '{backend.__name__}' judge answers only in mode {', '.join(backend.MODES)}, not {mode}")
    if mode == "pointwise" and backend.READS_RUBRIC and rubric.scale is None:
        raise ConfigError(f"rubric {rubric.name} has no pointwise form (it never uses `response`): see prompts/README.md")
    return mode


def request_for(pair: Pair, flag: bool, spec: JudgeSpec, rubric: Rubric, cot: bool) -> JudgeRequest:
    """The request for one order of a pair (`flag`: A shown first), or pointwise for one of
    its responses (`flag`: response A)."""
    if not spec.pointwise:
        first, second = (pair.a, pair.b) if flag else (pair.b, pair.a)
        return JudgeRequest(rubric.render(pair.prompt, first, second, cot, pair.reference), rubric.labels, rubric.verdict_prefix, cot)
    response = pair.a if flag else pair.b
    if not spec.backend.READS_RUBRIC:
        return JudgeRequest("", (), "", pointwise=True, query=pair.prompt, response=response)
    return JudgeRequest(rubric.render_rating(pair.prompt, response, cot, pair.reference),
                        rubric.scale, rubric.rating_prefix, cot, pointwise=True)  # type: ignore[arg-type]


@dataclass
class Plan:
    """The judge requests of some pairs, keyed for the cache (identical requests are asked
    once): pairwise one per order `debias` plans, pointwise one per response. `flags[i]` are
    pair i's orders (or responses) and `keys[i]` their requests' keys. A jury's plan holds one
    plan per member, and all of their requests."""

    spec: JudgeSpec
    pairs: list[Pair]
    flags: list[list[bool]]
    keys: list[list[str]]
    requests: dict[str, JudgeRequest]
    members: list[Plan] = field(default_factory=list)

    @classmethod
    def of(cls, pairs: list[Pair], spec: JudgeSpec, rubric: Rubric, debias: str = "both", seed: int = 0, cot: bool = False) -> Plan:
        if spec.members:
            members = [cls.of(pairs, m, rubric, debias, seed, cot) for m in spec.members]
            return cls(spec, pairs, [], [], {k: r for m in members for k, r in m.requests.items()}, members)
        plan = cls(spec, pairs, [], [], {})
        for pair in pairs:
            flags = [True, False] if spec.pointwise else plan_orders(debias, pair.id, seed)
            keys = []
            for flag in flags:
                request = request_for(pair, flag, spec, rubric, cot)
                keys.append(key := cache_key("judge", spec.identity, asdict(request)))
                plan.requests[key] = request
            plan.flags.append(flags)
            plan.keys.append(keys)
        return plan

    def cached(self, cache: AnswerCache | None) -> dict[str, Verdict]:
        """The answers the cache already holds, by key."""
        if cache is None:
            return {}
        return {key: Verdict.from_dict(hit) for key in self.requests if (hit := cache.get(key)) is not None}

    def missing(self, cache: AnswerCache | None) -> dict[str, JudgeRequest]:
        """The requests the cache has no answer to, by key."""
        cached = self.cached(cache)
        return {key: r for key, r in self.requests.items() if key not in cached}

    def judgments(self, answers: dict[str, Verdict]) -> list[PairJudgment] | list[JuryJudgment]:
        """Each pair's judgment from the answers to its requests."""
        if self.members:
            s = self.spec
            by_member = [m.judgments(answers) for m in self.members]
            return [JuryJudgment(list(each), member_names(s.members), s.weights, s.options, s.config.calibration)
                    for each in zip(*by_member)]
        return [PairJudgment([(flag, answers[key]) for flag, key in zip(flags, keys)], self.spec.pointwise,
                             self.spec.temperature, self.spec.config.calibration)
                for flags, keys in zip(self.flags, self.keys)]


def member_names(members: tuple[JudgeSpec, ...]) -> tuple[str, ...]:
    """A jury's members as its rows and reports name them: by judge, and mode where a judge sits twice."""
    names = [m.name for m in members]
    return tuple(f"{m.name} ({m.mode})" if names.count(m.name) > 1 else m.name for m in members)


EARLY_ANSWERS = 10  # a run's first answers, which say whether its judge's verdicts can be read at all


class UnreadableJudge(JudgeFatalError):
    """Most of a run's first answers had no verdict that could be read: the run stops."""


class JudgeOnce:
    """The run's judge, built when first asked for (a run whose answers are all cached loads no
    model and opens no connection), then kept for the whole run. It watches the run's first
    answers: when most of them cannot be read, paying for the rest would buy nothing."""

    def __init__(self, spec: JudgeSpec):
        self.spec = spec
        self._judge: Judge | None = None
        self._first: list[Verdict] = []
        self.members = [JudgeOnce(m) for m in spec.members]  # a jury's: each member watched and loaded on its own

    def check(self, verdict: Verdict) -> None:
        """Count a fresh answer; raise `UnreadableJudge` once most of the first ones had no verdict."""
        if verdict.transient or verdict.too_long or len(self._first) >= EARLY_ANSWERS:
            return
        self._first.append(verdict)
        unreadable = [v for v in self._first if v.value is None]
        if len(self._first) == EARLY_ANSWERS and len(unreadable) > EARLY_ANSWERS // 2:
            other = [w for w in self.spec.backend.VERDICTS if w != getattr(self.spec.options, "verdict", None)]
            hint = (" Read the verdict another way: set `verdict` in the config's options to "
                    f"{' or '.join(map(repr, other))}." if other else "")
            raise UnreadableJudge(f"judge '{self.spec.name}' gave no readable verdict in {len(unreadable)} of its first "
                                  f"{EARLY_ANSWERS} answers ({unreadable[0].error}); one reply was: "
                                  f"{(unreadable[0].text or '')[:300]!r}.{hint}")

    def __call__(self) -> Judge:
        if self._judge is None:
            self._judge = self.spec.load()
        return self._judge

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()
        for member in self.members:
            member.close()


def ask_missing(judge: JudgeOnce, plan: Plan, answers: dict[str, Verdict], cache: AnswerCache,
                on_answer: Callable[[], None] = lambda: None) -> int:
    """Ask the judge (each member of a jury in turn) every request of `plan` not yet in
    `answers`, committing each answer to the cache as it arrives; returns how many calls were made."""
    if plan.members:
        return sum(ask_missing(j, p, answers, cache, on_answer) for j, p in zip(judge.members, plan.members))
    requests = plan.requests
    for key in requests:  # cached answers count too: a rerun of a run that stopped here stops again before paying
        if key in answers:
            judge.check(answers[key])
    missing = [key for key in requests if key not in answers]
    if not missing:
        return 0

    def on_result(index: int, verdict: Verdict) -> None:
        key = missing[index]
        answers[key] = verdict
        if not verdict.transient:  # a call that gave up is asked again next run
            cache.put(key, verdict.to_dict())
        on_answer()
        judge.check(verdict)

    judge().judge([requests[k] for k in missing], on_result)
    return len(missing)


def judge_pairs(pairs: list[Pair], spec: JudgeSpec, rubric: Rubric, cache: AnswerCache, debias: str = "both",
                seed: int = 0, cot: bool = False, progress: bool = True,
                judge: JudgeOnce | None = None) -> list[PairJudgment] | list[JuryJudgment]:
    """Judge each pair (in the orders `debias` plans, or each response alone in mode pointwise)
    through the answer cache: the engine of `label`, for callers with pairs in hand. A caller
    that judges again and again passes its own `judge`, kept open between calls."""
    plan = Plan.of(pairs, spec, rubric, debias, seed, cot)
    answers = plan.cached(cache)
    own = judge is None
    judge = judge or JudgeOnce(spec)
    try:
        with tqdm(total=len(plan.requests), initial=len(answers), desc="judging", unit="call", disable=not progress) as bar:
            ask_missing(judge, plan, answers, cache, lambda: bar.update(1))
    finally:
        if own:
            judge.close()
    return plan.judgments(answers)
