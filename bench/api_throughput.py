"""Throughput of `rlaif label` against a loopback OpenAI server with a fixed latency per call.

Runs the real CLI (real `openai` SDK client) on N pairs, both orders, and compares the
achieved call rate with the ideal, concurrency / latency. A second run makes a share of
the calls fail transiently (429, 500, dropped connections) and checks every pair is still
labeled. Each setting runs --runs times (whole `rlaif label` processes); the table gives the
median run, its peak memory, and where the CPU went: the client's CPU time for the calls (the
run's, less that of the same command rerun with every answer cached) and the loopback
server's.

    python bench/api_throughput.py --pairs 1000 --concurrency 32 --latency 0.1 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, timed_process  # this folder's own module (bench/ is on the path when run)


def run(pairs: int, concurrency: int, latency: float, fail_rate: float, workdir: Path, run: int) -> dict:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.loopback", "--latency", str(latency), "--fail-rate", str(fail_rate)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = server.stdout.readline().strip()
        judge = workdir / f"judge-{fail_rate}.toml"
        judge.write_text(
            f'backend = "openai"\nmodel = "loopback"\n[options]\nbase_url = "{url}/v1"\napi_key_env = ""\n'
            "retry_initial_wait = 0.05\nretry_max_wait = 1.0\nmax_retries = 8\n"
        )
        out = workdir / f"out-{concurrency}-{fail_rate}-{run}"
        label = ["-m", "rlaif.cli", "label", "--input", str(workdir / "pairs.jsonl"), "--output", str(out),
                 "--judge", str(judge), "--concurrency", str(concurrency), "--quiet"]
        _, peak, cpu = timed_process(label, threads=1)
        manifest = json.loads((out / "manifest.json").read_text())
        _, _, cpu_cached = timed_process(label, threads=1)  # the same run again: every answer cached, no call made
    finally:
        server.kill()
    server_usage = os.wait4(server.pid, 0)[2]
    calls = manifest["judge_calls"]["made"]
    judging = manifest["timings"]["judging_s"]
    ideal = concurrency / latency
    return {
        "pairs": pairs, "fail_rate": fail_rate, "concurrency": concurrency, "calls": calls,
        "labeled": manifest["counts"]["labeled"], "failed": manifest["counts"]["failed"]["judge"],
        "judging_s": judging, "wall_s": manifest["wall_time_s"],
        "calls_per_s": calls / judging, "ideal_calls_per_s": ideal, "fraction_of_ideal": calls / judging / ideal, "peak_gib": peak,
        "client_cpu_s": cpu - cpu_cached, "server_cpu_s": server_usage.ru_utime + server_usage.ru_stime,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with open(workdir / "pairs.jsonl", "w") as fh:
            fh.writelines(json.dumps({"id": f"b{i}", "prompt": f"Question number {i}?", "chosen": f"GOOD answer {i}",
                                      "rejected": f"weak answer {i}"}) + "\n" for i in range(args.pairs))
        results = {rate: [run(args.pairs, args.concurrency, args.latency, rate, workdir, k) for k in range(args.runs)]
                   for rate in (0.0, 0.1)}
    print("| transient failures | runs | pairs labeled (each run) | judge calls | judging time (median) | calls/s "
          "| ideal calls/s | fraction of ideal | peak memory | client CPU for the calls | loopback server CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for rate, runs in results.items():
        r = min(runs, key=lambda x: abs(x["judging_s"] - statistics.median(y["judging_s"] for y in runs)))  # the median run
        labeled = ", ".join(f"{x['labeled']}" for x in runs)
        print(f"| {100 * rate:.0f}% | {len(runs)} | {labeled} of {r['pairs']} | {r['calls']} | {r['judging_s']:.2f} s "
              f"| {r['calls_per_s']:.0f} | {r['ideal_calls_per_s']:.0f} | {100 * r['fraction_of_ideal']:.0f}% | {r['peak_gib']:.2f} GiB "
              f"| {r['client_cpu_s']:.1f} s | {r['server_cpu_s']:.1f} s |")


if __name__ == "__main__":
    main()
