"""A preference pair as one row: the prefix its chosen and rejected sequences share (the prompt)
computed once, then the rest of each.

Row of one pair: [shared prefix][rest of chosen][rest of rejected]. Position ids restart the
rejected part where the prefix ends, and a 4D attention mask lets every token see exactly the
tokens it would see in its own sequence: the prefix and, causally, its own part, never the
other response. So every hidden state equals that of two separate forward passes, with the
prompt's share of the work (and of the padding) done once instead of twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlaif.trainers.data import EncodedPair

SHARED, CHOSEN, REJECTED, PADDING = 0, 1, 2, 3


@dataclass
class PackedPairs:
    """B pairs in B rows of length L; "sequence" s < B is pair s's chosen, B + s its rejected."""

    input_ids: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, 1, L, L), True where a query (row) may see a key (column)
    token_index: torch.Tensor  # (N,) flat index into (B·L) of the position that predicts each response token
    targets: torch.Tensor  # (N,) that response token
    sequence: torch.Tensor  # (N,) the sequence it belongs to, in [0, 2B)
    last_index: torch.Tensor  # (2B,) flat index of each sequence's last token

    @property
    def n_sequences(self) -> int:
        return 2 * self.input_ids.shape[0]


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pack_pairs(pairs: list[EncodedPair], pad_id: int, device: str) -> PackedPairs:
    """Pack each pair (`encode`'s chosen and rejected: input_ids, and labels −100 off the
    response) into one row, right-padded to the longest row."""
    rows, positions, owners = [], [], []
    token_index, targets, sequence, last_index = [], [], [], [0] * (2 * len(pairs))
    width = max(len(c["input_ids"]) + len(r["input_ids"]) - common_prefix_length(c["input_ids"], r["input_ids"]) for c, r, _ in pairs)
    for k, (chosen, rejected, _) in enumerate(pairs):
        c, r = chosen["input_ids"], rejected["input_ids"]
        shared = common_prefix_length(c, r)
        rows.append(c + r[shared:] + [pad_id] * (width - len(c) - len(r) + shared))
        positions.append(list(range(len(c))) + list(range(shared, len(r))) + [0] * (width - len(c) - len(r) + shared))
        owners.append([SHARED] * shared + [CHOSEN] * (len(c) - shared) + [REJECTED] * (len(r) - shared) + [PADDING] * (width - len(c) - len(r) + shared))
        for s, (seq, offset) in enumerate(((chosen, 0), (rejected, len(c) - shared))):
            place = [k * width + (i if i < shared else i + offset) for i in range(len(seq["input_ids"]))]  # token i's place in the row
            for i, label in enumerate(seq["labels"]):
                if i > 0 and label != -100:
                    token_index.append(place[i - 1])
                    targets.append(label)
                    sequence.append(s * len(pairs) + k)
            last_index[s * len(pairs) + k] = place[-1]
    pos = torch.tensor(positions)
    owner = torch.tensor(owners)
    sees = (pos[:, None, :] <= pos[:, :, None]) & ((owner[:, None, :] == SHARED) | (owner[:, None, :] == owner[:, :, None]))
    sees &= (owner != PADDING)[:, None, :]
    sees |= torch.eye(width, dtype=torch.bool)  # a padding position sees itself, so no softmax row is empty
    as_tensor = lambda x: torch.tensor(x, device=device)
    return PackedPairs(as_tensor(rows), pos.to(device), sees[:, None].to(device), as_tensor(token_index), as_tensor(targets),
                       as_tensor(sequence), as_tensor(last_index))


def packed_hidden(model: torch.nn.Module, batch: PackedPairs, **kwargs) -> torch.Tensor:
    """The model's last hidden states (after its final norm) at every position, flattened to
    (B·L, H). Called through `model` itself, since a DDP wrapper must see the forward pass;
    the caller applies the head where it is needed (a causal LM is passed `logits_to_keep=1`,
    so that its own head runs on one position only)."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                output_hidden_states=True, use_cache=False, **kwargs)
    return out.hidden_states[-1].flatten(0, 1)
