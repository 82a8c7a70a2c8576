"""What the pairwise objectives share (dpo, simpo, orpo): the pairs, each packed into one row
(`packing`: its prompt computed once for chosen and rejected, the blocks' linear layers on real
tokens only where the model allows it, the LM head only on the tokens a loss reads), a loss
per micro-batch of pairs, and held-out metrics averaged over batches of --batch-size."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable

import torch

from rlaif.models.blocks import hidden_at
from rlaif.models.loading import load_causal_lm
from rlaif.models.logprobs import head_logps, per_sequence
from rlaif.models.packing import pack_sequences
from rlaif.trainers.loop import OfflineTrainer, batch_means, batched, unwrap
from rlaif.trainers.pairs import EncodedPair, encoded_train_eval_pairs, truncated_rows


class PairTrainer(OfflineTrainer):
    """A trainer whose loss reads the policy's log-probabilities of each pair's two responses."""

    average_logps = False  # length-normalised: each response's mean log-probability per token, not the sum

    def setup(self, init_from: str | None) -> None:
        self.read_pairs()
        self.model = self.load_policy(init_from)

    def read_pairs(self) -> None:
        cfg = self.config
        self.train_pairs, self.eval_pairs = encoded_train_eval_pairs(self.tokenizer, cfg)
        self.n_train, self.n_rows = len(self.train_pairs), len(self.train_pairs) + len(self.eval_pairs)
        self.truncated_rows = truncated_rows(self.train_pairs + self.eval_pairs)

    def load_policy(self, init_from: str | None) -> torch.nn.Module:
        return self.load_trainable(lambda d: load_causal_lm(d, self.procs.device), init_from, "CAUSAL_LM")

    def pair_logps(self, model, pairs: list[EncodedPair],
                   whole_chosen: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """log π(chosen) and log π(rejected), each (B,) (means per token if `average_logps`), in
        one forward pass over the pairs packed. With `whole_chosen`, also the mean negative
        log-likelihood of the chosen sequences' every token, prompt and response, over the batch
        (each pair's tokens times its weight): ORPO's SFT term, as TRL computes it. Else None."""
        n = len(pairs)
        groups = [[(k, pair.chosen), (n + k, pair.rejected)] for k, pair in enumerate(pairs)]
        if whole_chosen:  # the chosen sequence once more, every token a target: the packing computes it once
            for k, pair in enumerate(pairs):
                groups[k].append((2 * n + k, {"input_ids": pair.chosen["input_ids"], "labels": pair.chosen["input_ids"]}))
        batch = pack_sequences(groups, self.tokenizer.pad_token_id, self.procs.device)
        hidden = hidden_at(model, batch.packed, batch.token_index, logits_to_keep=1)
        tokens = head_logps(hidden, unwrap(model).get_output_embeddings().weight, batch.targets)
        response = batch.sequence < 2 * n
        logps = per_sequence(tokens[response], batch.sequence[response], 2 * n, average=self.average_logps)
        nll = None
        if whole_chosen:
            weights = torch.tensor([pair.weight for pair in pairs], device=tokens.device)
            nll = -(tokens[~response] * weights[batch.sequence[~response] - 2 * n]).sum() / (~response).sum()
        return logps[:n], logps[n:], nll

    @torch.no_grad()
    def all_logps(self, model, pairs, on_batch: Callable[[int], object] = lambda n: None) -> torch.Tensor:
        """(len(pairs), 2): log π(chosen), log π(rejected) of each pair; `on_batch(pairs done)` hears each batch."""
        out = []
        for chunk in batched(pairs, self.config.batch_size):
            out.append(torch.stack(self.pair_logps(model, chunk)[:2], dim=1).cpu())
            on_batch(len(chunk))
        return torch.cat(out) if out else torch.zeros(0, 2)

    @abstractmethod
    def pair_loss(self, model, pairs: list[EncodedPair], split: str, rows: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss and metrics of `pairs`, which are rows `rows` of the `split` ("train" or "eval")."""

    def loss(self, model, indices):
        return self.pair_loss(model, [self.train_pairs[i] for i in indices], "train", indices)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_pairs:
            return {}

        def batch(rows: list[int]) -> tuple[int, dict[str, float]]:
            loss, metrics = self.pair_loss(self.model, [self.eval_pairs[i] for i in rows], "eval", rows)
            return len(rows), {"loss": loss.item(), **metrics}

        return batch_means(batch(rows) for rows in batched(list(range(len(self.eval_pairs))), self.config.batch_size))


def reward_metrics(chosen: torch.Tensor, rejected: torch.Tensor, logps_chosen: torch.Tensor,
                   logps_rejected: torch.Tensor) -> dict[str, float]:
    """What a preference objective logs as TRL does: its implicit rewards of the chosen and the
    rejected responses, how often the chosen one's is higher, their margin, and the log-probabilities."""
    chosen, rejected = chosen.detach(), rejected.detach()
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "logps/chosen": logps_chosen.detach().mean().item(),
        "logps/rejected": logps_rejected.detach().mean().item(),
    }
