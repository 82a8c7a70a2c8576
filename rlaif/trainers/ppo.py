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
from pathlib import Path

import torch
from tqdm import tqdm

from rlaif.data import Prompt
from rlaif.models import load_causal_lm, load_tokenizer
from rlaif.trainers.data import collate, encode, encode_prompt, load_prompts, split
from rlaif.trainers.loop import Trainer, batched, freeze_lower_layers
from rlaif.trainers.losses import (
    gae,
    kl_penalized_rewards,
    ppo_policy_loss,
    ppo_value_loss,
    whiten,
)
from rlaif.trainers.reward import load_reward_model

RewardFn = Callable[[list[Prompt], list[str]], torch.Tensor]


class PolicyWithValue(torch.nn.Module):
    """A causal LM and a scalar value head on its last hidden state."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = torch.nn.Linear(lm.config.hidden_size, 1)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids, attention_mask):
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, output_hidden_states=True)
        return out.logits, self.value_head(out.hidden_states[-1]).squeeze(-1)


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.gather(torch.log_softmax(logits.float(), -1), 2, tokens.unsqueeze(-1)).squeeze(-1)


class PPOTrainer(Trainer):
    def __init__(self, config, processes=None, reward_fn: RewardFn | None = None):
        super().__init__(config, processes)
        self.reward_fn = reward_fn
        self.tokenizer.padding_side = "left"  # generation pads on the left
        self.reference_score: float | None = None  # the reference's held-out score, once computed

    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        self.prompts = load_prompts(cfg.data, cfg.limit)
        if cfg.eval_data:
            self.eval_prompts = load_prompts(cfg.eval_data)
        else:
            self.prompts, self.eval_prompts = split(self.prompts, cfg.eval_split, cfg.seed, cfg.eval_fold)
        self.n_train = len(self.prompts)
        self.model = PolicyWithValue(load_causal_lm(init_from or cfg.model, self.procs.device)).to(self.procs.device)
        if init_from:
            self.model.value_head.load_state_dict(torch.load(Path(init_from) / "value_head.pt"))
        freeze_lower_layers(self.model.lm, cfg.train_layers)
        self.reference = load_causal_lm(cfg.model, self.procs.device)
        self.reference.requires_grad_(False)
        if self.reward_fn is None:
            if not cfg.reward_model:
                raise ValueError("PPO needs a reward model: --reward-model DIR (train one with --method rm)")
            self.rm_tokenizer = load_tokenizer(cfg.reward_model, padding_side="right")
            self.reward_model = load_reward_model(cfg.reward_model, self.procs.device, self.rm_tokenizer.pad_token_id).eval()
            self.reward_fn = self._score_with_reward_model

    def save_model(self, path: Path) -> None:
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
    def _sample(self, lm, prompts: list[tuple[Prompt, str]]) -> dict:
        """One sampled response per prompt: the sequences, the response tokens and their mask
        (up to and including the first end-of-sequence), and the response texts."""
        cfg, tok, dev = self.config, self.tokenizer, self.procs.device
        ids = [encode_prompt(tok, p, cfg.max_length, src, cfg.truncate_prompt, room=0) for p, src in prompts]
        width = max(map(len, ids))
        input_ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in ids], device=dev)
        prompt_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=dev)
        lm.eval()
        generated = lm.generate(
            input_ids=input_ids, attention_mask=prompt_mask, do_sample=True, temperature=cfg.temperature,
            top_k=0, top_p=1.0, max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        responses = generated[:, width:]
        is_eos = responses == tok.eos_token_id
        mask = ((is_eos.cumsum(-1) - is_eos.long()) == 0).float()
        return {
            "sequences": generated, "attention_mask": torch.cat([prompt_mask, mask.long()], dim=1), "responses": responses,
            "mask": mask, "width": width, "has_eos": is_eos.any(-1),
            "texts": [tok.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(responses, mask)],
        }

    @torch.no_grad()
    def rollout(self, prompts: list[tuple[Prompt, str]]) -> dict:
        cfg = self.config
        sample = self._sample(self.model.lm, prompts)
        generated, full_mask, responses, mask, width = (sample[k] for k in ("sequences", "attention_mask", "responses", "mask", "width"))
        logits, values = self.model(generated, full_mask)
        logps = token_logps(logits[:, width - 1:-1], responses)
        ref_logits = self.reference(input_ids=generated, attention_mask=full_mask, position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
        ref_logps = token_logps(ref_logits[:, width - 1:-1], responses)
        values = values[:, width - 1:-1]
        score = self.reward_fn([p for p, _ in prompts], sample["texts"]).to(logps.device).float()
        if cfg.missing_eos_penalty is not None:
            score = score - cfg.missing_eos_penalty * (~sample["has_eos"]).float()
        rewards, kl = kl_penalized_rewards(score, logps, ref_logps, mask, cfg.kl_coef)
        advantages, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
        return {
            "sequences": generated, "attention_mask": full_mask, "responses": responses, "mask": mask, "width": width,
            "logps": logps, "values": values * mask, "advantages": whiten(advantages, mask) * mask, "returns": returns,
            "score": score, "kl": kl.sum(-1), "length": mask.sum(-1),
        }

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
            stats = self._optimize(model, batch, optimizer, params)
            scheduler.step()
            step += 1
            row = {
                "step": step,
                "score": self.procs.mean(batch["score"].mean().item()),
                "kl": self.procs.mean(batch["kl"].mean().item()),
                "response_length": self.procs.mean(batch["length"].mean().item()),
                **{k: self.procs.mean(v) for k, v in stats.items()},
            }
            self._log(row)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in row.items() if k in ("score", "kl", "entropy", "clipfrac")})
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
            self.reference_score = self.held_out_scores(self.reference, self.config.seed).mean().item()
        return {"score": self.held_out_scores(self.model.lm, self.config.seed).mean().item(), "reference_score": self.reference_score}

    @torch.no_grad()
    def held_out_scores(self, lm, seed: int) -> torch.Tensor:
        """The reward-model score of one response from `lm` to each held-out prompt, sampled under `seed`."""
        with torch.random.fork_rng():  # evaluating leaves the training's random stream as it was
            torch.manual_seed(seed)
            scores = [self.reward_fn([p for p, _ in chunk], self._sample(lm, chunk)["texts"]).float().cpu()
                      for chunk in batched(self.eval_prompts, self.batch_size)]
        return torch.cat(scores)

    def _optimize(self, model, batch: dict, optimizer, params) -> dict[str, float]:
        cfg = self.config
        self.model.lm.train()
        n, width = len(batch["sequences"]), batch["width"]
        sums = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "clipfrac": 0.0}
        updates = 0
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(n).split(cfg.mini_batch_size):
                mask = batch["mask"][idx]
                logits, values = model(batch["sequences"][idx], batch["attention_mask"][idx])
                logits, values = logits[:, width - 1:-1], values[:, width - 1:-1]
                logps = token_logps(logits, batch["responses"][idx])
                pg_loss, clipfrac = ppo_policy_loss(logps, batch["logps"][idx], batch["advantages"][idx], mask, cfg.cliprange)
                vf_loss = ppo_value_loss(values * mask, batch["values"][idx], batch["returns"][idx], mask, cfg.cliprange_value)
                loss = pg_loss + cfg.vf_coef * vf_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    probs = torch.softmax(logits.float(), -1)
                    entropy = (-(probs * torch.log(probs + 1e-12)).sum(-1) * mask).sum() / mask.sum()
                for k, v in (("policy_loss", pg_loss), ("value_loss", vf_loss), ("entropy", entropy), ("clipfrac", clipfrac)):
                    sums[k] += v.item()
                updates += 1
        return {k: v / updates for k, v in sums.items()}
