"""Reward model: a one-scalar sequence-classification head on the backbone, trained with the
Bradley–Terry loss (soft labels from `ai_preference` unless `--hard-labels`).

With `--train-layers 0` only the head trains. The frozen backbone then runs once per sequence
and the head is fitted on its cached outputs, so many epochs cost little more than one.
"""

from __future__ import annotations

import torch

from rlaif.models.encoding import collate
from rlaif.models.loading import load_reward_model
from rlaif.models.packing import pack_pairs, packed_hidden
from rlaif.trainers.config import TrainConfig
from rlaif.trainers.loop import OfflineTrainer, batched, unwrap
from rlaif.trainers.losses import reward_model_loss
from rlaif.trainers.pairs import EncodedPair, encoded_train_eval_pairs, truncated_rows
from rlaif.trainers.processes import Processes

FeatureCache = dict[tuple[int, ...], torch.Tensor]


@torch.no_grad()
def pooled_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """What the head of a transformers sequence classifier reads: the backbone's last hidden
    state at the rightmost token that is not padding (by `config.pad_token_id`, as transformers
    pools)."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    not_pad = (input_ids != model.config.pad_token_id).int()
    last = (torch.arange(input_ids.shape[1], device=input_ids.device) * not_pad).argmax(-1)
    return hidden[torch.arange(len(input_ids), device=input_ids.device), last]


def score_pad_token(tok) -> str:
    """The padding token of a reward model. transformers' classifier scores the rightmost token
    that is not padding. With padding = EOS that would be the response's last word; pad with a
    token that ends no sequence so that the score is read at the EOS, which has seen the whole
    response."""
    if tok.pad_token_id != tok.eos_token_id:
        return tok.pad_token
    return next((t for t in (tok.unk_token, tok.bos_token) if t and t != tok.eos_token), tok.pad_token)


class RewardTrainer(OfflineTrainer):
    def __init__(self, config: TrainConfig, processes: Processes | None = None, feature_cache: FeatureCache | None = None):
        """`feature_cache` lets several head-only runs on the same model share backbone outputs
        (cross-validation folds); it is keyed by token ids."""
        super().__init__(config, processes)
        self.features = feature_cache if feature_cache is not None else {}
        self.tokenizer.pad_token = score_pad_token(self.tokenizer)

    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        self.train_pairs, self.eval_pairs = encoded_train_eval_pairs(self.tokenizer, cfg)
        self.n_train, self.n_rows = len(self.train_pairs), len(self.train_pairs) + len(self.eval_pairs)
        self.truncated_rows = truncated_rows(self.train_pairs + self.eval_pairs)
        self.model = self.load_trainable(lambda d: load_reward_model(d, self.procs.device, self.tokenizer.pad_token_id), init_from, "SEQ_CLS")
        # One process only: under DDP the head must be called through the wrapped model.
        self.head_only = cfg.train_layers == 0 and self.procs.world == 1 and hasattr(self.model, "score")

    def _cached_features(self, pairs: list[EncodedPair]) -> torch.Tensor:
        """Frozen-backbone features of every chosen, then every rejected sequence."""
        seqs = [c for c, _, _ in pairs] + [r for _, r, _ in pairs]
        missing = list({tuple(s["input_ids"]): s for s in seqs if tuple(s["input_ids"]) not in self.features}.values())
        for chunk in batched(missing, 16):
            batch = collate(chunk, self.tokenizer.pad_token_id, self.procs.device)
            for seq, row in zip(chunk, pooled_features(self.model, batch["input_ids"], batch["attention_mask"])):
                self.features[tuple(seq["input_ids"])] = row
        return torch.stack([self.features[tuple(s["input_ids"])] for s in seqs])

    def _rewards(self, model, pairs: list[EncodedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the chosen and the rejected responses, in one forward pass over the pairs
        packed (each prompt computed once)."""
        if self.head_only:
            scores = self.model.score(self._cached_features(pairs))[:, 0]
        else:
            batch = pack_pairs(pairs, self.tokenizer.pad_token_id, self.procs.device)
            scores = unwrap(model).score(packed_hidden(model, batch.packed)[batch.last_index])[:, 0]
        return scores[: len(pairs)], scores[len(pairs):]

    def loss(self, model, indices):
        pairs = [self.train_pairs[i] for i in indices]
        r_chosen, r_rejected = self._rewards(model, pairs)
        p = torch.tensor([q for _, _, q in pairs], device=r_chosen.device)
        loss = reward_model_loss(r_chosen, r_rejected, p)
        return loss, {"accuracy": (r_chosen > r_rejected).float().mean().item(), "margin": (r_chosen - r_rejected).mean().item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_pairs:
            return {}
        correct = margin = 0.0
        for chunk in batched(self.eval_pairs, self.config.batch_size):
            r_chosen, r_rejected = self._rewards(self.model, chunk)
            correct += (r_chosen > r_rejected).sum().item()
            margin += (r_chosen - r_rejected).sum().item()
        return {"accuracy": correct / len(self.eval_pairs), "margin": margin / len(self.eval_pairs), "pairs": len(self.eval_pairs)}
