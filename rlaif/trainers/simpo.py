"""SimPO: preference pairs without a reference model. Each response's reward is β times its
mean log-probability per token, and the chosen one's should beat the rejected one's by the
target margin γ (`losses.simpo_loss`). No reference pass, no second model."""

from __future__ import annotations

from rlaif.trainers.losses import simpo_loss
from rlaif.trainers.pairs import labels_and_weights
from rlaif.trainers.preference import PairTrainer, reward_metrics


class SimPOTrainer(PairTrainer):
    average_logps = True

    def pair_loss(self, model, pairs, split, rows):
        cfg = self.config
        chosen, rejected, _ = self.pair_logps(model, pairs)
        p, weight = labels_and_weights(pairs, chosen.device)
        loss = simpo_loss(chosen, rejected, cfg.beta, cfg.target_margin, cfg.label_smoothing, p, weight)
        return loss, reward_metrics(cfg.beta * chosen, cfg.beta * rejected, chosen, rejected)
