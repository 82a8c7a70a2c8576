"""What a run guarantees when another run, a kill, a full disk or bad input gets in its way."""

import json
import os
import subprocess
import sys
import time

import pytest

from rlaif.storage.locks import LOCK_FILE, DirectoryInUse, writing
from tests.conftest import write_jsonl
from tests.loopback import Loopback


def label_cli(data: str, out: str, judge: str) -> list[str]:
    return [sys.executable, "-m", "rlaif.cli", "label", "--input", data, "--output", out, "--judge", judge, "--quiet"]


def test_a_second_run_into_the_same_directory_stops_at_once_and_calls_nothing(tmp_path, judge_file):
    rows = [{"id": f"r{i}", "prompt": f"question {i}", "chosen": f"GOOD answer {i}", "rejected": f"weak answer {i}"} for i in range(300)]
    data = str(write_jsonl(tmp_path / "d.jsonl", rows))
    out = tmp_path / "out"
    with Loopback(latency=0.01) as srv:
        cmd = label_cli(data, str(out), judge_file(srv))
        first = subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while srv.requests == 0 and time.time() < deadline:  # the first run is judging: it holds the directory
            time.sleep(0.02)
        started = time.time()
        second = subprocess.run(cmd, env={**os.environ}, capture_output=True, text=True, timeout=60, check=False)
        took = time.time() - started
        assert first.wait(timeout=120) == 0, first.stdout.read().decode()
    assert second.returncode == 1
    assert f"another rlaif run is writing this directory (pid {first.pid}: " in second.stderr and "rlaif label" in second.stderr
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr  # one line
    assert took < 15  # it stopped before loading anything (the first run had not finished)
    ids = [json.loads(line)["id"] for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(ids) == 300 and len(set(ids)) == 300
    assert srv.requests == 600  # every pair's two orders, once: the second run made no call


def test_a_run_inside_a_run_may_write_into_its_directory(tmp_path):
    with writing(tmp_path / "exp"), writing(tmp_path / "exp"):  # an experiment's comparison writes into the experiment's directory
        assert (tmp_path / "exp" / LOCK_FILE).exists()


def test_the_lock_goes_with_its_process(tmp_path):
    code = f"from rlaif.storage.locks import writing\nwith writing({str(tmp_path)!r}):\n    print('held', flush=True)\n    input()\n"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(DirectoryInUse, match=f"pid {holder.pid}"), writing(tmp_path):
        pass
    holder.kill()  # SIGKILL: no clean-up runs, the OS drops the lock
    holder.wait()
    with writing(tmp_path):
        pass
