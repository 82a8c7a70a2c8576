"""Which tokenization the embedded model was trained on: the plain GPT-2 pre-tokenizer that
transformers builds from a GGUF file, or rlaif's (digits split off first, as the GGUF's
`tokenizer.ggml.pre = "smollm"` says and llama.cpp does).

For each judge request of the first HH pairs (the `quality` rubric, both orders, through the
chat template and up to the verdict prefix) where the two tokenizations differ, prints both
token counts and the model's negative log-likelihood of the text under each: the tokenization
the model was trained on is the one it finds likelier.

Usage: python bench/embedded_tokenizer.py [--rows 0:100]
"""

from __future__ import annotations

import argparse
import copy

import torch
from tokenizers import pre_tokenizers

from rlaif.inputs import iter_examples, make_pairs
from rlaif.judging.backends.prefilled import verdict_text
from rlaif.judging.base import JudgeRequest
from rlaif.judging.rubric import load_rubric
from rlaif.models.loading import chat_prompt, load_causal_lm, load_tokenizer


def nll(model, ids: list[int]) -> float:
    """−Σ log p(token | the ones before), in nats."""
    x = torch.tensor([ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(x).logits[0, :-1].float(), dim=-1)
    return -logprobs.gather(1, x[0, 1:, None]).sum().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="0:100")
    args = parser.parse_args()
    ours = load_tokenizer("embedded")
    plain = copy.deepcopy(ours)
    plain.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    model = load_causal_lm("embedded")
    rubric = load_rubric("quality")
    pairs, _ = make_pairs(list(iter_examples(f"examples/hh-harmless.jsonl.gz?rows={args.rows}")), 0)
    texts = [verdict_text(chat_prompt(ours, rubric.render(p.prompt, a, b, False)), JudgeRequest("", rubric.labels, rubric.verdict_prefix))
             for p in pairs for a, b in ((p.a, p.b), (p.b, p.a))]
    print("| request | tokens, plain GPT-2 | tokens, digits split | NLL, plain GPT-2 | NLL, digits split |")
    print("| --- | --- | --- | --- | --- |")
    differ = 0
    for i, text in enumerate(texts):
        a, b = plain(text, add_special_tokens=False)["input_ids"], ours(text, add_special_tokens=False)["input_ids"]
        if a != b:
            differ += 1
            print(f"| {i} | {len(a)} | {len(b)} | {nll(model, a):.1f} | {nll(model, b):.1f} |")
    print(f"\n{differ} of {len(texts)} requests tokenize differently")


if __name__ == "__main__":
    main()
