"""bench/gpu.py, the script a GPU machine runs, on tiny models here, so that it cannot rot between GPU runs."""

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_the_gpu_script_runs_its_checks_and_both_sides_on_tiny_models():
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "gpu.py", "--tiny", "--steps", "2"], check=False, cwd=BENCH, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    checks = [line for line in table if "| pass |" in line or "| FAIL |" in line]
    assert len(checks) == 4 and all("| pass |" in line for line in checks)
    trained = [line.split(" | ")[0].lstrip("| ") for line in table if "tokens/s" in line]
    assert trained == [f"{side} {method}{gc}" for method in ("dpo", "rm") for gc in ("", ", gradient checkpointing")
                       for side in ("rlaif", "TRL")]
    assert any(line.startswith("| local judge") and "decisions that differ: 0 of" in line for line in table)
