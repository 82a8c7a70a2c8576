"""A loopback HTTP server that speaks the OpenAI chat completions and Anthropic messages
protocols, for testing the API judges through the real SDK clients with no network.

It answers like a judge that prefers the response containing "GOOD" (p = 0.8), or, asked
to rate one response (a pointwise prompt), rates it 4 if it contains "GOOD" and 2 if not
(a server made with `prefers="weak"` looks for that word instead)
(log-probabilities 0.6 on that rating, 0.2 on the next one down... see `RATING_PROBS`). A server
made with `verdict_probs` answers a pairwise chat prompt with the label probabilities that
function gives it instead (a simulated judge with a known preference).
Asked anything else (a generation request), it samples `n` replies, "GOOD answer (seed s)" for
an even seed s and "weak answer (seed s)" for an odd one, seed + i for the i-th (a server
made with `ignores_n` returns one, like llama.cpp). It can be told to be slow or to fail:
429 with Retry-After, 500, a hang past the client's timeout, a dropped connection, a malformed
or truncated body, a reply with no verdict, or to stop serving altogether.
"""

from __future__ import annotations

import email
import hashlib
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

FAULTS = ("429", "500", "timeout", "drop", "malformed", "truncated", "unparseable", "hang", "stop")


def _prefers_first(prompt: str, prefers: str) -> bool:
    first = prompt.split("Response 1:")[-1].split("Response 2:")[0]
    return prefers in first


class Loopback:
    """Start with `with Loopback() as server:`; `server.url` is the base URL for the SDKs."""

    def __init__(self, latency: float = 0.0, logprobs: bool = True, ignores_n: bool = False, prefers: str = "GOOD",
                 verdict_probs: Callable[[str], dict[str, float]] | None = None):
        self.latency = latency
        self.prefers = prefers
        self.verdict_probs = verdict_probs
        self.logprobs = logprobs
        self.ignores_n = ignores_n
        self.stopped = False
        # fault(n, prompt) -> a fault name or None; n counts requests from 1.
        self.fault: Callable[[int, str], str | None] = lambda n, prompt: None
        self.requests = 0
        self.chats: list[list[dict]] = []  # the messages of every generation request
        self.bodies: list[tuple[str, dict]] = []  # (path, body) of every judge or generation request
        self.in_flight = self.max_in_flight = 0  # requests being answered: now, and at most at once
        self.answered: Counter[str] = Counter()  # prompt hash -> complete 200 replies written
        self.keys_seen: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls = 2
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # Faults break connections on purpose; a handler thread's broken pipe is not news.
        self._server.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def stop(self) -> None:
        """Stop serving, as a server that went down: new connections are refused, and a request
        on a connection already open gets it closed with no reply."""
        self.stopped = True
        threading.Thread(target=self.__exit__, daemon=True).start()

    def fail_randomly(self, rate: float, seed: int = 0, kinds: tuple[str, ...] = ("429", "500", "drop")) -> None:
        rng = random.Random(seed)
        lock = threading.Lock()

        def fault(n: int, prompt: str) -> str | None:
            with lock:
                return rng.choice(kinds) if rng.random() < rate else None

        self.fault = fault

    # ---- the Batch API: a batch completes on its `batch_polls`-th retrieve ----

    def _upload(self, raw: bytes, content_type: str) -> dict:
        message = email.message_from_bytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        content = next(part.get_payload(decode=True) for part in message.get_payload() if part.get_filename())
        file_id = f"file-{len(self.files) + 1}"
        self.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()), "filename": "batch.jsonl",
                "purpose": "batch", "status": "processed"}

    def _create_batch(self, body: dict) -> dict:
        batch_id = f"batch_{len(self.batches) + 1}"
        self.batches[batch_id] = {"input_file_id": body["input_file_id"], "polls": 0, "output_file_id": None,
                                  "metadata": body.get("metadata"), "created_at": int(time.time()), "status": "validating"}
        return self._batch_object(batch_id, "validating")

    def _list_batches(self) -> dict:
        newest_first = [self._batch_object(i, b["status"]) for i, b in reversed(self.batches.items())]
        return {"object": "list", "data": newest_first, "first_id": None, "last_id": None, "has_more": False}

    def _batch_object(self, batch_id: str, status: str) -> dict:
        b = self.batches[batch_id]
        b["status"] = status
        return {"id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": b["input_file_id"],
                "completion_window": "24h", "status": status, "created_at": b["created_at"], "output_file_id": b["output_file_id"],
                "error_file_id": None, "errors": None, "metadata": b["metadata"]}

    def _poll_batch(self, batch_id: str) -> dict:
        b = self.batches[batch_id]
        b["polls"] += 1
        if b["polls"] < self.batch_polls:
            return self._batch_object(batch_id, "in_progress")
        if b["output_file_id"] is None:
            lines = []
            for n, line in enumerate(self.files[b["input_file_id"]].decode().splitlines(), start=1):
                request = json.loads(line)
                prompt = request["body"]["messages"][-1]["content"]
                if self.fault(n, prompt) == "500":
                    result = {"status_code": 500, "request_id": f"req_{n}", "body": {"error": {"message": "internal error"}}}
                else:
                    result = {"status_code": 200, "request_id": f"req_{n}",
                              "body": openai_reply(request["body"], False, self.logprobs, self.prefers)}
                    self.answered[hashlib.sha256(prompt.encode()).hexdigest()] += 1
                lines.append(json.dumps({"id": f"batch_req_{n}", "custom_id": request["custom_id"], "response": result, "error": None}))
            b["output_file_id"] = f"file-out-{batch_id}"
            self.files[b["output_file_id"]] = "\n".join(lines).encode()
        return self._batch_object(batch_id, "completed")

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()

            def do_GET(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")  # v1/batches, v1/batches/ID or v1/files/ID/content
                if parts[1:] == ["batches"]:
                    return self._send(200, json.dumps(server._list_batches()).encode())
                if parts[1] == "batches":
                    return self._send(200, json.dumps(server._poll_batch(parts[2])).encode())
                return self._send(200, server.files[parts[2]])

            def do_POST(self) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._post()
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _post(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path.endswith("/files"):
                    return self._send(200, json.dumps(server._upload(raw, self.headers["Content-Type"])).encode())
                body = json.loads(raw)
                if self.path.endswith("/batches"):
                    return self._send(200, json.dumps(server._create_batch(body)).encode())
                if server.stopped:
                    self.close_connection = True
                    return
                key = self.headers.get("Authorization", "").removeprefix("Bearer ") or self.headers.get("x-api-key", "")
                with server._lock:
                    server.requests += 1
                    n = server.requests
                    server.keys_seen.add(key)
                if key == "bad-key":
                    return self._send(401, json.dumps({"error": {"message": f"Incorrect API key provided: {key}",
                                                                 "type": "invalid_request_error"}}).encode())
                server.bodies.append((self.path, body))
                prompt = request_prompt(body)
                fault = server.fault(n, prompt)
                time.sleep(server.latency)
                if fault == "429":
                    return self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0.05"})
                if fault == "500":
                    return self._send(500, b'{"error": {"message": "internal error"}}')
                if fault in ("timeout", "hang"):
                    time.sleep(3600 if fault == "hang" else 2.0)
                    return
                if fault in ("drop", "stop"):
                    if fault == "stop":
                        server.stop()
                    self.close_connection = True
                    return
                if fault == "malformed":
                    return self._send(200, b'{"id": "x", "choices": [ this is not json')
                if self.path.endswith("/chat/completions") and "n" in body:
                    server.chats.append(body["messages"])
                    reply = generation_reply(body, 1 if server.ignores_n else body["n"])
                elif self.path.endswith("/chat/completions"):
                    reply = openai_reply(body, fault == "unparseable", server.logprobs, server.prefers, server.verdict_probs)
                elif self.path.endswith("/completions"):
                    reply = completion_reply(body, server.logprobs, server.prefers)
                else:
                    reply = anthropic_reply(body, fault == "unparseable", server.prefers)
                data = json.dumps(reply).encode()
                if fault == "truncated":
                    self.close_connection = True
                    return self._send(200, data[: len(data) // 2], length=len(data))
                self._send(200, data)
                with server._lock:
                    server.answered[hashlib.sha256(prompt.encode()).hexdigest()] += 1

        return Handler


# The top log-probabilities of the rating token of a pointwise answer: expected rating
# 4(.6) + 5(.2) + 3(.1) + 2(.05) + 1(.05) = 3.85 for a GOOD response, 2.15 for another.
RATING_PROBS = {"4": {"4": 0.6, "5": 0.2, "3": 0.1, "2": 0.05, "1": 0.05}, "2": {"2": 0.6, "1": 0.2, "3": 0.1, "4": 0.05, "5": 0.05}}


def _rating(prompt: str, prefers: str) -> str | None:
    """The rating of a pointwise prompt (one response, after "Response:"), None for a pair."""
    if "Rating=" not in prompt or "\nResponse:\n" not in prompt:
        return None
    return "4" if prefers in prompt.split("\nResponse:\n")[1].split("\n\n")[0] else "2"


def request_prompt(body: dict) -> str:
    """The rubric a request carries: a completions prompt, or the last user turn of a chat."""
    if "prompt" in body:
        return body["prompt"]
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def _prefilled(body: dict) -> str | None:
    """The assistant turn a chat request asks to continue (Anthropic's pre-fill, vLLM's
    `continue_final_message`), or None."""
    last = body.get("messages", [{}])[-1]
    return last["content"] if last.get("role") == "assistant" else None


def _verdict_text(prompt: str, unparseable: bool, prefers: str) -> tuple[str, bool]:
    if unparseable:
        return "Both responses have merits; I cannot choose.", True
    if rating := _rating(prompt, prefers):
        return (f"It is fine.\nRating={rating}" if "explain" in prompt else f"Rating={rating}"), rating == "4"
    first = _prefers_first(prompt, prefers)
    verdict = "1" if first else "2"
    if "explain" in prompt:  # the chain-of-thought form
        return f"Response {verdict} is clearer.\nPreferred Response={verdict}", first
    return f"Preferred Response={verdict}", first


def _top(prompt: str, first: bool, prefers: str, probs: dict[str, float] | None = None) -> list[dict]:
    """The top log-probabilities at a verdict token (p = 0.8 / 0.2 on the labels, or `RATING_PROBS`, or `probs` as given)."""
    rating = _rating(prompt, prefers)
    probs = probs or (RATING_PROBS[rating] if rating else {"1": 0.8 if first else 0.2, "2": 0.2 if first else 0.8})
    top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in probs.items()]
    return sorted(top, key=lambda t: -t["logprob"])


def _continuation(prompt: str, text: str, body: dict) -> tuple[str, list[str]]:
    """What a server writes after `prompt` when the reply `text` would be its whole answer: a
    request that stops at the verdict prefix gets the rationale; one whose turn was written up to
    the verdict prefix gets the label alone. Returns the text and its tokens."""
    stop = body.get("stop") or body.get("stop_sequences") or []
    for s in stop:
        if s in text:
            return text[: text.index(s)], [text[: text.index(s)]]
    label = text[text.rfind("=") + 1:]
    if _prefilled(body) is not None or "prompt" in body:
        return label, [label]
    cut = len(text) - len(label)
    return text, ([text[:cut], label] if cut and label.isdigit() else [text])


def openai_reply(body: dict, unparseable: bool, logprobs: bool, prefers: str,
                 verdict_probs: Callable[[str], dict[str, float]] | None = None) -> dict:
    """A chat completion whose verdict token carries top log-probabilities p = 0.8 / 0.2 (or
    `verdict_probs(prompt)`); with a `response_format` the verdict comes as JSON, {"verdict": label}."""
    prompt = request_prompt(body)
    full, first = _verdict_text(prompt, unparseable, prefers)
    probs = verdict_probs(prompt) if verdict_probs and not unparseable else None
    if probs:
        label = max(probs, key=probs.__getitem__)
        full = f"Rating={label}" if _rating(prompt, prefers) else f"Preferred Response={label}"
    if body.get("response_format") and not unparseable:
        label = full[full.rfind("=") + 1:]
        why = '"rationale": "It is clearer.", ' if "explain" in prompt else ""
        tokens = ["{" + why + '"verdict": "', label, '"}']
    else:
        _, tokens = _continuation(prompt, full, body)
    text = "".join(tokens)
    content = []
    for token in tokens:
        top = (_top(prompt, first, prefers, probs) if token.isdigit()
               else [{"token": token, "logprob": -0.01, "bytes": list(token.encode())}])
        content.append({"token": token, "logprob": top[0]["logprob"], "bytes": list(token.encode()), "top_logprobs": top})
    return {
        "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "logprobs": {"content": content, "refusal": None} if logprobs and body.get("logprobs") else None,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(tokens), "total_tokens": len(prompt) // 4 + len(tokens)},
    }


def completion_reply(body: dict, logprobs: bool, prefers: str) -> dict:
    """A text completion (`/completions`) of a prompt rendered through a chat template: the
    rationale, or the label with its top log-probabilities in the legacy format."""
    prompt = body["prompt"]
    full, first = _verdict_text(prompt, False, prefers)
    text, _ = _continuation(prompt, full, body)
    top = {t["token"]: t["logprob"] for t in _top(prompt, first, prefers)} if text.isdigit() else {text: -0.01}
    lp = {"tokens": [text], "token_logprobs": [max(top.values())], "top_logprobs": [top], "text_offset": [0]}
    return {
        "id": "cmpl-loopback", "object": "text_completion", "created": int(time.time()), "model": body["model"],
        "choices": [{"index": 0, "text": text, "logprobs": lp if logprobs and body.get("logprobs") else None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 1, "total_tokens": len(prompt) // 4 + 1},
    }


def generation_reply(body: dict, n: int) -> dict:
    """A chat completion with `n` sampled choices (see the module's docstring)."""
    texts = [f"{'GOOD' if (body['seed'] + i) % 2 == 0 else 'weak'} answer (seed {body['seed'] + i})" for i in range(n)]
    return {
        "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
        "choices": [{"index": i, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": None,
                     "finish_reason": "stop"} for i, text in enumerate(texts)],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n},
    }


def anthropic_reply(body: dict, unparseable: bool, prefers: str) -> dict:
    prompt = request_prompt(body)
    full, _ = _verdict_text(prompt, unparseable, prefers)
    text = full if unparseable else _continuation(prompt, full, body)[0]
    return {
        "id": "msg_loopback", "type": "message", "role": "assistant", "model": body["model"],
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": len(prompt) // 4, "output_tokens": 5},
    }


def main() -> None:
    """Serve from the command line (for benchmarks): prints the base URL, then serves until killed."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests that fail transiently (429, 500, dropped)")
    args = parser.parse_args()
    server = Loopback(latency=args.latency)
    if args.fail_rate:
        server.fail_randomly(args.fail_rate)
    with server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
