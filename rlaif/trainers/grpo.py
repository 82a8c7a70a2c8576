"""GRPO (DeepSeekMath): PPO without a value model. Each step samples G responses per prompt,
scores them, and gives every token of a response its group-relative advantage
A_i = (r_i − mean r) / std r; then `ppo_epochs` passes of clipped updates with β times a KL
estimate to the frozen reference in the loss (not in the reward).

Rewards come from a reward model, a Python function, or a judge: with --reward-judge a group's
responses are ranked by the judge as `rlaif label` ranks candidates (--reward-ranking: every pair
in both orders by default), and a response's reward is its mean preference over the rest of
its group (with every pair judged, the share of its group it beats). With held-out prompts,
evaluation reports the mean reward of the policy and of the reference (with a judge: the mean
preference for the policy over the reference).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import mean

import torch

from rlaif.inputs import Pair, Prompt
from rlaif.judging.engine import judge_pairs
from rlaif.judging.rewards import JudgeRewards
from rlaif.models.loading import load_causal_lm
from rlaif.trainers.losses import approx_kl, group_advantages, grpo_loss, masked_entropy
from rlaif.trainers.online import OnlineTrainer, PromptItem, RewardFn, Sample, positions, sampled_token_logps, token_logps


@dataclass
class GroupRollout:
    """G responses to each of B prompts (a prompt's G in a row, N = B · G), fixed during the updates."""

    sample: Sample
    logps: torch.Tensor  # (N, T) log π_old of the rollout policy
    ref_logps: torch.Tensor | None  # (N, T) log π_ref; None without a KL term
    advantages: torch.Tensor  # (N,) group-relative
    score: torch.Tensor  # (N,) rewards
    group_size: int


class GRPOTrainer(OnlineTrainer):
    def build(self, init_from: str | None) -> None:
        self.model = self.load_trainable(lambda d: load_causal_lm(d, self.procs.device), init_from, "CAUSAL_LM")

    @property
    def policy(self) -> torch.nn.Module:
        return self.model

    @property
    def needs_reference(self) -> bool:
        return bool(self.config.kl_coef)  # β = 0: no KL term, no reference

    def reward_source(self) -> RewardFn:
        cfg = self.config
        if not cfg.reward_judge:
            return super().reward_source()
        self.rewards = JudgeRewards(cfg.reward_judge, self.out / "judge_cache.sqlite", cfg.rubric, cfg.reward_ranking,
                                    cfg.seed, mode="pairwise")
        return self.judged_group_scores

    def preferences(self, pairs: list[Pair]) -> list[float]:
        """P(a ≻ b) of each pair, judged in both orders (½ where the judge gave no verdict)."""
        r = self.rewards
        judged = judge_pairs(pairs, r.spec, r.rubric, r.cache, seed=self.config.seed, progress=False, judge=r.judge)
        return [0.5 if j.failed else j.p_a for j in judged]

    def judged_group_scores(self, prompts: list[Prompt], texts: list[str]) -> torch.Tensor:
        """Each response's reward within its group, by the judge's ranking of the group
        (`JudgeRewards.group_rewards`): (N,) for the N = B · G responses (and their prompts),
        each group of G in a row."""
        g = self.config.group_size
        rewards, _ = self.rewards.group_rewards([(prompts[b * g], texts[b * g:(b + 1) * g]) for b in range(len(texts) // g)])
        return torch.tensor([r for group in rewards for r in group])

    @torch.no_grad()
    def rollout(self, prompts: list[PromptItem]) -> GroupRollout:
        g = self.config.group_size
        sample = self.sample(self.policy, [item for item in prompts for _ in range(g)])
        with self.autocast():
            logps = sampled_token_logps(self.policy, sample)
            ref_logps = None
            if self.needs_reference:
                with self.reference_lm() as reference:
                    ref_logps = sampled_token_logps(reference, sample)
        score = self.score([p for p, _ in prompts for _ in range(g)], sample)
        advantages = group_advantages(score.view(-1, g)).flatten()
        return GroupRollout(sample, logps, ref_logps, advantages, score, g)

    def update_loss(self, model, batch: GroupRollout, idx: torch.Tensor, step: int, update: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The GRPO loss of the responses `idx` of a rollout, plus the PPO-ptx term; and its diagnostics."""
        cfg = self.config
        part = batch.sample[idx]
        with self.autocast():
            logits = model(input_ids=part.sequences, attention_mask=part.attention_mask, position_ids=positions(part.attention_mask)).logits
        logits = logits[:, part.width - 1:-1]
        logps = token_logps(logits, part.responses)
        ref = None if batch.ref_logps is None else batch.ref_logps[idx]
        rl_loss, clipfrac, kl = grpo_loss(logps, batch.logps[idx], ref, batch.advantages[idx], part.mask, cfg.cliprange, cfg.kl_coef)
        loss, ptx = self.with_ptx(rl_loss, step, update)
        with torch.no_grad():
            stats = {k: v.item() for k, v in {"policy_loss": rl_loss, "kl": kl,
                     "entropy": masked_entropy(logits, part.mask), "clipfrac": clipfrac,
                     "approx_kl": approx_kl(logps, batch.logps[idx], part.mask)}.items()}
        return loss, {**stats, **ptx}

    def rollout_stats(self, batch: GroupRollout) -> dict[str, float]:
        """Mean reward and its spread, the share of groups whose rewards were all equal (they
        teach nothing: every advantage is 0), and response length."""
        groups = batch.score.view(-1, batch.group_size)
        return {
            "score": batch.score.mean().item(),
            "score_std": batch.score.std().item(),
            "flat_groups": (groups.std(-1) == 0).float().mean().item(),
            "response_length": batch.sample.mask.sum(-1).mean().item(),
        }

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """With a reward function or model: mean held-out reward of the policy and the
        reference. With a judge: the mean of P(policy ≻ reference) on the held-out prompts (one
        response each, sampled with the same seed every time; both orders judged)."""
        if not self.config.reward_judge or not self.eval_prompts:
            return super().evaluate()
        policy = self.held_out_texts(self.policy, self.config.seed)
        with self.reference_lm() as reference:
            reference = self.held_out_texts(reference, self.config.seed)
        pairs = [Pair(f"eval:{i}", p, a, b) for i, ((p, _), a, b) in enumerate(zip(self.eval_prompts, policy, reference))]
        return {"preference_vs_reference": mean(self.preferences(pairs))}

    def _finish(self, step: int) -> dict[str, float]:
        try:
            return super()._finish(step)
        finally:
            if self.config.reward_judge:
                self.rewards.close()
