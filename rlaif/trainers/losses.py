"""The training losses, each a small pure function of tensors, with its formula.

Notation: σ is the logistic function; Δ a reward margin; β the KL strength; p a soft
preference label P(chosen ≻ rejected) (p = 1 is a hard label).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on response tokens only: mean over positions where `labels` ≠ −100.

    logits[:, t] predicts labels[:, t + 1] (the usual causal shift is done here).
    logits: (batch, seq, vocab); labels: (batch, seq) -> a scalar.
    """
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def weighted_mean(losses: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(1/B) Σ_i w_i ℓ_i, the mean of each example's loss times its weight (the plain mean without
    weights, so a weight of 1 everywhere changes nothing), as TRL weights a batch.
    losses: (batch,); weight: (batch,) or None -> a scalar."""
    return losses.mean() if weight is None else (losses * weight).mean()


def preference_loss(margin: torch.Tensor, p: torch.Tensor | float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Soft-label Bradley–Terry: −[p log σ(Δ) + (1 − p) log σ(−Δ)], mean over the batch (each
    pair's term times its weight, if given).

    With p = 1 this is the hard loss −log σ(Δ). margin, p, weight: (batch,) (p may be a number) -> a scalar.
    """
    return weighted_mean(-(p * F.logsigmoid(margin) + (1 - p) * F.logsigmoid(-margin)), weight)


def reward_model_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p: torch.Tensor | float = 1.0,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Reward-model loss with Δ = r_c − r_r: −[p log σ(Δ) + (1 − p) log σ(−Δ)]; scores (batch,) -> a scalar."""
    return preference_loss(r_chosen - r_rejected, p, weight)


def smoothed(p: torch.Tensor | float, label_smoothing: float) -> torch.Tensor | float:
    """q = p(1 − ε) + (1 − p)ε: a label p trusted up to a flip rate ε (conservative DPO)."""
    return p * (1 - label_smoothing) + (1 - p) * label_smoothing


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    p: torch.Tensor | float = 1.0,
    kind: str = "sigmoid",
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """DPO on sequence log-probabilities; every argument but β, ε and `kind` is (batch,).

    h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)).
    sigmoid: −[q log σ(βh) + (1 − q) log σ(−βh)] with q = p(1 − ε) + (1 − p)ε; with p = 1 and
    ε = 0 it is −log σ(βh), with ε > 0 it is conservative DPO (labels flipped with rate ε).
    ipo: (h − 1/(2β))², the IPO loss (ignores p and ε). TRL's `ipo` (and the DPO trainer here)
    feeds it per-token mean log-probabilities (`sequence_logps(..., average=True)`), so the
    same β means the same loss as TRL's. With `weight`, each pair's term counts w_i times.
    """
    h = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    if kind == "ipo":
        return weighted_mean((h - 1 / (2 * beta)) ** 2, weight)
    if kind != "sigmoid":
        raise ValueError(f"unknown DPO loss {kind!r}: expected 'sigmoid' or 'ipo'")
    return preference_loss(beta * h, smoothed(p, label_smoothing), weight)


def simpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, beta: float = 2.0,
               gamma: float = 1.0, label_smoothing: float = 0.0,
               p: torch.Tensor | float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """SimPO, reference-free: the inputs are length-normalised log-probabilities, the mean
    log π(y_t | x, y_<t) over each response's tokens, and with Δ = β (ā_w − ā_l) − γ (γ the
    target reward margin) the loss is −[q log σ(Δ) + (1 − q) log σ(−Δ)], q as in `dpo_loss`
    (−log σ(Δ) for a hard label without smoothing). Δ is computed as β (ā_w − ā_l − γ/β), as
    TRL's CPOTrainer (loss_type="simpo") does. policy_chosen, policy_rejected, p, weight: (batch,) -> a scalar.
    """
    return preference_loss(beta * (policy_chosen - policy_rejected - gamma / beta), smoothed(p, label_smoothing), weight)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, without cancellation near 0 (branch at −log 2)."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, nll: torch.Tensor, lam: float = 0.1,
              weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ORPO, reference-free: L = L_SFT + λ · mean_i −log σ(log odds(y_w) − log odds(y_l)), with
    odds(y) = P(y)/(1 − P(y)) and log P(y) the length-normalised log-probability ā (so
    log odds = ā − log(1 − e^ā)).

    policy_chosen, policy_rejected, weight: (batch,) mean log-probabilities per response token;
    nll: a scalar, L_SFT (the chosen sequences' mean token negative log-likelihood, computed by
    the caller: TRL's ORPOTrainer takes it over prompt and response). Returns (L, the mean log
    odds ratio).
    """
    log_odds = (policy_chosen - policy_rejected) - (log1mexp(policy_chosen) - log1mexp(policy_rejected))
    return nll + lam * weighted_mean(-F.logsigmoid(log_odds), weight), log_odds.mean()


def kto_reference_point(policy_kl: torch.Tensor, reference_kl: torch.Tensor) -> torch.Tensor:
    """KTO's reference point z = max(0, mean_j (log π(y'_j | x_j) − log π_ref(y'_j | x_j))), a
    detached estimate of KL(π ‖ π_ref) from mismatched pairs (x_j, y'_j): each prompt of the batch
    with another row's response, as the KTO paper and TRL estimate it. (batch,), (batch,) -> a scalar."""
    return (policy_kl - reference_kl).mean().detach().clamp(min=0)


def kto_loss(policy: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor, z: torch.Tensor | float, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """KTO on unpaired rows: with r = log π(y|x) − log π_ref(y|x) and z the reference point
    (`kto_reference_point`), a desirable row costs λ_D (1 − σ(β (r − z))) and an undesirable one
    λ_U (1 − σ(β (z − r))); the loss is their mean over the batch (each row's times its weight).
    policy, reference: (batch,) summed log-probabilities; desirable: (batch,) bool -> a scalar.
    """
    r = policy - reference
    losses = torch.where(desirable, desirable_weight * (1 - torch.sigmoid(beta * (r - z))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (z - r))))
    return weighted_mean(losses, weight)


# ---------------------------------------------------------------- PPO


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(x − mean) / std over the masked entries (the mean is kept if not `shift_mean`); x, mask (B, T) -> (B, T)."""
    mean = (x * mask).sum() / mask.sum()
    var = (((x - mean) * mask) ** 2).sum() / mask.sum()
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def kl_penalized_rewards(score: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor,
                         beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = −β (log π(a_t) − log π_ref(a_t)), plus the score at the last token.

    Returns (rewards, kl) with kl = log π − log π_ref per token (masked).
    score: (B,); logps, ref_logps, mask: (B, T) -> rewards (B, T), kl (B, T).
    """
    kl = (logps - ref_logps) * mask
    rewards = -beta * kl
    last = mask.sum(-1).long() - 1
    rewards[torch.arange(len(score)), last] += score
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over response tokens.

    δ_t = r_t + γ V_{t+1} − V_t;  A_t = δ_t + γλ A_{t+1};  returns R_t = A_t + V_t.
    Past the last response token V = 0 and A = 0. rewards, values, mask: (B, T) -> advantages, returns (B, T).
    """
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], device=rewards.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m
        advantages[:, t] = next_adv
        next_value = values[:, t] * m
    return advantages, (advantages + values) * mask


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    clip: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate: mean over tokens of max(−A ρ, −A clip(ρ, 1 − ε, 1 + ε)), ρ = π/π_old.

    Returns (loss, clip fraction), both scalars; logps, old_logps, advantages, mask: (B, T).
    """
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    loss = (torch.max(unclipped, clipped) * mask).sum() / mask.sum()
    clipfrac = (((clipped > unclipped).float()) * mask).sum() / mask.sum()
    return loss, clipfrac


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                   clip: float = 0.2) -> torch.Tensor:
    """Clipped value loss: ½ mean over tokens of max((V − R)², (V_old + clip(V − V_old, ±ε) − R)²).

    values, old_values, returns, mask: (B, T) -> a scalar.
    """
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    loss = torch.max((values - returns) ** 2, (clipped - returns) ** 2)
    return 0.5 * (loss * mask).sum() / mask.sum()


# ---------------------------------------------------------------- PPO diagnostics (as CleanRL logs them)


def approx_kl(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(π_old ‖ π) estimated per token as (ρ − 1) − log ρ with ρ = π/π_old (never negative),
    mean over masked tokens. All inputs (B, T)."""
    log_ratio = logps - old_logps
    return (((log_ratio.exp() - 1) - log_ratio) * mask).sum() / mask.sum()


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 − Var[R − V] / Var[R] over masked tokens: 1 is a perfect value head, ≤ 0 one that
    explains nothing; NaN when the returns do not vary. All inputs (B, T)."""
    n = mask.sum()

    def var(x: torch.Tensor) -> torch.Tensor:
        mean = (x * mask).sum() / n
        return (((x - mean) * mask) ** 2).sum() / n

    var_returns = var(returns)
    return 1 - var(returns - values) / var_returns if var_returns > 0 else torch.tensor(float("nan"))


def masked_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens of the policy's entropy −Σ_a π(a) log π(a): logits (B, T, vocab), mask (B, T)."""
    logp = torch.log_softmax(logits.float(), -1)
    return (-(logp.exp() * logp).sum(-1) * mask).sum() / mask.sum()


# ---------------------------------------------------------------- PPO-ptx and GRPO


def ppo_ptx_loss(rl_loss: torch.Tensor, ptx_logits: torch.Tensor, ptx_labels: torch.Tensor,
                 ptx_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """InstructGPT's PPO-ptx objective, E[r − β KL] + γ E_{x∼D_pretrain}[log π(x)], as a loss to
    minimise: L = L_RL − γ · mean_t log π(x_t | x_<t), the mean over the pretraining batch's tokens.

    rl_loss: a scalar (PPO's policy and value loss); ptx_logits: (B, L, vocab); ptx_labels: (B, L),
    −100 on padding. Returns (L, the pretraining negative log-likelihood), both scalars.
    """
    nll = sft_loss(ptx_logits, ptx_labels)
    return rl_loss + ptx_coef * nll, nll


def group_advantages(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's group-relative advantage: each response's reward standardised within its prompt's
    group, A_i = (r_i − mean_j r_j) / (std_j r_j + ε), std the sample (n − 1) standard deviation.
    A group whose rewards are all equal gets 0 everywhere. rewards: (B, G) -> (B, G)."""
    return (rewards - rewards.mean(-1, keepdim=True)) / (rewards.std(-1, keepdim=True) + eps)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None, advantages: torch.Tensor, mask: torch.Tensor,
              clip: float = 0.2, beta: float = 0.04) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GRPO (DeepSeekMath, eq. 3): with ρ_t = π(o_t)/π_old(o_t) and one advantage A_i per response,

    L = −(1/N) Σ_i (1/|o_i|) Σ_t [min(ρ_t A_i, clip(ρ_t, 1 − ε, 1 + ε) A_i) − β D_t],
    D_t = π_ref(o_t)/π(o_t) − log(π_ref(o_t)/π(o_t)) − 1 (an unbiased, never negative estimate of
    KL(π ‖ π_ref)); no KL term when `ref_logps` is None.
    logps, old_logps, ref_logps, mask: (N, T); advantages: (N,). Returns (loss, clip fraction, mean D_t).
    """
    ratio = torch.exp(logps - old_logps)
    adv = advantages[:, None]
    unclipped, clipped = ratio * adv, torch.clamp(ratio, 1 - clip, 1 + clip) * adv
    surrogate = torch.min(unclipped, clipped)
    kl = torch.zeros_like(logps)
    if ref_logps is not None:
        log_ref_ratio = ref_logps - logps
        kl = torch.exp(log_ref_ratio) - log_ref_ratio - 1
    per_token = surrogate - beta * kl
    lengths = mask.sum(-1).clamp(min=1)
    loss = -((per_token * mask).sum(-1) / lengths).mean()
    clipfrac = ((unclipped > clipped).float() * mask).sum() / mask.sum()
    return loss, clipfrac, (kl * mask).sum() / mask.sum()
