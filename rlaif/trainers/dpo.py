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
from rlaif.models.loading import load_causal_lm, model_fingerprint
from rlaif.storage.cache import AnswerCache, cache_key, through_cache
from rlaif.trainers.losses import dpo_loss
from rlaif.trainers.pairs import EncodedPair, labels_and_weights
from rlaif.trainers.preference import PairTrainer, reward_metrics


class DPOTrainer(PairTrainer):
    @property
    def average_logps(self) -> bool:
        return self.config.loss == "ipo"  # as TRL's ipo: per-token means

    def setup(self, init_from: str | None) -> None:
        cfg = self.config
        self.read_pairs()
        reference_file = self.out / "reference_logps.pt"
        resumed = reference_file.exists() and init_from
        if not resumed and cfg.lora_r is None:  # before the policy is loaded: never two models in memory
            self._reference_logps(load_causal_lm(cfg.model, self.procs.device), reference_file)
        self.model = self.load_policy(init_from)
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
                return self.all_logps(reference, todo, bar.update)

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
        identity = [model_fingerprint(cfg.model), "bf16" if cfg.bf16 else "float32",
                    torch.device(self.procs.device).type, self.average_logps]
        keys = [cache_key("dpo reference log-probability", identity, seq["input_ids"], seq["labels"])
                for pair in pairs for seq in (pair.chosen, pair.rejected)]

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

    def pair_loss(self, model, pairs, split, rows):
        cfg = self.config
        pc, pr, _ = self.pair_logps(model, pairs)
        reference = self.reference[split][rows]
        rc, rr = reference[:, 0].to(pc.device), reference[:, 1].to(pc.device)
        p, weight = labels_and_weights(pairs, pc.device)
        loss = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing, p, cfg.loss, weight)
        return loss, reward_metrics(cfg.beta * (pc - rc), cfg.beta * (pr - rr), pc, pr)
