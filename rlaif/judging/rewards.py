"""A judge as a reward: each completion's score alone, or each completion's reward within its
group by the judge's ranking of the group, every answer through one answer cache. GRPO's
`--reward-judge`, `rlaif serve` and the reward functions of `rlaif.serving.client` all compute
rewards here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from rlaif.errors import ConfigError
from rlaif.inputs import Example, Pair, Prompt
from rlaif.judging.candidates import RankSettings, rank, rating_plan
from rlaif.judging.engine import JudgeOnce, JudgeSpec, ask_missing, judge_and_rubric
from rlaif.storage.cache import AnswerCache


@dataclass(frozen=True)
class Counts:
    """What a batch of rewards cost: judge requests asked (cached ones too) and calls made."""

    requests: int
    calls: int


class JudgeRewards:
    """Rewards from a judge (a built-in name or a config file) and a rubric.

    `scores` asks the judge about each completion alone (mode pointwise: a reward model's score,
    or a generative judge's expected rating on the rubric's scale). `group_rewards` ranks each
    group's completions as `rlaif label` ranks a row's candidates (`ranking`: all-pairs by
    default) and gives each its mean preference over the rest of its group.
    """

    def __init__(self, judge: str, cache: str | Path, rubric: str | None = None, ranking: str = "all-pairs", seed: int = 0,
                 mode: str | None = None):
        self.spec, self.rubric = judge_and_rubric(judge, rubric, mode)
        self.settings = RankSettings(ranking, seed=seed)
        self.cache = AnswerCache(cache)
        self.judge = JudgeOnce(self.spec)
        self.rater: JudgeSpec | None = self.spec if self.spec.pointwise else None
        if self.rater is None and not self.spec.members and "pointwise" in self.spec.backend.MODES and self.rubric.scale is not None:  # type: ignore[union-attr]
            self.rater = JudgeSpec.build(self.spec.config, self.rubric, "pointwise")

    @property
    def name(self) -> str:
        return self.spec.name

    def scores(self, prompts: list[Prompt], completions: list[str]) -> tuple[list[float], Counts]:
        """Each completion's score alone (NaN where the judge gave none), and what it cost."""
        if self.rater is None:
            raise ConfigError(f"judge '{self.spec.name}' cannot score a completion alone (a rubric with a rating scale is needed): "
                              "use group rewards", key="judge")
        plan = rating_plan([Pair(str(i), p, c, c) for i, (p, c) in enumerate(zip(prompts, completions, strict=True))],
                           self.rater, self.rubric, False)
        found = plan.cached(self.cache)
        made = ask_missing(self.judge, plan, found, self.cache)
        scores = [found[keys[0]].score for keys in plan.keys]
        return [math.nan if s is None else s for s in scores], Counts(len(plan.keys), made)

    def group_rewards(self, groups: list[tuple[Prompt, list[str]]]) -> tuple[list[list[float]], Counts]:
        """Each group's completions' rewards: its mean preference over the others of its group
        (`Ranked.win_shares`); an empty completion gets 0, and a group with fewer than two
        distinct completions ½ each."""
        examples = [Example(str(g), prompt, list(completions)) for g, (prompt, completions) in enumerate(groups)]
        ranked, answers, made = rank(examples, self.spec, self.rubric, self.settings, self.cache, self.judge, self.rater)
        by_id = {st.example.id: st for st in ranked}
        rewards = []
        for ex in examples:
            st = by_id.get(ex.id)
            share = {} if st is None else {ex.responses[k].strip(): s for k, s in zip(st.kept, st.win_shares())}
            rewards.append([share.get(c.strip(), 0.0 if st is not None and not c.strip() else 0.5) for c in ex.responses])
        return rewards, Counts(len(answers), made)

    def close(self) -> None:
        self.judge.close()
        self.cache.close()
