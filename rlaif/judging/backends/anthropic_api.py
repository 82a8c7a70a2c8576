"""A judge on the Anthropic messages API, which returns no log-probabilities.

With `verdict = "prefilled"` (the default) the assistant turn is pre-filled with the rubric's
verdict prefix, so the reply is the label itself; with `--cot`, or `verdict = "text"`, the
verdict is parsed from the reply. Either way a reply is a hard label; with `samples: N` (and a
temperature above 0) the soft label is the share of N replies that picked the first response
(pointwise: the mean rating of the N replies). The N samples are N concurrent calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anthropic

from rlaif.judging.backends.api import ApiJudge, ApiOptions, MalformedResponse, hard_verdict
from rlaif.judging.base import JudgeRequest, Verdict, choice, estimate_tokens


@dataclass
class AnthropicOptions(ApiOptions):
    api_key_env: str = "ANTHROPIC_API_KEY"
    samples: int = 1
    temperature: float | None = None  # newer models take none; sent only when set
    verdict: str = "prefilled"  # prefilled: the reply continues the verdict prefix | text: parsed from a free reply

    def __post_init__(self) -> None:
        choice("verdict", self.verdict, AnthropicJudge.VERDICTS)


def combine_samples(request: JudgeRequest, samples: list[Verdict]) -> Verdict:
    """One soft verdict from several sampled hard ones: the mean of the readable ones."""
    read = [s.value for s in samples if s.value is not None]
    tokens = {"prompt_tokens": sum(s.prompt_tokens for s in samples), "completion_tokens": sum(s.completion_tokens for s in samples)}
    texts = "\n---\n".join(s.text or "" for s in samples)
    if not read:
        return Verdict(p_first=None, text=texts, soft=False, error="no verdict could be read from any sample", **tokens)
    mean = sum(read) / len(read)
    if request.pointwise:
        return Verdict(p_first=None, score=mean, text=texts, soft=True, **tokens)
    return Verdict(p_first=mean, text=texts, soft=True, **tokens)


class AnthropicJudge(ApiJudge):
    Options = AnthropicOptions
    VERDICTS = ("prefilled", "text")

    def _client(self, base_url: str | None):
        return anthropic.AsyncAnthropic(api_key=self._api_key, base_url=base_url, timeout=self.options.timeout, max_retries=0)

    def _prefill(self, request: JudgeRequest) -> str | None:
        """The start of the assistant turn: the verdict prefix, unless a rationale must come first."""
        return request.verdict_prefix.rstrip() if self.options.verdict == "prefilled" and not request.cot else None

    async def _ask(self, client, request: JudgeRequest) -> Verdict:
        extra = {"system": self.options.system_prompt} if self.options.system_prompt else {}
        if self.options.temperature is not None:
            # Not a named parameter of current SDKs (newer models reject it): sent as is.
            extra["extra_body"] = {"temperature": self.options.temperature}
        messages = [{"role": "user", "content": request.prompt}]
        prefill = self._prefill(request)
        if prefill:  # the API refuses a final assistant turn that ends in white space
            messages.append({"role": "assistant", "content": prefill})
        response = await client.messages.create(
            model=self.config.model,
            max_tokens=self.completion_budget(self.options, request.cot),
            messages=messages,
            **extra,
        )
        blocks = getattr(response, "content", None)
        if not isinstance(blocks, list):
            raise MalformedResponse("the reply has no content blocks")
        text = (prefill or "") + "".join(getattr(block, "text", "") for block in blocks if getattr(block, "type", None) == "text")
        usage = getattr(response, "usage", None)
        return hard_verdict(
            text, request,
            prompt_tokens=getattr(usage, "input_tokens", 0) or 0,
            completion_tokens=getattr(usage, "output_tokens", 0) or 0,
        )

    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        k = self.options.samples
        if k <= 1:
            return super().judge(requests, on_result)
        # Every sample is a call of its own, so the samples of one request run concurrently.
        samples: dict[int, list[Verdict]] = {}

        def report(index: int, verdict: Verdict | None, error: str | None) -> None:
            i = index // k
            got = samples.setdefault(i, [])
            got.append(verdict if error is None else Verdict(p_first=None, error=error, transient=True))
            if len(got) == k:
                gave_up = next((v for v in got if v.transient), None)
                on_result(i, gave_up or combine_samples(requests[i], got))

        def budget(index: int) -> int:
            return estimate_tokens(requests[index // k].prompt) + self.completion_budget(self.options, requests[index // k].cot)

        self.call_all(range(len(requests) * k), lambda client, index: self._ask(client, requests[index // k]), budget, report)
