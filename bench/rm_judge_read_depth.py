"""Where in the frozen model should the reward-model judge read? A linear Bradley-Terry probe on
the hidden state at each depth, chosen by cross-validation on the training pairs alone.

The judge reads the final hidden state (after the final norm) at the sequence's EOS. A model cut
to its first d blocks (config `num_hidden_layers = d`, still a Hugging Face reward model) would
read block d's output there instead. This script computes that state at every depth in one pass
(each pair read whole, packed as the reward trainer packs it), fits a logistic regression on the
chosen-minus-rejected state with no intercept (the Bradley-Terry model of a linear reward; the
L2 strength C is the fit's only setting) and prints each depth's K-fold cross-validated
agreement with the human labels on `--data`. With `--test`, the setting the cross-validation
picks and the last depth (today's judge) are each fitted on all of `--data` and judge the
`--test` pairs once, with their paired difference: no test pair influences the choice.

Usage: python bench/rm_judge_read_depth.py --data 'examples/hh-harmless.jsonl.gz?rows=0:600' \\
    --test 'examples/hh-harmless.jsonl.gz?rows=600:1000'
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from tqdm import tqdm

from rlaif.models.blocks import Layout, blocks_between, transformer_blocks
from rlaif.models.loading import load_reward_model, load_tokenizer, position_limit
from rlaif.models.packing import length_batches, pack_pairs
from rlaif.stats import paired_interval, wilson_interval
from rlaif.trainers import TrainConfig
from rlaif.trainers.pairs import EncodedPair, encoded_train_eval_pairs
from rlaif.trainers.reward import packed_length, read_columns, score_pad_token


@torch.no_grad()
def states_by_depth(model: torch.nn.Module, pairs: list[EncodedPair], pad_id: int) -> np.ndarray:
    """(depths + 1, pairs, 2, H): the normed state where the head reads each pair's chosen and
    rejected sequence, leaving each block (index 0: the embeddings)."""
    n = len(transformer_blocks(model))
    out = np.zeros((n + 1, len(pairs), 2, model.config.hidden_size), dtype=np.float32)
    for chunk in tqdm(length_batches([packed_length(p) for p in pairs], 16), desc="every depth, once per pair", unit="batch"):
        batch = pack_pairs([pairs[i] for i in chunk], pad_id, "cpu")
        layout = Layout.of(batch.packed)
        read = layout.real(torch.arange(len(chunk))[:, None] * layout.valid.shape[1] + read_columns(batch))  # (B, 2)
        flat = model.base_model.embed_tokens(batch.packed.input_ids)[layout.valid]
        for depth in range(n + 1):
            if depth:
                flat = blocks_between(model, flat, depth - 1, depth, layout)
            out[depth, chunk] = model.base_model.norm(flat[read]).float().numpy()
    return out


def probe(states: np.ndarray, chosen_won: np.ndarray, c: float) -> np.ndarray:
    """The weights w of a linear reward w·h fitted by L2-penalised logistic regression on
    h_chosen − h_rejected (both orders, so the fit has no side to favour)."""
    diff = states[:, 0] - states[:, 1]
    fit = LogisticRegression(C=c, fit_intercept=False, max_iter=5000)
    return fit.fit(np.concatenate([diff, -diff]), np.concatenate([chosen_won, 1 - chosen_won])).coef_[0]


def agrees(states: np.ndarray, chosen_won: np.ndarray, w: np.ndarray) -> np.ndarray:
    return ((states[:, 0] - states[:, 1]) @ w > 0) == (chosen_won == 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the human-labeled pairs the probe is chosen and fitted on")
    parser.add_argument("--test", help="held-out pairs judged once by the chosen setting and by the last depth")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--c", default="0.001,0.01,0.1,1", help="the L2 strengths tried, separated by commas")
    args = parser.parse_args()

    start = time.time()
    tokenizer = load_tokenizer(None, padding_side="right")
    tokenizer.pad_token = score_pad_token(tokenizer)
    read = lambda path: encoded_train_eval_pairs(tokenizer, TrainConfig(method="rm", data=path, output="-",
                                                                        max_length=position_limit(None)))[0]
    pairs, test = read(args.data), read(args.test) if args.test else []
    model = load_reward_model(None, "cpu", tokenizer.pad_token_id)
    states = states_by_depth(model, pairs + test, tokenizer.pad_token_id)
    won = np.array([int(p.p > 0.5) for p in pairs + test])
    dev, held = np.arange(len(pairs)), np.arange(len(pairs), len(pairs) + len(test))
    folds = list(KFold(args.folds, shuffle=True, random_state=0).split(dev))
    cs = [float(x) for x in args.c.split(",")]

    print(f"\n{args.folds}-fold cross-validated agreement on {len(pairs)} pairs ({time.time() - start:.0f} s for every depth's states)\n")
    print("| depth | " + " | ".join(f"C {c:g}" for c in cs) + " |\n|---|" + "---|" * len(cs))
    cv = {}
    for depth in range(1, len(states)):  # depth 0 is the EOS embedding, the same for both responses
        for c in cs:
            cv[depth, c] = np.mean([agrees(states[depth, b], won[b], probe(states[depth, a], won[a], c)).mean() for a, b in folds])
        print(f"| {depth} | " + " | ".join(f"{cv[depth, c]:.1%}" for c in cs) + " |", flush=True)
    if not test:
        return
    last = len(states) - 1
    chosen = max(cv, key=cv.get)
    last_setting = max(((last, c) for c in cs), key=cv.get)
    right = {s: agrees(states[s[0], held], won[held], probe(states[s[0], dev], won[dev], s[1])) for s in (chosen, last_setting)}
    print(f"\nOn the {len(test)} --test pairs, fitted on all {len(pairs)}:")
    for (depth, c), r in right.items():
        low, high = wilson_interval(int(r.sum()), len(r))
        print(f"  depth {depth}, C {c:g} (cross-validated {cv[depth, c]:.1%}): {r.mean():.1%} [{low:.1%}, {high:.1%}]")
    d = paired_interval(right[chosen].astype(float), right[last_setting].astype(float))
    print(f"  paired difference: {d['difference']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}]")


if __name__ == "__main__":
    main()
