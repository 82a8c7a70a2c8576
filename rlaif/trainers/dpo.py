"""Direct preference optimisation. The reference model's log-probabilities are computed once,
before training (so no second model stays in memory; with LoRA, by the policy with its adapter
off), and kept in the output directory for `--resume`; with `--reference-cache`, also per
sequence for other runs from the same model. Each pair goes through the policy as one packed
row (`packing`): its prompt is computed once for chosen and rejected, the blocks' linear layers
run on real tokens only, not the padding (`models.blocks`, where the model allows it), and the
LM head on response tokens only."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from rlaif.errors import ConfigError
from rlaif.models.blocks import hidden_at
from rlaif.models.loading import load_causal_lm, model_fingerprint
from rlaif.models.packing import pack_pairs
from rlaif.storage.cache import AnswerCache, cache_key, through_cache
from rlaif.trainers.loop import OfflineTrainer, batched, unwrap
from rlaif.trainers.losses import dpo_loss, head_logps, per_sequence
from rlaif.trainers.pairs import EncodedPair, encoded_train_eval_pairs, truncated_rows


class DPOTrainer(OfflineTrainer):
    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        self.train_pairs, self.eval_pairs = encoded_train_eval_pairs(self.tokenizer, cfg)
        self.n_train, self.n_rows = len(self.train_pairs), len(self.train_pairs) + len(self.eval_pairs)
        self.truncated_rows = truncated_rows(self.train_pairs + self.eval_pairs)
        reference_file = self.out / "reference_logps.pt"
        resumed = reference_file.exists() and init_from
        if not resumed and cfg.lora_r is None:  # before the policy is loaded: never two models in memory
            self._reference_logps(load_causal_lm(cfg.model, self.procs.device), reference_file)
        self.model = self.load_trainable(lambda d: load_causal_lm(d, self.procs.device), init_from, "CAUSAL_LM")
        if resumed:
            self.reference = torch.load(reference_file)
        elif cfg.lora_r is not None:
            with self.base_weights(self.model) as base:
                self._reference_logps(base, reference_file)

    def _reference_logps(self, reference, file) -> None:
        """The reference's log-probabilities of every pair, kept for `--resume`; with
        --reference-cache, each sequence's read from there when an earlier run computed it."""
        cfg = self.config
        pairs = self.train_pairs + self.eval_pairs

        def compute(todo: list[EncodedPair]) -> torch.Tensor:
            bar = tqdm(total=len(todo), desc="reference log-probabilities", unit="pair", disable=not (cfg.progress and self.procs.main))
            with self.autocast(), bar:  # the policy's precision, so that h = 0 before the first step
                return self._all_logps(reference, todo, bar.update)

        logps = compute(pairs) if cfg.reference_cache is None else self._through_reference_cache(pairs, compute)
        self.reference = {"train": logps[:self.n_train], "eval": logps[self.n_train:]}
        if self.procs.main:
            tmp = file.with_name(file.name + ".tmp")
            torch.save(self.reference, tmp)
            tmp.replace(file)

    def _through_reference_cache(self, pairs: list[EncodedPair], compute: Callable[[list[EncodedPair]], torch.Tensor]) -> torch.Tensor:
        """`compute(pairs)` for the pairs with a sequence the cache lacks; keyed per sequence by
        the model's weights, the precision, the device type and the loss (IPO averages), so a
        pair swapped (another judge's choice) is found too."""
        cfg = self.config
        identity = [model_fingerprint(cfg.model), "bf16" if cfg.bf16 else "float32", torch.device(self.procs.device).type, cfg.loss == "ipo"]
        keys = [cache_key("dpo reference log-probability", identity, seq["input_ids"], seq["labels"]) for chosen, rejected, _ in pairs for seq in (chosen, rejected)]

        def missing(indices: list[int]) -> list[float]:  # index 2k + j: pair k's chosen (j = 0) or rejected (j = 1)
            needed = sorted({i // 2 for i in indices})
            row = {k: n for n, k in enumerate(needed)}
            logps = compute([pairs[k] for k in needed])
            return [logps[row[i // 2], i % 2].item() for i in indices]

        try:
            cache = AnswerCache(cfg.reference_cache)
        except ConfigError as e:
            raise ConfigError(f"--reference-cache {e}") from None
        try:
            return torch.tensor(through_cache(cache, keys, missing)).view(-1, 2)
        finally:
            cache.close()

    def _logps(self, model, pairs) -> tuple[torch.Tensor, torch.Tensor]:
        """log π(chosen), log π(rejected) for a list of pairs, in one forward pass over the pairs
        packed (each prompt once) and the LM head on response tokens only (per token for IPO,
        summed otherwise)."""
        batch = pack_pairs(pairs, self.tokenizer.pad_token_id, self.procs.device)
        hidden = hidden_at(model, batch.packed, batch.token_index, logits_to_keep=1)
        tokens = head_logps(hidden, unwrap(model).get_output_embeddings().weight, batch.targets)
        logps = per_sequence(tokens, batch.sequence, batch.n_sequences, average=self.config.loss == "ipo")
        return logps[: len(pairs)], logps[len(pairs):]

    @torch.no_grad()
    def _all_logps(self, model, pairs, on_batch: Callable[[int], object] = lambda n: None) -> torch.Tensor:
        """(len(pairs), 2): log π(chosen), log π(rejected) of each pair; `on_batch(pairs done)` hears each batch."""
        out = []
        for chunk in batched(pairs, self.config.batch_size):
            out.append(torch.stack(self._logps(model, chunk), dim=1).cpu())
            on_batch(len(chunk))
        return torch.cat(out) if out else torch.zeros(0, 2)

    def _metrics(self, model, pairs, reference: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.config
        pc, pr = self._logps(model, pairs)
        rc, rr = reference[:, 0].to(pc.device), reference[:, 1].to(pc.device)
        p = torch.tensor([q for _, _, q in pairs], device=pc.device)
        loss = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing, p, cfg.loss)
        chosen_reward, rejected_reward = cfg.beta * (pc - rc).detach(), cfg.beta * (pr - rr).detach()
        return loss, {
            "rewards/chosen": chosen_reward.mean().item(),
            "rewards/rejected": rejected_reward.mean().item(),
            "rewards/accuracies": (chosen_reward > rejected_reward).float().mean().item(),
            "rewards/margins": (chosen_reward - rejected_reward).mean().item(),
            "logps/chosen": pc.detach().mean().item(),
            "logps/rejected": pr.detach().mean().item(),
        }

    def loss(self, model, indices):
        return self._metrics(model, [self.train_pairs[i] for i in indices], self.reference["train"][indices])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.eval_pairs:
            return {}
        sums: dict[str, float] = {}
        for start in range(0, len(self.eval_pairs), self.config.batch_size):
            chunk = self.eval_pairs[start:start + self.config.batch_size]
            loss, metrics = self._metrics(self.model, chunk, self.reference["eval"][start:start + len(chunk)])
            for k, v in {"loss": loss.item(), **metrics}.items():
                sums[k] = sums.get(k, 0.0) + v * len(chunk)
        return {k: v / len(self.eval_pairs) for k, v in sums.items()}
