"""What every trainer shares: the one step loop, LoRA adapters, the data schedule, DDP or FSDP,
checkpoints, metrics and saving.

A subclass builds its model in `setup` and supplies its `step`: offline methods a loss per
micro-batch (`OfflineTrainer.loss`), online methods a rollout and its updates. The schedule is
a pure function of the seed, so `--resume` after a kill continues with exactly the batches an
uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from rlaif.errors import ConfigError
from rlaif.models.blocks import freeze_lower_layers, transformer_blocks
from rlaif.models.loading import load_tokenizer, quiet_transformers
from rlaif.storage.files import save_into, write_json_atomic, write_jsonl_atomic
from rlaif.storage.locks import check_output_directory, writing
from rlaif.trainers.config import TrainConfig
from rlaif.trainers.processes import Processes


def lr_factor(step: int, warmup: int, total: int, kind: str) -> float:
    """The multiplier of --lr for optimizer step `step` (0-based) of `total`: a linear warm-up
    over `warmup` steps, then constant or a linear decay that reaches 0 after the last step."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def micro_batches(n: int, batch_size: int, epochs: int, seed: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """Per-process micro-batches of indices: each epoch a seeded permutation cut into global
    batches of batch_size · world, of which process `rank` takes every world-th item."""
    out = []
    step = batch_size * world
    for epoch in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for start in range(0, n - step + 1 if n >= step else 1, step):
            chunk = order[start:start + step]
            out.append(chunk[rank::world])
    return out


class Trainer(ABC):
    """What all trainers share: set-up, resuming, checkpoints, metrics and saving."""

    def __init__(self, config: TrainConfig, processes: Processes | None = None, on_log: Callable[[dict[str, Any]], object] | None = None):
        """`on_log(row)` hears every row of metrics as it is written (a benchmark's clock, a dashboard)."""
        self.config = config
        self.on_log = on_log
        self.procs = processes or Processes.from_env()
        self.out = Path(config.output)
        if self.procs.main:
            check_output_directory(self.out)  # a path that cannot be a directory is an error now, before any model loads
        torch.manual_seed(config.seed)
        quiet_transformers()
        self.tokenizer = load_tokenizer(config.model, padding_side="right")
        self.model: torch.nn.Module
        self.n_train = 0
        self.n_rows = 0  # training and held-out rows read
        self.truncated_rows = 0  # of those, rows cut to fit --max-length (setup counts them)

    # ---- what a method supplies

    @abstractmethod
    def setup(self, init_from: str | None) -> None:
        """Load data and build `self.model` (from `init_from`, a checkpoint, when resuming)."""

    @abstractmethod
    def step(self, model: torch.nn.Module, work: list[list[int]], step: int, optimizer,
             params: list[torch.nn.Parameter]) -> dict[str, float]:
        """One optimizer step on `work` (the step's micro-batches of example indices): the
        forward and backward passes and the optimizer's update; returns the step's metrics."""

    micro_batches_per_step = 1  # how many of the schedule's micro-batches one step takes
    shown_metrics: tuple[str, ...] | None = None  # the metrics the progress bar shows (None: all)

    def load_trainable(self, load: Callable[[str], torch.nn.Module], init_from: str | None, task_type: str) -> torch.nn.Module:
        """The model to train, by `load(directory)`: from `init_from` (a checkpoint) or --model,
        with --train-layers frozen; with --lora-r, --model with LoRA adapters of peft's
        `task_type`: new ones, or the checkpoint's."""
        cfg = self.config
        if cfg.lora_r is None:
            model = load(init_from or cfg.model)
            freeze_lower_layers(model, cfg.train_layers)
            return model
        from peft import LoraConfig, PeftModel, get_peft_model

        base = load(cfg.model)
        targets = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",")]
        # peft reads transformers' renamed `is_gradient_checkpointing`: its deprecation is not the user's to see
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            if init_from:
                return PeftModel.from_pretrained(base, init_from, is_trainable=True)
            return get_peft_model(base, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, target_modules=targets, task_type=task_type))

    @contextmanager
    def base_weights(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """`model` with its LoRA adapter switched off (the reference of dpo and ppo: no second
        model in memory); without --lora-r, nothing to switch off."""
        with model.disable_adapter() if self.config.lora_r is not None else nullcontext():
            yield model

    def save_model(self, path: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Save the model (`state_dict`: its weights gathered from FSDP shards) and tokenizer."""
        self.model.save_pretrained(path, state_dict=state_dict)
        self.tokenizer.save_pretrained(path)

    def evaluate(self) -> dict[str, float]:
        """Metrics on the held-out data (none by default)."""
        return {}

    def _evaluates_at(self, step: int, total: int) -> bool:
        """Whether --eval-steps evaluates after `step` (the last step's evaluation is `_finish`'s)."""
        every = self.config.eval_steps
        return bool(every) and step % every == 0 and step < total

    def _evaluate_during(self, step: int, total: int) -> None:
        """With --eval-steps: log held-out metrics at every Nth step before the last."""
        if self._evaluates_at(step, total):
            self.model.eval()
            with self.autocast():
                results = self.evaluate()
            self.model.train()
            if results:
                self._log({"step": step, **{f"eval/{k}": v for k, v in results.items()}})

    def autocast(self):
        """The precision context of every forward pass (the policy's and the reference's):
        bfloat16 autocast with --bf16, on CUDA or the CPU."""
        device = "cuda" if self.procs.device.startswith("cuda") else "cpu"
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.config.bf16)

    def _finish(self, step: int) -> dict[str, float]:
        """Evaluate, save the model and `eval_results.json`; returns the held-out metrics."""
        self.model.eval()
        with self.autocast():
            results = {f"eval/{k}": v for k, v in self.evaluate().items()}
        if results:
            self._log({"step": step, **results})
        weights = self._gathered_weights()
        if self.procs.main:
            save_into(self.out, lambda path: self.save_model(path, weights))
            write_json_atomic(self.out / "eval_results.json", results)
        self.procs.barrier()
        return results

    # ---- the loop

    def train(self) -> dict[str, float]:
        """Train, holding the output directory (the main process takes its lock) for the whole run."""
        with writing(self.out) if self.procs.main else nullcontext():
            return self._train()

    def _train(self) -> dict[str, float]:
        """The step loop of every method: step, log, evaluate and checkpoint as the settings say,
        then save; returns the held-out metrics."""
        cfg, per_step = self.config, self.micro_batches_per_step
        params, optimizer, scheduler, schedule, total, step = self._begin()
        model = self._wrap()
        model.train()
        bar = tqdm(total=total, initial=step, desc=f"train {cfg.method}", disable=not (cfg.progress and self.procs.main))
        while step < total:
            metrics = self.step(model, schedule[step * per_step:(step + 1) * per_step], step, optimizer, params)
            scheduler.step()
            step += 1
            row = {"step": step, **{k: self.procs.mean(v) for k, v in metrics.items()}, "lr": scheduler.get_last_lr()[0]}
            if step % cfg.log_steps == 0 or step == total:
                self._log(row)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()
                             if k not in ("step", "lr") and (self.shown_metrics is None or k in self.shown_metrics)})
            self._evaluate_during(step, total)
            if cfg.save_steps and step % cfg.save_steps == 0:
                self._checkpoint(step, optimizer, scheduler)
        bar.close()
        return self._finish(step)


    def _latest_checkpoint(self) -> Path | None:
        found = sorted(self.out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        return found[-1] if found else None

    @property
    def sharded(self) -> bool:
        """Whether the model is split over the processes (--fsdp under torchrun)."""
        return self.config.fsdp and self.procs.world > 1

    def _gathered_weights(self) -> dict[str, torch.Tensor] | None:
        """Under --fsdp, the whole model's weights gathered on the CPU (every process takes part);
        else None: the model holds them."""
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _optimizer_state(self, optimizer) -> dict[str, Any]:
        """The optimizer's state, under --fsdp gathered whole from the processes' shards."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def _load_optimizer_state(self, optimizer, state: dict[str, Any]) -> None:
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(self.model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def _checkpoint(self, step: int, optimizer, scheduler) -> None:
        weights, optimizer_state = self._gathered_weights(), self._optimizer_state(optimizer)
        if self.procs.main:
            tmp = self.out / f".checkpoint-{step}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.save_model(tmp, weights)
            torch.save({"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state()}, tmp / "trainer_state.pt")
            tmp.rename(self.out / f"checkpoint-{step}")  # whole or absent, whenever a kill comes
            for old in self.out.glob("checkpoint-*"):
                if old.name != f"checkpoint-{step}":
                    shutil.rmtree(old)
        self.procs.barrier()

    def _log(self, row: dict[str, Any]) -> None:
        if self.procs.main:
            with open(self.out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            if self.on_log is not None:
                self.on_log(row)

    def plan(self) -> tuple[list[list[int]], int]:
        """This process's micro-batches of training examples for the whole run, and the number
        of optimizer steps: a pure function of the settings, the seed and `n_train` (set up by
        then), so a trainer may read it in `setup` (KTO pairs each batch's rows there)."""
        cfg, per_step = self.config, self.micro_batches_per_step
        size = len(micro_batches(self.n_train, self.batch_size, 1, cfg.seed, self.procs.rank, self.procs.world))
        epochs = cfg.epochs if cfg.max_steps is None else math.ceil(cfg.max_steps * per_step / max(1, size))
        schedule = micro_batches(self.n_train, self.batch_size, epochs, cfg.seed, self.procs.rank, self.procs.world)
        total = cfg.max_steps if cfg.max_steps is not None else len(schedule) // per_step
        if total == 0:
            raise ConfigError(f"{cfg.data}: {self.n_train} training examples make no full step of batch size {self.batch_size} "
                              f"x {self.procs.world} processes x {per_step}")
        return schedule, total

    def _begin(self):
        """Set up (from the last checkpoint with --resume), make the optimizer, and restore
        its state. Returns (params, optimizer, scheduler, schedule, total steps, first step)."""
        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        checkpoint = self._latest_checkpoint() if cfg.resume else None
        if cfg.resume and checkpoint is None and self.procs.main:
            print(f"--resume: no checkpoint in {self.out}, starting from the beginning")
        self.setup(str(checkpoint) if checkpoint else None)
        if cfg.gradient_checkpointing:
            # Not reentrant: it needs no input that requires grad (LoRA's embeddings are frozen).
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if self.sharded:
            self._shard()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError(f"--train-layers {cfg.train_layers} leaves nothing to train "
                              "(is the model's head tied to its input embeddings?)")
        optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule, total = self.plan()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, total, cfg.lr_scheduler))
        step = 0
        if checkpoint is not None:
            state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
            self._load_optimizer_state(optimizer, state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            step = state["step"]
            self._truncate_metrics(step, total)
        elif self.procs.main and (self.out / "metrics.jsonl").exists():
            (self.out / "metrics.jsonl").unlink()
        if self.procs.main:
            write_json_atomic(self.out / "train_config.json", {**asdict(cfg), "truncated_rows": self.truncated_rows})
            if self.truncated_rows:
                print(f"{self.truncated_rows} of {self.n_rows} rows are longer than --max-length {cfg.max_length}: "
                      "cut to fit, each prompt keeping its end (--no-truncate-prompt stops at a prompt too long instead)")
        return params, optimizer, scheduler, schedule, total, step

    def _shard(self) -> None:
        """--fsdp: each transformer block is an FSDP unit of its own; the rest (embeddings, final
        norm, heads) is the root's and stays gathered from the forward pass to the backward, since
        the heads also run outside the model's forward (on packed positions only)."""
        from torch.distributed.fsdp import fully_shard

        for block in transformer_blocks(self.model):
            fully_shard(block)
        fully_shard(self.model, reshard_after_forward=False)

    def _wrap(self) -> torch.nn.Module:
        """The model as the loop calls it: in DistributedDataParallel under torchrun (sharded in
        place already with --fsdp)."""
        if self.procs.world > 1 and not self.sharded:
            return torch.nn.parallel.DistributedDataParallel(self.model)
        return self.model

    def _truncate_metrics(self, step: int, total: int) -> None:
        """Drop metrics logged after the checkpoint we resume from (they will be logged again),
        and evaluations that this run would not make before its end (a stopped run's last one)."""
        path = self.out / "metrics.jsonl"
        if self.procs.main and path.exists():
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            kept = [r for r in rows if r["step"] <= step
                    and (self._evaluates_at(r["step"], total) or not any(k.startswith("eval/") for k in r))]
            write_jsonl_atomic(path, kept)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size


class OfflineTrainer(Trainer):
    """SFT, reward model and DPO: a loss per micro-batch of a fixed data set, its gradients
    accumulated over --grad-accum micro-batches a step."""

    @abstractmethod
    def loss(self, model: torch.nn.Module, indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss and metrics of one micro-batch of training examples."""

    @property
    def micro_batches_per_step(self) -> int:
        return self.config.grad_accum

    def step(self, model: torch.nn.Module, work: list[list[int]], step: int, optimizer,
             params: list[torch.nn.Parameter]) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for indices in work:
            with self.autocast():
                loss, metrics = self.loss(model, indices)
            (loss / len(work)).backward()
            for name, value in {"loss": loss.item(), **metrics}.items():
                sums[name] = sums.get(name, 0.0) + value / len(work)
        grad_norm = whole(torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)).item()
        optimizer.step()
        return {**sums, "grad_norm": grad_norm}


def batch_means(batches: Iterable[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """Each metric's mean over held-out batches, weighted by their sizes, from (size, metrics) per
    batch; a batch's NaN (a metric it had no rows for) is left out of that metric's mean."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for size, metrics in batches:
        for name, value in metrics.items():
            if not math.isnan(value):
                sums[name] = sums.get(name, 0.0) + value * size
                counts[name] = counts.get(name, 0) + size
    return {name: total / counts[name] for name, total in sums.items()}


def whole(t: torch.Tensor) -> torch.Tensor:
    """A tensor as a whole: a DTensor (under --fsdp) gathered from its shards."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


def batched(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]
