"""Pretraining only the rows of the token table that the captions use.

Why: the toy CLIP keeps open_clip's 49,408-token table, so its checkpoint loads like any CLIP's,
but the synthetic captions use under 300 of those tokens. Backpropagating into the whole table
makes a dense 3.2-million-value gradient every step that zeroing, gradient clipping and AdamW then
walk through: about a sixth of a CPU training step. A row no caption has used has zero gradient
and zero AdamW state, and the table gets no weight decay (`calm.engine.optim.decayed_names`), so
AdamW leaves it exactly as it is. Training a compact copy of the used rows is therefore the same
training; `used_token_rows` writes the rows back into the table at the end.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

CAPACITY = 2048  # distinct tokens the compact table holds; the synthetic captions use ~270


class UsedTokenRows(nn.Module):
    """Stands in for a CLIP's `token_embedding` while it trains: token t reads row `slot[t]` of
    `rows`, a trainable copy of the table's rows for the tokens seen so far.

    `admit(tokens)` must see each batch's tokens before the forward pass: a token seen for the
    first time gets the next free row, filled from the table. Until then that row had zero
    gradient and zero optimizer state, exactly like the table's untouched row it stands for.
    """

    def __init__(self, table: nn.Embedding, capacity: int = CAPACITY):
        super().__init__()
        weight = table.weight
        self.table = table
        self.capacity = capacity
        self.rows = nn.Parameter(torch.zeros(capacity, weight.shape[1], dtype=weight.dtype,
                                             device=weight.device))
        self.register_buffer("slot", torch.full((weight.shape[0],), -1, dtype=torch.long,
                                                device=weight.device), persistent=False)
        self._slot_cpu = torch.full((weight.shape[0],), -1, dtype=torch.long)
        self.tokens: list[int] = []  # the token of each filled row, in order

    @torch.no_grad()
    def admit(self, tokens: torch.Tensor) -> None:
        ids = torch.unique(tokens.cpu())
        new = ids[self._slot_cpu[ids] < 0]
        if not len(new):
            return
        start, stop = len(self.tokens), len(self.tokens) + len(new)
        if stop > self.capacity:
            raise RuntimeError(f"the captions use more than {self.capacity} distinct tokens; "
                               "raise calm.toy_clip.token_rows.CAPACITY")
        slots = torch.arange(start, stop)
        self._slot_cpu[new] = slots
        self.slot[new.to(self.slot.device)] = slots.to(self.slot.device)
        self.rows[start:stop] = self.table.weight[new.to(self.rows.device)]
        self.tokens += new.tolist()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.slot[tokens], self.rows)

    @torch.no_grad()
    def write_back(self) -> None:
        """Copies the trained rows into the table."""
        if self.tokens:
            index = torch.tensor(self.tokens, device=self.table.weight.device)
            self.table.weight[index] = self.rows[:len(self.tokens)].to(self.table.weight.dtype)


@contextlib.contextmanager
def used_token_rows(clip: nn.Module):
    """`clip.token_embedding` replaced by a `UsedTokenRows` (yielded) whose table is frozen;
    on exit the trained rows are written back and the table is the CLIP's again (trainable)."""
    table = clip.token_embedding
    rows = UsedTokenRows(table)
    table.weight.requires_grad_(False)
    clip.token_embedding = rows
    try:
        yield rows
    finally:
        rows.write_back()
        clip.token_embedding = table
        table.weight.requires_grad_(True)
