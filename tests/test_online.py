"""GRPO and PPO-ptx: their losses against hand computations, and the trainers doing what they say."""

import math

import pytest
import torch

from rlaif.errors import ConfigError, InputError
from rlaif.models.loading import load_causal_lm
from rlaif.trainers import train
from rlaif.trainers.grpo import GRPOTrainer
from rlaif.trainers.losses import group_advantages, grpo_loss, ppo_ptx_loss
from rlaif.trainers.online import load_reward_function, load_texts
from rlaif.trainers.ppo import PPOTrainer
from tests.conftest import write_jsonl
from tests.test_trainers import char_policy, config, lowercase_share, metrics, pairs  # noqa: F401 - fixtures

PTX = "the cat sat on the mat and the dog lay by the door"


def test_group_advantages_by_hand():
    # rewards 1, 2, 3, 4: mean 2.5, sample std √(5/3) = 1.29099
    adv = group_advantages(torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    std = math.sqrt(5 / 3)
    assert adv[0].tolist() == pytest.approx([-1.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.5 / (std + 1e-4), 1.5 / (std + 1e-4)])
    assert adv[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # a group that agrees teaches nothing


def test_grpo_loss_by_hand():
    # two responses, lengths 2 and 1; A = (+1, −1); ε = 0.2, β = 0.1.
    old = torch.log(torch.tensor([[0.5, 0.5], [0.4, 0.9]]))
    new = torch.log(torch.tensor([[0.75, 0.5], [0.4, 0.9]]))  # token 1 of response 1: ρ = 1.5, clipped to 1.2 for A > 0
    ref = torch.log(torch.tensor([[0.5, 0.5], [0.2, 0.9]]))
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss, clipfrac, kl = grpo_loss(new, old, ref, torch.tensor([1.0, -1.0]), mask, clip=0.2, beta=0.1)
    d = lambda r: r - math.log(r) - 1  # D = π_ref/π − log(π_ref/π) − 1
    d11, d12, d21 = d(0.5 / 0.75), d(1.0), d(0.2 / 0.4)
    seq1 = ((1.2 - 0.1 * d11) + (1.0 - 0.1 * d12)) / 2  # min(1.5·1, 1.2·1) = 1.2; ρ = 1 for token 2
    seq2 = (-1.0 - 0.1 * d21) / 1
    assert loss.item() == pytest.approx(-(seq1 + seq2) / 2)
    assert clipfrac.item() == pytest.approx(1 / 3)
    assert kl.item() == pytest.approx((d11 + d12 + d21) / 3)
    no_kl, _, _ = grpo_loss(new, old, None, torch.tensor([1.0, -1.0]), mask, clip=0.2, beta=0.1)
    assert no_kl.item() == pytest.approx(-((1.2 + 1.0) / 2 - 1.0) / 2)


def test_ppo_ptx_loss_adds_gamma_times_the_pretraining_nll_by_hand():
    # one sequence of 3 tokens over a vocabulary of 2: logits at positions 0 and 1 predict tokens 1 and 2
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [5.0, 5.0]]])
    labels = torch.tensor([[0, 1, 0]])
    # −log p(x1 = 1) = −log ½; −log p(x2 = 0) = −log ¾
    nll = (math.log(2) + math.log(4 / 3)) / 2
    loss, got = ppo_ptx_loss(torch.tensor(0.7), logits, labels, ptx_coef=2.0)
    assert got.item() == pytest.approx(nll)
    assert loss.item() == pytest.approx(0.7 + 2.0 * nll)
    padded, _ = ppo_ptx_loss(torch.tensor(0.7), torch.cat([logits, torch.zeros(1, 1, 2)], 1), torch.tensor([[0, 1, 0, -100]]), 2.0)
    assert padded.item() == pytest.approx(loss.item())  # padding is not text


def test_ppo_update_mixes_in_the_ptx_term(pairs, char_policy, tmp_path):  # noqa: F811
    """One PPO-ptx update's loss is the PPO loss plus γ times the NLL of the batch of text it drew."""
    ptx = tmp_path / "ptx.txt"
    ptx.write_text(f"{PTX}\n\n{PTX.upper()}\n")
    cfg = config("ppo", pairs, str(char_policy), tmp_path / "out", max_steps=1, rollout_batch_size=4, mini_batch_size=4, max_new_tokens=6,
                 ptx_coef=0.5, ptx_data=str(ptx))
    trainer = PPOTrainer(cfg, reward_fn=lowercase_share)
    trainer.setup(None)
    batch = trainer.rollout(trainer.prompts[:4])
    idx = torch.arange(4)
    with_ptx, stats = trainer.update_loss(trainer.model, batch, idx, step=0, update=0)
    trainer.ptx = []
    without, plain = trainer.update_loss(trainer.model, batch, idx, step=0, update=0)
    assert "ptx_loss" not in plain
    # the NLL of both documents (mini_batch_size 4 > 2 documents: both drawn), token by token
    tok, lm = trainer.tokenizer, trainer.policy
    total, count = 0.0, 0
    for text in (PTX, PTX.upper()):
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        logp = torch.log_softmax(lm(input_ids=ids).logits[0, :-1].float(), -1)
        total -= logp.gather(1, ids[0, 1:, None]).sum().item()
        count += ids.shape[1] - 1
    assert stats["ptx_loss"] == pytest.approx(total / count, rel=1e-5)
    assert with_ptx.item() == pytest.approx(without.item() + 0.5 * total / count, rel=1e-5)


def test_ppo_ptx_keeps_the_pretraining_text_likely(pairs, char_policy, tmp_path):  # noqa: F811
    ptx = write_jsonl(tmp_path / "ptx.jsonl", [{"text": PTX}])
    common = {"max_steps": 6, "rollout_batch_size": 4, "mini_batch_size": 4, "max_new_tokens": 6, "lr": 3e-3, "ppo_epochs": 2}
    PPOTrainer(config("ppo", pairs, str(char_policy), tmp_path / "plain", **common), reward_fn=lowercase_share).train()
    PPOTrainer(config("ppo", pairs, str(char_policy), tmp_path / "ptx", ptx_coef=1.0, ptx_data=str(ptx), **common),
               reward_fn=lowercase_share).train()
    rows = metrics(tmp_path / "ptx")
    assert rows[-1]["ptx_loss"] < rows[0]["ptx_loss"] - 0.3
    assert "ptx_loss" not in metrics(tmp_path / "plain")[0]

    def nll(model_dir) -> float:
        from rlaif.models.loading import load_causal_lm, load_tokenizer

        tok, lm = load_tokenizer(str(model_dir)), load_causal_lm(str(model_dir))
        ids = torch.tensor([tok(PTX, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(lm(input_ids=ids).logits[0, :-1], ids[0, 1:]).item()

    assert nll(tmp_path / "ptx") < nll(tmp_path / "plain") - 0.3


def test_ptx_and_reward_settings_are_checked(pairs, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="ptx_coef"):
        config("ppo", pairs, None, tmp_path, ptx_coef=0.5)
    with pytest.raises(ConfigError, match="ptx_coef"):
        config("dpo", pairs, None, tmp_path, ptx_coef=0.5, ptx_data="x.txt")
    with pytest.raises(ConfigError, match="reward_judge"):
        config("ppo", pairs, None, tmp_path, reward_judge="embedded")
    with pytest.raises(ConfigError, match="one source of rewards"):
        config("grpo", pairs, None, tmp_path, reward_judge="embedded", reward_model="rm")
    with pytest.raises(ConfigError, match="group_size"):
        config("grpo", pairs, None, tmp_path, group_size=1)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "fine"}, {"txt": "typo"}])
    with pytest.raises(InputError, match=r"bad.jsonl:2: field 'text'"):
        load_texts(str(bad))
    with pytest.raises(ConfigError, match="reward_function"):
        load_reward_function(str(tmp_path / "missing.py") + ":score")


REWARD_FILE = '''
def lowercase(prompts, responses):
    """The share of lowercase letters in each response."""
    return [sum(c.islower() for c in r) / max(1, len(r)) for r in responses]
'''


def test_grpo_raises_a_reward_function_given_as_a_file(pairs, char_policy, tmp_path):  # noqa: F811
    fn = tmp_path / "rewards.py"
    fn.write_text(REWARD_FILE)
    out = tmp_path / "out"
    results = train(config("grpo", pairs, str(char_policy), out, max_steps=30, rollout_batch_size=4, group_size=4,
                           mini_batch_size=8, ppo_epochs=2, max_new_tokens=8, lr=5e-3, kl_coef=0.02, eval_split=0.25,
                           reward_function=f"{fn}:lowercase"))
    rows = [r for r in metrics(out) if "score" in r]
    first, last = sum(r["score"] for r in rows[:5]) / 5, sum(r["score"] for r in rows[-5:]) / 5
    assert last > first + 0.1, (first, last)
    assert rows[0]["kl"] < 0.05 and all(0 <= r["kl"] < 5 for r in rows)  # the first update's policy is the reference
    assert {"clipfrac", "approx_kl", "entropy", "flat_groups", "policy_loss"} <= set(rows[-1])
    assert results["eval/score"] > results["eval/reference_score"], results
    assert (out / "model.safetensors").exists() and not (out / "value_head.pt").exists()


def test_grpo_resumes_exactly_with_ptx(pairs, char_policy, tmp_path):  # noqa: F811
    ptx = tmp_path / "ptx.txt"
    ptx.write_text(f"{PTX}\n{PTX[::-1]}\n{PTX.upper()}\n")
    common = {"rollout_batch_size": 2, "group_size": 3, "mini_batch_size": 3, "max_new_tokens": 5, "lr": 2e-3,
                  "save_steps": 2, "lr_scheduler": "constant", "ptx_coef": 0.3, "ptx_data": str(ptx)}

    def run(out, steps, resume=False):
        GRPOTrainer(config("grpo", pairs, str(char_policy), out, max_steps=steps, resume=resume, **common),
                    reward_fn=lowercase_share).train()
        return metrics(out)

    whole = run(tmp_path / "whole", 4)
    run(tmp_path / "parts", 2)
    parts = run(tmp_path / "parts", 4, resume=True)
    for key in ("policy_loss", "ptx_loss", "score"):
        assert [r[key] for r in parts] == pytest.approx([r[key] for r in whole], rel=1e-5), key


def test_grpo_with_a_judge_rewards_the_responses_it_prefers(tiny, pairs, tmp_path, scripted_judge):  # noqa: F811
    judge = scripted_judge(bias=0.1)
    trainer = GRPOTrainer(config("grpo", pairs, tiny, tmp_path / "out", max_steps=2, rollout_batch_size=2, group_size=3, mini_batch_size=3,
                                 max_new_tokens=4, reward_judge=judge, eval_split=0.25))
    trainer.setup(None)
    # group 1: only the first response is GOOD; group 2: two GOOD ones share the wins
    scores = trainer.judged_group_scores(["q1"] * 3 + ["q2"] * 3, ["GOOD one", "bad", "worse", "GOOD", "GOOD too", "bad"])
    # within a group: a GOOD response beats a bad one with P = ½(0.8 + 0.1 + 1 − (0.2 + 0.1)) = 0.8 after both orders
    assert scores.tolist() == pytest.approx([0.8, 0.35, 0.35, 0.65, 0.65, 0.2])
    results = trainer.train()
    assert 0.0 <= results["eval/preference_vs_reference"] <= 1.0
    assert (tmp_path / "out" / "judge_cache.sqlite").exists()


def test_grpo_without_kl_still_evaluates_against_the_starting_policy(pairs, char_policy, tmp_path):  # noqa: F811
    cfg = config("grpo", pairs, str(char_policy), tmp_path / "out", max_steps=15, rollout_batch_size=4, group_size=4, mini_batch_size=8,
                 max_new_tokens=8, lr=5e-3, kl_coef=0.0, eval_split=0.25)
    trainer = GRPOTrainer(cfg, reward_fn=lowercase_share)
    results = trainer.train()
    start = load_causal_lm(str(char_policy))
    # the start, not the trained policy
    assert results["eval/reference_score"] == pytest.approx(trainer.held_out_scores(start, cfg.seed).mean().item())
    assert results["eval/score"] > results["eval/reference_score"]


RANKS_IN_SYNC = '''
import sys
import torch
import torch.distributed as dist
from rlaif.trainers import TrainConfig
from rlaif.trainers.grpo import GRPOTrainer

data, model, out, ptx = sys.argv[1:]
cfg = TrainConfig(method="grpo", data=data, model=model, output=out, reward_function="tests.test_trainers:lowercase_share", ptx_coef=5.0,
                  ptx_data=ptx, max_steps=3, rollout_batch_size=2, group_size=2, mini_batch_size=2, max_new_tokens=4, \
lr=1e-2, progress=False)
trainer = GRPOTrainer(cfg)
trainer.train()
weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
both = [torch.zeros_like(weights) for _ in range(2)]
dist.all_gather(both, weights)
print(f"rank {dist.get_rank()} differs by {(both[0] - both[1]).abs().max().item()}")
'''


def test_ptx_under_two_processes_keeps_their_weights_equal(tiny, pairs, tmp_path):  # noqa: F811
    """The pretraining loss runs outside the DDP wrapper: its gradients must still be all-reduced."""
    import os
    import subprocess
    import sys

    script = tmp_path / "check.py"
    script.write_text(RANKS_IN_SYNC)
    ptx = tmp_path / "ptx.txt"
    ptx.write_text(f"{PTX}\n{PTX.upper()}\n")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), pairs, tiny, str(tmp_path / "out"), str(ptx)],
                            check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.stdout.count("differs by 0.0") == 2, result.stdout
    assert (tmp_path / "out" / "model.safetensors").exists()
