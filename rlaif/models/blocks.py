"""A model's transformer blocks run piecewise, on packed rows without their padding.

Packed rows are padded to the longest in a batch; the linear layers here run on the real tokens
only (N of them, flat), and only attention sees the rows' padded layout. A reward model reads
its last hidden state at one token per sequence: in the last block every token's keys and
values are needed (the read token attends to them), but the query, the attention output, the
output projection and the MLP only at the read tokens, so that block costs a small fraction of
a full one. Written for Llama-shaped blocks (pre-norm attention with rotary positions, then a
pre-norm MLP); `runs_piecewise` says whether a model is one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel
from transformers.models.llama.modeling_llama import rotate_half

from rlaif.errors import ConfigError
from rlaif.models.packing import Packed, packed_hidden

# Model types whose blocks are exactly what `block_forward` computes and whose embeddings enter
# the first block unscaled (a Gemma scales them, a Qwen3 normalises queries and keys).
PIECEWISE_MODEL_TYPES = frozenset({"llama"})


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """A transformers model's transformer blocks."""
    return getattr(model, model.base_model_prefix).layers


def freeze_lower_layers(model: torch.nn.Module, train_layers: int | None) -> None:
    """Leave only the top `train_layers` transformer blocks, the final norm and the head
    trainable (0: the head alone; None: everything), for --train-layers."""
    if train_layers is None:
        return
    if train_layers > len(transformer_blocks(model)):
        raise ConfigError(f"--train-layers {train_layers}: the model has {len(transformer_blocks(model))} transformer blocks")
    base = getattr(model, model.base_model_prefix)
    for p in model.parameters():
        p.requires_grad = False
    if train_layers > 0:
        for module in list(transformer_blocks(model)[-train_layers:]) + [base.norm]:
            for p in module.parameters():
                p.requires_grad = True
    for name, p in model.named_parameters():
        if not name.startswith(model.base_model_prefix + "."):
            p.requires_grad = True  # the head (score / lm_head, untied) and any value head


def runs_piecewise(model: torch.nn.Module) -> bool:
    """Whether the blocks here compute what `model`'s own forward pass would: a Llama-shaped
    transformers model, not wrapped (DDP, an adapter), not sharded, without gradient
    checkpointing (which its own forward pass would do)."""
    return (isinstance(model, PreTrainedModel) and not isinstance(model, FSDPModule) and not model.is_activation_checkpointing
            and model.config.model_type in PIECEWISE_MODEL_TYPES)


@dataclass
class Layout:
    """Where the N real tokens of R packed rows of width L sit."""

    valid: torch.Tensor  # (R, L) bool: a real token, not padding
    seen: torch.Tensor  # (R, 1, L, L) bool: True where a query may see a key
    position_ids: torch.Tensor  # (N,)

    @classmethod
    def of(cls, packed: Packed) -> Layout:
        valid = torch.zeros(packed.input_ids.numel(), dtype=torch.bool, device=packed.input_ids.device)
        valid[[p for places in packed.places for p in places]] = True
        valid = valid.view_as(packed.input_ids)
        return cls(valid, packed.attention_mask, packed.position_ids[valid])

    def real(self, flat_index: torch.Tensor) -> torch.Tensor:
        """Indices into the R·L padded positions → indices among the N real tokens."""
        return (self.valid.flatten().cumsum(0) - 1)[flat_index]

    def rows(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, C) → (R, L, C), zeros at the padding."""
        out = flat.new_zeros(*self.valid.shape, flat.shape[-1])
        out[self.valid] = flat
        return out


def block_forward(layer: torch.nn.Module, flat: torch.Tensor, layout: Layout, cos: torch.Tensor, sin: torch.Tensor,
                  reads: torch.Tensor | None = None) -> torch.Tensor:
    """One block on the real tokens flat: (N, H) → (N, H); with `reads` (R, M), the columns read
    in each row, only there: → (R, M, H). cos, sin: (N, D), the rotary embedding of each token."""
    attn = layer.self_attn
    heads = lambda t: t.view(len(t), -1, attn.head_dim)  # (N, h·D) -> (N, h, D)
    rotate = lambda t, c, s: t * c + rotate_half(t) * s  # c, s broadcast over the heads
    as_rows = lambda t: layout.rows(t.flatten(1)).unflatten(-1, (-1, attn.head_dim)).transpose(1, 2)  # (N, h, D) -> (R, h, L, D)
    x = layer.input_layernorm(flat)
    keys = as_rows(rotate(heads(attn.k_proj(x)), cos[:, None], sin[:, None]))
    values = as_rows(heads(attn.v_proj(x)))
    if reads is None:
        queries, seen = as_rows(rotate(heads(attn.q_proj(x)), cos[:, None], sin[:, None])), layout.seen
    else:
        rows = torch.arange(len(reads), device=reads.device)[:, None]
        at = layout.real(rows * layout.valid.shape[1] + reads)  # (R, M) among the real tokens
        flat, x, cos, sin = flat[at], x[at], cos[at], sin[at]  # (R, M, ·)
        queries = rotate(attn.q_proj(x).unflatten(-1, (-1, attn.head_dim)), cos[..., None, :], sin[..., None, :]).transpose(1, 2)
        seen = layout.seen[rows, 0, reads][:, None]  # (R, 1, M, L)
    if keys.is_cuda:  # CUDA's kernels that take a mask do not share key/value heads (enable_gqa would fall back to the math kernel)
        groups = queries.shape[1] // keys.shape[1]
        keys, values = keys.repeat_interleave(groups, dim=1), values.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=seen, scale=attn.scaling, enable_gqa=not keys.is_cuda,
                                         dropout_p=attn.attention_dropout if attn.training else 0.0).transpose(1, 2).flatten(2)
    h = flat + attn.o_proj(out[layout.valid] if reads is None else out)
    return h + layer.mlp(layer.post_attention_layernorm(h))


def rotary(model: torch.nn.Module, flat: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (N, D) of each real token's position."""
    cos, sin = model.base_model.rotary_emb(flat[None], layout.position_ids[None])
    return cos[0], sin[0]


def blocks_between(model: torch.nn.Module, flat: torch.Tensor, start: int, stop: int, layout: Layout) -> torch.Tensor:
    """The real tokens' hidden states (N, H) leaving block `stop − 1`, given those entering block `start`."""
    cos, sin = rotary(model, flat, layout)
    for layer in model.base_model.layers[start:stop]:
        flat = block_forward(layer, flat, layout, cos, sin)
    return flat


def last_block_at(model: torch.nn.Module, flat: torch.Tensor, layout: Layout, reads: torch.Tensor) -> torch.Tensor:
    """The final hidden states (after the final norm) at the read columns `reads` (R, M) only,
    given the real tokens' states (N, H) entering the last block: (R, M, H), equal to the whole
    forward pass's last hidden states there."""
    cos, sin = rotary(model, flat, layout)
    return model.base_model.norm(block_forward(model.base_model.layers[-1], flat, layout, cos, sin, reads))


def hidden_at(model: torch.nn.Module, packed: Packed, index: torch.Tensor, **kwargs) -> torch.Tensor:
    """The last hidden states (after the final norm) at the flat positions `index` of the packed
    rows: (len(index), H). Piecewise on the real tokens where the model allows it, else through
    the model's own forward pass (given `kwargs`)."""
    if not runs_piecewise(model):
        return packed_hidden(model, packed, **kwargs)[index]
    layout = Layout.of(packed)
    flat = blocks_between(model, model.base_model.embed_tokens(packed.input_ids)[layout.valid], 0, len(model.base_model.layers), layout)
    return model.base_model.norm(flat[layout.real(index)])
