"""A judge on the Anthropic messages API. The verdict is parsed from the reply's text; with
`samples: N` (and a temperature above 0) the soft label is the share of N replies that
picked the first response (pointwise: the mean rating of the N replies)."""

from __future__ import annotations

from dataclasses import dataclass

import anthropic

from rlaif.backends.api import ApiJudge, ApiOptions, MalformedResponse, hard_verdict
from rlaif.judge import JudgeRequest, Verdict


@dataclass
class AnthropicOptions(ApiOptions):
    api_key_env: str = "ANTHROPIC_API_KEY"
    samples: int = 1
    temperature: float | None = None  # newer models take none; sent only when set


class AnthropicJudge(ApiJudge):
    Options = AnthropicOptions

    def _client(self, base_url: str | None):
        return anthropic.AsyncAnthropic(api_key=self._api_key, base_url=base_url, timeout=self.options.timeout, max_retries=0)

    async def _sample(self, client, request: JudgeRequest) -> Verdict:
        extra = {"system": self.options.system_prompt} if self.options.system_prompt else {}
        if self.options.temperature is not None:
            # Not a named parameter of current SDKs (newer models reject it): sent as is.
            extra["extra_body"] = {"temperature": self.options.temperature}
        response = await client.messages.create(
            model=self.config.model,
            max_tokens=self.completion_budget(self.options, request.cot),
            messages=[{"role": "user", "content": request.prompt}],
            **extra,
        )
        blocks = getattr(response, "content", None)
        if not isinstance(blocks, list):
            raise MalformedResponse("the reply has no content blocks")
        text = "".join(getattr(block, "text", "") for block in blocks if getattr(block, "type", None) == "text")
        usage = getattr(response, "usage", None)
        return hard_verdict(
            text, request,
            prompt_tokens=getattr(usage, "input_tokens", 0) or 0,
            completion_tokens=getattr(usage, "output_tokens", 0) or 0,
        )

    async def _ask(self, client, request: JudgeRequest) -> Verdict:
        if self.options.samples <= 1:
            return await self._sample(client, request)
        samples = [await self._sample(client, request) for _ in range(self.options.samples)]
        read = [s.value for s in samples if s.value is not None]
        tokens = {"prompt_tokens": sum(s.prompt_tokens for s in samples), "completion_tokens": sum(s.completion_tokens for s in samples)}
        texts = "\n---\n".join(s.text or "" for s in samples)
        if not read:
            return Verdict(p_first=None, text=texts, soft=False, error="no verdict could be read from any sample", **tokens)
        mean = sum(read) / len(read)
        if request.pointwise:
            return Verdict(p_first=None, score=mean, text=texts, soft=True, **tokens)
        return Verdict(p_first=mean, text=texts, soft=True, **tokens)
