"""`rlaif serve` under load, beside `rlaif label` on the same requests offline, in one run.

The same judge (the embedded one by default, rating each completion alone) scores the same
completions twice, each side a process of its own: offline, as one `rlaif label --mode
pointwise` run over the pairs they come from, and served, as CLIENTS concurrent clients each sending REQUESTS requests of one completion
to `/v1/scores`. Each side starts with an empty answer cache and its model already loaded, so
both times are the judging alone. The local judge is faster on a batch of neighbouring
completions (the two responses of a prompt side by side) than on one of completions from far
apart, so `--assign` says which completions the clients in flight together send. Prints errors, lost requests, latency percentiles and both
throughputs.

Usage: python bench/serve_load.py [--clients 32] [--requests 20] [--judge embedded]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2

from rlaif.inputs import load_examples
from tests.conftest import HH, write_jsonl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--judge", default="embedded")
    parser.add_argument("--assign", choices=("round-robin", "block"), default="round-robin",
                        help="which completions a client sends: round-robin (client c sends c, c + CLIENTS, ...: the clients in flight "
                             "together send neighbours in the input, as a trainer's workers taking the next samples do) or block (client c "
                             "sends its own run of REQUESTS: the clients in flight together send completions from far apart)")
    args = parser.parse_args()
    n = args.clients * args.requests
    examples = load_examples(f"{HH}?rows=0:{(n + 1) // 2}").examples
    items = [(ex.prompt, r) for ex in examples for r in ex.responses][:n]
    tmp = Path(tempfile.mkdtemp())

    pairs = write_jsonl(tmp / "pairs.jsonl", [{"id": f"r{i}", "prompt": items[i][0], "responses": [items[i][1], items[i + 1][1]]}
                                              for i in range(0, n, 2)])
    # Each side a process of its own, as `rlaif label` and `rlaif serve` run: neither shares this one's threads.
    subprocess.run([sys.executable, "-m", "rlaif.cli", "label", "--input", str(pairs), "--output", str(tmp / "offline"),
                    "--judge", args.judge, "--mode", "pointwise", "--quiet"], check=True, stdout=subprocess.DEVNULL)
    offline = json.loads((tmp / "offline" / "manifest.json").read_text())
    offline_s = offline["timings"]["judging_s"]
    print(f"offline: rlaif label --mode pointwise, {offline['judge_calls']['made']} calls in {offline_s:.1f} s "
          f"({offline['judge_calls']['made'] / offline_s:.2f} completions/s)", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "rlaif.cli", "serve", "--judge", args.judge, "--cache", str(tmp / "serve.sqlite"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                if httpx2.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                time.sleep(0.5)

        def client(c: int) -> list[tuple[float, int]]:
            out = []
            with httpx2.Client(timeout=3600) as http:
                for r in range(args.requests):
                    prompt, completion = items[c + r * args.clients if args.assign == "round-robin" else c * args.requests + r]
                    started = time.perf_counter()
                    try:
                        status = http.post(url + "/v1/scores", json={"prompts": [prompt], "completions": [completion]}).status_code
                    except httpx2.HTTPError:
                        status = -1
                    out.append((time.perf_counter() - started, status))
            return out

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [x for part in pool.map(client, range(args.clients)) for x in part]
        served_s = time.perf_counter() - started
        metrics = httpx2.get(url + "/metrics").json()
    finally:
        server.terminate()
        server.wait(60)
    latencies = sorted(t for t, status in results if status == 200)
    errors = sum(status != 200 for _, status in results)
    print(f"served: {args.clients} clients x {args.requests} requests ({args.assign}), {len(results)} answered, "
          f"{errors} errors, {n - len(results)} lost, "
          f"{metrics['judge_calls']} judge calls in {metrics['batches']} batches, {served_s:.1f} s ({n / served_s:.2f} completions/s); "
          f"of it the worker computing batches {metrics['judging_s']:.1f} s")
    print(f"latency: p50 {latencies[len(latencies) // 2]:.2f} s, "
          f"p99 {latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]:.2f} s")
    print(f"throughput served / offline: {(n / served_s) / (offline['judge_calls']['made'] / offline_s):.2f}")


if __name__ == "__main__":
    main()
