"""How close DPO runs to what this machine's matrix products allow.

Counts the model FLOPs of a reference pass over a file's pairs, packed and batched as
`rlaif train --method dpo` does (the blocks' linear layers on real tokens, attention over the
packed rows, the LM head on response tokens), times that pass with the trainer's own code, and
divides by the float32 matrix-product rate measured here. A training step's forward and
backward pass is about 3 times the forward's FLOPs.

    python bench/dpo_floor.py --data outputs/compare-demo/train-human-labels.jsonl --batch-size 8 --max-length 256
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from rlaif.models.blocks import Layout
from rlaif.models.loading import load_causal_lm
from rlaif.models.packing import pack_pairs
from rlaif.trainers.config import TrainConfig
from rlaif.trainers.dpo import DPOTrainer
from rlaif.trainers.loop import batched
from rlaif.trainers.pairs import encoded_train_eval_pairs


def matmul_rate(hidden: int, intermediate: int, repeats: int = 20) -> float:
    """float32 FLOP/s of a (2048, hidden) x (hidden, intermediate) product, the MLP's shape."""
    a, b = torch.randn(2048, hidden), torch.randn(hidden, intermediate)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 2048 * hidden * intermediate * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(method="dpo", data=args.data, output=out, batch_size=args.batch_size, max_length=args.max_length, progress=False)
        trainer = DPOTrainer(cfg)
        pairs, _ = encoded_train_eval_pairs(trainer.tokenizer, cfg)
        model = load_causal_lm(cfg.model, "cpu")
        c = model.config
        linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
        real = response = cells = 0
        for chunk in batched(pairs, cfg.batch_size):
            batch = pack_pairs(chunk, trainer.tokenizer.pad_token_id, "cpu")
            real += int(Layout.of(batch.packed).valid.sum())
            response += len(batch.targets)
            cells += batch.packed.input_ids.shape[0] * batch.packed.input_ids.shape[1] ** 2
        # 2 FLOPs a weight a token; attention's QK^T and AV are 2 x 2 x hidden per (query, key) cell and layer
        forward = 2 * linear * real + 2 * c.vocab_size * c.hidden_size * response + 4 * c.hidden_size * cells * c.num_hidden_layers
        rate = matmul_rate(c.hidden_size, c.intermediate_size)
        start = time.perf_counter()
        trainer.all_logps(model, pairs)
        took = time.perf_counter() - start

    print(f"{len(pairs)} pairs: {real:,} real tokens, {response:,} response tokens, {cells:,} attention cells in packed rows")
    print(f"matrix products here: {rate / 1e9:.0f} GFLOP/s (float32, {torch.get_num_threads()} threads)")
    print(f"reference pass: {forward / 1e9:,.0f} GFLOP, at that rate {forward / rate:.0f} s; "
          f"measured {took:.0f} s ({forward / rate / took:.0%} of the rate)")
    print(f"a training epoch (forward and backward, about 3x): at that rate {3 * forward / rate:.0f} s")


if __name__ == "__main__":
    main()
