"""Sampling from a causal LM many prompts at a time, each sample from a random stream of its own.

Prompts of similar length share a batch (left-padded, so every row's next token is its last
column). Sample j of a prompt with seed s draws from `torch.Generator().manual_seed(s + j)`, so a
prompt's responses do not depend on which prompts share its batch or on the batch size (up to
the rounding of a wider matrix product). Decoding is plain sampling at `temperature` (no top-k,
no top-p); temperature 0 is greedy.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def stop_ids(lm, tokenizer) -> torch.Tensor:
    """The tokens that end a response: the tokenizer's EOS and the model's own end-of-turn ones."""
    ids = lm.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return torch.tensor(sorted({*ids, tokenizer.eos_token_id} - {None}), device=lm.device)


@torch.no_grad()
def sample_rows(lm, prompts: list[list[int]], generators: list[torch.Generator], max_new_tokens: int, temperature: float,
                pad_id: int, stop: torch.Tensor) -> list[list[int]]:
    """One response (token ids, without its stop token) per prompt row, from its own generator."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=lm.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=lm.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = lm(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    done = torch.zeros(len(prompts), dtype=torch.bool, device=lm.device)
    tokens: list[torch.Tensor] = []
    for t in range(max_new_tokens):
        logits = out.logits[:, -1].float()
        if temperature == 0:
            step = logits.argmax(-1)
        else:
            probs = torch.softmax(logits / temperature, -1)
            step = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators)])
        step = torch.where(done, torch.full_like(step, pad_id), step)
        tokens.append(step)
        done |= torch.isin(step, stop)
        if done.all() or t == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
        out = lm(input_ids=step[:, None], attention_mask=mask, position_ids=positions, cache=out.cache, use_cache=True, logits_to_keep=1)
    rows = torch.stack(tokens, dim=1).tolist() if tokens else [[] for _ in prompts]
    stops = set(stop.tolist())
    return [row[: next((i for i, t in enumerate(row) if t in stops), len(row))] for row in rows]


def sample_prompts(lm, tokenizer, prompts: list[list[int]], n: int, max_new_tokens: int, temperature: float, seeds: list[int],
                   on_result: Callable[[int, list[list[int]]], None], batch_rows: int = 16) -> None:
    """`n` responses to each prompt (token ids), about `batch_rows` rows at a time, the longest
    prompts first; `on_result(index, responses)` hears each prompt as its batch is done."""
    stop = stop_ids(lm, tokenizer)
    device = "cpu" if lm.device.type == "cpu" else lm.device
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    per_batch = max(1, batch_rows // n)
    for start in range(0, len(order), per_batch):
        chunk = order[start:start + per_batch]
        rows = [prompts[i] for i in chunk for _ in range(n)]
        generators = [torch.Generator(device).manual_seed(seeds[i] + j) for i in chunk for j in range(n)]
        responses = sample_rows(lm, rows, generators, max_new_tokens, temperature, tokenizer.pad_token_id, stop)
        for k, i in enumerate(chunk):
            on_result(i, responses[k * n:(k + 1) * n])
