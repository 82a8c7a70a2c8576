"""What the side-by-side benchmarks share: one measured run = one whole process."""

from __future__ import annotations

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
