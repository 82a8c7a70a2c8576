"""The OpenAI and Anthropic judges, through the real SDK clients, against a loopback server; and a
judge on plain httpx2, which the shared API machinery retries and closes as it does the SDKs'."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx2
import pytest

from rlaif.errors import ConfigError
from rlaif.judging.backends.api import ApiJudge, ApiOptions
from rlaif.judging.base import JudgeConfigError, JudgeFatalError
from rlaif.labeling.run import LabelConfig, label
from tests.conftest import SECRET, write_jsonl
from tests.loopback import Loopback


@pytest.fixture
def server():
    with Loopback() as srv:
        yield srv


def data(tmp_path, n: int = 6, extra: list | None = None):
    rows = [{"id": f"r{i}", "prompt": f"question {i}", "chosen": f"GOOD answer {i}", "rejected": f"weak answer {i}"} for i in range(n)]
    return str(write_jsonl(tmp_path / "d.jsonl", rows + (extra or [])))


def run(tmp_path, judge: str, name: str = "out", **kw):
    return label(LabelConfig(data(tmp_path, **kw.pop("data", {})), str(tmp_path / name), judge=judge, progress=False, **kw))


def test_openai_soft_labels_from_logprobs(tmp_path, server, judge_file):
    result = run(tmp_path, judge_file(server))
    assert len(result.rows) == 6
    for row in result.rows:
        assert row["ai_preference"] == pytest.approx(0.8) and row["human_preference"] == 1.0
        assert all(o["soft"] for o in row["orders"]) and row["consistent"] is True
    assert result.manifest["tokens"]["prompt"] > 0 and server.requests == 12


def test_openai_without_logprobs_falls_back_to_hard_labels(tmp_path, judge_file):
    with Loopback(logprobs=False) as srv:
        result = run(tmp_path, judge_file(srv))
    assert all(r["ai_preference"] == 1.0 and not r["orders"][0]["soft"] for r in result.rows)


def test_anthropic_hard_labels_and_sampled_soft_labels(tmp_path, server, judge_file):
    hard = run(tmp_path, judge_file(server, "anthropic"), "hard")
    assert all(r["ai_preference"] == 1.0 and r["human_preference"] == 1.0 for r in hard.rows)
    sampled = run(tmp_path, judge_file(server, "anthropic", samples=3, temperature=1.0), "sampled")
    assert all(r["orders"][0]["soft"] for r in sampled.rows)
    assert server.requests == 12 + 36


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_pointwise_ratings_expected_from_logprobs_or_parsed(tmp_path, server, judge_file, backend):
    result = run(tmp_path, judge_file(server, backend), mode="pointwise")
    assert result.manifest["judge_calls"]["total"] == 12 and server.requests == 12  # one call per response
    for row in result.rows:
        scores = {s["response"]: s["score"] for s in row["scores"]}
        if backend == "openai":  # expected ratings 3.85 and 2.15 from the top log-probabilities
            assert (scores == pytest.approx({"chosen": 3.85, "rejected": 2.15})
                    and row["ai_preference"] == pytest.approx(1 / (1 + math.exp(-1.7))))
        else:  # parsed: 4 and 2
            assert scores == {"chosen": 4.0, "rejected": 2.0} and row["ai_preference"] == pytest.approx(1 / (1 + math.exp(-2)))
        assert row["human_preference"] == 1.0 and row["consistent"] is None


@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_chain_of_thought_on_api_judges(tmp_path, server, judge_file, backend):
    result = run(tmp_path, judge_file(server, backend), cot=True)
    assert len(result.rows) == 6
    assert all("clearer" in o["text"] for r in result.rows for o in r["orders"])


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "drop", "malformed", "truncated"])
@pytest.mark.parametrize("backend", ["openai", "anthropic"])
def test_transient_faults_are_retried_until_every_pair_is_labeled(tmp_path, server, judge_file, backend, fault):
    server.fault = lambda n, prompt: fault if n % 3 == 1 else None  # every third request fails once
    result = run(tmp_path, judge_file(server, backend))
    assert len(result.rows) == 6 and result.failures == []
    assert server.requests > 12  # the failed ones were asked again


def test_unparseable_verdict_is_a_recorded_failure_never_a_preference(tmp_path, server, judge_file):
    server.fault = lambda n, prompt: "unparseable" if "question 2" in prompt else None
    out = tmp_path / "out"
    result = run(tmp_path, judge_file(server))
    assert {r["id"] for r in result.rows} == {f"r{i}:0-1" for i in range(6)} - {"r2:0-1"}
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert {f["id"] for f in failures} == {"r2:0-1"} and "cannot choose" in failures[0]["text"]
    assert json.loads((out / "manifest.json").read_text())["counts"]["failed"]["judge"] == 1


def test_bad_key_stops_at_once_and_never_shows_the_key(tmp_path, server, judge_file, monkeypatch):
    judge = judge_file(server)
    monkeypatch.setenv("RLAIF_TEST_KEY", "bad-key")
    with pytest.raises(JudgeFatalError) as err:
        run(tmp_path, judge, data={"n": 100})
    assert "401" in str(err.value) or "AuthenticationError" in str(err.value)
    assert "bad-key" not in str(err.value)
    assert server.requests <= 8  # not 200 calls: the run stopped at the first refusal


def test_missing_key_is_a_clear_config_error(tmp_path, server, judge_file, monkeypatch):
    judge = judge_file(server)
    monkeypatch.delenv("RLAIF_TEST_KEY")
    with pytest.raises(JudgeConfigError, match="RLAIF_TEST_KEY"):
        run(tmp_path, judge)


def test_key_never_reaches_manifest_cache_or_failures(tmp_path, server, judge_file):
    server.fault = lambda n, prompt: "unparseable" if "question 1" in prompt else None
    run(tmp_path, judge_file(server))
    assert server.keys_seen == {SECRET}  # the key was really sent to the server...
    for path in (tmp_path / "out").iterdir():  # ...and written nowhere
        assert SECRET.encode() not in path.read_bytes(), path


def test_a_call_that_gives_up_is_reported_and_asked_again_next_run(tmp_path, server, judge_file):
    judge = judge_file(server, max_retries=1)
    server.fault = lambda n, prompt: "500" if "question 3" in prompt else None
    first = run(tmp_path, judge)
    assert len(first.rows) == 5 and "gave up after 2 attempts" in first.failures[0]["error"]
    server.fault = lambda n, prompt: None
    before = server.requests
    second = run(tmp_path, judge)
    assert len(second.rows) == 6 and server.requests - before == 2  # only the two orders of r3


def test_dry_run_calls_nothing(tmp_path, server, judge_file):
    judge = judge_file(server, price_input_per_mtok=1.0, price_output_per_mtok=2.0)
    result = run(tmp_path, judge, dry_run=True)
    estimate = result.estimate
    assert estimate["calls"] == 12 and estimate["tokens"]["completion"] == 12 * 16
    assert estimate["estimated_cost"] == pytest.approx((estimate["tokens"]["prompt"] * 1.0 + 12 * 16 * 2.0) / 1e6)
    assert server.requests == 0 and not (tmp_path / "out").exists()
    run(tmp_path, judge)
    assert run(tmp_path, judge, dry_run=True).estimate["calls"] == 0


def test_concurrency_overlaps_slow_calls(tmp_path, judge_file):
    with Loopback(latency=0.3) as srv:
        started = time.time()
        run(tmp_path, judge_file(srv), concurrency=12)
        assert srv.requests == 12 and time.time() - started < 12 * 0.3 / 2


def _label_cli(data_path: str, out: str, judge: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rlaif.cli", "label", "--input", data_path, "--output", out, "--judge", judge, "--quiet",
           "--concurrency", "1", "--chunk-size", "2"]
    return subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_kill_9_mid_run_then_resume_gives_the_same_pairs_and_repeats_no_answered_call(tmp_path, judge_file):
    data_path = data(tmp_path, n=10)
    with Loopback() as reference:
        proc = _label_cli(data_path, str(tmp_path / "whole"), judge_file(reference))
        assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
    killed = tmp_path / "killed" / "pairs.jsonl"
    with Loopback() as srv:
        # Two rows a chunk, two calls a row: calls 1-4 are the first chunk; call 8 hangs in the second.
        srv.fault = lambda n, prompt: "hang" if n == 8 else None
        judge = judge_file(srv)
        proc = _label_cli(data_path, str(tmp_path / "killed"), judge)
        deadline = time.time() + 120
        while srv.requests < 8 and time.time() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert sum(srv.answered.values()) == 7
        # What the killed run wrote is the first chunk's rows, whole lines only.
        assert [json.loads(line)["id"] for line in killed.read_text().splitlines()] == ["r0:0-1", "r1:0-1"]
        with killed.open("a") as fh:  # as if a kill had cut a line short
            fh.write('{"id": "r2:0-1", "prom')
        srv.fault = lambda n, prompt: None
        proc = _label_cli(data_path, str(tmp_path / "killed"), judge)
        assert proc.wait(timeout=120) == 0, proc.stdout.read().decode()
        assert max(srv.answered.values()) == 1 and sum(srv.answered.values()) == 20
    assert not (tmp_path / "killed" / "progress.json").exists()

    # The two runs used two servers, so their judge configs (named by path) differ; nothing else may.
    def rows(run):
        return [{k: v for k, v in json.loads(line).items() if k != "judge"}
                for line in (tmp_path / run / "pairs.jsonl").read_text().splitlines()]

    assert rows("killed") == rows("whole") and len({r["id"] for r in rows("whole")}) == 10


def test_batch_api_submits_then_collects_on_later_runs(tmp_path, server, judge_file):
    judge = judge_file(server)
    out = tmp_path / "out"
    submitted = run(tmp_path, judge, batch_api=True)
    state = json.loads((out / "batch.json").read_text())
    assert submitted.pending_batch["batch_id"] == state["batch_id"] and state["requests"] == 12
    assert not (out / "pairs.jsonl").exists() and sum(server.answered.values()) == 0
    pending = run(tmp_path, judge, batch_api=True)  # the loopback batch is still in progress
    assert pending.pending_batch["status"] == "in_progress"
    collected = run(tmp_path, judge, batch_api=True)
    assert len(collected.rows) == 6 and not (out / "batch.json").exists()
    assert all(r["ai_preference"] == pytest.approx(0.8) for r in collected.rows)
    assert server.requests == 0 and sum(server.answered.values()) == 12  # no direct call was made
    direct = run(tmp_path, judge, "direct")
    assert [r["ai_preference"] for r in direct.rows] == [r["ai_preference"] for r in collected.rows]


def test_a_run_killed_before_it_saved_the_batch_id_finds_that_batch(tmp_path, server, judge_file, monkeypatch):
    from rlaif.judging.backends.openai_api import OpenAIJudge

    judge, out, submit = judge_file(server), tmp_path / "out", OpenAIJudge.submit_batch

    def killed_after_submitting(self, requests, tag):
        submit(self, requests, tag)
        raise KeyboardInterrupt  # the batch exists on the server; its id never reached batch.json

    monkeypatch.setattr(OpenAIJudge, "submit_batch", killed_after_submitting)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, judge, batch_api=True)
    assert "batch_id" not in json.loads((out / "batch.json").read_text()) and len(server.batches) == 1
    monkeypatch.setattr(OpenAIJudge, "submit_batch", submit)
    found = run(tmp_path, judge, batch_api=True)
    assert found.pending_batch["batch_id"] == "batch_1" and found.pending_batch["status"] == "in_progress"
    collected = run(tmp_path, judge, batch_api=True)
    assert len(collected.rows) == 6 and len(server.batches) == 1  # one batch paid for


def test_a_run_killed_before_the_batch_was_made_submits_one(tmp_path, server, judge_file, monkeypatch):
    from rlaif.judging.backends.openai_api import OpenAIJudge

    def killed_before_submitting(self, requests, tag):
        raise KeyboardInterrupt

    judge = judge_file(server)
    with monkeypatch.context() as patch:
        patch.setattr(OpenAIJudge, "submit_batch", killed_before_submitting)
        with pytest.raises(KeyboardInterrupt):
            run(tmp_path, judge, batch_api=True)
    submitted = run(tmp_path, judge, batch_api=True)
    assert submitted.pending_batch["batch_id"] == "batch_1" and len(server.batches) == 1


def test_batch_requests_that_failed_go_into_a_new_batch(tmp_path, server, judge_file):
    judge = judge_file(server)
    server.batch_polls = 1
    server.fault = lambda n, prompt: "500" if "question 4" in prompt else None
    run(tmp_path, judge, batch_api=True)
    resubmitted = run(tmp_path, judge, batch_api=True)
    assert resubmitted.pending_batch["requests"] == 2  # the two orders of r4
    server.fault = lambda n, prompt: None
    done = run(tmp_path, judge, batch_api=True)
    assert len(done.rows) == 6 and len(server.batches) == 2


def test_batch_api_needs_an_openai_judge(tmp_path, server, judge_file):
    with pytest.raises(ConfigError, match="batch API"):
        run(tmp_path, judge_file(server, "anthropic"), batch_api=True)


def test_prompt_only_rows_generated_and_judged_on_two_servers_one_stopped_mid_run(tmp_path, judge_file):
    rows = [{"id": f"p{i}", "prompt": f"question {i}"} for i in range(12)]
    path = str(write_jsonl(tmp_path / "prompts.jsonl", rows))
    with Loopback(latency=0.01) as a, Loopback(latency=0.01) as b:
        b.fault = lambda n, prompt: "stop" if n == 6 else None  # b goes down at its sixth request
        servers = judge_file(a, base_url=[a.url + "/v1", b.url + "/v1"], concurrency=2)
        cmd = [sys.executable, "-m", "rlaif.cli", "label", "--input", path, "--output", str(tmp_path / "out"), "--judge", servers,
               "--generator", servers, "--quiet"]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert b.stopped and b.requests >= 6 and a.requests > 6  # (a call already on its way to b when it stopped counts too)
    assert "labeled 12 of 12 pairs" in done.stdout and "failed: 0" in done.stdout
    labeled = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert [r["id"] for r in labeled] == [f"p{i}:0-1" for i in range(12)]
    for row in labeled:  # each prompt got one even and one odd seed; the judge prefers GOOD
        assert row["chosen"].startswith("GOOD answer") and row["rejected"].startswith("weak answer")
        assert row["ai_preference"] == pytest.approx(0.8) and row["consistent"] is True


def test_generator_asks_again_when_a_server_ignores_n(tmp_path, judge_file):
    from rlaif.inputs import Example
    from rlaif.judging.generation import generate_responses

    examples = [Example(f"p{i}", f"question {i}") for i in range(3)]
    with Loopback(ignores_n=True) as srv:
        errors = generate_responses(examples, judge_file(srv), num_responses=3, max_new_tokens=8)
        assert errors == {} and srv.requests == 9
    for ex in examples:
        assert len(ex.responses) == 3 and len(set(ex.responses)) == 3


def test_a_generation_that_gives_up_is_a_failure_and_asked_again_next_run(tmp_path, judge_file):
    path = str(write_jsonl(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "prompt": f"question {i}"} for i in range(3)]))
    with Loopback() as srv:
        srv.fault = lambda n, prompt: "500" if prompt == "question 1" else None
        config = judge_file(srv, max_retries=1)
        first = label(LabelConfig(path, str(tmp_path / "out"), judge=config, generator=config, progress=False))
        assert first.manifest["counts"]["failed"]["generation"] == 1 and len(first.rows) == 2
        assert ([(f["stage"], f["id"]) for f in first.failures] == [("generate", "p1")]
                and "gave up after 2 attempts" in first.failures[0]["error"])
        srv.fault = lambda n, prompt: None
        before = srv.requests
        second = label(LabelConfig(path, str(tmp_path / "out"), judge=config, generator=config, progress=False))
        assert len(second.rows) == 3 and srv.requests - before == 3  # p1's generation and its two orders


# ---- ways of reading the verdict: the request bodies through the real SDK clients ----

@pytest.mark.parametrize("mode", ["pairwise", "pointwise"])
def test_prefilled_verdicts_through_completions_rendered_with_the_models_chat_template(tmp_path, server, judge_file, mode):
    result = run(tmp_path, judge_file(server, verdict="prefilled", tokenizer="embedded"), mode=mode)
    assert len(result.rows) == 6 and result.manifest["verdicts"] == {"unreadable": 0, "unreadable_share": 0.0, "soft": 12,
                                                                     "soft_share": 1.0, "too_long": 0}
    assert {path for path, _ in server.bodies} == {"/v1/completions"}
    body = server.bodies[0][1]
    prefix = "Preferred Response=" if mode == "pairwise" else "Rating="
    assert body["prompt"].startswith("<|im_start|>system\n") and body["prompt"].endswith(f"<|im_end|>\n<|im_start|>assistant\n{prefix}")
    assert (body["max_tokens"], body["logprobs"], body["temperature"]) == (1, 20, 0.0)
    for row in result.rows:
        if mode == "pairwise":
            assert row["ai_preference"] == pytest.approx(0.8) and all(o["soft"] for o in row["orders"])
        else:  # the expected ratings of the loopback's distributions, 3.85 and 2.15
            assert sorted(s["score"] for s in row["scores"]) == pytest.approx([2.15, 3.85])


def test_prefilled_verdict_after_a_rationale_is_two_completions(tmp_path, server, judge_file):
    result = run(tmp_path, judge_file(server, verdict="prefilled", tokenizer="embedded"), data={"n": 1}, debias="none", cot=True)
    (_, asked), (_, verdict) = server.bodies
    assert asked["stop"] == ["Preferred Response="] and asked["max_tokens"] == 512
    assert verdict["prompt"] == asked["prompt"] + "Response 1 is clearer.\n\nPreferred Response="
    order = result.rows[0]["orders"][0]
    assert order["text"] == "Response 1 is clearer." and order["p_first"] == pytest.approx(0.8) and order["soft"]


def test_prefilled_verdicts_by_continuing_the_assistant_turn(tmp_path, server, judge_file):
    result = run(tmp_path, judge_file(server, verdict="prefilled", prefill_with="chat"))
    assert len(result.rows) == 6 and all(r["ai_preference"] == pytest.approx(0.8) for r in result.rows)
    body = server.bodies[0][1]
    assert body["messages"][-1] == {"role": "assistant", "content": "Preferred Response="}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False and body["max_tokens"] == 1


@pytest.mark.parametrize("structured_output", ["json_schema", "json_object"])
@pytest.mark.parametrize("cot", [False, True])
def test_constrained_verdicts_are_json_with_an_enum_of_the_labels(tmp_path, server, judge_file, structured_output, cot):
    result = run(tmp_path, judge_file(server, verdict="constrained", structured_output=structured_output), cot=cot)
    assert len(result.rows) == 6
    for row in result.rows:
        assert row["ai_preference"] == pytest.approx(0.8) and all(o["soft"] for o in row["orders"])
        assert all(o["text"] == ("It is clearer." if cot else '{"verdict": "1"}') for o in row["orders"] if o["first"] == "chosen")
    fmt = server.bodies[0][1]["response_format"]
    assert fmt["type"] == structured_output
    schema = fmt["json_schema"]["schema"] if structured_output == "json_schema" else fmt["schema"]
    assert schema["properties"]["verdict"] == {"type": "string", "enum": ["1", "2"]}
    assert schema["required"] == (["rationale", "verdict"] if cot else ["verdict"])


def test_anthropic_prefills_the_verdict_prefix_and_samples_concurrently(tmp_path, judge_file):
    with Loopback(latency=0.2) as srv:
        hard = run(tmp_path, judge_file(srv, "anthropic"), "hard", data={"n": 2})
        assert srv.bodies[0][1]["messages"][-1] == {"role": "assistant", "content": "Preferred Response="}
        assert all(r["ai_preference"] == 1.0 and r["human_preference"] == 1.0 for r in hard.rows)
        srv.max_in_flight = 0
        run(tmp_path, judge_file(srv, "anthropic", samples=3, temperature=1.0, concurrency=8), "sampled", data={"n": 1}, debias="none")
        assert srv.max_in_flight == 3  # the three samples of the one call at once


def test_a_judge_whose_first_replies_cannot_be_read_stops_the_run(tmp_path, server, judge_file):
    from rlaif.judging.engine import UnreadableJudge

    server.fault = lambda n, prompt: "unparseable"
    with pytest.raises(UnreadableJudge, match=r"'.*' gave no readable verdict in 10 of its first 10 answers "
                                              r".*'constrained' or 'prefilled'"):
        run(tmp_path, judge_file(server, concurrency=1), data={"n": 50})
    assert server.requests == 10  # not 100


def test_a_prefilled_judge_on_a_server_without_logprobs_says_so(tmp_path, judge_file):
    from rlaif.judging.engine import UnreadableJudge

    with Loopback(logprobs=False) as srv, pytest.raises(UnreadableJudge, match="no log-probabilities"):
        run(tmp_path, judge_file(srv, verdict="prefilled", tokenizer="embedded", concurrency=1))


@pytest.mark.parametrize("options, key", [({"verdict": "guess"}, "options.verdict"),
                                          ({"verdict": "prefilled", "tokenizer": "org/hub-model"}, "options.tokenizer"),
                                          ({"verdict": "constrained", "structured_output": "xml"}, "options.structured_output")])
def test_bad_verdict_options_name_their_key(tmp_path, server, judge_file, options, key):
    with pytest.raises(JudgeConfigError, match=key):
        run(tmp_path, judge_file(server, **options))


class HttpxJudge(ApiJudge):
    """A judge on plain httpx2 (the HTTP client under the SDKs), speaking a protocol of its own: POST /verdict {"prompt", "labels"}
    -> {"probs": [...]}. No SDK: what it inherits must retry and close for it."""

    Options = ApiOptions
    clients: ClassVar[list[httpx2.AsyncClient]] = []

    def _client(self, base_url):
        client = httpx2.AsyncClient(base_url=base_url, timeout=self.options.timeout)
        HttpxJudge.clients.append(client)
        return client

    async def _ask(self, client, request):
        response = await client.post("/verdict", json={"prompt": request.prompt, "labels": list(request.labels)})
        response.raise_for_status()
        return self.from_label_probs(request, response.json()["probs"], text="", soft=True)


class FlakyVerdicts(ThreadingHTTPServer):
    """Answers 503 to every other request, first included; else the first response is better if it says GOOD."""

    def __init__(self):
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests += 1
                if server.requests % 2:
                    self.send_response(503)
                    self.end_headers()
                    return
                first = body["prompt"].split("Response 1:")[1].split("Response 2:")[0]
                reply = json.dumps({"probs": [0.9, 0.1] if "GOOD" in first else [0.1, 0.9]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def test_a_backend_on_plain_httpx2_retries_its_servers_503_and_closes(tmp_path, monkeypatch):
    from rlaif.judging import configs

    monkeypatch.setitem(configs.BACKENDS, "httpx-test", "tests.test_api_judges:HttpxJudge")
    HttpxJudge.clients = []
    with FlakyVerdicts() as srv:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        (tmp_path / "judge.toml").write_text(f'backend = "httpx-test"\nmodel = "m"\n[options]\nbase_url = "http://127.0.0.1:{srv.server_port}"\n'
                                             "concurrency = 1\nretry_initial_wait = 0.01\nretry_max_wait = 0.05\n")
        result = run(tmp_path, str(tmp_path / "judge.toml"), data={"n": 3})
        srv.shutdown()
    counts = result.manifest["counts"]
    assert counts["labeled"] == 3 and sum(counts["failed"].values()) == 0
    rows = [json.loads(line) for line in (result.output_dir / "pairs.jsonl").read_text().splitlines()]
    assert all(row["chosen"].startswith("GOOD") for row in rows)
    assert srv.requests == 2 * 6  # 6 calls (3 pairs, both orders), each answered on its second try after a 503
    assert HttpxJudge.clients and all(client.is_closed for client in HttpxJudge.clients)
