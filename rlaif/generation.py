"""Sampling candidate responses for prompt-only rows with a local model (embedded by default)."""

from __future__ import annotations

from collections.abc import Callable

from rlaif.cache import AnswerCache, cache_key
from rlaif.data import Example
from rlaif.models import chat_prompt, load_causal_lm, load_tokenizer, model_fingerprint, resolve_model


def generate_responses(
    examples: list[Example],
    model: str | None = None,
    num_responses: int = 2,
    max_new_tokens: int = 256,
    temperature: float = 0.8,
    seed: int = 0,
    cache: AnswerCache | None = None,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Fill `example.responses` with `num_responses` samples each, reusing cached samples."""
    options = {"model": model_fingerprint(model), "k": num_responses, "max_new_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
    todo = []
    for ex in examples:
        key = cache_key("generate", options, ex.prompt)
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            ex.responses = cached
            if on_done:
                on_done()
        else:
            todo.append((ex, key))
    if not todo:
        return
    import torch  # here, not at the top: `rlaif` starts without loading torch

    tokenizer = load_tokenizer(resolve_model(model), padding_side="left")
    lm = load_causal_lm(model)
    for ex, key in todo:
        inputs = tokenizer(chat_prompt(tokenizer, ex.prompt), return_tensors="pt", add_special_tokens=False).to(lm.device)
        # Seeded by prompt, not by model: a resumed run samples the same, and different models
        # draw on the same random numbers (their comparison is paired).
        torch.manual_seed(int(cache_key(seed, ex.prompt)[:15], 16))
        with torch.no_grad():
            out = lm.generate(
                **inputs, do_sample=True, temperature=temperature, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                num_return_sequences=num_responses, pad_token_id=tokenizer.pad_token_id,
            )
        ex.responses = [tokenizer.decode(row[inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in out]
        if cache is not None:
            cache.put(key, ex.responses)
        if on_done:
            on_done()
