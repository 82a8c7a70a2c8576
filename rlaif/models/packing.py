"""Sequences that share a prefix, packed into one row as a prefix tree: every shared token is
computed once.

A row holds a group of token sequences (the chosen and rejected sequence of a preference pair,
or the two orders of a pair shown to a judge). Each distinct prefix appears once in the row;
position ids give every token its place in its own sequence, and a 4D attention mask lets it
see exactly its own sequence's earlier tokens, nothing of the other branches. So each hidden
state equals that of the sequence's own forward pass, while a prompt shared by two sequences
(and its padding) is computed once instead of twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Packed:
    """R rows of length L."""

    input_ids: torch.Tensor  # (R, L)
    position_ids: torch.Tensor  # (R, L)
    attention_mask: torch.Tensor  # (R, 1, L, L), True where a query (row) may see a key (column)
    places: list[list[int]]  # per sequence (groups in order), the flat (R·L) index of each of its tokens


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def pack(groups: list[list[list[int]]], pad_id: int, device: str, start: int = 0) -> Packed:
    """One row per group of sequences, right-padded to the longest row. Positions start at
    `start` (the length of a prefix already in the model's cache, which every token may see:
    the caller adds its columns to the mask)."""
    rows: list[list[int]] = []
    places: list[list[int]] = []
    paths: list[tuple[int, list[int]]] = []  # (row, the places of one sequence's tokens in it)
    depths: list[list[int]] = []
    for r, group in enumerate(groups):
        node_of: dict[tuple[int, int], int] = {}  # (parent's place, token) -> place
        ids: list[int] = []
        depth: list[int] = []
        for seq in group:
            node, path = -1, []
            for token in seq:
                if (node, token) not in node_of:
                    node_of[node, token] = len(ids)
                    ids.append(token)
                    depth.append(len(path))
                node = node_of[node, token]
                path.append(node)
            paths.append((r, path))
        rows.append(ids)
        depths.append(depth)
    width = max(len(ids) for ids in rows)
    sees = torch.eye(width, dtype=torch.bool).repeat(len(rows), 1, 1)  # padding sees itself, so no softmax row is empty
    for r, path in paths:
        at = torch.tensor(path)
        sees[r, at[:, None], at[None, :]] |= torch.ones(len(path), len(path), dtype=torch.bool).tril()
        places.append([r * width + p for p in path])
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in rows])
    positions = torch.tensor([[start + d for d in depth] + [start] * (width - len(depth)) for depth in depths])
    return Packed(input_ids.to(device), positions.to(device), sees[:, None].to(device), places)


@dataclass
class PackedSequences:
    """Groups of sequences, a row per group, each sequence numbered by the caller."""

    packed: Packed
    token_index: torch.Tensor  # (N,) flat index of the position that predicts each response token
    targets: torch.Tensor  # (N,) that response token
    sequence: torch.Tensor  # (N,) the number of the sequence it belongs to
    last_index: torch.Tensor  # (n,) flat index of sequence s's last token, for numbers s in [0, n)

    @property
    def n_sequences(self) -> int:
        return len(self.last_index)


def pack_sequences(groups: list[list[tuple[int, dict[str, list[int]]]]], pad_id: int, device: str) -> PackedSequences:
    """Pack each group of (number, sequence) into one row; a sequence is `encode`'s input_ids
    and labels (−100 off the response), and the numbers are 0 … n−1, each used once."""
    packed = pack([[seq["input_ids"] for _, seq in group] for group in groups], pad_id, device)
    numbered = [item for group in groups for item in group]
    token_index, targets, sequence, last_index = [], [], [], [0] * len(numbered)
    for (s, seq), place in zip(numbered, packed.places):
        for i, label in enumerate(seq["labels"]):
            if i > 0 and label != -100:
                token_index.append(place[i - 1])
                targets.append(label)
                sequence.append(s)
        last_index[s] = place[-1]
    as_tensor = lambda x: torch.tensor(x, dtype=torch.long, device=device)
    return PackedSequences(packed, as_tensor(token_index), as_tensor(targets), as_tensor(sequence), as_tensor(last_index))


ROW_CELLS = 1024 * 1024  # attention cells (L²) a batch may spend per row it is allowed


def length_batches(lengths: list[int], rows: int) -> list[list[int]]:
    """Indices of `lengths`, shortest first, cut into batches of at most `rows` items of similar
    length, fewer where they are long: a batch of R items of length up to L keeps R·L² within
    rows · 1024², so its attention scores take no more memory than `rows` items of 1,024 tokens
    (one item of 8,192 tokens takes a batch of its own)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if batches and len(batches[-1]) < rows and (len(batches[-1]) + 1) * lengths[i] ** 2 <= rows * ROW_CELLS:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def packed_batches(sequences: list[dict[str, list[int]]], rows: int, pad_id: int,
                   device: str) -> Iterator[tuple[list[int], PackedSequences]]:
    """`encode`'s sequences grouped by prompt (the tokens their labels leave out), a group to a
    row and up to `rows` groups of similar length to a batch (`length_batches`): (indices,
    batch) with the batch's sequence j being sequences[indices[j]]."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, seq in enumerate(sequences):
        groups.setdefault(tuple(seq["input_ids"][:seq["labels"].count(-100)]), []).append(i)
    members = list(groups.values())
    row_lengths = [len(prompt) + sum(len(sequences[i]["input_ids"]) - len(prompt) for i in group) for prompt, group in zip(groups, members)]
    for batch in length_batches(row_lengths, rows):
        chunk = [members[g] for g in batch]
        indices = [i for group in chunk for i in group]
        numbers = iter(range(len(indices)))
        yield indices, pack_sequences([[(next(numbers), sequences[i]) for i in group] for group in chunk], pad_id, device)


def pack_pairs(pairs: list, pad_id: int, device: str) -> PackedSequences:
    """Pack each pair (`trainers.pairs.encode_pair`'s chosen, rejected and label) into one row:
    for B pairs, sequence s < B is pair s's chosen and B + s its rejected."""
    return pack_sequences([[(k, chosen), (len(pairs) + k, rejected)] for k, (chosen, rejected, *_) in enumerate(pairs)], pad_id, device)


def packed_hidden(model: torch.nn.Module, packed: Packed, **kwargs) -> torch.Tensor:
    """The model's last hidden states (after its final norm) at every position, flattened to
    (R·L, H). Called through `model` itself, since a DDP wrapper must see the forward pass;
    the caller applies the head where it is needed (a causal LM is passed `logits_to_keep=1`,
    so that its own head runs on one position only)."""
    out = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask, position_ids=packed.position_ids,
                output_hidden_states=True, **{"use_cache": False, **kwargs})
    return out.hidden_states[-1].flatten(0, 1)
