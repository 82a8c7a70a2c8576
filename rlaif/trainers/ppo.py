"""PPO with a per-token KL penalty to a frozen reference (the InstructGPT recipe).

Each step: sample responses to a batch of prompts; score them with the reward model;
per-token rewards r_t = −β (log π − log π_ref), plus the score at the last token (and a
penalty where no end-of-sequence was produced, if asked); advantages by GAE (γ, λ),
whitened; then `ppo_epochs` passes over minibatches with the clipped surrogate and the
clipped value loss. The value head is a linear layer on the policy's last hidden state.
With held-out prompts (`--eval-data`, `--eval-split`), the end of training samples a response
to each from the trained policy and from the reference, and reports both mean scores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from rlaif.data import Prompt
from rlaif.errors import ConfigError
from rlaif.judge import reward_model_dir
from rlaif.models import load_causal_lm, load_reward_model, load_tokenizer
from rlaif.trainers.data import collate, encode, encode_prompt, load_prompts, split
from rlaif.trainers.loop import Trainer, batched
from rlaif.trainers.losses import (
    approx_kl,
    explained_variance,
    gae,
    kl_penalized_rewards,
    masked_entropy,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)

RewardFn = Callable[[list[Prompt], list[str]], torch.Tensor]
PromptItem = tuple[Prompt, list[int]]  # a prompt and its token ids (cut to --max-length)


@dataclass
class Sample:
    """Responses sampled for B prompts: P is the width of the left-padded prompts, T the
    response length (--max-new-tokens)."""

    sequences: torch.Tensor  # (B, P + T) prompt and response tokens
    attention_mask: torch.Tensor  # (B, P + T) 1 on prompt tokens and on the response up to its first EOS
    responses: torch.Tensor  # (B, T) response tokens
    mask: torch.Tensor  # (B, T) float: 1 up to and including the first EOS
    has_eos: torch.Tensor  # (B,) bool: the response ended by itself
    texts: list[str]  # B decoded responses

    @property
    def width(self) -> int:
        """P: where the responses start."""
        return self.sequences.shape[1] - self.responses.shape[1]


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


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, so left padding does not shift them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(a_t): logits (B, T, vocab) and tokens (B, T) -> (B, T)."""
    return torch.gather(torch.log_softmax(logits.float(), -1), 2, tokens.unsqueeze(-1)).squeeze(-1)


class PPOTrainer(Trainer):
    def __init__(self, config, processes=None, reward_fn: RewardFn | None = None):
        super().__init__(config, processes)
        self.reward_fn = reward_fn
        self.tokenizer.padding_side = "left"  # generation pads on the left
        self.reference_score: float | None = None  # the reference's held-out score, once computed

    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        prompts = load_prompts(cfg.data, cfg.limit)
        if cfg.eval_data:
            eval_prompts = load_prompts(cfg.eval_data)
        else:
            prompts, eval_prompts = split(prompts, cfg.eval_split, cfg.seed, cfg.eval_fold)
        rows = prompts + eval_prompts
        encoded = [encode_prompt(self.tokenizer, p, cfg.max_length, source, cfg.truncate_prompt, room=0) for p, source in rows]
        items: list[PromptItem] = [(p, ids) for (p, _), (ids, _) in zip(rows, encoded)]
        self.prompts, self.eval_prompts = items[:len(prompts)], items[len(prompts):]
        self.n_train, self.n_rows = len(self.prompts), len(items)
        self.truncated_rows = sum(cut for _, cut in encoded)
        policy = self.load_trainable(lambda d: load_causal_lm(d, self.procs.device), init_from, "CAUSAL_LM")
        self.model = PolicyWithValue(policy).to(self.procs.device)
        if init_from:
            self.model.value_head.load_state_dict(torch.load(Path(init_from) / "value_head.pt"))
        self.reference = None  # with --lora-r: the policy with its adapter off
        if cfg.lora_r is None:
            self.reference = load_causal_lm(cfg.model, self.procs.device)
            self.reference.requires_grad_(False)
        if self.reward_fn is None:
            if not cfg.reward_model:
                raise ConfigError("PPO needs a reward model: --reward-model DIR (train one with --method rm)")
            rm_dir = reward_model_dir(cfg.reward_model)
            self.rm_tokenizer = load_tokenizer(rm_dir, padding_side="right")
            self.reward_model = load_reward_model(rm_dir, self.procs.device, self.rm_tokenizer.pad_token_id).eval()
            self.reward_fn = self._score_with_reward_model

    def reference_lm(self):
        """The frozen reference, within a `with` block: --model, or the policy with its LoRA adapter off."""
        return self.base_weights(self.model.lm if self.reference is None else self.reference)

    def save_model(self, path: Path, state_dict=None) -> None:
        self.model.lm.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        torch.save(self.model.value_head.state_dict(), path / "value_head.pt")

    @torch.no_grad()
    def _score_with_reward_model(self, prompts: list[Prompt], responses: list[str]) -> torch.Tensor:
        # The reward model may use another tokenizer: the text is tokenized afresh with its own.
        items = [encode(self.rm_tokenizer, p, r, self.config.max_length + self.config.max_new_tokens, "reward-model:0", True) for p, r in zip(prompts, responses)]
        batch = collate(items, self.rm_tokenizer.pad_token_id, self.procs.device)
        return self.reward_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()

    @torch.no_grad()
    def _sample(self, lm, prompts: list[PromptItem]) -> Sample:
        """One sampled response per prompt."""
        cfg, tok, dev = self.config, self.tokenizer, self.procs.device
        width = max(len(ids) for _, ids in prompts)
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(ids)) + ids for _, ids in prompts], device=dev)
        prompt_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids in prompts], device=dev)
        lm.eval()
        with self.autocast():
            generated = lm.generate(
                input_ids=input_ids, attention_mask=prompt_mask, do_sample=True, temperature=cfg.temperature,
                top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            )
        responses = generated[:, width:]
        is_eos = responses == tok.eos_token_id
        mask = ((is_eos.cumsum(-1) - is_eos.long()) == 0).float()
        return Sample(
            sequences=generated, attention_mask=torch.cat([prompt_mask, mask.long()], dim=1), responses=responses, mask=mask,
            has_eos=is_eos.any(-1), texts=[tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(responses, mask)],
        )

    @torch.no_grad()
    def rollout(self, prompts: list[PromptItem]) -> Rollout:
        cfg = self.config
        sample = self._sample(self.model.lm, prompts)
        seq, full_mask, mask, start = sample.sequences, sample.attention_mask, sample.mask, sample.width - 1
        with self.autocast():
            logits, values = self.model(seq, full_mask)
            with self.reference_lm() as reference:
                ref_logits = reference(input_ids=seq, attention_mask=full_mask, position_ids=positions(full_mask)).logits
        # Position t's logits predict token t + 1: the response's are those from P − 1 to the end less one.
        logps = token_logps(logits[:, start:-1], sample.responses)
        ref_logps = token_logps(ref_logits[:, start:-1], sample.responses)
        values = values[:, start:-1].float() * mask
        score = self.reward_fn([p for p, _ in prompts], sample.texts).to(logps.device).float()
        if cfg.missing_eos_penalty is not None:
            score = score - cfg.missing_eos_penalty * (~sample.has_eos).float()
        rewards, kl = kl_penalized_rewards(score, logps, ref_logps, mask, cfg.kl_coef)
        advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
        return Rollout(sample, logps, values, whiten(advantages, mask) * mask, returns, score, kl.sum(-1))

    @property
    def batch_size(self) -> int:
        return self.config.rollout_batch_size

    def train(self) -> dict[str, float]:
        cfg = self.config
        params, optimizer, scheduler, schedule, total, step = self._begin(1)
        model = self._wrap()
        bar = tqdm(total=total, initial=step, desc="train ppo", disable=not (cfg.progress and self.procs.main))
        while step < total:
            batch = self.rollout([self.prompts[i] for i in schedule[step]])
            stats = {**rollout_stats(batch), **self._optimize(model, batch, optimizer, params)}
            scheduler.step()
            step += 1
            row = {"step": step, **{k: self.procs.mean(v) for k, v in stats.items()}, "lr": scheduler.get_last_lr()[0]}
            if step % cfg.log_steps == 0 or step == total:
                self._log(row)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("score", "kl", "approx_kl", "explained_variance")})
            self._evaluate_during(step, total)
            if cfg.save_steps and step % cfg.save_steps == 0:
                self._checkpoint(step, optimizer, scheduler)
        bar.close()
        return self._finish(step)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean reward-model score of one sampled response per held-out prompt, from the trained
        policy (`score`) and from the reference it started as (`reference_score`), with the same
        seed each time, so that evaluations at different steps differ by the policy alone."""
        if not self.eval_prompts:
            return {}
        if self.reference_score is None:
            with self.reference_lm() as reference:
                self.reference_score = self.held_out_scores(reference, self.config.seed).mean().item()
        return {"score": self.held_out_scores(self.model.lm, self.config.seed).mean().item(), "reference_score": self.reference_score}

    @torch.no_grad()
    def held_out_scores(self, lm, seed: int) -> torch.Tensor:
        """The reward-model score of one response from `lm` to each held-out prompt, sampled under `seed`."""
        with torch.random.fork_rng():  # evaluating leaves the training's random stream as it was
            torch.manual_seed(seed)
            scores = [self.reward_fn([p for p, _ in chunk], self._sample(lm, chunk).texts).float().cpu()
                      for chunk in batched(self.eval_prompts, self.batch_size)]
        return torch.cat(scores)

    def _optimize(self, model, batch: Rollout, optimizer, params) -> dict[str, float]:
        """`ppo_epochs` passes of minibatch updates over one rollout (fewer with --target-kl),
        with the diagnostics CleanRL logs beside the losses."""
        cfg = self.config
        self.model.lm.train()
        sample, start = batch.sample, batch.sample.width - 1
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clipfrac": 0.0, "approx_kl": 0.0}
        updates = 0
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(sample.sequences)).split(cfg.mini_batch_size):
                mask = sample.mask[idx]
                with self.autocast():
                    logits, values = model(sample.sequences[idx], sample.attention_mask[idx])
                logits, values = logits[:, start:-1], values[:, start:-1].float()
                logps = token_logps(logits, sample.responses[idx])
                pg_loss, clipfrac = ppo_policy_loss(logps, batch.logps[idx], batch.advantages[idx], mask, cfg.cliprange)
                vf_loss = ppo_value_loss(values * mask, batch.values[idx], batch.returns[idx], mask, cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    kl = approx_kl(logps, batch.logps[idx], mask)
                    for k, v in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("entropy", masked_entropy(logits, mask)), ("clipfrac", clipfrac), ("approx_kl", kl)):
                        sums[k] += v.item()
                updates += 1
            if cfg.target_kl is not None and kl.item() > cfg.target_kl:
                break  # this rollout's policy has moved far enough
        return {**{k: v / updates for k, v in sums.items()}, "updates": updates}


def rollout_stats(batch: Rollout) -> dict[str, float]:
    """What a rollout says before any update: the reward model's mean score and its spread
    (an uninformative reward model gives a small one), KL to the reference, response length,
    and how much of the returns' variance the value head explains."""
    return {
        "score": batch.score.mean().item(),
        "score_std": batch.score.std().item() if len(batch.score) > 1 else 0.0,
        "kl": batch.kl.mean().item(),
        "response_length": batch.sample.mask.sum(-1).mean().item(),
        "explained_variance": explained_variance(batch.values, batch.returns, batch.sample.mask).item(),
    }
