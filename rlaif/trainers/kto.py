"""KTO: unpaired rows, each a prompt and one response labeled desirable or undesirable
(`pairs.load_unpaired`: TRL's unpaired rows, scored rows at a threshold, or pairs split in two).

A row's implied reward is r = log π(y|x) − log π_ref(y|x), and the reference point z is KL(π ‖ π_ref)
estimated on the batch's own responses paired with other prompts: row k's prompt with row k−1's
response (the first row's with the last's), as TRL builds them (`losses.kto_reference_point`).
Each row and its mismatched sequence share a prompt, so they are packed into one row of the
batch. The reference's log-probabilities of both are computed once, before training, for the
micro-batches the run will take and no others (`Trainer.plan`: the schedule is known in
advance), by the policy itself before its first step (it is the reference then), and kept for
`--resume`: no second model is loaded."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from typing import Any

import torch
from tqdm import tqdm

from rlaif.errors import ConfigError
from rlaif.models.blocks import hidden_at
from rlaif.models.encoding import encode
from rlaif.models.loading import load_causal_lm
from rlaif.models.logprobs import head_logps, per_sequence
from rlaif.models.packing import pack_sequences
from rlaif.trainers.loop import OfflineTrainer, batch_means, batched, unwrap
from rlaif.trainers.losses import kto_loss, kto_reference_point
from rlaif.trainers.pairs import unpaired_train_eval

Sequence = dict[str, Any]  # `encode`'s input_ids, labels (−100 on the prompt) and truncated


def mismatched(rows: list[Sequence], i: int, j: int, max_length: int) -> Sequence:
    """Row i's prompt with row j's response (cut to fit `max_length`)."""
    prompt = rows[i]["labels"].count(-100)
    response = rows[j]["input_ids"][rows[j]["labels"].count(-100):][:max(1, max_length - prompt)]
    return {"input_ids": rows[i]["input_ids"][:prompt] + response, "labels": [-100] * prompt + response}


def partners(indices: list[int]) -> list[tuple[int, int]]:
    """The (prompt row, response row) of each row's mismatched sequence in a batch: row k with row k−1's response."""
    return [(i, indices[k - 1]) for k, i in enumerate(indices)]


class KTOTrainer(OfflineTrainer):
    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        if cfg.batch_size < 2:
            raise ConfigError("KTO estimates its reference point from the other rows of a batch: "
                              "give --batch-size 2 or more", key="batch_size")
        train, held = unpaired_train_eval(cfg)
        encode_rows = lambda rows: [encode(self.tokenizer, r.prompt, r.completion, cfg.max_length, r.source,
                                           cfg.truncate_prompt) for r in rows]
        self.rows = {"train": encode_rows(train), "eval": encode_rows(held)}
        self.desirable = {"train": torch.tensor([r.desirable for r in train], dtype=torch.bool),
                          "eval": torch.tensor([r.desirable for r in held], dtype=torch.bool)}
        self.weights = {"train": torch.tensor([r.weight for r in train]), "eval": torch.tensor([r.weight for r in held])}
        self.n_train, self.n_rows = len(train), len(train) + len(held)
        self.truncated_rows = sum(r["truncated"] for rows in self.rows.values() for r in rows)
        self._report_balance()
        schedule, total = self.plan()
        self.batches = {"train": schedule[:total * self.micro_batches_per_step],
                        "eval": list(batched(list(range(len(held))), cfg.batch_size))}
        self.model = self.load_trainable(lambda d: load_causal_lm(d, self.procs.device), init_from, "CAUSAL_LM")
        reference_file = self.out / "reference_logps.pt"
        self.reference = torch.load(reference_file) if reference_file.exists() and init_from else {}
        if not self.reference or any(self._missing(split, indices) for split, batches in self.batches.items() for indices in batches):
            # A new policy is still the reference (or, with LoRA, its base with the adapter off): no second model. A resumed
            # one has trained, so a run that goes further than the stopped one reads --model again for its later batches.
            new = init_from is None or cfg.lora_r is not None
            with self.base_weights(self.model) if new else nullcontext(load_causal_lm(cfg.model, self.procs.device)) as base:
                self._reference_logps(base, reference_file)

    def _report_balance(self) -> None:
        """The class balance, and the KTO paper's advice on λ_D and λ_U for it, at the start."""
        cfg = self.config
        good = int(self.desirable["train"].sum())
        bad = self.n_train - good
        if not self.procs.main:
            return
        ratio = cfg.desirable_weight * good / max(1, cfg.undesirable_weight * bad)
        print(f"kto: {good} desirable and {bad} undesirable training rows; λ_D·n_D / (λ_U·n_U) = {ratio:.2f}", file=sys.stderr)
        if not good or not bad:
            print("kto: every row has the same label, so one side of the loss is never trained", file=sys.stderr)
        elif not 1 <= ratio <= 4 / 3:
            print(f"kto: the KTO paper advises a ratio from 1 to 4/3: e.g. --desirable-weight {bad * cfg.undesirable_weight / good:.2f} "
                  f"to {4 / 3 * bad * cfg.undesirable_weight / good:.2f}", file=sys.stderr)

    def _sequences(self, split: str, indices: list[int]) -> list[list[tuple[int, Sequence]]]:
        """A packed row per training row: (k, the row), (B + k, its mismatched sequence)."""
        rows, n = self.rows[split], len(indices)
        return [[(k, rows[i]), (n + k, mismatched(rows, i, j, self.config.max_length))] for k, (i, j) in enumerate(partners(indices))]

    def _logps(self, model, split: str, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """log π of the rows and of their mismatched sequences, each (B,), summed over response tokens."""
        batch = pack_sequences(self._sequences(split, indices), self.tokenizer.pad_token_id, self.procs.device)
        hidden = hidden_at(model, batch.packed, batch.token_index, logits_to_keep=1)
        logps = per_sequence(head_logps(hidden, unwrap(model).get_output_embeddings().weight, batch.targets),
                             batch.sequence, batch.n_sequences)
        return logps[:len(indices)], logps[len(indices):]

    def _missing(self, split: str, indices: list[int]) -> bool:
        """Whether the reference's log-probabilities of a batch's rows or mismatched sequences are unknown."""
        return (bool(self.reference[split][indices].isnan().any())
                or any(pair not in self.reference[f"{split}_mismatched"] for pair in partners(indices)))

    @torch.no_grad()
    def _reference_logps(self, reference, file) -> None:
        """The reference's log-probability of every row and of every mismatched sequence a batch
        of the run will read, beside those known already; kept for `--resume`."""
        cfg = self.config
        self.reference = self.reference or {name: value for split, rows in self.rows.items()
                                            for name, value in ((split, torch.full((len(rows),), float("nan"))),
                                                                (f"{split}_mismatched", {}))}
        todo = [(split, indices) for split, batches in self.batches.items() for indices in batches if self._missing(split, indices)]
        with self.autocast(), tqdm(total=len(todo), desc="reference log-probabilities", unit="batch",
                                   disable=not (cfg.progress and self.procs.main)) as bar:
            for split, indices in todo:
                own, crossed = self._logps(reference, split, indices)
                self.reference[split][indices] = own.float().cpu()
                self.reference[f"{split}_mismatched"].update(zip(partners(indices), crossed.tolist()))
                bar.update(1)
        if self.procs.main:
            tmp = file.with_name(file.name + ".tmp")
            torch.save(self.reference, tmp)
            tmp.replace(file)

    def _batch_loss(self, model, split: str, indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        policy, policy_crossed = self._logps(model, split, indices)
        device = policy.device
        reference = self.reference[split][indices].to(device)
        reference_crossed = torch.tensor([self.reference[f"{split}_mismatched"][pair] for pair in partners(indices)], device=device)
        z = kto_reference_point(policy_crossed, reference_crossed)
        if self.procs.world > 1:  # as TRL: the mean over every process's batch
            z = torch.tensor(self.procs.mean(z.item()), device=device)
        desirable, weight = self.desirable[split][indices].to(device), self.weights[split][indices].to(device)
        loss = kto_loss(policy, reference, desirable, z, cfg.beta, cfg.desirable_weight, cfg.undesirable_weight, weight)
        rewards = cfg.beta * (policy - reference).detach()
        metrics = {"kl": z.item()}
        # NaN for a batch without such rows: every process logs the same keys
        for name, mask in (("chosen", desirable), ("rejected", ~desirable)):
            metrics[f"rewards/{name}"] = rewards[mask].mean().item()
            metrics[f"logps/{name}"] = policy[mask].detach().mean().item()
        return loss, metrics

    def loss(self, model, indices):
        return self._batch_loss(model, "train", indices)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.rows["eval"]:
            return {}

        def batch(indices: list[int]) -> tuple[int, dict[str, float]]:
            loss, metrics = self._batch_loss(self.model, "eval", indices)
            return len(indices), {"loss": loss.item(), **metrics}

        return batch_means(batch(indices) for indices in self.batches["eval"])
