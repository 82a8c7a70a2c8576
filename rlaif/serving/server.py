"""`rlaif serve`: the judge as an HTTP reward service, for the trainers people run at scale (TRL's
GRPOTrainer through `rlaif.serving.client`, OpenRLHF's `--remote_rm_url`, verl's custom reward
functions). JSON in and out:

- `POST /get_reward`: OpenRLHF's remote reward model. `{"query": [text, ...], "prompts": [...],
  "labels": [...]}` (`prompts` and `labels` may be left out) -> `{"rewards": [...], "scores":
  [...], "extra_logs": {}}`. A query is the prompt followed by its completion: where query i
  begins with prompts[i] the completion is the rest, else the whole query is judged as the
  completion of an empty prompt. Each completion is scored alone (mode pointwise).
- `POST /v1/scores`: `{"prompts": [...], "completions": [...]}` -> `{"rewards": [...]}`, each
  completion scored alone. A prompt is a string or a list of chat messages.
- `POST /v1/group_rewards`: `{"groups": [{"prompt": ..., "completions": [...]}, ...]}` ->
  `{"rewards": [[...], ...]}`: each completion's mean preference over the rest of its group,
  by the judge's ranking of the group (`--ranking`), as GRPO's `--reward-judge` computes it.
- `GET /health`, and `GET /metrics`: requests, errors, judge requests and calls, cache hits,
  batches and latency percentiles.

Concurrent requests are merged into batches of at most `--max-batch` completions, waiting at most
`--max-wait-ms` for more, and computed one batch at a time on one thread: a local judge sees large
batches, and many clients do not queue behind one another a request at a time. Every answer goes
through one answer cache, shared by every request and kept across restarts. A bad request gets a
4xx JSON error naming the field, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError
from rlaif.judging.configs import DEFAULT_JUDGE
from rlaif.judging.ranking import STRATEGIES
from rlaif.judging.rewards import JudgeRewards
from rlaif.settings import check_settings, setting
from rlaif.storage.locks import output_directory


@dataclass
class ServeConfig:
    """Every setting of `rlaif serve`; the command's options are generated from these fields."""

    judge: str = setting(DEFAULT_JUDGE, "Built-in judge name or path to a judge config (its calibration included).")
    rubric: str | None = setting(None, "Built-in rubric name or path to a Jinja2 template "
                                 "[default: the judge config's `rubric`, else quality].")
    mode: str | None = setting(None, "How group rewards compare completions: pairwise (both orders) or pointwise "
                               "[default: the judge config's `mode`, else the judge's own].", ("pairwise", "pointwise"))
    ranking: str = setting("all-pairs", "How a group's completions are ranked for group rewards (as `rlaif label --ranking`).", STRATEGIES)
    host: str = setting("127.0.0.1", "Address to listen on (0.0.0.0: every interface; then set --api-key-env).")
    port: int = setting(8000, "Port to listen on.", at_least=1, at_most=65535)
    cache: str = setting("outputs/serve/cache.sqlite", "Answer cache file, shared by every request and kept across restarts.")
    max_batch: int = setting(64, "Most completions computed in one batch.", at_least=1)
    max_wait_ms: float = setting(100.0, "Longest a request waits for others to join its batch.", at_least=0)
    max_body_mb: float = setting(16.0, "Largest request body.", above=0)
    max_completions: int = setting(1024, "Most completions in one request.", at_least=1)
    api_key_env: str | None = setting(None, "An environment variable holding a key: requests must then send `Authorization: Bearer KEY`.")
    seed: int = setting(0, "Seeds the order of a group's comparisons.")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.api_key_env is not None and not os.environ.get(self.api_key_env):
            raise ConfigError(f"--api-key-env {self.api_key_env}: that environment variable is empty or unset", key="api_key_env")


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _prompt(value: Any, where: str) -> Any:
    """A prompt as the judge takes it: a string, or a list of {"role", "content"} messages."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                 and isinstance(m.get("content"), str) for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise BadRequest(422, f"field '{where}': expected a string or a list of {{\"role\", \"content\"}} messages")


def _strings(body: dict, name: str, limit: int, required: bool = True) -> list[str] | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, list):
        raise BadRequest(422, f"field '{name}': expected a list" + ("" if name in body else ", and it is missing"))
    if len(value) > limit:
        raise BadRequest(413, f"field '{name}': {len(value)} items, more than --max-completions {limit}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise BadRequest(422, f"field '{name}[{i}]': expected a string, got {type(item).__name__}")
    return value


class Batcher:
    """Requests merged into batches (at most `max_batch` completions, `max_wait` seconds of
    waiting for more), each batch computed on one worker thread."""

    def __init__(self, rewards: JudgeRewards, max_batch: int, max_wait: float, stats: Stats):
        self.rewards, self.max_batch, self.max_wait, self.stats = rewards, max_batch, max_wait, stats
        self.queue: asyncio.Queue[tuple[str, Any, int, asyncio.Future]] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlaif-judge")

    async def submit(self, kind: str, items: Any, size: int) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((kind, items, size, future))
        return await future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while sum(size for _, _, size, _ in batch) < self.max_batch and (left := deadline - loop.time()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            for kind in ("scores", "groups"):
                part = [(items, future) for k, items, _, future in batch if k == kind and not future.done()]
                if part:
                    await self._compute(kind, part)

    async def _compute(self, kind: str, part: list[tuple[Any, asyncio.Future]]) -> None:
        merged = [item for items, _ in part for item in items]
        started = time.perf_counter()
        try:
            if kind == "scores":
                values, counts = await asyncio.get_running_loop().run_in_executor(
                    self.worker, self.rewards.scores, [p for p, _ in merged], [c for _, c in merged])
            else:
                values, counts = await asyncio.get_running_loop().run_in_executor(self.worker, self.rewards.group_rewards, merged)
        except Exception as e:  # noqa: BLE001 - the judge failed: every request of the batch hears why, and the server goes on
            for _, future in part:
                if not future.done():
                    future.set_exception(e)
            return
        if kind == "scores":  # JSON has no NaN: a completion the judge gave no score is null (TRL reads it as NaN)
            values = [None if math.isnan(v) else v for v in values]
        self.stats.batch(len(merged), counts.requests, counts.calls, time.perf_counter() - started)
        start = 0
        for items, future in part:
            if not future.done():
                future.set_result(values[start:start + len(items)])
            start += len(items)

    def close(self) -> None:
        self.worker.shutdown(wait=True)


class Stats:
    """The counters `/metrics` shows."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.errors: Counter[int] = Counter()
        self.completions = self.batches = self.judge_requests = self.judge_calls = 0
        self.judging_s = 0.0  # time the worker spent computing batches
        self.latencies: deque[float] = deque(maxlen=10_000)
        self.started = time.time()

    def batch(self, completions: int, requests: int, calls: int, seconds: float) -> None:
        self.batches += 1
        self.judging_s += seconds
        self.completions += completions
        self.judge_requests += requests
        self.judge_calls += calls

    def percentile(self, q: float) -> float | None:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(q * len(values)))] if values else None

    def as_dict(self) -> dict[str, Any]:
        return {"uptime_s": round(time.time() - self.started, 1), "requests": dict(self.requests),
                "errors": {str(k): v for k, v in self.errors.items()}, "completions": self.completions,
                "batches": self.batches, "judge_requests": self.judge_requests, "judge_calls": self.judge_calls,
                "cache_hits": self.judge_requests - self.judge_calls, "judging_s": round(self.judging_s, 3),
                "latency_s": {"p50": self.percentile(0.5), "p90": self.percentile(0.9), "p99": self.percentile(0.99)}}


def create_app(config: ServeConfig, rewards: JudgeRewards):
    """The Starlette application serving `rewards` with `config`'s limits and key."""
    from starlette.applications import Starlette
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    stats = Stats()
    key = os.environ.get(config.api_key_env) if config.api_key_env else None
    max_bytes = int(config.max_body_mb * 2**20)
    state: dict[str, Any] = {}

    async def read_json(request: Request) -> dict[str, Any]:
        if key is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                raise BadRequest(401, "header 'Authorization': expected 'Bearer' and the server's key")
        if int(request.headers.get("content-length") or 0) > max_bytes:
            raise BadRequest(413, f"body: larger than --max-body-mb {config.max_body_mb:g}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                raise BadRequest(413, f"body: larger than --max-body-mb {config.max_body_mb:g}")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as e:
            raise BadRequest(400, f"body: not valid JSON ({str(e).splitlines()[0][:200]})") from None
        if not isinstance(data, dict):
            raise BadRequest(422, "body: expected a JSON object")
        return data

    def endpoint(name: str, handle):
        async def serve(request: Request):
            started = time.perf_counter()
            stats.requests[name] += 1
            try:
                result = await handle(await read_json(request))
            except BadRequest as e:
                stats.errors[e.status] += 1
                return JSONResponse({"error": str(e)}, status_code=e.status)
            except ClientDisconnect:
                stats.errors[499] += 1
                return JSONResponse({"error": "the client hung up"}, status_code=400)
            except ConfigError as e:
                stats.errors[422] += 1
                return JSONResponse({"error": str(e)}, status_code=422)
            except Exception as e:  # noqa: BLE001 - the judge itself failed: one line, no traceback, and the server goes on
                stats.errors[503] += 1
                return JSONResponse({"error": f"the judge failed: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"},
                                    status_code=503)
            stats.latencies.append(time.perf_counter() - started)
            return JSONResponse(result)

        return serve

    async def get_reward(body: dict) -> dict:
        queries = _strings(body, "query", config.max_completions)
        prompts = _strings(body, "prompts", config.max_completions, required=False)
        if prompts is not None and len(prompts) != len(queries):  # type: ignore[arg-type]
            raise BadRequest(422, f"field 'prompts': {len(prompts)} items for {len(queries)} queries")  # type: ignore[arg-type]
        items = [(p, q[len(p):]) if p and q.startswith(p) else ("", q) for q, p in zip(queries, prompts or [""] * len(queries))]  # type: ignore[arg-type]
        rewards = await state["batcher"].submit("scores", items, len(items))
        return {"rewards": rewards, "scores": rewards, "extra_logs": {}}

    async def scores(body: dict) -> dict:
        completions = _strings(body, "completions", config.max_completions)
        prompts = body.get("prompts")
        if not isinstance(prompts, list) or len(prompts) != len(completions):  # type: ignore[arg-type]
            raise BadRequest(422, f"field 'prompts': expected a list of {len(completions)} prompts, one per completion")  # type: ignore[arg-type]
        items = [(_prompt(p, f"prompts[{i}]"), c) for i, (p, c) in enumerate(zip(prompts, completions))]  # type: ignore[arg-type]
        return {"rewards": await state["batcher"].submit("scores", items, len(items))}

    async def group_rewards(body: dict) -> dict:
        groups = body.get("groups")
        if not isinstance(groups, list) or not groups:
            raise BadRequest(422, "field 'groups': expected a non-empty list of {\"prompt\", \"completions\"}")
        items = []
        for i, group in enumerate(groups):
            if not isinstance(group, dict):
                raise BadRequest(422, f"field 'groups[{i}]': expected an object with 'prompt' and 'completions'")
            items.append((_prompt(group.get("prompt"), f"groups[{i}].prompt"),
                          _strings(group, "completions", config.max_completions)))
        size = sum(len(c) for _, c in items)
        if size > config.max_completions:
            raise BadRequest(413, f"field 'groups': {size} completions, more than --max-completions {config.max_completions}")
        return {"rewards": await state["batcher"].submit("groups", items, size)}

    async def health(request: Request):
        return JSONResponse({"status": "ok", "judge": rewards.name, "mode": rewards.spec.mode, "ranking": config.ranking})

    async def metrics(request: Request):
        return JSONResponse(stats.as_dict())

    @asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher(rewards, config.max_batch, config.max_wait_ms / 1000, stats)
        task = asyncio.create_task(state["batcher"].run())
        try:
            yield
        finally:
            task.cancel()
            state["batcher"].close()

    async def not_found(request: Request, exc):
        return JSONResponse({"error": f"no such endpoint: {request.method} {request.url.path}"},
                            status_code=getattr(exc, "status_code", 404))

    routes = [Route("/get_reward", endpoint("get_reward", get_reward), methods=["POST"]),
              Route("/v1/scores", endpoint("scores", scores), methods=["POST"]),
              Route("/v1/group_rewards", endpoint("group_rewards", group_rewards), methods=["POST"]),
              Route("/health", health), Route("/metrics", metrics)]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={404: not_found, 405: not_found})


def serve(config: ServeConfig) -> None:
    """Load the judge, then serve until stopped (SIGINT or SIGTERM: requests in flight finish first)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("rlaif serve needs its web server: pip install 'rlaif[serve]'") from None
    output_directory(Path(config.cache).parent)
    rewards = JudgeRewards(config.judge, config.cache, config.rubric, config.ranking, config.seed, config.mode)
    rewards.judge()  # a judge that cannot load fails now, not at the first request
    try:
        print(f"rlaif serve: judge {rewards.name} ({rewards.spec.mode}), rubric {rewards.rubric.name}, "
              f"on http://{config.host}:{config.port}", flush=True)
        uvicorn.run(create_app(config, rewards), host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=30)
    finally:
        rewards.close()
