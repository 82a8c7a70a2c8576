"""Batched sampling: a prompt's responses do not depend on the prompts beside it."""

import torch

from rlaif.inputs import Example
from rlaif.judging.generation import LocalGenerator, generate_responses
from rlaif.models.loading import chat_prompt, load_causal_lm, load_tokenizer

PROMPTS = [f"Tell me about {'cats ' * (3 * i)}and dogs, number {i}." for i in range(5)]  # of different lengths


def responses(model: str, batch_rows: int, temperature: float, n: int = 2) -> list[list[str]]:
    examples = [Example(f"p{i}", p) for i, p in enumerate(PROMPTS)]
    generate_responses(examples, LocalGenerator(model, batch_rows), n, 12, temperature, seed=3)
    return [ex.responses for ex in examples]


def test_sampled_responses_are_the_same_batched_and_one_prompt_at_a_time(tiny):
    batched = responses(tiny, 16, 1.0)  # all five prompts (ten rows) in one batch
    alone = responses(tiny, 2, 1.0)  # one prompt (its two samples) at a time
    assert batched == alone
    assert all(len(set(r)) == 2 for r in batched)  # each sample draws from its own stream
    assert responses(tiny, 16, 1.0) == batched  # and again the same: seeded by prompt


def test_greedy_batched_decoding_equals_generate_on_each_prompt(tiny):
    tokenizer, lm = load_tokenizer(tiny), load_causal_lm(tiny)
    expected = []
    for prompt in PROMPTS:
        ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = lm.generate(**ids, do_sample=False, max_new_tokens=12, pad_token_id=tokenizer.pad_token_id,
                              top_p=None, top_k=None, temperature=None)
        expected.append([tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()])
    assert responses(tiny, 16, 0.0, n=1) == expected
