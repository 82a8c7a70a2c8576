"""What PPO and GRPO share: they sample responses from the policy as they train, score them,
and update on what they sampled.

`OnlineTrainer` reads the prompts, builds the frozen reference, finds the rewards (a reward
model, a Python function, or a function given in code), samples, mixes in the PPO-ptx
pretraining loss, evaluates on held-out prompts and runs the step loop. A method says how a
batch of prompts becomes a rollout (`rollout`), and the loss of a minibatch of it (`update_loss`).
"""

from __future__ import annotations

import importlib
import importlib.util
import random
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlaif.errors import ConfigError, InputError
from rlaif.inputs import Prompt, read_records
from rlaif.judging.configs import reward_model_dir
from rlaif.models.encoding import collate, encode, encode_prompt
from rlaif.models.loading import load_causal_lm, load_reward_model, load_tokenizer
from rlaif.trainers.loop import Trainer, batched, whole
from rlaif.trainers.losses import ppo_ptx_loss
from rlaif.trainers.pairs import load_prompts, split

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

    def __getitem__(self, idx: torch.Tensor) -> Sample:
        """The responses at positions `idx` (a 1-D tensor of indices)."""
        return Sample(self.sequences[idx], self.attention_mask[idx], self.responses[idx], self.mask[idx], self.has_eos[idx],
                      [self.texts[i] for i in idx.tolist()])


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, so left padding does not shift them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def token_logps(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(a_t): logits (B, T, vocab) and tokens (B, T) -> (B, T)."""
    return torch.gather(torch.log_softmax(logits.float(), -1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def sampled_token_logps(lm, sample: Sample) -> torch.Tensor:
    """log π(a_t) of each sampled response token under `lm`: (B, T). Position t's logits predict
    token t + 1, so the response's are those from P − 1 to the end less one."""
    logits = lm(input_ids=sample.sequences, attention_mask=sample.attention_mask, position_ids=positions(sample.attention_mask)).logits
    return token_logps(logits[:, sample.width - 1:-1], sample.responses)


def load_reward_function(spec: str) -> RewardFn:
    """`FILE.py:NAME` or `module:NAME`: a function (prompts, responses) -> one score per response."""
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ConfigError(f"expected FILE.py:NAME or module:NAME, got {spec!r}", key="reward_function")
    try:
        if where.endswith(".py"):
            loader = importlib.util.spec_from_file_location(Path(where).stem, where)
            if loader is None or not Path(where).is_file():
                raise FileNotFoundError(where)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        fn = getattr(module, name)
    except (ImportError, FileNotFoundError, AttributeError) as e:
        raise ConfigError(f"cannot load {spec!r}: {e}", key="reward_function") from None

    def scores(prompts: list[Prompt], responses: list[str]) -> torch.Tensor:
        out = torch.as_tensor(fn(prompts, responses), dtype=torch.float32).flatten()
        if len(out) != len(responses):
            raise ConfigError(f"{spec} returned {len(out)} scores for {len(responses)} responses", key="reward_function")
        return out

    return scores


def load_texts(spec: str) -> list[str]:
    """Documents for PPO-ptx: the lines of a .txt file, or the `text` field of each row of any
    file `rlaif label` reads."""
    if spec.endswith(".txt"):
        texts = [line.strip() for line in Path(spec).read_text().splitlines() if line.strip()]
    else:
        texts = []
        for line, record in read_records(spec):
            if isinstance(record, InputError):
                raise record
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or not record["text"].strip():
                raise InputError(spec, line, "text", "expected a non-empty string of pretraining text")
            texts.append(record["text"])
    if not texts:
        raise InputError(spec, None, None, "no text")
    return texts


class OnlineTrainer(Trainer):
    """PPO and GRPO: prompts in, sampled responses scored and trained on."""

    def __init__(self, config, processes=None, reward_fn: RewardFn | None = None, on_log=None):
        super().__init__(config, processes, on_log)
        self.reward_fn = reward_fn
        self.tokenizer.padding_side = "left"  # generation pads on the left
        self.reference_score: float | None = None  # the reference's held-out score, once computed

    # ---- what a method supplies

    @abstractmethod
    def build(self, init_from: str | None) -> None:
        """Build `self.model` (from `init_from`, a checkpoint, when resuming)."""

    @property
    @abstractmethod
    def policy(self) -> torch.nn.Module:
        """The causal LM being trained (inside `self.model`)."""

    @abstractmethod
    def rollout(self, prompts: list[PromptItem]) -> Any:
        """Sample and score responses to a batch of prompts: what the updates need."""

    @abstractmethod
    def update_loss(self, model, batch, idx: torch.Tensor, step: int, update: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of the responses `idx` of a rollout, and its diagnostics (with `approx_kl`)."""

    @abstractmethod
    def rollout_stats(self, batch) -> dict[str, float]:
        """What a rollout says before any update."""

    @property
    def needs_reference(self) -> bool:
        """Whether training itself reads the reference's log-probabilities."""
        return True

    def reward_source(self) -> RewardFn:
        """The reward function the settings name: a Python function or a reward model."""
        cfg = self.config
        if cfg.reward_function:
            return load_reward_function(cfg.reward_function)
        if not cfg.reward_model:
            raise ConfigError(f"{cfg.method} needs rewards: --reward-model DIR (train one with --method rm), --reward-function FILE.py:NAME"
                              + (" or --reward-judge CONFIG" if cfg.method == "grpo" else ""))
        rm_dir = reward_model_dir(cfg.reward_model)
        self.rm_tokenizer = load_tokenizer(rm_dir, padding_side="right")
        self.reward_model = load_reward_model(rm_dir, self.procs.device, self.rm_tokenizer.pad_token_id).eval()
        return self._score_with_reward_model

    # ---- shared

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
        self.ptx = ([ids[:cfg.max_length]
                     for ids in self.tokenizer(load_texts(cfg.ptx_data), add_special_tokens=False)["input_ids"]]
                    if cfg.ptx_coef else [])
        self.build(init_from)
        self.reference = None  # with --lora-r: the policy with its adapter off
        if cfg.lora_r is None and (self.needs_reference or self.eval_prompts):  # evaluation scores the reference too
            self.reference = load_causal_lm(cfg.model, self.procs.device)
            self.reference.requires_grad_(False)
        if self.reward_fn is None:
            self.reward_fn = self.reward_source()

    def reference_lm(self):
        """The frozen reference, within a `with` block: --model, or the policy with its LoRA adapter off."""
        return self.base_weights(self.policy if self.reference is None else self.reference)

    @torch.no_grad()
    def _score_with_reward_model(self, prompts: list[Prompt], responses: list[str]) -> torch.Tensor:
        # The reward model may use another tokenizer: the text is tokenized afresh with its own.
        items = [encode(self.rm_tokenizer, p, r, self.config.max_length + self.config.max_new_tokens, "reward-model:0", True)
                 for p, r in zip(prompts, responses)]
        batch = collate(items, self.rm_tokenizer.pad_token_id, self.procs.device)
        return self.reward_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0].float()

    def score(self, prompts: list[Prompt], sample: Sample) -> torch.Tensor:
        """The reward function's score of each response (less --missing-eos-penalty where it never ended): (B,)."""
        cfg = self.config
        score = self.reward_fn(prompts, sample.texts).to(sample.mask.device).float()
        if cfg.missing_eos_penalty is not None:
            score = score - cfg.missing_eos_penalty * (~sample.has_eos).float()
        return score

    @torch.no_grad()
    def sample(self, lm, prompts: list[PromptItem]) -> Sample:
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

    def with_ptx(self, rl_loss: torch.Tensor, step: int, update: int) -> tuple[torch.Tensor, dict[str, float]]:
        """PPO-ptx: the update's loss with --ptx-coef γ times the negative log-likelihood of a
        batch of --ptx-data mixed in (unchanged without it). The batch is drawn by the step and
        update number, so a resumed run draws the same ones."""
        if not self.ptx:
            return rl_loss, {}
        picks = random.Random(f"{self.config.seed}:{step}:{update}").sample(range(len(self.ptx)),
                                                                            min(self.config.mini_batch_size, len(self.ptx)))
        batch = collate([{"input_ids": self.ptx[i]} for i in picks], self.tokenizer.pad_token_id, self.procs.device)
        with self.autocast():
            # Not through the DDP wrapper: the parameters' gradients are still all-reduced once, in the backward pass.
            logits = self.policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss, nll = ppo_ptx_loss(rl_loss, logits, batch["labels"], self.config.ptx_coef)
        return loss, {"ptx_loss": nll.item()}

    def optimize(self, model, batch, optimizer, params, step: int) -> dict[str, float]:
        """`ppo_epochs` passes of minibatch updates over one rollout (fewer with --target-kl),
        with the diagnostics (as CleanRL logs them) beside the losses."""
        cfg = self.config
        self.policy.train()
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(batch.sample.sequences)).split(cfg.mini_batch_size):
                loss, stats = self.update_loss(model, batch, idx, step, updates)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # before clipping, as the offline trainers log it
                stats["grad_norm"] = whole(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)).item()
                optimizer.step()
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                updates += 1
            if cfg.target_kl is not None and stats["approx_kl"] > cfg.target_kl:
                break  # this rollout's policy has moved far enough
        return {**{k: v / updates for k, v in sums.items()}, "updates": updates}

    @property
    def batch_size(self) -> int:
        return self.config.rollout_batch_size

    shown_metrics = ("score", "kl", "approx_kl", "explained_variance", "ptx_loss")

    def step(self, model, work: list[list[int]], step: int, optimizer, params: list[torch.nn.Parameter]) -> dict[str, float]:
        """One rollout of a batch of prompts, then the updates on it."""
        batch = self.rollout([self.prompts[i] for i in work[0]])
        return {**self.rollout_stats(batch), **self.optimize(model, batch, optimizer, params, step)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean reward of one sampled response per held-out prompt, from the trained policy
        (`score`) and from the reference it started as (`reference_score`), with the same
        seed each time, so that evaluations at different steps differ by the policy alone."""
        if not self.eval_prompts:
            return {}
        if self.reference_score is None:
            with self.reference_lm() as reference:
                self.reference_score = self.held_out_scores(reference, self.config.seed).mean().item()
        return {"score": self.held_out_scores(self.policy, self.config.seed).mean().item(), "reference_score": self.reference_score}

    @torch.no_grad()
    def held_out_texts(self, lm, seed: int) -> list[str]:
        """One response from `lm` to each held-out prompt, sampled under `seed`."""
        with torch.random.fork_rng():  # evaluating leaves the training's random stream as it was
            torch.manual_seed(seed)
            return [t for chunk in batched(self.eval_prompts, self.batch_size) for t in self.sample(lm, chunk).texts]

    @torch.no_grad()
    def held_out_scores(self, lm, seed: int) -> torch.Tensor:
        """The reward of one response from `lm` to each held-out prompt, sampled under `seed`."""
        texts, prompts, size = self.held_out_texts(lm, seed), [p for p, _ in self.eval_prompts], self.batch_size
        return torch.cat([self.reward_fn(prompts[i:i + size], texts[i:i + size]).float().cpu() for i in range(0, len(texts), size)])
