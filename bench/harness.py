"""What the side-by-side benchmarks share: one measured run = one whole process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed_process(args: list[str], threads: int) -> tuple[float, float, float]:
    """Run `python ARGS` from the repository root with `threads` CPU threads; its wall time in
    seconds, its peak resident memory in GiB and its CPU time in seconds (the process's own,
    from wait4)."""
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL)  # peers print their logs
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{' '.join(args[:3])} ... failed (status {status})")
    return wall, usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime


def alternate(script: str, sides: dict[str, list[str]], settings: dict, runs: int, workdir: Path) -> list[dict]:
    """`runs` whole processes of each side, the sides alternating: `python SCRIPT --worker SIDE
    --settings JSON --result FILE ARGS` (ARGS: the side's own, from `sides`), whose worker writes
    a JSON object to FILE. Returns, per run, that object with the side, wall time and peak memory."""
    found = []
    for run in range(runs):
        for side, args in sides.items():
            result = workdir / f"{side}-{run}.json"
            wall, peak, _ = timed_process([script, "--worker", side, "--settings", json.dumps(settings), "--result", str(result), *args],
                                          settings["threads"])
            found.append({"side": side, "wall_s": wall, "peak_gib": peak, **json.loads(result.read_text())})
            print(f"run {run + 1} {side}: {wall:.1f} s whole, {peak:.2f} GiB", flush=True)
    return found
