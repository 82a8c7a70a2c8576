"""Scoring responses for `rlaif compare`: their log-probabilities under a model (for KL) and
their rewards under a reward model, each through the answer cache."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from rlaif.models.loading import load_tokenizer, model_fingerprint
from rlaif.storage.cache import AnswerCache, cache_key, through_cache


def cached_scores(cache: AnswerCache, kind: str, identity: str, items: list[tuple[Any, str]], compute) -> list[float]:
    """`compute(missing items) -> scores`, through the cache, keyed by what scored and the text."""
    keys = [cache_key(kind, identity, prompt, response) for prompt, response in items]
    return through_cache(cache, keys, lambda indices: compute([items[i] for i in indices]))


def summed_response_logps(model_name: str | None, items: list[tuple[Any, str]], temperature: float = 1.0, batch_size: int = 8,
                          progress: bool = False) -> list[float]:
    """log π_T(y | x) of each (prompt, response), summed over the response's tokens and its EOS,
    under the model's distribution at sampling temperature T (its logits divided by T).

    The responses to one prompt share a packed row, so the prompt is computed once for all of
    them (`models.packing`); the LM head runs on response tokens only."""
    import torch

    from rlaif.models.blocks import hidden_at
    from rlaif.models.encoding import encode
    from rlaif.models.loading import load_causal_lm
    from rlaif.models.logprobs import head_logps, per_sequence
    from rlaif.models.packing import packed_batches

    tokenizer = load_tokenizer(model_name, padding_side="right")
    lm = load_causal_lm(model_name)
    sequences = [encode(tokenizer, prompt, response, 4096, "compare:0", True) for prompt, response in items]
    head = lm.get_output_embeddings().weight
    out = [0.0] * len(items)
    with torch.no_grad(), tqdm(total=len(items), desc="log-probabilities", unit="response", disable=not progress) as bar:
        for indices, batch in packed_batches(sequences, batch_size, tokenizer.pad_token_id, str(lm.device)):
            hidden = hidden_at(lm, batch.packed, batch.token_index, logits_to_keep=1)
            tokens = head_logps(hidden / temperature, head, batch.targets)  # (W h) / T = W (h / T)
            for i, logp in zip(indices, per_sequence(tokens, batch.sequence, len(indices)).tolist()):
                out[i] = logp
            bar.update(len(indices))
    return out


def reward_model_identity(rm_dir: str) -> str:
    """What a reward model's scores depend on besides the text: its weights (each sequence is read
    whole, up to the model's position limit)."""
    return f"{model_fingerprint(rm_dir)}@max_length=position-limit"


def reward_model_scores(rm_dir: str, items: list[tuple[Any, str]], progress: bool = False) -> list[float]:
    """A reward model's score of each (prompt, response), read as its judge reads them."""
    from rlaif.judging.backends.reward_model import RewardModelOptions, scoring_length
    from rlaif.judging.backends.reward_model import reward_scores as score
    from rlaif.models.loading import load_reward_model

    options = RewardModelOptions()
    model = load_reward_model(rm_dir).eval()
    with tqdm(total=len(items), desc="reward-model scores", unit="response", disable=not progress) as bar:
        return score(model, load_tokenizer(rm_dir, padding_side="right"), items, scoring_length(options, rm_dir), options.batch_size,
                     lambda indices, scores, tokens: bar.update(len(indices)))
