"""Each loss against a computation done by hand (and the preference objectives against TRL's
own loss code on the same tensors)."""

import math

import pytest
import torch

from rlaif.models.logprobs import sequence_logps
from rlaif.trainers.losses import (
    approx_kl,
    dpo_loss,
    explained_variance,
    gae,
    kl_penalized_rewards,
    kto_loss,
    kto_reference_point,
    masked_entropy,
    orpo_loss,
    ppo_policy_loss,
    ppo_value_loss,
    reward_model_loss,
    sft_loss,
    simpo_loss,
    whiten,
)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sft_loss_counts_only_response_tokens():
    # Uniform logits over 4 tokens: every predicted token costs log 4. The prompt token is
    # masked; a confident wrong prediction there must not change the loss.
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 3] = 50.0  # predicts position 1, a response token
    labels = torch.tensor([[-100, 2, 1]])
    # position 1: logits[0] predict 2 with logits (0,0,0,50): loss ≈ 50; position 2: log 4
    assert sft_loss(logits, labels).item() == pytest.approx((50 + math.log(4)) / 2, rel=1e-4)
    labels = torch.tensor([[-100, -100, 1]])
    assert sft_loss(logits, labels).item() == pytest.approx(math.log(4))


def test_sequence_logps_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]]]))
    labels = torch.tensor([[-100, 0, 1]])  # tokens 0 then 1 after a prompt token
    assert sequence_logps(logits, labels).item() == pytest.approx(math.log(0.5) + math.log(0.8), rel=1e-5)
    # IPO's input (as TRL's ipo): the mean over the two response tokens
    assert sequence_logps(logits, labels, average=True).item() == pytest.approx((math.log(0.5) + math.log(0.8)) / 2, rel=1e-5)
    one_token = torch.tensor([[-100, -100, 1]])  # only the last token is a response token
    assert sequence_logps(logits, one_token, average=True).item() == pytest.approx(math.log(0.8), rel=1e-5)


def test_reward_model_loss_hard_and_soft():
    rc, rr = torch.tensor([2.0]), torch.tensor([0.0])
    assert reward_model_loss(rc, rr).item() == pytest.approx(-log_sigmoid(2.0))
    soft = -(0.75 * log_sigmoid(2.0) + 0.25 * log_sigmoid(-2.0))
    assert reward_model_loss(rc, rr, torch.tensor([0.75])).item() == pytest.approx(soft)
    assert reward_model_loss(rc, rr, torch.tensor([1.0])).item() == pytest.approx(reward_model_loss(rc, rr).item())


def test_dpo_equal_policy_and_reference_gives_log_2():
    x = torch.tensor([-12.0, -3.5])
    assert dpo_loss(x, x - 1, x, x - 1, beta=0.3).item() == pytest.approx(math.log(2))


def test_dpo_by_hand():
    pc, pr, rc, rr = torch.tensor([-1.0]), torch.tensor([-2.0]), torch.tensor([-1.5]), torch.tensor([-1.5])
    # h = (−1 + 1.5) − (−2 + 1.5) = 1; β h = 0.5
    assert dpo_loss(pc, pr, rc, rr, beta=0.5).item() == pytest.approx(-log_sigmoid(0.5))
    smoothed = -(0.9 * log_sigmoid(0.5) + 0.1 * log_sigmoid(-0.5))
    assert dpo_loss(pc, pr, rc, rr, beta=0.5, label_smoothing=0.1).item() == pytest.approx(smoothed)
    assert dpo_loss(pc, pr, rc, rr, beta=0.5, p=torch.tensor([1.0])).item() == pytest.approx(-log_sigmoid(0.5))
    soft = -(0.7 * log_sigmoid(0.5) + 0.3 * log_sigmoid(-0.5))
    assert dpo_loss(pc, pr, rc, rr, beta=0.5, p=torch.tensor([0.7])).item() == pytest.approx(soft)
    # IPO: (h − 1/(2β))² = (1 − 1)² = 0 at β = 0.5; (1 − 2.5)² at β = 0.2
    assert dpo_loss(pc, pr, rc, rr, beta=0.5, kind="ipo").item() == pytest.approx(0.0)
    assert dpo_loss(pc, pr, rc, rr, beta=0.2, kind="ipo").item() == pytest.approx(2.25)


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.1, 0.2, 0.3, 9.9]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])  # the last position is padding
    adv, ret = gae(rewards, values * mask, mask, gamma=1.0, lam=0.5)
    # δ2 = 1 − 0.3 = 0.7; δ1 = 0.3 − 0.2 = 0.1; δ0 = 0.2 − 0.1 = 0.1
    # A2 = 0.7; A1 = 0.1 + 0.5·0.7 = 0.45; A0 = 0.1 + 0.5·0.45 = 0.325
    assert adv[0].tolist() == pytest.approx([0.325, 0.45, 0.7, 0.0])
    assert ret[0].tolist() == pytest.approx([0.425, 0.65, 1.0, 0.0])


def test_kl_penalized_rewards_by_hand():
    logps = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.5, -2.0, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    rewards, kl = kl_penalized_rewards(torch.tensor([3.0]), logps, ref, mask, beta=0.1)
    assert kl[0].tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert rewards[0].tolist() == pytest.approx([-0.05, 3.0, 0.0])  # the score lands on the last real token


def test_ppo_policy_loss_clips():
    adv = torch.tensor([[1.0, -1.0]])
    mask = torch.ones(1, 2)
    same = torch.zeros(1, 2)
    loss, clipfrac = ppo_policy_loss(same, same, adv, mask, clip=0.2)
    assert loss.item() == pytest.approx(0.0) and clipfrac.item() == 0.0
    # ratio 2 on both: A = 1 is clipped to 1.2 (−1.2); A = −1 keeps the ratio (+2)
    new = torch.full((1, 2), math.log(2.0))
    loss, clipfrac = ppo_policy_loss(new, same, adv, mask, clip=0.2)
    assert loss.item() == pytest.approx((-1.2 + 2.0) / 2) and clipfrac.item() == pytest.approx(0.5)


def test_ppo_value_loss_by_hand():
    values, old, returns, mask = torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[1.0]]), torch.ones(1, 1)
    # unclipped error 0; clipped value 0.2, error 0.64; max = 0.64; half = 0.32
    assert ppo_value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.32)


def test_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)[0, :3]
    assert w.mean().item() == pytest.approx(0.0, abs=1e-6) and (w ** 2).mean().item() == pytest.approx(1.0, rel=1e-4)


def test_approx_kl_by_hand():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    old = torch.zeros(1, 3)
    new = torch.tensor([[math.log(2.0), 0.0, 5.0]])  # ρ = 2 on the first token, 1 on the second; the third is padding
    # (2 − 1) − log 2 = 0.3069 on the first, 0 on the second; mean over 2 tokens
    assert approx_kl(new, old, mask).item() == pytest.approx((1 - math.log(2)) / 2)
    assert approx_kl(old, old, mask).item() == 0.0


def test_explained_variance_by_hand():
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 99.0]])
    assert explained_variance(returns, returns, mask).item() == pytest.approx(1.0)
    # V = the mean return: R − V has the variance of R, nothing is explained
    assert explained_variance(torch.full((1, 5), 2.5), returns, mask).item() == pytest.approx(0.0)
    # V = R + 1 on the first token only: Var[R − V] over (−1, 0, 0, 0) = 0.1875; Var[R] = 1.25
    off = returns.clone()
    off[0, 0] += 1
    assert explained_variance(off, returns, mask).item() == pytest.approx(1 - 0.1875 / 1.25)
    assert math.isnan(explained_variance(returns, torch.ones(1, 5), mask).item())


def test_masked_entropy_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [0.0, 100.0], [3.0, 1.0]]])  # uniform over 2; certain; padding
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_entropy(logits, mask).item() == pytest.approx(math.log(2) / 2, abs=1e-6)


# ---------------------------------------------------------------- objectives beside DPO


def test_simpo_loss_by_hand():
    # mean log-probabilities −1 (chosen) and −2 (rejected): Δ = β(−1 + 2) − γ = 2 − 1 = 1 at β 2, γ 1
    chosen, rejected = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert simpo_loss(chosen, rejected, beta=2.0, gamma=1.0).item() == pytest.approx(-log_sigmoid(1.0))
    smoothed = -(0.9 * log_sigmoid(1.0) + 0.1 * log_sigmoid(-1.0))
    assert simpo_loss(chosen, rejected, beta=2.0, gamma=1.0, label_smoothing=0.1).item() == pytest.approx(smoothed)
    soft = -(0.7 * log_sigmoid(1.0) + 0.3 * log_sigmoid(-1.0))
    assert simpo_loss(chosen, rejected, beta=2.0, gamma=1.0, p=torch.tensor([0.7])).item() == pytest.approx(soft)


def test_orpo_loss_by_hand():
    # P(chosen) = 0.5, P(rejected) = 0.2 per token: odds 1 and 1/4, log odds ratio log 4
    chosen, rejected = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.2)])
    loss, log_odds = orpo_loss(chosen, rejected, nll=torch.tensor(1.5), lam=0.1)
    assert log_odds.item() == pytest.approx(math.log(4), rel=1e-5)
    assert loss.item() == pytest.approx(1.5 - 0.1 * log_sigmoid(math.log(4)), rel=1e-6)


def test_kto_loss_by_hand():
    # r = policy − reference: +1 for a desirable row, −2 for an undesirable one; z = 0.5
    policy, reference = torch.tensor([0.0, -3.0]), torch.tensor([-1.0, -1.0])
    desirable = torch.tensor([True, False])
    sigmoid = lambda x: 1 / (1 + math.exp(-x))
    by_hand = (1.0 * (1 - sigmoid(0.1 * (1 - 0.5))) + 2.0 * (1 - sigmoid(0.1 * (0.5 + 2)))) / 2
    assert (kto_loss(policy, reference, desirable, 0.5, beta=0.1, desirable_weight=1.0, undesirable_weight=2.0).item()
            == pytest.approx(by_hand))
    weighted = (0.5 * (1 - sigmoid(0.05)) + 3.0 * 2.0 * (1 - sigmoid(0.25))) / 2
    assert kto_loss(policy, reference, desirable, 0.5, 0.1, 1.0, 2.0, weight=torch.tensor([0.5, 3.0])).item() == pytest.approx(weighted)
    # z: the mismatched sequences' mean log-ratio, never below 0
    assert kto_reference_point(torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -2.5])).item() == pytest.approx(0.75)
    assert kto_reference_point(torch.tensor([-3.0]), torch.tensor([-2.0])).item() == 0.0


def test_weights_scale_each_pairs_loss():
    pc, pr, rc, rr = torch.tensor([0.0, 1.0]), torch.tensor([-1.0, 1.0]), torch.zeros(2), torch.zeros(2)
    each = [-log_sigmoid(0.1), math.log(2)]  # h = 1 and h = 0
    assert dpo_loss(pc, pr, rc, rr, weight=torch.tensor([2.0, 0.0])).item() == pytest.approx(2 * each[0] / 2)
    assert dpo_loss(pc, pr, rc, rr, weight=torch.ones(2)).item() == dpo_loss(pc, pr, rc, rr).item()
    assert reward_model_loss(pc, pr, weight=torch.tensor([0.0, 4.0])).item() == pytest.approx(4 * math.log(2) / 2)


def trl_self(**settings):
    """What TRL's loss methods read from their trainer, without building one."""
    from types import SimpleNamespace

    return SimpleNamespace(accelerator=SimpleNamespace(device="cpu"), **settings)


def random_logps(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return -torch.rand(n, generator=g) * 4 - 0.01, -torch.rand(n, generator=g) * 4 - 0.01


@pytest.mark.parametrize("beta, gamma, smoothing", [(2.0, 1.0, 0.0), (2.5, 0.3, 0.0), (0.1, 0.5, 0.2)])
def test_simpo_equals_trl(beta, gamma, smoothing):
    from trl.experimental.cpo import CPOTrainer

    chosen, rejected = random_logps()
    theirs, _, _ = CPOTrainer.cpo_loss(trl_self(alpha=0.0, loss_type="simpo", beta=beta, simpo_gamma=gamma,
                                                label_smoothing=smoothing), chosen, rejected)
    assert simpo_loss(chosen, rejected, beta, gamma, smoothing).item() == pytest.approx(theirs.mean().item(), abs=1e-5)


@pytest.mark.parametrize("lam", [0.1, 0.5])
def test_orpo_equals_trl(lam):
    from trl.experimental.orpo import ORPOTrainer

    chosen, rejected = random_logps(seed=1)
    chosen[0] = -1e-4  # near P = 1, where log(1 − P) needs care
    nll = torch.tensor(2.0)
    ratio_terms, _, _, _, log_odds = ORPOTrainer.odds_ratio_loss(trl_self(beta=lam), chosen, rejected)
    loss, ours_log_odds = orpo_loss(chosen, rejected, nll, lam)
    assert loss.item() == pytest.approx((nll - ratio_terms.mean()).item(), abs=1e-5)  # TRL: loss = nll − mean(λ log σ(·))
    assert ours_log_odds.item() == pytest.approx(log_odds.item(), abs=1e-5)
