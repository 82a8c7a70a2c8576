"""A judge on the OpenAI chat completions API, or any server that speaks it (vLLM, SGLang,
llama.cpp's server, Ollama): set `base_url` in the judge config.

How the verdict is read (`verdict` in the config's options):
- `text`: the reply is parsed for the rubric's verdict; the soft label comes from the labels'
  log-probabilities at the verdict's token (`top_logprobs`), a hard label where none come back.
  Needs a model that follows the rubric's format.
- `constrained`: structured output, a JSON object whose `verdict` is one of the labels (with
  `--cot`, a `rationale` first); the soft label from the log-probabilities at the label's token.
- `prefilled`: no format to follow. The assistant turn is written up to the verdict prefix and
  the labels' probabilities are read at the next token, as the local judge reads them: through
  `/completions` with the rubric rendered here by the model's own chat template (`tokenizer`),
  or through chat completions that continue the assistant turn (`prefill_with = "chat"`: vLLM's
  and SGLang's `continue_final_message`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai.types import Completion
from openai.types.chat import ChatCompletion

from rlaif.judging.backends.api import ApiJudge, ApiOptions, MalformedResponse, hard_verdict
from rlaif.judging.backends.prefilled import rationale, verdict_text
from rlaif.judging.base import BATCH_ENDED, BatchJudge, JudgeConfigError, JudgeRequest, SamplingJudge, Verdict, choice, estimate_tokens
from rlaif.judging.verdicts import find_verdict, label_probs, top_at
from rlaif.models.loading import chat_prompt, is_embedded, load_tokenizer

BATCH_TAG = "rlaif_submission"  # batch metadata key: finds a batch whose id a killed run never saved
VERDICTS = ("text", "constrained", "prefilled")


@dataclass
class OpenAIOptions(ApiOptions):
    api_key_env: str = "OPENAI_API_KEY"
    top_logprobs: int = 20  # 0: ask for no log-probabilities
    verdict: str = "text"  # how the verdict is read: text | constrained | prefilled (see the module's docstring)
    prefill_with: str = "completions"  # prefilled: completions (rendered here) | chat (the server continues the assistant turn)
    # prefilled through completions: whose chat template renders the rubric ('embedded' or a directory); default: `model`
    tokenizer: str | None = None
    # constrained: json_schema (OpenAI, vLLM, SGLang, llama-server, Ollama) | json_object (llama-cpp-python's server)
    structured_output: str = "json_schema"

    def __post_init__(self) -> None:
        choice("verdict", self.verdict, VERDICTS)
        choice("prefill_with", self.prefill_with, ("completions", "chat"))
        choice("structured_output", self.structured_output, ("json_schema", "json_object"))


def verdict_schema(request: JudgeRequest) -> dict[str, Any]:
    """The JSON schema of a constrained verdict: {"verdict": one of the labels}, a rationale first with --cot."""
    properties: dict[str, Any] = {"rationale": {"type": "string"}} if request.cot else {}
    properties["verdict"] = {"type": "string", "enum": list(request.labels)}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _chat_tokens(choice_: Any) -> list[tuple[str, dict[str, float]]] | None:
    """A chat choice's reply tokens with their top log-probabilities, or None where none came back."""
    content = getattr(choice_.logprobs, "content", None) if choice_.logprobs else None
    if not content:
        return None
    return [(entry.token, {t.token: t.logprob for t in entry.top_logprobs or []}) for entry in content]


def _usage(response: Any) -> dict[str, int]:
    return {
        "prompt_tokens": getattr(response.usage, "prompt_tokens", 0) or 0,
        "completion_tokens": getattr(response.usage, "completion_tokens", 0) or 0,
    }


def _choice(response: Any) -> Any:
    if not getattr(response, "choices", None):
        raise MalformedResponse("the reply has no choices")
    return response.choices[0]


class OpenAIJudge(ApiJudge, BatchJudge, SamplingJudge):
    Options = OpenAIOptions
    VERDICTS = VERDICTS

    def __init__(self, config):
        super().__init__(config)
        o = self.options
        if o.verdict == "prefilled" and o.prefill_with == "completions":
            name = o.tokenizer if o.tokenizer is not None else config.model
            if not (is_embedded(name) or Path(str(name)).is_dir()):
                raise JudgeConfigError(f"{config.source or config.name}: key 'options.tokenizer': a prefilled verdict "
                                       "through /completions renders the rubric with the model's own chat template: "
                                       f"name its tokenizer ('embedded' or a local directory), not {name!r}")
            self.tokenizer = load_tokenizer(name)

    def _client(self, base_url: str | None):
        # Retries are ours (tenacity), so the SDK's own are turned off.
        return openai.AsyncOpenAI(api_key=self._api_key, base_url=base_url, timeout=self.options.timeout, max_retries=0)

    def _messages(self, request: JudgeRequest) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.options.system_prompt}] if self.options.system_prompt else []
        return system + [{"role": "user", "content": request.prompt}]

    def _body(self, request: JudgeRequest) -> dict[str, Any]:
        """The chat completions request body of a `text` or `constrained` verdict."""
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": self._messages(request),
            "temperature": self.options.temperature,
            "max_tokens": self.completion_budget(self.options, request.cot),
        }
        if self.options.top_logprobs:
            body.update(logprobs=True, top_logprobs=self.options.top_logprobs)
        if self.options.verdict == "constrained":
            schema = verdict_schema(request)
            if self.options.structured_output == "json_schema":
                body["response_format"] = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema, "strict": True}}
            else:
                body["response_format"] = {"type": "json_object", "schema": schema}
        return body

    def _verdict(self, response: Any, request: JudgeRequest) -> Verdict:
        """The verdict in a chat completion: soft from log-probabilities, else read from the text."""
        choice_ = _choice(response)
        if choice_.message is None:
            raise MalformedResponse("the reply has no message")
        text, usage = choice_.message.content or "", _usage(response)
        if self.options.verdict == "constrained":
            return self._constrained(text, choice_, request, usage)
        found = find_verdict(text, request.labels, request.verdict_prefix)
        tokens = _chat_tokens(choice_)
        top = top_at(tokens, found[1]) if found and tokens else None
        if top is None:
            return hard_verdict(text, request, **usage)
        return self.from_label_probs(request, label_probs(top, request.labels), text=text, soft=True, **usage)

    def _constrained(self, text: str, choice_: Any, request: JudgeRequest, usage: dict[str, int]) -> Verdict:
        try:
            reply = json.loads(text)
            label = reply["verdict"]
            index = list(request.labels).index(label)
        except (ValueError, TypeError, KeyError):
            return Verdict(p_first=None, text=text, soft=False, error="no verdict could be read from the structured reply", **usage)
        why = reply.get("rationale") if isinstance(reply.get("rationale"), str) else None
        tokens = _chat_tokens(choice_)
        keys = list(re.finditer(r'"verdict"\s*:\s*"', text))  # the label's place: inside the quotes after the last key
        top = top_at(tokens, keys[-1].end()) if tokens and keys else None
        if top is None:
            return self.from_label_probs(request, [float(i == index) for i in range(len(request.labels))],
                                         text=why or text, soft=False, **usage)
        return self.from_label_probs(request, label_probs(top, request.labels), text=why or text, soft=True, **usage)

    async def _ask(self, client, request: JudgeRequest) -> Verdict:
        if self.options.verdict == "prefilled":
            return await self._ask_prefilled(client, request)
        # The body is plain JSON already, so it is posted as it is: `chat.completions.create`
        # would first walk it against the SDK's typed parameters, its largest CPU cost per call
        # (docs/benchmarks.md, API labeling).
        return self._verdict(await client.post("/chat/completions", body=self._body(request), cast_to=ChatCompletion), request)

    async def _ask_prefilled(self, client, request: JudgeRequest) -> Verdict:
        """The labels' probabilities at the token after the verdict prefix (a rationale first with --cot)."""
        o, why = self.options, None
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        chat = chat_prompt(self.tokenizer, self._messages(request)) if o.prefill_with == "completions" else None
        if request.cot:
            body = {"model": self.config.model, "temperature": o.temperature, "max_tokens": o.max_tokens_cot,
                    "stop": [request.verdict_prefix.strip()]}
            if chat is not None:
                response = await client.post("/completions", body={**body, "prompt": chat}, cast_to=Completion)
                written = _choice(response).text
            else:
                response = await client.post("/chat/completions", body={**body, "messages": self._messages(request)},
                                             cast_to=ChatCompletion)
                written = _choice(response).message.content or ""
            why = rationale(written, request.verdict_prefix)
            usage = _usage(response)
        body = {"model": self.config.model, "temperature": 0.0, "max_tokens": 1}
        if chat is not None:
            response = await client.post("/completions", body={**body, "prompt": verdict_text(chat, request, why),
                                                               "logprobs": o.top_logprobs}, cast_to=Completion)
            logprobs = _choice(response).logprobs
            top = (logprobs.top_logprobs or [None])[0] if logprobs else None
        else:
            prefill = {"role": "assistant", "content": verdict_text("", request, why)}
            response = await client.post("/chat/completions", cast_to=ChatCompletion, body={
                **body, "messages": [*self._messages(request), prefill], "logprobs": True, "top_logprobs": o.top_logprobs,
                "continue_final_message": True, "add_generation_prompt": False})
            tokens = _chat_tokens(_choice(response))
            top = tokens[0][1] if tokens else None
        usage = {k: usage[k] + v for k, v in _usage(response).items()}
        if not top:
            return Verdict(p_first=None, text=why, error="the server returned no log-probabilities at the prefilled verdict", **usage)
        return self.from_label_probs(request, label_probs(top, request.labels), text=why, soft=True, **usage)

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
        if self.options.verdict == "prefilled":
            raise JudgeConfigError(f"{self.config.source or self.name}: the Batch API takes chat completions: "
                                   "use verdict 'text' or 'constrained' with --batch-api")
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
