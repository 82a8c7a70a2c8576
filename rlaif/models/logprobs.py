"""Log-probabilities of a sequence's tokens under a causal LM, from its logits or from the hidden
states that predict them (the LM head applied only there, in chunks): what the trainers' losses,
the reference passes and the comparison's KL estimates read."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, average: bool = False) -> torch.Tensor:
    """log π(y | x) = Σ_t log π(y_t | x, y_<t) over response tokens (labels ≠ −100), per sequence;
    with `average`, divided by the number of response tokens |y|.

    logits: (batch, seq, vocab); labels: (batch, seq), −100 off the response -> (batch,).
    """
    targets = labels[:, 1:]
    mask = targets != -100
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token = torch.gather(logps, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    total = (token * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def head_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:
    """log π(y_n | ·) = z_n[y_n] − log Σ_v exp z_n[v] with logits z_n = W h_n, for the given
    positions only, `chunk_size` of them at a time: a chunk's (chunk, vocab) logits are
    recomputed in the backward pass rather than kept, so memory does not grow with the vocabulary
    times the sequence length.

    hidden: (N, H) the hidden states that predict the targets; weight: (V, H) the LM head;
    targets: (N,) -> (N,) in float32.
    """
    def chunk_logps(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = (h @ w.T).float()
        return logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)

    parts = [checkpoint(chunk_logps, hidden[i:i + chunk_size], weight, targets[i:i + chunk_size], use_reentrant=False)
             for i in range(0, len(targets), chunk_size)]
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def per_sequence(values: torch.Tensor, sequence: torch.Tensor, n: int, average: bool = False) -> torch.Tensor:
    """Σ of `values` per sequence (their mean with `average`; 0 for a sequence with none):
    values, sequence (N,) with sequence ids in [0, n) -> (n,)."""
    total = values.new_zeros(n).index_add(0, sequence, values)
    if not average:
        return total
    return total / values.new_zeros(n).index_add(0, sequence, torch.ones_like(values)).clamp(min=1)
