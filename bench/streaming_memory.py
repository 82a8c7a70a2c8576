"""Peak memory of `rlaif label` as its input grows, against the loopback OpenAI server.

Each size is one whole `rlaif label` process (the real CLI and `openai` SDK client, both
orders of every pair) over that many pairs: the HH-RLHF pairs in examples/, repeated with a
number added to each prompt so that no two pairs share a judge call. The table gives the
peak resident memory of the labeling process, its wall time, and checks the output: every
pair labeled once, no id twice.

    python bench/streaming_memory.py --pairs 1000 10000 100000
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import ROOT, timed_process  # this folder's own module (bench/ is on the path when run)

HH = ROOT / "examples" / "hh-harmless.jsonl.gz"


def write_input(path: Path, pairs: int) -> None:
    rows = [json.loads(line) for line in gzip.decompress(HH.read_bytes()).decode().splitlines()]
    with open(path, "w") as fh:
        for i in range(pairs):
            row = rows[i % len(rows)]
            # A transcript's first turn made unique, so every pair is a new judge call.
            first = row["chosen"].index("\n\nAssistant:")
            tag = f" (#{i})"
            fh.write(json.dumps({"id": f"s{i}", "chosen": row["chosen"][:first] + tag + row["chosen"][first:],
                                 "rejected": row["rejected"][:first] + tag + row["rejected"][first:]}) + "\n")


def run(pairs: int, concurrency: int, workdir: Path) -> dict:
    data = workdir / f"pairs-{pairs}.jsonl"
    write_input(data, pairs)
    server = subprocess.Popen([sys.executable, "-m", "tests.loopback"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        judge = workdir / "judge.toml"
        judge.write_text(f'backend = "openai"\nmodel = "loopback"\n[options]\nbase_url = "{url}/v1"\napi_key_env = ""\n')
        out = workdir / f"out-{pairs}"
        wall, peak, _ = timed_process(["-m", "rlaif.cli", "label", "--input", str(data), "--output", str(out), "--judge", str(judge),
                                       "--concurrency", str(concurrency), "--quiet"], threads=1)
    finally:
        server.kill()
        server.wait()
    manifest = json.loads((out / "manifest.json").read_text())
    ids = [json.loads(line)["id"] for line in (out / "pairs.jsonl").read_text().splitlines()]
    return {"pairs": pairs, "input_mb": data.stat().st_size / 2**20, "calls": manifest["judge_calls"]["made"], "labeled": len(ids),
            "skipped": sum(manifest["counts"]["skipped"].values()),
            "unique_ids": len(set(ids)), "wall_s": wall, "peak_gib": peak, "output_mb": (out / "pairs.jsonl").stat().st_size / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 100000])
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for n in args.pairs:
            results.append(run(n, args.concurrency, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print("| pairs | input | judge calls | pairs.jsonl: rows (distinct ids) | skipped (identical responses) | wall time "
          "| peak memory of `rlaif label` |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['pairs']:,} | {r['input_mb']:.1f} MB | {r['calls']:,} "
              f"| {r['output_mb']:.1f} MB: {r['labeled']:,} ({r['unique_ids']:,}) | {r['skipped']:,} "
              f"| {r['wall_s']:.0f} s | {r['peak_gib']:.3f} GiB |")


if __name__ == "__main__":
    main()
