"""What the API judges (and generators) share: async concurrency over one or several servers,
rate limits, retries, failover and key handling.

Retries (tenacity): exponential backoff with jitter, a server's `Retry-After` honoured, on
429, 5xx, timeouts, dropped connections and malformed bodies. A 400/401/403/404 is not
retried: it raises `JudgeFatalError` and stops the run at once (answers already received
are in the cache). A call that still fails after every retry becomes a transient failure:
reported, not cached, so the next run asks again.

Several servers (`base_url` as a list) are spread over by `Servers`: each takes `concurrency`
calls at a time, and one that stops answering has its calls retried on the others.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from abc import abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from rlaif.judging.base import Judge, JudgeConfig, JudgeConfigError, JudgeFatalError, JudgeRequest, Verdict, estimate_tokens
from rlaif.judging.verdicts import parse_verdict

API_NOT_IN_KEY = frozenset({
    "api_key_env", "concurrency", "requests_per_minute", "tokens_per_minute", "timeout",
    "max_retries", "retry_initial_wait", "retry_max_wait", "price_input_per_mtok", "price_output_per_mtok",
})


@dataclass
class ApiOptions:
    """Options every API judge takes (the backend adds its own)."""

    api_key_env: str = ""  # the variable that holds the key; "" for a server that needs none
    base_url: str | list[str] | None = None  # a list: several servers serving the same model
    temperature: float | None = 0.0
    max_tokens: int = 16  # reply length for a plain verdict
    max_tokens_cot: int = 512  # reply length with --cot
    system_prompt: str | None = None
    concurrency: int = 8  # calls in flight at once, per server
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    timeout: float = 60.0
    max_retries: int = 6
    retry_initial_wait: float = 1.0
    retry_max_wait: float = 60.0
    price_input_per_mtok: float | None = None  # for cost estimates in the manifest
    price_output_per_mtok: float | None = None


UNREACHABLE_TRIES = 3  # attempts before a server that no call has reached stops the run


class MalformedResponse(ValueError):
    """A response body that arrived but does not have the expected shape (retried)."""


def status_of(exc: BaseException) -> int | None:
    """The HTTP status a failed call got, from an SDK's error (`status_code`) or from any error
    that carries its response (`httpx2.HTTPStatusError`): a backend on plain httpx2 is classified
    as the SDKs' are."""
    status = getattr(exc, "status_code", None)
    if status is None and (response := getattr(exc, "response", None)) is not None:
        status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def sdk_errors(*names: str) -> tuple[type, ...]:
    """The named exception classes of the SDKs already imported (an error can only come from
    one that is; importing the other mid-run would stall every call in flight)."""
    modules = [sys.modules[m] for m in ("openai", "anthropic") if m in sys.modules]
    return tuple(getattr(module, name) for module in modules for name in names)


def cannot_connect(exc: BaseException) -> bool:
    """Whether a call got no answer from its server (nothing listening, no route, no reply in
    time): the SDKs' APIConnectionError (their timeouts included), httpx2's ConnectError and timeouts."""
    return isinstance(exc, (*sdk_errors("APIConnectionError"), httpx2.ConnectError, httpx2.TimeoutException))


def server_failed(exc: BaseException) -> bool:
    """Whether a failed call says its server is down or broken (not that the call was refused):
    it could not connect, timed out, lost its connection, or got a 5xx."""
    if isinstance(exc, (*sdk_errors("APITimeoutError", "APIConnectionError"), httpx2.TransportError)):
        return True
    status = status_of(exc)
    return status is not None and status >= 500


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call is worth repeating: its server failed, it was throttled, or its
    body came back cut short or garbled."""
    if server_failed(exc) or isinstance(exc, (MalformedResponse, json.JSONDecodeError, *sdk_errors("APIResponseValidationError"))):
        return True
    return status_of(exc) in (408, 409, 429)


class GaveUp(Exception):
    """A call still failing after its last retry (reported, never cached)."""


class Servers:
    """The servers behind one run, each with at most `concurrency` calls in flight.

    A call goes to the healthy server with the fewest calls in flight. A server whose call could
    not connect, timed out or got a 5xx rests (`rest` seconds, doubling while it keeps failing,
    up to `max_rest`) and gets no calls while another server is healthy; when every server
    rests, the one back soonest is tried.
    """

    def __init__(self, clients: list[Any], concurrency: int, rest: float, max_rest: float):
        self.clients = clients
        self.concurrency = concurrency
        self.in_flight = [0] * len(clients)
        self.resting_until = [0.0] * len(clients)
        self._rest = [0.0] * len(clients)
        self._first_rest, self._max_rest = rest, max_rest
        # Calls waiting for a slot, first come first served. One event loop, so no lock: a slot
        # freed is handed to the next waiter, which takes it if a server it may use is free.
        self._waiting: deque[asyncio.Future] = deque()

    def _pick(self) -> int | None:
        now = time.monotonic()
        free = [i for i, n in enumerate(self.in_flight) if n < self.concurrency]
        healthy = [i for i in free if self.resting_until[i] <= now]
        if healthy:
            return min(healthy, key=self.in_flight.__getitem__)
        if free and min(self.resting_until) > now:
            return min(free, key=self.resting_until.__getitem__)
        return None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Any]:
        """A server's client for one call; the call's outcome marks the server healthy or resting."""
        while self._waiting or (i := self._pick()) is None:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                self._wake()  # this call no longer wants the slot it may have been handed
                raise
            if (i := self._pick()) is not None:
                break
        self.in_flight[i] += 1
        try:
            yield self.clients[i]
        except BaseException as exc:
            if server_failed(exc):
                self._rest[i] = min(max(2 * self._rest[i], self._first_rest), self._max_rest)
                self.resting_until[i] = time.monotonic() + self._rest[i]
            raise
        else:
            self._rest[i], self.resting_until[i] = 0.0, 0.0
        finally:
            self.in_flight[i] -= 1
            self._wake()

    def _wake(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        for client in self.clients:
            await (client.aclose() if hasattr(client, "aclose") else client.close())  # httpx2's clients, the SDKs' clients


def retry_after(exc: BaseException) -> float | None:
    """Seconds a server asked us to wait (`Retry-After`, or `retry-after-ms`), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except ValueError:
        return None
    return None


class ApiJudge(Judge):
    """A judge behind an HTTP API. A subclass gives `_client` (an async client for one server:
    an SDK's, or an `httpx2.AsyncClient`) and `_ask` (one call with it); retries, failover, rate
    limits and closing are this class's, for any client whose errors carry an HTTP status."""

    NOT_IN_KEY = API_NOT_IN_KEY
    DEFAULT_KEY_ENV = ""

    def __init__(self, config: JudgeConfig):
        super().__init__(config)
        env = self.options.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise JudgeConfigError(f"{config.source or config.name}: the environment variable {env} (option 'api_key_env') is not set")
            self._api_key = key
        else:
            self._api_key = "none"  # a local server that takes no key
        # Kept across calls (a labeling run's chunks): the event loop, the clients with their open
        # connections, the servers' health and the rate limits' budgets.
        self._runner: asyncio.Runner | None = None
        self._servers: Servers | None = None
        self._limiters: tuple[AsyncLimiter | None, AsyncLimiter | None] = (None, None)
        self._answered = False  # whether any call has reached a server: until one does, a server that cannot be reached stops the run

    def redact(self, text: str) -> str:
        """`text` with the API key, and anything shaped like one, blanked out."""
        if self._api_key and self._api_key != "none":
            text = text.replace(self._api_key, "***")
        return re.sub(r"\b(sk-[A-Za-z0-9_\-*]{6,})", "sk-***", text)

    @classmethod
    def completion_budget(cls, options: Any, cot: bool) -> int:
        return options.max_tokens_cot if cot else options.max_tokens

    @property
    def base_urls(self) -> list[str | None]:
        url = self.options.base_url
        return list(url) if isinstance(url, list) else [url]

    @abstractmethod
    def _client(self, base_url: str | None) -> Any:
        """A fresh async SDK client for one server (made inside the event loop that uses it)."""

    @abstractmethod
    async def _ask(self, client: Any, request: JudgeRequest) -> Verdict:
        """One call: returns a verdict, raises on transport or protocol errors."""

    def _wait(self, retry_state) -> float:
        exc = retry_state.outcome.exception()
        asked = retry_after(exc) if exc else None
        if asked is not None:
            return min(asked, self.options.retry_max_wait)
        initial = self.options.retry_initial_wait
        backoff = wait_exponential_jitter(multiplier=initial, max=self.options.retry_max_wait, jitter=initial)
        return backoff(retry_state)

    async def _with_retries(self, servers: Servers, call: Callable[[Any], Awaitable[Any]], limits: list[tuple[AsyncLimiter, float]]) -> Any:
        """`call(client)` on a server, retried (on any server) while it fails transiently; raises
        `JudgeFatalError` on an error retrying cannot help, `GaveUp` after the last attempt."""
        def unreachable(retry_state) -> bool:  # a server no call has reached yet: three tries, not the whole schedule
            exc = retry_state.outcome.exception()
            return not self._answered and cannot_connect(exc) and retry_state.attempt_number >= UNREACHABLE_TRIES

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.options.max_retries + 1) | unreachable,
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    for limiter, amount in limits:
                        await limiter.acquire(amount)
                    async with servers.slot() as client:
                        result = await call(client)
                        self._answered = True
                        return result
        except Exception as exc:  # noqa: BLE001 - sorted into fatal and transient below
            message = self.redact(f"{type(exc).__name__}: {exc}")
            if not is_transient(exc):
                raise JudgeFatalError(f"'{self.name}' failed and retrying cannot help: {message}") from None
            if not self._answered and cannot_connect(exc):
                where = ", ".join(url or "the SDK's default address" for url in self.base_urls)
                raise JudgeFatalError(f"judge '{self.name}' cannot reach its server at {where} ({message}): is it running, "
                                      "and is base_url right? Nothing was labeled; run the same command again once it answers") from None
            raise GaveUp(f"gave up after {self.options.max_retries + 1} attempts: {message}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def call_all(self, items: Sequence[Any], call: Callable[[Any, Any], Awaitable[Any]], budget: Callable[[Any], int],
                 on_result: Callable[[int, Any, str | None], None]) -> None:
        """`call(client, item)` for every item, concurrently over the servers, with the rate
        limits (`budget(item)`: the tokens it may take) and retries; `on_result(index, result,
        error)` as each ends (`error` set, `result` None, when a call gave up)."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        self._runner.run(self._call_all(items, call, budget, on_result))

    async def _call_all(self, items, call, budget, on_result) -> None:
        if self._servers is None:  # made inside the event loop that uses them
            self._servers = Servers([self._client(url) for url in self.base_urls], self.options.concurrency,
                                    self.options.retry_initial_wait, self.options.retry_max_wait)
            self._limiters = (AsyncLimiter(self.options.requests_per_minute, 60) if self.options.requests_per_minute else None,
                              AsyncLimiter(self.options.tokens_per_minute, 60) if self.options.tokens_per_minute else None)
        servers, (rpm, tpm) = self._servers, self._limiters

        async def one(index: int, item: Any) -> None:
            limits = []
            if rpm:
                limits.append((rpm, 1))
            if tpm:
                limits.append((tpm, min(budget(item), self.options.tokens_per_minute)))
            try:
                result = await self._with_retries(servers, lambda client: call(client, item), limits)
            except GaveUp as gave_up:
                on_result(index, None, str(gave_up))
            else:
                on_result(index, result, None)

        try:
            async with asyncio.TaskGroup() as group:
                for index, item in enumerate(items):
                    group.create_task(one(index, item))
        except* JudgeFatalError as errors:
            raise errors.exceptions[0] from None

    def close(self) -> None:
        """Close the clients' connections and their event loop."""
        if self._runner is not None:
            if self._servers is not None:
                self._runner.run(self._servers.close())
            self._runner.close()
            self._runner = self._servers = None

    def judge(self, requests: Sequence[JudgeRequest], on_result: Callable[[int, Verdict], None]) -> None:
        def report(index: int, verdict: Verdict | None, error: str | None) -> None:
            on_result(index, verdict if error is None else Verdict(p_first=None, error=error, transient=True))

        def budget(request: JudgeRequest) -> int:
            return estimate_tokens(request.prompt) + self.completion_budget(self.options, request.cot)

        self.call_all(requests, self._ask, budget, report)


def hard_verdict(text: str, request: JudgeRequest, **usage: int) -> Verdict:
    """A verdict parsed from text (P(first) 1.0 or 0.0, or the rating given), or a failure
    that keeps the raw text."""
    choice = parse_verdict(text, request.labels, request.verdict_prefix)
    if choice is None:
        return Verdict(p_first=None, text=text, soft=False, error="no verdict could be read from the reply", **usage)
    return Judge.from_label_probs(request, [float(i == choice) for i in range(len(request.labels))], text=text, soft=False, **usage)
