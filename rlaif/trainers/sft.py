"""Supervised fine-tuning on the preferred responses: cross-entropy on response tokens only."""

from __future__ import annotations

import torch

from rlaif.models.encoding import collate, encode
from rlaif.models.loading import load_causal_lm
from rlaif.trainers.loop import OfflineTrainer, batched
from rlaif.trainers.losses import sft_loss
from rlaif.trainers.pairs import train_eval_pairs


class SFTTrainer(OfflineTrainer):
    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        train, held = train_eval_pairs(cfg)
        self.train_items = [encode(self.tokenizer, p.prompt, p.chosen, cfg.max_length, p.source, cfg.truncate_prompt) for p in train]
        self.eval_items = [encode(self.tokenizer, p.prompt, p.chosen, cfg.max_length, p.source, cfg.truncate_prompt) for p in held]
        self.n_train, self.n_rows = len(self.train_items), len(self.train_items) + len(self.eval_items)
        self.truncated_rows = sum(item["truncated"] for item in self.train_items + self.eval_items)
        self.model = self.load_trainable(lambda d: load_causal_lm(d, self.procs.device), init_from, "CAUSAL_LM")

    def _loss(self, model, items) -> torch.Tensor:
        batch = collate(items, self.tokenizer.pad_token_id, self.procs.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sft_loss(logits, batch["labels"])

    def loss(self, model, indices):
        return self._loss(model, [self.train_items[i] for i in indices]), {}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_items:
            return {}
        losses = [self._loss(self.model, chunk).item() for chunk in batched(self.eval_items, self.config.batch_size)]
        return {"loss": sum(losses) / len(losses)}
