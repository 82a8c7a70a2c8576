"""PPO with a per-token KL penalty to a frozen reference (the InstructGPT recipe).

Each step: sample responses to a batch of prompts; score them with the reward model;
per-token rewards r_t = −β (log π − log π_ref), plus the score at the last token (and a
penalty where no end-of-sequence was produced, if asked); advantages by GAE (γ, λ),
whitened; then `ppo_epochs` passes over minibatches with the clipped surrogate and the
clipped value loss (plus γ_ptx times a language-modelling loss on pretraining text with
--ptx-coef: PPO-ptx). The value head is a linear layer on the policy's last hidden state.
With held-out prompts (`--eval-data`, `--eval-split`), the end of training samples a response
to each from the trained policy and from the reference, and reports both mean scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rlaif.models.loading import load_causal_lm
from rlaif.trainers import losses
from rlaif.trainers.online import OnlineTrainer, PromptItem, Sample, positions, sampled_token_logps, token_logps


@dataclass
class Rollout:
    """A sample with what the updates need, all fixed during the PPO epochs over it."""

    sample: Sample
    logps: torch.Tensor  # (B, T) log π_old(a_t) of the rollout policy
    values: torch.Tensor  # (B, T) V_old(s_t), 0 past the response
    advantages: torch.Tensor  # (B, T) GAE advantages, whitened, 0 past the response
    returns: torch.Tensor  # (B, T) A_t + V_old(s_t)
    score: torch.Tensor  # (B,) the reward model's score (less any missing-EOS penalty)
    kl: torch.Tensor  # (B,) Σ_t log π(a_t) − log π_ref(a_t)


class PolicyWithValue(torch.nn.Module):
    """A causal LM and a scalar value head on its last hidden state."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask):
        """(B, L) ids and mask -> logits (B, L, vocab) and values (B, L)."""
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask), output_hidden_states=True)
        return out.logits, self.value_head(out.hidden_states[-1]).squeeze(-1)

    def activation_checkpointing_enable(self, **kwargs) -> None:
        self.lm.activation_checkpointing_enable(**kwargs)


class PPOTrainer(OnlineTrainer):
    def build(self, init_from: str | None) -> None:
        policy = self.load_trainable(lambda d: load_causal_lm(d, self.procs.device), init_from, "CAUSAL_LM")
        self.model = PolicyWithValue(policy).to(self.procs.device)
        if init_from:
            self.model.value_head.load_state_dict(torch.load(Path(init_from) / "value_head.pt"))

    @property
    def policy(self) -> torch.nn.Module:
        return self.model.lm

    def save_model(self, path: Path, state_dict=None) -> None:
        self.model.lm.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        torch.save(self.model.value_head.state_dict(), path / "value_head.pt")

    @torch.no_grad()
    def rollout(self, prompts: list[PromptItem]) -> Rollout:
        cfg = self.config
        sample = self.sample(self.policy, prompts)
        mask, start = sample.mask, sample.width - 1
        with self.autocast():
            logits, values = self.model(sample.sequences, sample.attention_mask)
            with self.reference_lm() as reference:
                ref_logps = sampled_token_logps(reference, sample)
        logps = token_logps(logits[:, start:-1], sample.responses)
        values = values[:, start:-1].float() * mask
        score = self.score([p for p, _ in prompts], sample)
        rewards, kl = losses.kl_penalized_rewards(score, logps, ref_logps, mask, cfg.kl_coef)
        advantages, returns = losses.gae(rewards, values, mask, cfg.gamma, cfg.lam)
        return Rollout(sample, logps, values, losses.whiten(advantages, mask) * mask, returns, score, kl.sum(-1))

    def update_loss(self, model, batch: Rollout, idx: torch.Tensor, step: int, update: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one minibatch `idx` of a rollout: the clipped policy loss, plus --vf-coef
        times the clipped value loss, plus the PPO-ptx term; and its diagnostics."""
        cfg = self.config
        sample, start, mask = batch.sample, batch.sample.width - 1, batch.sample.mask[idx]
        with self.autocast():
            logits, values = model(sample.sequences[idx], sample.attention_mask[idx])
        logits, values = logits[:, start:-1], values[:, start:-1].float()
        logps = token_logps(logits, sample.responses[idx])
        pg_loss, clipfrac = losses.ppo_policy_loss(logps, batch.logps[idx], batch.advantages[idx], mask, cfg.cliprange)
        vf_loss = losses.ppo_value_loss(values * mask, batch.values[idx], batch.returns[idx], mask, cfg.cliprange_value)
        loss, ptx = self.with_ptx(pg_loss + cfg.vf_coef * vf_loss, step, update)
        with torch.no_grad():
            stats = {k: v.item() for k, v in {"policy_loss": pg_loss, "value_loss": vf_loss,
                     "entropy": losses.masked_entropy(logits, mask), "clipfrac": clipfrac,
                     "approx_kl": losses.approx_kl(logps, batch.logps[idx], mask)}.items()}
        return loss, {**stats, **ptx}

    def rollout_stats(self, batch: Rollout) -> dict[str, float]:
        """What a rollout says before any update: the reward model's mean score and its spread
        (an uninformative reward model gives a small one), KL to the reference, response length,
        and how much of the returns' variance the value head explains."""
        return {
            "score": batch.score.mean().item(),
            "score_std": batch.score.std().item() if len(batch.score) > 1 else 0.0,
            "kl": batch.kl.mean().item(),
            "response_length": batch.sample.mask.sum(-1).mean().item(),
            "explained_variance": losses.explained_variance(batch.values, batch.returns, batch.sample.mask).item(),
        }
