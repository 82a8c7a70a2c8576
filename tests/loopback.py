"""A loopback HTTP server that speaks the OpenAI chat completions and Anthropic messages
protocols, for testing the API judges through the real SDK clients with no network.

It answers like a judge that prefers the response containing "GOOD" (p = 0.8), and can be
told to be slow or to fail: 429 with Retry-After, 500, a hang past the client's timeout,
a dropped connection, a malformed or truncated body, or a reply with no verdict.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

FAULTS = ("429", "500", "timeout", "drop", "malformed", "truncated", "unparseable", "hang")


def _prefers_first(prompt: str) -> bool:
    first = prompt.split("Response 1:")[-1].split("Response 2:")[0]
    return "GOOD" in first


class Loopback:
    """Start with `with Loopback() as server:`; `server.url` is the base URL for the SDKs."""

    def __init__(self, latency: float = 0.0, logprobs: bool = True):
        self.latency = latency
        self.logprobs = logprobs
        # fault(n, prompt) -> a fault name or None; n counts requests from 1.
        self.fault: Callable[[int, str], str | None] = lambda n, prompt: None
        self.requests = 0
        self.answered: Counter[str] = Counter()  # prompt hash -> complete 200 replies written
        self.keys_seen: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "Loopback":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def fail_randomly(self, rate: float, seed: int = 0, kinds: tuple[str, ...] = ("429", "500", "drop")) -> None:
        rng = random.Random(seed)
        lock = threading.Lock()

        def fault(n: int, prompt: str) -> str | None:
            with lock:
                return rng.choice(kinds) if rng.random() < rate else None

        self.fault = fault

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

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ") or self.headers.get("x-api-key", "")
                with server._lock:
                    server.requests += 1
                    n = server.requests
                    server.keys_seen.add(key)
                if key == "bad-key":
                    return self._send(401, json.dumps({"error": {"message": f"Incorrect API key provided: {key}", "type": "invalid_request_error"}}).encode())
                prompt = body["messages"][-1]["content"]
                fault = server.fault(n, prompt)
                time.sleep(server.latency)
                if fault == "429":
                    return self._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0.05"})
                if fault == "500":
                    return self._send(500, b'{"error": {"message": "internal error"}}')
                if fault in ("timeout", "hang"):
                    time.sleep(3600 if fault == "hang" else 2.0)
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault == "malformed":
                    return self._send(200, b'{"id": "x", "choices": [ this is not json')
                first = _prefers_first(prompt)
                cot = "explain" in prompt
                verdict = "1" if first else "2"
                text = f"Response {verdict} is clearer.\nPreferred Response={verdict}" if cot else f"Preferred Response={verdict}"
                if fault == "unparseable":
                    text = "Both responses have merits; I cannot choose."
                if self.path.endswith("/chat/completions"):
                    reply = self._openai(body, text, first)
                else:
                    reply = self._anthropic(body, text)
                data = json.dumps(reply).encode()
                if fault == "truncated":
                    self.close_connection = True
                    return self._send(200, data[: len(data) // 2], length=len(data))
                self._send(200, data)
                with server._lock:
                    server.answered[hashlib.sha256(prompt.encode()).hexdigest()] += 1

            def _openai(self, body: dict, text: str, first: bool) -> dict:
                cut = text.rfind("=") + 1
                tokens = [text[:cut], text[cut:]] if cut and text[cut:] in ("1", "2") else [text]
                content = []
                for token in tokens:
                    if token in ("1", "2"):
                        p1 = 0.8 if first else 0.2
                        top = [{"token": "1", "logprob": _log(p1), "bytes": [49]}, {"token": "2", "logprob": _log(1 - p1), "bytes": [50]}]
                        if not first:
                            top.reverse()
                        lp = top[0]["logprob"]
                    else:
                        top = [{"token": token, "logprob": -0.01, "bytes": list(token.encode())}]
                        lp = -0.01
                    content.append({"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": top})
                logprobs = {"content": content, "refusal": None} if server.logprobs and body.get("logprobs") else None
                return {
                    "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": logprobs, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(body["messages"][-1]["content"]) // 4, "completion_tokens": len(tokens), "total_tokens": 0},
                }

            def _anthropic(self, body: dict, text: str) -> dict:
                return {
                    "id": "msg_loopback", "type": "message", "role": "assistant", "model": body["model"],
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                    "usage": {"input_tokens": len(body["messages"][-1]["content"]) // 4, "output_tokens": 5},
                }

        return Handler


def _log(p: float) -> float:
    return math.log(p)


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
