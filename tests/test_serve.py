"""`rlaif serve`: the judge as an HTTP reward, as OpenRLHF, TRL and a hostile client call it."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from rlaif.judging.rewards import JudgeRewards
from tests.conftest import HH

PROMPTS = ["Name a fruit.", "How do I boil an egg?", "What is the capital of France?"]
COMPLETIONS = ["An apple.", "Put it in boiling water for nine minutes.", "Paris."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`rlaif serve` in a process of its own."""

    def __init__(self, judge: str, cache: Path, *extra: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "rlaif.cli", "serve", "--judge", judge, "--cache", str(cache), "--port", str(self.port), *extra]
        self.proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rlaif serve stopped: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx2.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                time.sleep(0.2)
        raise RuntimeError("rlaif serve did not start")

    def post(self, path: str, body, **kwargs):
        return httpx2.post(self.url + path, json=body, timeout=120, **kwargs)

    def metrics(self) -> dict:
        return httpx2.get(self.url + "/metrics").json()

    def stop(self, sig=signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture(scope="module")
def tiny_judge(tiny, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("judge") / "tiny.toml"
    path.write_text(f'backend = "local"\nmodel = "{tiny}"\n')
    return str(path)


@pytest.fixture(scope="module")
def server(tiny_judge, tmp_path_factory):
    srv = Server(tiny_judge, tmp_path_factory.mktemp("serve") / "cache.sqlite", "--max-completions", "16", "--max-body-mb", "0.01")
    yield srv
    assert srv.stop() in (0, -signal.SIGTERM) and "Traceback" not in srv.proc.stdout.read()  # type: ignore[union-attr]


def in_process(judge: str, tmp_path) -> JudgeRewards:
    return JudgeRewards(judge, tmp_path / "in-process.sqlite")


def test_openrlhf_requests_get_the_judges_own_scores(server, tiny_judge, tmp_path):
    # As OpenRLHF's client sends them: the whole texts in `query`, the prompts beside them, labels it does not need.
    queries = [p + c for p, c in zip(PROMPTS, COMPLETIONS)]
    reply = server.post("/get_reward", {"query": queries, "prompts": PROMPTS, "labels": ["", "", ""]})
    assert reply.status_code == 200 and set(reply.json()) == {"rewards", "scores", "extra_logs"}
    local = in_process(tiny_judge, tmp_path)
    expected, _ = local.scores(PROMPTS, COMPLETIONS)
    assert reply.json()["rewards"] == pytest.approx(expected, abs=1e-5) and len(set(expected)) == 3
    bare = server.post("/get_reward", {"query": queries}).json()["rewards"]  # no prompts: each query judged whole
    assert bare == pytest.approx(local.scores([""] * 3, queries)[0], abs=1e-5)
    local.close()


def test_group_rewards_are_the_in_process_ones(server, tiny_judge, tmp_path):
    groups = [{"prompt": PROMPTS[0], "completions": ["An apple.", "A pear, or a plum.", "Stones."]},
              {"prompt": [{"role": "user", "content": PROMPTS[1]}], "completions": ["Boil it.", "Boil it."]}]
    reply = server.post("/v1/group_rewards", {"groups": groups})
    local = in_process(tiny_judge, tmp_path)
    expected, _ = local.group_rewards([(g["prompt"], g["completions"]) for g in groups])
    assert [r for g in reply.json()["rewards"] for r in g] == pytest.approx([r for g in expected for r in g], abs=1e-5)
    assert expected[1] == [0.5, 0.5] and sum(expected[0]) == pytest.approx(1.5)  # two identical completions; shares of a group of 3
    local.close()


def test_a_repeated_request_is_answered_from_the_cache(server):
    body = {"prompts": PROMPTS[:2], "completions": ["Fresh words here.", "And more of them."]}
    first = server.post("/v1/scores", body).json()["rewards"]
    calls = server.metrics()["judge_calls"]
    assert server.post("/v1/scores", body).json()["rewards"] == first and server.metrics()["judge_calls"] == calls


BAD = [
    (b'{"query": ["a", ', 400, "body: not valid JSON"),
    (b"[1, 2]", 422, "body: expected a JSON object"),
    (b'{"query": "not a list"}', 422, "field 'query': expected a list"),
    (b'{"prompts": ["a"]}', 422, "field 'completions': expected a list, and it is missing"),
    (b'{"prompts": ["a", "b"], "completions": ["x", 3]}', 422, "field 'completions[1]': expected a string, got int"),
    (b'{"prompts": ["a"], "completions": ["x", "y"]}', 422, "field 'prompts': expected a list of 2 prompts"),
    (b'{"prompts": [{"role": "user"}], "completions": ["x"]}', 422, "field 'prompts[0]'"),
    (b'{"groups": [{"prompt": "a", "completions": "x"}]}', 422, "field 'completions': expected a list"),
    (json.dumps({"query": ["x"] * 17}).encode(), 413, "more than --max-completions 16"),
    (json.dumps({"query": ["x" * 20000]}).encode(), 413, "body: larger than --max-body-mb 0.01"),
    (b"[" * 100000 + b"]" * 100000, 413, "body: larger than"),
]


@pytest.mark.parametrize("body, status, message", BAD)
def test_a_bad_request_gets_its_4xx_and_the_next_good_one_is_answered(server, body, status, message):
    path = "/v1/group_rewards" if b"groups" in body else "/v1/scores" if b"completions" in body or b"prompts" in body else "/get_reward"
    reply = httpx2.post(server.url + path, content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert reply.status_code == status and message in reply.json()["error"] and "Traceback" not in reply.text
    assert server.post("/get_reward", {"query": ["Paris."]}).status_code == 200


def test_deep_nesting_and_hang_ups_leave_the_server_serving(server):
    deep = b"[" * 2000 + b"]" * 2000
    reply = httpx2.post(server.url + "/get_reward", content=deep, timeout=60)
    assert reply.status_code == 400 and reply.json()["error"].startswith("body: not valid JSON")
    with socket.create_connection(("127.0.0.1", server.port)) as s:  # a client that hangs up mid-body
        s.sendall(b"POST /v1/scores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"prompts\": [")
    assert httpx2.get(server.url + "/nowhere").status_code == 404
    assert server.post("/get_reward", {"query": ["Paris."]}).status_code == 200
    assert server.metrics()["errors"].get("500") is None


def test_a_key_is_required_where_one_is_set(tiny_judge, tmp_path):
    srv = Server(tiny_judge, tmp_path / "cache.sqlite", "--api-key-env", "RLAIF_SERVE_KEY", env={"RLAIF_SERVE_KEY": "s3cret"})
    try:
        assert srv.post("/get_reward", {"query": ["Paris."]}).status_code == 401
        wrong = srv.post("/get_reward", {"query": ["Paris."]}, headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401 and "s3cret" not in wrong.text
        assert srv.post("/get_reward", {"query": ["Paris."]}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        srv.stop()
    assert "s3cret" not in srv.proc.stdout.read()  # type: ignore[union-attr]


def test_a_killed_server_restarted_answers_from_its_cache(tiny_judge, tmp_path):
    body = {"groups": [{"prompt": PROMPTS[2], "completions": ["Paris.", "Lyon.", "Rome, I think."]}]}
    srv = Server(tiny_judge, tmp_path / "cache.sqlite")
    first = srv.post("/v1/group_rewards", body).json()["rewards"]
    assert srv.metrics()["judge_calls"] == 6
    srv.stop(signal.SIGKILL)
    again = Server(tiny_judge, tmp_path / "cache.sqlite")
    try:
        assert again.post("/v1/group_rewards", body).json()["rewards"] == first
        assert again.metrics()["judge_calls"] == 0 and again.metrics()["cache_hits"] == 6
    finally:
        again.stop()


def test_concurrent_requests_share_batches_and_every_client_form_agrees(server, tiny_judge, tmp_path):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from rlaif.serving.client import AsyncJudgeReward, JudgeReward

    prompts, completions = PROMPTS * 4, [f"Answer number {i}." for i in range(12)]
    before = server.metrics()["batches"]
    with ThreadPoolExecutor(12) as pool:
        alone = list(pool.map(lambda i: server.post("/v1/scores", {"prompts": [prompts[i]],
                                                                   "completions": [completions[i]]}).json()["rewards"][0],
                              range(12)))
    assert server.metrics()["batches"] - before < 12  # requests in flight together were judged together
    assert JudgeReward(server.url)(prompts, completions) == pytest.approx(alone, abs=1e-5)
    assert asyncio.run(AsyncJudgeReward(server.url)(prompts, completions)) == pytest.approx(alone, abs=1e-5)
    local = JudgeReward(judge=tiny_judge, cache=str(tmp_path / "local.sqlite"))
    assert local(prompts, [[{"role": "assistant", "content": c}] for c in completions]) == pytest.approx(alone, abs=1e-5)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TRL's own calls of transformers' renamed checkpointing methods
def test_trl_grpo_trainer_takes_the_served_judge_as_its_reward(server, tiny, tiny_judge, tmp_path):
    # A real GRPOTrainer, a few steps on the CPU, its reward function the client pointed at `rlaif serve`:
    # the rewards it logs are those the same judge computes in this process for the same completions.
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlaif.inputs import load_examples
    from rlaif.serving.client import JudgeReward

    seen = []
    client = JudgeReward(server.url, groups=True)

    def judge_reward(prompts, completions, **kwargs):
        rewards = client(prompts, completions)
        seen.append((list(prompts), list(completions), rewards))
        return rewards

    prompts = [ex.prompt[-1]["content"] for ex in load_examples(f"{HH}?rows=0:4").examples]
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=2,
                      logging_steps=1, report_to="none", use_cpu=True, save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=tiny, reward_funcs=[judge_reward], args=args, train_dataset=Dataset.from_dict({"prompt": prompts}))
    trainer.train()
    logged = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    assert len(seen) == 2 and len(logged) == 2
    local = in_process(tiny_judge, tmp_path)
    for (p, c, rewards), mean in zip(seen, logged):
        expected, _ = local.group_rewards([(p[i], c[i:i + 2]) for i in range(0, len(c), 2)])
        assert rewards == pytest.approx([r for group in expected for r in group], abs=1e-5)
        assert mean == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)
    local.close()
