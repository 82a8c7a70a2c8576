"""Reward model: a one-scalar sequence-classification head on the backbone, trained with the
Bradley–Terry loss (soft labels from `ai_preference` unless `--hard-labels`)."""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from rlaif.models import resolve_model
from rlaif.trainers.data import collate_pairs, encoded_train_eval_pairs
from rlaif.trainers.loop import OfflineTrainer, batched, freeze_lower_layers
from rlaif.trainers.losses import reward_model_loss


def load_reward_model(path: str | None, device: str, pad_token_id: int):
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = pad_token_id
    return model.to(device)


class RewardTrainer(OfflineTrainer):
    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        self.train_pairs, self.eval_pairs = encoded_train_eval_pairs(self.tokenizer, cfg)
        self.n_train = len(self.train_pairs)
        self.model = load_reward_model(init_from or resolve_model(cfg.model), self.procs.device, self.tokenizer.pad_token_id)
        freeze_lower_layers(self.model, cfg.train_layers)

    def _rewards(self, model, pairs) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the chosen and the rejected responses, in one forward pass."""
        batch = collate_pairs(pairs, self.tokenizer.pad_token_id, self.procs.device)
        scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
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
