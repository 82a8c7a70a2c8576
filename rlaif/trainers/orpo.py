"""ORPO: supervised fine-tuning on the chosen responses and, in the same loss, an odds-ratio
term that makes the chosen response likelier than the rejected one (`losses.orpo_loss`); no
reference model. The SFT term covers the chosen sequence's prompt and response, as TRL's
ORPOTrainer computes it; the packed row computes those tokens once."""

from __future__ import annotations

from rlaif.trainers.losses import orpo_loss
from rlaif.trainers.pairs import labels_and_weights
from rlaif.trainers.preference import PairTrainer, reward_metrics


class ORPOTrainer(PairTrainer):
    average_logps = True

    def pair_loss(self, model, pairs, split, rows):
        cfg = self.config
        chosen, rejected, nll = self.pair_logps(model, pairs, whole_chosen=True)
        _, weight = labels_and_weights(pairs, chosen.device)
        loss, log_odds = orpo_loss(chosen, rejected, nll, cfg.beta, weight)
        return loss, {**reward_metrics(cfg.beta * chosen, cfg.beta * rejected, chosen, rejected), "nll_loss": nll.item(),
                      "log_odds_ratio": log_odds.item()}
