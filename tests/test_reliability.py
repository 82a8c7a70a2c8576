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


# ---------------------------------------------------------------- bad input: one line naming file, line and field


def write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def bad_inputs(tmp_path) -> dict[str, tuple[str, str]]:
    """Each kind of bad input file, and what its error must say."""
    valid = b'{"prompt": "q", "responses": ["a", "b"]}\n'
    import gzip

    import datasets

    many = "".join(f'{{"prompt": "question {i}", "responses": ["answer {i * 7}", "answer {i * 13}"]}}\n' for i in range(2000)).encode()
    parquet = tmp_path / "ok.parquet"
    datasets.Dataset.from_list([{"prompt": f"p{i}", "responses": ["a", "b"]} for i in range(500)]).to_parquet(str(parquet))
    return {
        "not UTF-8": (write_bytes(tmp_path / "latin1.jsonl", valid + '{"prompt": "café", "responses": ["a", "b"]}\n'.encode("latin-1")),
                      "latin1.jsonl:2: not UTF-8 text (byte 0xe9"),
        "not gzip": (write_bytes(tmp_path / "plain.jsonl.gz", valid), "plain.jsonl.gz:1: not a whole gzip file"),
        "truncated gzip": (write_bytes(tmp_path / "cut.jsonl.gz", gzip.compress(many)[:len(gzip.compress(many)) // 2]), "cut.jsonl.gz:"),
        "truncated parquet": (write_bytes(tmp_path / "cut.parquet", parquet.read_bytes()[:2000]), "cut.parquet: cannot be read as parquet"),
        "a lone surrogate": (write_bytes(tmp_path / "half.jsonl", valid + b'{"prompt": "q\\ud800", "responses": ["a", "b"]}\n'),
                             "half.jsonl:2: field 'prompt': holds '\\ud800', half of a surrogate pair"),
        "nesting too deep": (write_bytes(tmp_path / "deep.jsonl", b'{"prompt": ' + b"[" * 100000 + b"]" * 100000 + b"}\n"),
                             "deep.jsonl:1: JSON nested too deep to read"),
        "an id used twice": (write_bytes(tmp_path / "twice.jsonl", b'{"id": 7, "prompt": "q", "responses": ["a", "b"]}\n'
                                         b'{"id": 7, "prompt": "other", "responses": ["c", "d"]}\n'),
                             "twice.jsonl:2: field 'id': '7' is also the id of line 1"),
    }


def one_line_error(args: list[str]) -> str:
    from click.testing import CliRunner

    from rlaif.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    return result.output


def test_a_byte_order_mark_is_no_error(tmp_path):
    from rlaif.inputs import load_examples

    path = write_bytes(tmp_path / "bom.jsonl", b'\xef\xbb\xbf{"prompt": "q", "responses": ["a", "b"]}\n')
    assert load_examples(path).examples[0].prompt == "q"
    settings = write_bytes(tmp_path / "train.toml", b'\xef\xbb\xbfmethod = "dpo"\n')
    from rlaif.trainers.config import read_config_file

    assert read_config_file(settings) == {"method": "dpo"}


def test_every_bad_input_file_is_one_line_naming_file_and_line(tmp_path):
    for kind, (path, expected) in bad_inputs(tmp_path).items():
        assert expected in one_line_error(["label", "--input", path, "--dry-run"]), kind
        assert expected in one_line_error(["train", "--method", "dpo", "--data", path, "--output", str(tmp_path / "train")]), kind


@pytest.mark.parametrize("args, expected", [
    (["train", "--method", "dpo", "--data", "examples/demo.jsonl", "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["train", "--method", "dpo", "--data", "examples/demo.jsonl", "--lr", "-1"], "--lr: must be at least 0, got -1.0"),
    (["train", "--method", "dpo", "--data", "examples/demo.jsonl", "--model", "/nonexistent"], "/nonexistent: no such model directory"),
    (["label", "--input", "examples/demo.jsonl", "--limit", "-5"], "--limit: must be at least 1, got -5"),
    (["label", "--input", "examples/demo.jsonl", "--concurrency", "0"], "--concurrency: must be at least 1, got 0"),
    (["label", "--input", "examples/demo.jsonl", "--concurrency", "2", "--dry-run"],
     "--concurrency applies to API judges; judge 'embedded' (backend local)"),
])
def test_bad_settings_are_one_line_before_anything_loads(args, expected):
    assert expected in one_line_error(args)


def test_a_cache_path_that_cannot_be_opened_is_one_line_naming_it(tmp_path):
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache.sqlite"
    assert f"{cache}: cannot open it as a cache" in one_line_error(["label", "--input", "examples/demo.jsonl",
                                                                    "--output", str(tmp_path / "out"), "--cache", str(cache)])


def test_the_api_and_settings_files_refuse_what_the_command_line_refuses(tmp_path):
    from rlaif.errors import ConfigError
    from rlaif.labeling.run import LabelConfig
    from rlaif.trainers.config import TrainConfig, read_config_file

    with pytest.raises(ConfigError, match=r"^key 'batch_size': must be at least 1, got 0$"):
        TrainConfig(method="dpo", data="x", output="o", batch_size=0)
    with pytest.raises(ConfigError, match=r"^key 'limit': must be at least 1, got -5$"):
        LabelConfig(input="x", limit=-5)
    settings = tmp_path / "train.toml"
    settings.write_text('method = "dpo"\ndata = "x"\noutput = "o"\nlr = -1\n')
    with pytest.raises(ConfigError, match=r"^key 'lr': must be at least 0, got -1$"):
        TrainConfig(**read_config_file(settings))


def test_a_model_directory_with_no_model_is_an_error(tmp_path):
    from rlaif.errors import ConfigError
    from rlaif.models.loading import resolve_model

    with pytest.raises(ConfigError, match="holds no model"):
        resolve_model(str(tmp_path))
    assert resolve_model("OWNER/NAME") == "OWNER/NAME"  # a hub name is left to the hub


# ---------------------------------------------------------------- a disk that fills


def full_disk(after: int):
    """A stand-in for os.fsync that fails as a full disk does from its `after`-th call on."""
    import errno

    real, calls = os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] >= after:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    return fsync


def test_a_disk_that_fills_mid_run_stops_it_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path, scripted_judge, monkeypatch):
    from rlaif.labeling.run import LabelConfig, label
    from rlaif.storage.locks import DiskFull

    rows = [{"id": f"r{i}", "prompt": f"q{i}", "responses": [f"a{i}", f"longer b{i}"]} for i in range(7)]
    data, judge = str(write_jsonl(tmp_path / "d.jsonl", rows)), scripted_judge(0.1)

    def run(name):
        return label(LabelConfig(data, str(tmp_path / name), judge=judge, chunk_size=2, progress=False))

    whole = run("whole").rows
    monkeypatch.setattr(os, "fsync", full_disk(after=4))  # three files a chunk: the second chunk's pairs are written, not synced
    with pytest.raises(DiskFull, match="the disk is full"):
        run("full")
    assert len((tmp_path / "full" / "pairs.jsonl").read_text().splitlines()) == 4  # the torn chunk is on disk, beyond the recorded length
    monkeypatch.undo()
    monkeypatch.setitem(__import__("rlaif.judging.configs", fromlist=["BACKENDS"]).BACKENDS, "scripted", "tests.conftest:ScriptedJudge")
    again = run("full").rows
    drop = lambda rs: [{k: v for k, v in r.items() if k != "judge"} for r in rs]
    assert drop(again) == drop(whole) and len(again) == 7


def test_a_disk_that_fills_at_a_checkpoint_loses_no_step(tiny, tmp_path, monkeypatch):
    import errno

    import torch

    from rlaif.storage.locks import DiskFull
    from rlaif.trainers import TrainConfig, loop, train

    rows = [{"prompt": f"question {i}", "chosen": f"a good answer {i}", "rejected": f"bad {i}"} for i in range(16)]
    data = str(write_jsonl(tmp_path / "pairs.jsonl", rows))

    def config(out, **kw):
        return TrainConfig(method="dpo", data=data, output=str(tmp_path / out), model=tiny, max_steps=6, batch_size=2, save_steps=2,
                           lr_scheduler="constant", progress=False, **kw)

    train(config("whole"))
    real = torch.save

    def save(obj, f, *a, **kw):
        if str(f).endswith(os.path.join(".checkpoint-4.tmp", "trainer_state.pt")):  # the second checkpoint
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(loop.torch, "save", save)
    with pytest.raises(DiskFull):
        train(config("full"))
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "full").glob("checkpoint-*")] == ["checkpoint-2"]
    train(config("full", resume=True))
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("whole", "full")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5) and len(losses[0]) == 6


# ---------------------------------------------------------------- a prompt longer than the judge reads


def test_a_prompt_longer_than_the_judge_reads_is_not_asked_and_says_why(tmp_path):
    from transformers import LlamaForCausalLM

    from rlaif.labeling.run import LabelConfig, label
    from rlaif.models.loading import load_tokenizer
    from tests.conftest import tiny_config

    tok = load_tokenizer(None)
    model_dir = tmp_path / "short-context"
    LlamaForCausalLM(tiny_config(len(tok), tok, max_position_embeddings=700)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    judge = tmp_path / "judge.toml"
    judge.write_text(f'backend = "local"\nmodel = "{model_dir}"\n')
    rows = [{"id": "short", "prompt": "Hi?", "responses": ["Hello.", "Hey."]},
            {"id": "long", "prompt": "Summarise: " + "words and more words " * 200, "responses": ["Short.", "Brief."]}]
    result = label(LabelConfig(str(write_jsonl(tmp_path / "d.jsonl", rows)), str(tmp_path / "out"), judge=str(judge), progress=False))
    assert [r["id"] for r in result.rows] == ["short:0-1"]
    failed = [f for f in result.failures if f["stage"] == "judge"]
    assert ({f["id"] for f in failed} == {"long:0-1"}
            and all("prompt too long for the judge" in f["error"] and "reads 700" in f["error"] for f in failed))
    assert result.manifest["verdicts"]["too_long"] == 2 and result.manifest["verdicts"]["unreadable"] == 0


# ---------------------------------------------------------------- failures that must not look like success


def test_a_judge_server_that_is_down_stops_the_run_naming_its_address(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    judge = tmp_path / "down.toml"
    judge.write_text(f'backend = "openai"\nmodel = "m"\n[options]\nbase_url = "http://127.0.0.1:{port}/v1"\napi_key_env = ""\n'
                     "retry_initial_wait = 0.01\nretry_max_wait = 0.05\n")
    started = time.time()
    error = one_line_error(["label", "--input", "examples/demo.jsonl", "--limit", "1", "--judge", str(judge),
                            "--output", str(tmp_path / "out"), "--quiet"])
    assert f"cannot reach its server at http://127.0.0.1:{port}/v1" in error and "Nothing was labeled" in error
    assert time.time() - started < 30


def test_a_run_that_labels_nothing_exits_1(tmp_path, scripted_judge):
    from click.testing import CliRunner

    from rlaif.cli import main

    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}", "responses": [f"GOOD {i}", f"bad {i}"]} for i in range(2)])
    result = CliRunner().invoke(main, ["label", "--input", str(rows), "--judge", scripted_judge(0.0), "--min-confidence", "0.9",
                                       "--output", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1 and "Error: labeled nothing: 2 pairs, 0 failed, 2 filtered out" in result.output
    # Three candidates that a judge biased to the first position cannot separate: the ranking writes no pair.
    rows = write_jsonl(tmp_path / "three.jsonl", [{"prompt": "q", "responses": ["a", "b", "c"]}])
    result = CliRunner().invoke(main, ["label", "--input", str(rows), "--judge", scripted_judge(0.5),
                                       "--output", str(tmp_path / "three"), "--quiet"])
    assert result.exit_code == 1 and "1 not separated by the judge" in result.output and "final labels n/a" in result.output


def test_a_missing_reward_model_is_one_line_in_a_dry_run_and_never_looked_up_on_the_hub(tmp_path, monkeypatch):
    import time

    monkeypatch.chdir(tmp_path)  # no outputs/ here: the built-in config's ./outputs/rm-judge is still a path, not a hub name
    (tmp_path / "rows.jsonl").write_text('{"prompt": "q", "responses": ["a", "b"]}\n')
    started = time.time()
    for extra in (["--dry-run"], []):
        error = one_line_error(["label", "--input", "rows.jsonl", "--judge", "reward-model", *extra])
        assert "judge 'reward-model': ./outputs/rm-judge: no such model directory" in error and "make rm-judge" in error
    assert time.time() - started < 10  # no hub lookup and its retries


@pytest.mark.parametrize("command", ["label", "train"])
def test_an_output_path_that_cannot_be_a_directory_is_one_line_before_anything_loads(tmp_path, command):
    (tmp_path / "a-file").write_text("keep me")
    base = {"label": ["label", "--input", "examples/demo.jsonl"],
            "train": ["train", "--method", "dpo", "--data", "examples/demo.jsonl"]}[command]
    assert "a file is in the way" in one_line_error([*base, "--output", str(tmp_path / "a-file")])
    assert "is a file, so no directory can be made under it" in one_line_error([*base, "--output", str(tmp_path / "a-file" / "out")])
    assert (tmp_path / "a-file").read_text() == "keep me"


def test_an_empty_row_selection_is_said_in_the_dry_run_and_the_run():
    for extra in (["--dry-run"], []):
        assert "no rows to label (its ?rows= selects none)" in one_line_error(["label", "--input", "examples/demo.jsonl?rows=5:5", *extra])


def test_training_pairs_with_the_same_response_twice_are_left_out_and_none_left_is_an_error(tmp_path, capsys):
    from rlaif.errors import InputError
    from rlaif.trainers.pairs import load_pairs

    rows = [{"prompt": "q1", "chosen": "same", "rejected": "same "}, {"prompt": "q2", "chosen": "good", "rejected": "bad"}]
    assert [p.prompt for p in load_pairs(str(write_jsonl(tmp_path / "one.jsonl", rows)))] == ["q2"]
    assert "1 pairs left out: their two responses are the same text" in capsys.readouterr().err
    with pytest.raises(InputError, match="1 rows have the same response twice"):
        load_pairs(str(write_jsonl(tmp_path / "none.jsonl", rows[:1])))


def test_agreement_on_an_unfinished_or_running_run_says_so(tmp_path, scripted_judge):
    import subprocess
    import sys

    from rlaif.labeling.run import LabelConfig, label

    out = tmp_path / "run"
    label(LabelConfig("examples/demo.jsonl", str(out), judge=scripted_judge(0.0), limit=2, progress=False))
    (out / "manifest.json").rename(tmp_path / "manifest.json")
    assert "the labeling run has not finished (no manifest.json)" in one_line_error(["agreement", str(out)])
    (tmp_path / "manifest.json").rename(out / "manifest.json")
    hold = ("import fcntl, sys, time; f = open(sys.argv[1], 'w'); f.write('pid 1: rlaif label ...'); "
            "f.flush(); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    holding = subprocess.Popen([sys.executable, "-c", hold, str(out / ".rlaif.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holding.stdout.readline().strip() == "held"  # type: ignore[union-attr]
        assert "a labeling run is still writing it" in one_line_error(["agreement", str(out)])
    finally:
        holding.kill()
    assert not (out / "agreement.json").exists()


def test_a_rerun_with_other_settings_sets_the_earlier_runs_files_aside(tmp_path, scripted_judge):
    from rlaif.evaluate.agreement import agreement
    from rlaif.labeling.run import LabelConfig, label

    out = tmp_path / "run"
    rows = str(write_jsonl(tmp_path / "rows.jsonl", [{"prompt": f"q{i}", "chosen": f"GOOD {i}", "rejected": f"bad {i}"} for i in range(3)]))
    first = label(LabelConfig(rows, str(out), judge=scripted_judge(0.0), progress=False))
    agreement(out)
    again = label(LabelConfig(rows, str(out), judge=scripted_judge(0.0), progress=False))  # the same settings: nothing moves
    assert again.rows == first.rows and not (out / "earlier-runs").exists() and (out / "agreement.json").exists()
    label(LabelConfig(rows, str(out), judge=scripted_judge(0.0), debias="none", progress=False))
    [aside] = (out / "earlier-runs").iterdir()
    assert {p.name for p in aside.iterdir()} >= {"pairs.jsonl", "manifest.json", "README.md", "agreement.json", "reliability.png"}
    assert not (out / "agreement.json").exists() and (out / "cache.sqlite").exists()
    assert ([json.loads(line)["orders"][0] for line in (aside / "pairs.jsonl").read_text().splitlines()]
            == [r["orders"][0] for r in first.rows])


def test_a_bug_is_one_line_naming_where_and_the_trace_file(tmp_path, monkeypatch):
    import rlaif.labeling.run

    def broken(config):
        return {}["no such key"]

    monkeypatch.setattr(rlaif.labeling.run, "label", broken)
    monkeypatch.setenv("RLAIF_CACHE", str(tmp_path))
    error = one_line_error(["label", "--input", "examples/demo.jsonl"])
    assert "unexpected KeyError in test_reliability.py:" in error and "(broken): 'no such key' (a bug; the whole traceback is in" in error
    [trace] = (tmp_path / "crashes").iterdir()
    assert trace.read_text().startswith("rlaif label:") and "Traceback" in trace.read_text()


@pytest.mark.parametrize("body, expected", [
    ("{{ prompt.__class__.__mro__ }}", "access to attribute '__class__'"),
    ("{% if prompt %}{{ 1 / 0 }}{% endif %}", "ZeroDivisionError: division by zero"),
    ("{{ range(10 ** 9) | list }}", "OverflowError: Range too big"),
])
def test_a_template_the_sandbox_stops_while_rendering_is_a_rubric_error_naming_its_line(tmp_path, body, expected):
    template = tmp_path / "bad.j2"
    template.write_text("Which is better?\n" + body + "\n{{ response_a }} {{ response_b }}\nPreferred Response=")
    error = one_line_error(["rubric", str(template)])
    assert f"{template}:2" in error and expected in error


def test_a_read_only_cache_makes_no_file_beside_it(tmp_path):
    """A dry run reads the cache as it is: no -wal or -shm file appears, whatever SQLite's WAL mode wants."""
    from rlaif.storage.cache import AnswerCache

    cache = AnswerCache(tmp_path / "cache.sqlite")
    cache.put("k", {"answer": 1})
    cache.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    reader = AnswerCache(tmp_path / "cache.sqlite", read_only=True)
    assert reader.get("k") == {"answer": 1} and reader.get("missing") is None
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["cache.sqlite"]
