"""Reward functions for the trainers people run, with this toolkit's judge behind them.

`JudgeReward` is what TRL's `GRPOTrainer` takes in `reward_funcs` (and any trainer that calls
`f(prompts=..., completions=..., **kwargs)` for one reward per completion). It asks a running
`rlaif serve` (`url=`) or a judge in this process (`judge=`). `AsyncJudgeReward` is the same as a
coroutine, which TRL runs beside its other reward functions. With `groups=True` consecutive
completions of the same prompt (TRL's `num_generations`) are one group, and each gets its
reward from the judge's ranking of the group; otherwise each completion is scored alone.

    from rlaif.serving.client import JudgeReward
    trainer = GRPOTrainer(model=..., reward_funcs=[JudgeReward(url="http://judge-host:8000", groups=True)], ...)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from rlaif.errors import ConfigError


def _text(completion: Any) -> str:
    """A completion as text: TRL's conversational completions are lists of messages."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def _groups(prompts: Sequence[Any], completions: Sequence[str]) -> list[tuple[Any, list[str]]]:
    """Consecutive completions of the same prompt, as (prompt, completions) groups."""
    groups: list[tuple[Any, list[str]]] = []
    for prompt, completion in zip(prompts, completions, strict=True):
        if groups and groups[-1][0] == prompt:
            groups[-1][1].append(completion)
        else:
            groups.append((prompt, [completion]))
    return groups


class _Reward:
    """What the sync and async reward functions share: where to ask, and the request and its answer."""

    def __init__(self, url: str | None = None, *, judge: str | None = None, rubric: str | None = None, cache: str | None = None,
                 groups: bool = False, ranking: str = "all-pairs", api_key_env: str | None = None, timeout: float = 600.0):
        if (url is None) == (judge is None):
            raise ConfigError("give a server's url or a judge to run in this process, not both")
        self.url, self.groups, self.timeout = url and url.rstrip("/"), groups, timeout
        self.__name__ = "rlaif_judge"  # what TRL calls the reward in its logs
        self.headers = {"Authorization": f"Bearer {os.environ[api_key_env]}"} if api_key_env else {}
        self.local = None
        if judge is not None:
            from rlaif.judging.rewards import JudgeRewards

            self.local = JudgeRewards(judge, cache or "outputs/serve/cache.sqlite", rubric, ranking)

    def request(self, prompts: Sequence[Any], completions: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        texts = [_text(c) for c in completions]
        if self.groups:
            return "/v1/group_rewards", {"groups": [{"prompt": p, "completions": c} for p, c in _groups(prompts, texts)]}
        return "/v1/scores", {"prompts": list(prompts), "completions": texts}

    def local_rewards(self, path: str, body: dict[str, Any]) -> list[float]:
        assert self.local is not None
        if path == "/v1/scores":
            return self.local.scores(body["prompts"], body["completions"])[0]
        return [r for group in self.local.group_rewards([(g["prompt"], g["completions"]) for g in body["groups"]])[0] for r in group]

    @staticmethod
    def answer(path: str, response) -> list[float]:
        if response.status_code != 200:
            raise RuntimeError(f"rlaif serve answered {response.status_code}: {response.json().get('error', response.text)[:300]}")
        rewards = response.json()["rewards"]
        flat = [r for group in rewards for r in group] if path == "/v1/group_rewards" else rewards
        return [math.nan if r is None else r for r in flat]


class JudgeReward(_Reward):
    """A synchronous reward function: `f(prompts, completions, **kwargs) -> one reward per completion`."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        path, body = self.request(prompts, completions)
        if self.local is not None:
            return self.local_rewards(path, body)
        import httpx2

        return self.answer(path, httpx2.post(self.url + path, json=body, headers=self.headers, timeout=self.timeout))  # type: ignore[operator]


class AsyncJudgeReward(_Reward):
    """The same as a coroutine function: TRL awaits it beside its other asynchronous rewards."""

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        path, body = self.request(prompts, completions)
        if self.local is not None:
            import asyncio

            return await asyncio.to_thread(self.local_rewards, path, body)
        import httpx2

        async with httpx2.AsyncClient(timeout=self.timeout) as client:
            return self.answer(path, await client.post(self.url + path, json=body, headers=self.headers))  # type: ignore[operator]
