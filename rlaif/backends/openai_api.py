"""A judge on the OpenAI chat completions API, or any server that speaks it (vLLM, Ollama,
llama.cpp server): set `base_url` in the judge config.

The soft label comes from the log-probabilities of the verdict labels (the two responses'
labels, or a pointwise rating scale) at the verdict's position in the reply (`logprobs` /
`top_logprobs`). A server that returns no log-probabilities
gets its verdict parsed from the text, and the pair is marked as a hard label.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from rlaif.backends.api import ApiJudge, ApiOptions, MalformedResponse, hard_verdict
from rlaif.judge import BatchJudge, JudgeRequest, Verdict, estimate_tokens

BATCH_TAG = "rlaif_submission"  # batch metadata key: finds a batch whose id a killed run never saved


@dataclass
class OpenAIOptions(ApiOptions):
    api_key_env: str = "OPENAI_API_KEY"
    top_logprobs: int = 20  # 0: ask for no log-probabilities


def label_probs(content: list[Any], request: JudgeRequest) -> list[float] | None:
    """Probabilities of the labels from the top log-probabilities at the verdict token, or None if absent.

    The verdict token is the last token that spells a label right after the verdict
    prefix (or that opens the reply). A label missing from the top list is given the
    smallest listed log-probability: an upper bound on its true mass.
    """
    labels = list(request.labels)
    prefix = request.verdict_prefix.strip()
    seen, position = "", None
    for i, entry in enumerate(content):
        before = seen.rstrip(" *\n")
        if entry.token.strip() in labels and (not before or before.endswith(prefix)):
            position = i
        seen += entry.token
    if position is None:
        return None
    top = content[position].top_logprobs or []
    if not top:
        return None
    probability = dict.fromkeys(labels, 0.0)
    for item in top:
        if item.token.strip() in probability:
            probability[item.token.strip()] += math.exp(item.logprob)
    floor = math.exp(min(item.logprob for item in top))
    return [probability[label] or floor for label in labels]


BATCH_ENDED = ("completed", "expired", "cancelled", "failed")


class OpenAIJudge(ApiJudge, BatchJudge):
    Options = OpenAIOptions

    def _client(self, base_url: str | None):
        # Retries are ours (tenacity), so the SDK's own are turned off.
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=base_url, timeout=self.options.timeout, max_retries=0)

    def _body(self, request: JudgeRequest) -> dict[str, Any]:
        """The chat completions request body for one judge request."""
        messages = [{"role": "user", "content": request.prompt}]
        if self.options.system_prompt:
            messages.insert(0, {"role": "system", "content": self.options.system_prompt})
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.options.temperature,
            "max_tokens": self.completion_budget(self.options, request.cot),
        }
        if self.options.top_logprobs:
            body.update(logprobs=True, top_logprobs=self.options.top_logprobs)
        return body

    @staticmethod
    def _verdict(response: Any, request: JudgeRequest) -> Verdict:
        """The verdict in a chat completion: soft from log-probabilities, else parsed from text."""
        if not getattr(response, "choices", None) or response.choices[0].message is None:
            raise MalformedResponse("the reply has no choices")
        choice = response.choices[0]
        text = choice.message.content or ""
        usage = {
            "prompt_tokens": getattr(response.usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(response.usage, "completion_tokens", 0) or 0,
        }
        content = getattr(choice.logprobs, "content", None) if choice.logprobs else None
        probs = label_probs(content, request) if content else None
        if probs is None:
            return hard_verdict(text, request, **usage)
        return OpenAIJudge.from_label_probs(request, probs, text=text, soft=True, **usage)

    async def _ask(self, client, request: JudgeRequest) -> Verdict:
        # The body is plain JSON already, so it is posted as it is: `chat.completions.create`
        # would first walk it against the SDK's typed parameters, its largest CPU cost per call
        # (BENCHMARKS.md, API judge throughput).
        return self._verdict(await client.post("/chat/completions", body=self._body(request), cast_to=ChatCompletion), request)

    # ---- generation: the same servers, retries and failover write candidate responses ----

    async def _samples(self, client, messages: list[dict[str, str]], n: int, max_tokens: int, temperature: float, seed: int) -> list[str]:
        """`n` sampled replies to `messages`. A server that returns fewer choices than asked
        (llama.cpp and Ollama ignore `n`) is asked again for the rest, with the next seeds."""
        texts: list[str] = []
        while len(texts) < n:
            body = {"model": self.config.model, "messages": messages, "n": n - len(texts), "temperature": temperature,
                    "max_tokens": max_tokens, "seed": seed + len(texts)}
            response = await client.post("/chat/completions", body=body, cast_to=ChatCompletion)
            if not getattr(response, "choices", None) or any(c.message is None for c in response.choices):
                raise MalformedResponse("the reply has no choices")
            texts += [(c.message.content or "").strip() for c in response.choices]
        return texts[:n]

    def sample(self, conversations: list[list[dict[str, str]]], n: int, max_tokens: int, temperature: float, seeds: list[int],
               on_result) -> None:
        """`n` replies to each conversation, concurrently over the servers; `on_result(index,
        texts, error)` as each conversation's replies arrive (`error` once it gave up)."""
        def call(client, i: int):
            return self._samples(client, conversations[i], n, max_tokens, temperature, seeds[i])

        def budget(i: int) -> int:
            return sum(estimate_tokens(m["content"]) for m in conversations[i]) + n * max_tokens

        self.call_all(range(len(conversations)), call, budget, on_result)

    # ---- the Batch API: submit now, collect on a later run ----

    def _sync_client(self):
        return openai.OpenAI(api_key=self._api_key, base_url=self.base_urls[0], timeout=self.options.timeout, max_retries=3)

    def submit_batch(self, requests: dict[str, JudgeRequest], tag: str) -> dict[str, Any]:
        """Upload the requests as a batch file and start a batch labelled with `tag`; returns what to persist."""
        lines = [
            json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": self._body(r)})
            for key, r in requests.items()
        ]
        with self._sync_client() as client:
            upload = client.files.create(file=("rlaif-batch.jsonl", "\n".join(lines).encode()), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                          metadata={BATCH_TAG: tag})
        return {"batch_id": batch.id, "input_file_id": upload.id, "requests": len(lines), "status": batch.status}

    def find_batch(self, tag: str, since: float) -> dict[str, Any] | None:
        """The batch labelled `tag` among those created after `since` (a Unix time), or None."""
        with self._sync_client() as client:
            for batch in client.batches.list(limit=100):  # newest first
                if batch.created_at < since:
                    return None
                if (batch.metadata or {}).get(BATCH_TAG) == tag:
                    return {"batch_id": batch.id, "input_file_id": batch.input_file_id, "status": batch.status}
        return None

    def poll_batch(self, batch_id: str, requests: dict[str, JudgeRequest]) -> tuple[str, dict[str, Verdict]]:
        """The batch's status and, once it has ended, the verdicts it holds."""
        with self._sync_client() as client:
            batch = client.batches.retrieve(batch_id)
            if batch.status not in BATCH_ENDED or not batch.output_file_id:
                return batch.status, {}
            output = client.files.content(batch.output_file_id).text
        verdicts: dict[str, Verdict] = {}
        for line in output.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, response = item.get("custom_id"), item.get("response") or {}
            if key not in requests:
                continue
            if response.get("status_code") == 200:
                try:
                    verdicts[key] = self._verdict(ChatCompletion.model_validate(response["body"]), requests[key])
                    continue
                except (MalformedResponse, ValueError) as e:
                    error = f"malformed batch result: {e}"
            else:
                error = self.redact(f"batch request failed: {json.dumps(item.get('error') or response)[:500]}")
            verdicts[key] = Verdict(p_first=None, error=error, transient=True)
        return batch.status, verdicts
