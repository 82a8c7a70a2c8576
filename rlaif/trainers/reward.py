"""Reward model: a one-scalar sequence-classification head on the backbone, trained with the
Bradley–Terry loss (soft labels from `ai_preference` unless `--hard-labels`).

With `--train-layers k` the lower blocks are frozen, so what enters the first trainable block
is the same every epoch: it is computed once per pair (packed: the prompt once for both
responses) and kept, and every epoch runs only the top k blocks on it. With k = 0 (the head
alone) what is kept is the two sequences' final hidden state at the token the head reads, and
later epochs cost almost nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tqdm import tqdm

from rlaif.models.loading import load_reward_model
from rlaif.models.packing import common_prefix_length, pack_pairs, packed_hidden
from rlaif.trainers.config import TrainConfig
from rlaif.trainers.loop import OfflineTrainer, batched, blocks, unwrap
from rlaif.trainers.losses import reward_model_loss
from rlaif.trainers.pairs import EncodedPair, encoded_train_eval_pairs, truncated_rows
from rlaif.trainers.processes import Processes

# (train_layers, chosen ids, rejected ids) -> the pair's frozen states: with the head alone its two
# sequences' final hidden states (2, H); else its packed row's hidden states entering the first
# trainable block (row length, H).
FrozenCache = dict[tuple[int, tuple[int, ...], tuple[int, ...]], torch.Tensor]


@contextmanager
def only_blocks(model: torch.nn.Module, start: int, stop: int, norm: bool = True) -> Iterator[torch.nn.Module]:
    """`model` with its transformer blocks [start, stop) alone, and its final norm only with
    `norm`: its forward pass then maps the hidden states entering block `start` (as
    `inputs_embeds`) to those leaving block `stop − 1`."""
    base = model.base_model
    layers, final_norm = base.layers, base.norm
    base.layers = torch.nn.ModuleList(list(layers)[start:stop])
    if not norm:
        base.norm = torch.nn.Identity()
    try:
        yield model
    finally:
        base.layers, base.norm = layers, final_norm


def packed_length(pair: EncodedPair) -> int:
    """The length of a pair's packed row: both sequences, their shared prefix once."""
    chosen, rejected = pair[0]["input_ids"], pair[1]["input_ids"]
    return len(chosen) + len(rejected) - common_prefix_length(chosen, rejected)


def score_pad_token(tok) -> str:
    """The padding token of a reward model. transformers' classifier scores the rightmost token
    that is not padding. With padding = EOS that would be the response's last word; pad with a
    token that ends no sequence so that the score is read at the EOS, which has seen the whole
    response."""
    if tok.pad_token_id != tok.eos_token_id:
        return tok.pad_token
    return next((t for t in (tok.unk_token, tok.bos_token) if t and t != tok.eos_token), tok.pad_token)


class RewardTrainer(OfflineTrainer):
    def __init__(self, config: TrainConfig, processes: Processes | None = None, frozen_cache: FrozenCache | None = None):
        """`frozen_cache` lets several runs on the same model and --train-layers share the frozen
        blocks' outputs (cross-validation folds)."""
        super().__init__(config, processes)
        self.frozen = frozen_cache if frozen_cache is not None else {}
        self.tokenizer.pad_token = score_pad_token(self.tokenizer)

    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        self.train_pairs, self.eval_pairs = encoded_train_eval_pairs(self.tokenizer, cfg)
        self.n_train, self.n_rows = len(self.train_pairs), len(self.train_pairs) + len(self.eval_pairs)
        self.truncated_rows = truncated_rows(self.train_pairs + self.eval_pairs)
        self.model = self.load_trainable(lambda d: load_reward_model(d, self.procs.device, self.tokenizer.pad_token_id), init_from, "SEQ_CLS")
        # One process only: under DDP the forward pass must go through the wrapped model.
        base = self.model.base_model
        self.keeps_frozen = (cfg.train_layers is not None and cfg.lora_r is None and self.procs.world == 1 and hasattr(self.model, "score")
                             and hasattr(base, "layers") and hasattr(base, "norm"))  # a Llama-shaped model, whose blocks `only_blocks` can run alone
        self.n_blocks = len(blocks(self.model)) if self.keeps_frozen else 0
        if self.keeps_frozen:  # once, up front, with its own progress bar: the first epoch is then as quick as the rest
            with self.autocast():
                self._frozen_states(self.train_pairs + self.eval_pairs, progress=cfg.progress)

    @torch.no_grad()
    def _frozen_states(self, pairs: list[EncodedPair], progress: bool = False) -> list[torch.Tensor]:
        """Each pair's frozen states (see `FrozenCache`), computed for the pairs not yet kept."""
        k = self.config.train_layers
        key = lambda pair: (k, tuple(pair[0]["input_ids"]), tuple(pair[1]["input_ids"]))
        missing = list({key(p): p for p in pairs if key(p) not in self.frozen}.values())
        missing.sort(key=lambda p: -packed_length(p))  # rows of similar length share a batch: little padding
        for chunk in tqdm(batched(missing, 16), desc="frozen blocks, once per pair", unit="batch", total=-(-len(missing) // 16),
                          disable=not progress or not missing):
            batch = pack_pairs(chunk, self.tokenizer.pad_token_id, self.procs.device)
            if k == 0:
                last = packed_hidden(self.model, batch.packed)[batch.last_index]
                states = [last[[r, len(chunk) + r]] for r in range(len(chunk))]
            else:
                with only_blocks(self.model, 0, self.n_blocks - k, norm=False) as lower:
                    hidden = lower.base_model(input_ids=batch.packed.input_ids, attention_mask=batch.packed.attention_mask,
                                              position_ids=batch.packed.position_ids, use_cache=False).last_hidden_state
                states = [hidden[r, :packed_length(pair)] for r, pair in enumerate(chunk)]
            for pair, state in zip(chunk, states):
                self.frozen[key(pair)] = state.clone()
        return [self.frozen[key(p)] for p in pairs]

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
        if self.keeps_frozen:
            states = self._frozen_states(pairs)
            entering = states[0].new_zeros(len(pairs), batch.packed.input_ids.shape[1], states[0].shape[-1])
            for r, state in enumerate(states):
                entering[r, : len(state)] = state  # padding's values reach nothing: no real token attends to it
            with only_blocks(model, self.n_blocks - k, self.n_blocks) as top:
                hidden = top.base_model(inputs_embeds=entering, attention_mask=batch.packed.attention_mask,
                                        position_ids=batch.packed.position_ids, use_cache=False).last_hidden_state.flatten(0, 1)
        else:
            hidden = packed_hidden(model, batch.packed)
        scores = unwrap(model).score(hidden[batch.last_index])[:, 0]
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
