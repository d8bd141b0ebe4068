"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder of a user's item sequence.

The layout follows the authors' PyTorch port (pmixer/SASRec.pytorch, which the paper's code
page points to): item embeddings scaled by sqrt(d) plus learned positions, dropout, then blocks
of [LayerNorm -> causal attention, residual onto the normed input] and [LayerNorm -> point-wise
feed-forward with dropout, residual], padding positions zeroed after each block, and a last
LayerNorm. Output scores are dot products with the *same* item table (tied input/output
embeddings), so an item's row is both what the encoder reads and the softmax weight it is
scored with. We train it with full-softmax cross-entropy over all items (the EISAM brief; the
original used one sampled negative with BCE).

Item ids are shifted by one: row 0 of the table is padding (sequences are left-padded with 0),
row ``j + 1`` is item ``j``; :meth:`SASRec.item_table` is the ``[num_items, d]`` view of the
real items.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PointWiseFeedForward(nn.Module):
    """Two position-wise linear maps with ReLU and dropout, plus the residual (pmixer's block)."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.inner = nn.Linear(dim, dim)
        self.outer = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.dropout(self.outer(self.dropout(torch.relu(self.inner(x)))))


class SASRec(nn.Module):
    """Causal transformer over left-padded item sequences.

    Parameters
    ----------
    num_items : int
        Catalogue size (the table has ``num_items + 1`` rows, row 0 = padding).
    dim : int (default: 64)
        Embedding and hidden size.
    blocks : int (default: 2)
        Self-attention blocks.
    heads : int (default: 1)
        Attention heads per block (``dim`` must be divisible by it).
    max_len : int (default: 50)
        Longest input sequence (learned positions).
    dropout : float (default: 0.2)
        Dropout on the embeddings, the attention weights and the feed-forward layers.
    """

    def __init__(self, num_items: int, dim: int = 64, blocks: int = 2, heads: int = 1,
                 max_len: int = 50, dropout: float = 0.2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim = {dim} is not divisible by heads = {heads}")
        self.dim, self.max_len = dim, max_len
        self.item = nn.Embedding(num_items + 1, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        self.dropout = nn.Dropout(dropout)
        self.attention_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(blocks))
        self.attentions = nn.ModuleList(nn.MultiheadAttention(dim, heads, dropout=dropout,
                                                              batch_first=True)
                                        for _ in range(blocks))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(dim, eps=1e-8) for _ in range(blocks))
        self.ffns = nn.ModuleList(PointWiseFeedForward(dim, dropout) for _ in range(blocks))
        self.last_norm = nn.LayerNorm(dim, eps=1e-8)
        # pmixer: Xavier-normal on every matrix; the padding row is masked out of every sequence.
        for name, param in self.named_parameters():
            if param.dim() > 1 and "norm" not in name:
                nn.init.xavier_normal_(param)
        causal = torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def item_table(self) -> torch.Tensor:
        """Output (and input) rows of the real items: ``[num_items, dim]``."""
        return self.item.weight[1:]

    def hidden(self, sequences: torch.Tensor) -> torch.Tensor:
        """Hidden state after every position: ``[batch, length, dim]`` for ``[batch, length]``
        left-padded item rows (item id + 1; 0 = padding), ``length <= max_len``."""
        length = sequences.shape[1]
        keep = (sequences != 0).unsqueeze(-1)
        x = self.item(sequences) * math.sqrt(self.dim)
        # Positions count back from the newest item (always max_len - 1), as in pmixer's
        # full-length left-padded inputs, whatever the batch's length.
        x = self.dropout(x + self.position.weight[self.max_len - length:]) * keep
        mask = self.causal[:length, :length]
        for norm, attention, ffn_norm, ffn in zip(self.attention_norms, self.attentions,
                                                  self.ffn_norms, self.ffns):
            query = norm(x)
            attended, _ = attention(query, x, x, attn_mask=mask, need_weights=False)
            x = ffn(ffn_norm(query + attended)) * keep
        return self.last_norm(x)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        """Scores of every item after every position: ``[batch, length, num_items]``."""
        return self.hidden(sequences) @ self.item_table().T
