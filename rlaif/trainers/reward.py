"""Reward model: a one-scalar sequence-classification head on the backbone, trained with the
Bradley–Terry loss (soft labels from `ai_preference` unless `--hard-labels`).

With `--train-layers k` the lower blocks are frozen, so what enters the first trainable block
is the same every epoch: it is computed once per pair (packed: the prompt once for both
responses) and kept, and every epoch runs only the top k blocks on it, the last of them only
where the head reads (`models.blocks.last_block_at`). With k = 0 (the head alone) what is kept
is the two sequences' final hidden state at the token the head reads, and later epochs cost
almost nothing. On a Llama-shaped model, without LoRA or --gradient-checkpointing, in one
process; otherwise every step runs the whole model.

Held-out pairs are read whole, up to the model's position limit, as the reward-model judge
reads them (`judging.backends.reward_model`), whatever --max-length the training pairs are cut
at: a held-out accuracy is then the judge's agreement on those pairs.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from rlaif.errors import ConfigError
from rlaif.models.blocks import Layout, blocks_between, hidden_at, last_block_at, runs_piecewise, transformer_blocks
from rlaif.models.loading import load_reward_model, position_limit
from rlaif.models.packing import PackedSequences, common_prefix_length, length_batches, pack_pairs
from rlaif.trainers.config import TrainConfig
from rlaif.trainers.loop import OfflineTrainer, unwrap
from rlaif.trainers.losses import reward_model_loss
from rlaif.trainers.pairs import EncodedPair, encoded_train_eval_pairs, labels_and_weights, truncated_rows
from rlaif.trainers.processes import Processes

# (train_layers, chosen ids, rejected ids) -> the pair's frozen states: with the head alone its two
# sequences' final hidden states (2, H); else its packed row's hidden states entering the first
# trainable block (row length, H).
FrozenCache = dict[tuple[int, tuple[int, ...], tuple[int, ...]], torch.Tensor]


def packed_length(pair: EncodedPair) -> int:
    """The length of a pair's packed row: both sequences, their shared prefix once."""
    chosen, rejected = pair[0]["input_ids"], pair[1]["input_ids"]
    return len(chosen) + len(rejected) - common_prefix_length(chosen, rejected)


def frozen_key(train_layers: int, pair: EncodedPair) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    return train_layers, tuple(pair[0]["input_ids"]), tuple(pair[1]["input_ids"])


def read_columns(batch: PackedSequences) -> torch.Tensor:
    """(B, 2): the column of row b where the head reads pair b's chosen and its rejected sequence."""
    width, n = batch.packed.input_ids.shape[1], len(batch.last_index) // 2
    return torch.stack([batch.last_index[:n], batch.last_index[n:]], dim=1) % width


@torch.no_grad()
def keep_frozen_states(model: torch.nn.Module, pairs: list[EncodedPair], train_layers: list[int], cache: FrozenCache, pad_id: int,
                       device: str, progress: bool = False) -> None:
    """Put into `cache` each pair's frozen states for every --train-layers value in `train_layers`
    (see `FrozenCache`), for the pairs not yet there: one pass through the blocks, keeping what
    enters block n − k for each k on the way."""
    n = len(transformer_blocks(model))
    if max(train_layers) > n:
        raise ConfigError(f"--train-layers {max(train_layers)}: the model has {n} transformer blocks")
    missing = list({frozen_key(0, p)[1:]: p for p in pairs if any(frozen_key(k, p) not in cache for k in train_layers)}.values())
    chunks = length_batches([packed_length(p) for p in missing], 16)  # rows of similar length share a batch: little padding
    for chunk in tqdm([[missing[i] for i in c] for c in chunks], desc="frozen blocks, once per pair", unit="batch",
                      disable=not progress or not missing):
        batch = pack_pairs(chunk, pad_id, device)
        layout = Layout.of(batch.packed)
        flat, depth = model.base_model.embed_tokens(batch.packed.input_ids)[layout.valid], 0
        for k in sorted(set(train_layers), reverse=True):
            if k == 0:
                states = list(last_block_at(model, blocks_between(model, flat, depth, n - 1, layout), layout, read_columns(batch)))
            else:
                flat, depth = blocks_between(model, flat, depth, n - k, layout), n - k
                states = list(flat.split(layout.valid.sum(1).tolist()))
            for pair, state in zip(chunk, states):
                cache[frozen_key(k, pair)] = state.clone()


def score_pad_token(tok) -> str:
    """The padding token of a reward model. transformers' classifier scores the rightmost token
    that is not padding. With padding = EOS that would be the response's last word; pad with a
    token that ends no sequence so that the score is read at the EOS, which has seen the whole
    response."""
    if tok.pad_token_id != tok.eos_token_id:
        return tok.pad_token
    return next((t for t in (tok.unk_token, tok.bos_token) if t and t != tok.eos_token), tok.pad_token)


class RewardTrainer(OfflineTrainer):
    def __init__(self, config: TrainConfig, processes: Processes | None = None, frozen_cache: FrozenCache | None = None, on_log=None):
        """`frozen_cache` lets several runs on the same model and --train-layers share the frozen
        blocks' outputs (cross-validation folds)."""
        super().__init__(config, processes, on_log)
        self.frozen = frozen_cache if frozen_cache is not None else {}
        self.tokenizer.pad_token = score_pad_token(self.tokenizer)

    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        self.train_pairs, self.eval_pairs = encoded_train_eval_pairs(self.tokenizer, cfg, eval_max_length=position_limit(cfg.model))
        self.n_train, self.n_rows = len(self.train_pairs), len(self.train_pairs) + len(self.eval_pairs)
        self.truncated_rows = truncated_rows(self.train_pairs + self.eval_pairs)
        self.model = self.load_trainable(lambda d: load_reward_model(d, self.procs.device, self.tokenizer.pad_token_id),
                                         init_from, "SEQ_CLS")
        # One process: under DDP or FSDP the forward pass must go through the wrapped model. The piecewise
        # blocks would skip activation checkpointing (switched on after set-up).
        self.keeps_frozen = (cfg.train_layers is not None and self.procs.world == 1 and not cfg.fsdp and not cfg.gradient_checkpointing
                             and hasattr(self.model, "score") and runs_piecewise(self.model))
        self.n_blocks = len(transformer_blocks(self.model)) if self.keeps_frozen else 0
        if self.keeps_frozen:  # once, up front, with its own progress bar: the first epoch is then as quick as the rest
            with self.autocast():
                self._frozen_states(self.train_pairs + self.eval_pairs, progress=cfg.progress)

    def _frozen_states(self, pairs: list[EncodedPair], progress: bool = False) -> list[torch.Tensor]:
        """Each pair's frozen states (see `FrozenCache`), computed for the pairs not yet kept."""
        k = self.config.train_layers
        keep_frozen_states(self.model, pairs, [k], self.frozen, self.tokenizer.pad_token_id, self.procs.device, progress)
        return [self.frozen[frozen_key(k, p)] for p in pairs]

    def _rewards(self, model, pairs: list[EncodedPair]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the chosen and the rejected responses, in one forward pass over the pairs
        packed (each prompt computed once); the frozen blocks' part from what is kept."""
        k = self.config.train_layers
        if self.keeps_frozen and k == 0:
            states = self._frozen_states(pairs)
            features = torch.cat([torch.stack([s[0] for s in states]), torch.stack([s[1] for s in states])])
            scores = self.model.score(features)[:, 0]
            return scores[: len(pairs)], scores[len(pairs):]
        batch = pack_pairs(pairs, self.tokenizer.pad_token_id, self.procs.device)
        if not self.keeps_frozen:
            scores = unwrap(model).score(hidden_at(model, batch.packed, batch.last_index))[:, 0]
            return scores[: len(pairs)], scores[len(pairs):]
        layout = Layout.of(batch.packed)
        entering = torch.cat(self._frozen_states(pairs))  # the rows' real tokens, in order
        hidden = blocks_between(model, entering, self.n_blocks - k, self.n_blocks - 1, layout)
        scores = model.score(last_block_at(model, hidden, layout, read_columns(batch)))[..., 0]  # (B, 2)
        return scores[:, 0], scores[:, 1]

    def loss(self, model, indices):
        pairs = [self.train_pairs[i] for i in indices]
        r_chosen, r_rejected = self._rewards(model, pairs)
        loss = reward_model_loss(r_chosen, r_rejected, *labels_and_weights(pairs, r_chosen.device))
        return loss, {"accuracy": (r_chosen > r_rejected).float().mean().item(), "margin": (r_chosen - r_rejected).mean().item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_pairs:
            return {}
        correct = margin = loss = 0.0
        for chunk in length_batches([packed_length(p) for p in self.eval_pairs], self.config.batch_size):
            pairs = [self.eval_pairs[i] for i in chunk]
            r_chosen, r_rejected = self._rewards(self.model, pairs)
            correct += (r_chosen > r_rejected).sum().item()
            margin += (r_chosen - r_rejected).sum().item()
            loss += reward_model_loss(r_chosen, r_rejected, *labels_and_weights(pairs, r_chosen.device)).item() * len(pairs)
        n = len(self.eval_pairs)
        return {"accuracy": correct / n, "margin": margin / n, "loss": loss / n, "pairs": n}
