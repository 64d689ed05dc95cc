"""The transformer's building blocks, shared by the family's three models: the params every
transformer has, token embeddings with positions, and a stack of layers (blocks).

A block is self-attention, optionally cross-attention over an encoder's output, and a position-
wise feed-forward network, each wrapped in a residual connection with layer normalisation:

    post-norm (Vaswani et al. 2017):    x = LayerNorm(x + Dropout(sublayer(x)))
    pre-norm  (GPT-2, Xiong et al. 2020): x = x + Dropout(sublayer(LayerNorm(x)))   (+ a final LayerNorm)

Pre-norm trains deep stacks without a careful warm-up; post-norm is the original.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from trainyard import Params

from trainyard_transformer.attention import MultiHeadAttention, Rotary

KeysValues = tuple[torch.Tensor, torch.Tensor]  # (B, h, t, d) each


class TransformerParams(Params):
    d_model: int = Field(128, ge=2, description="Width of every token's representation.")
    heads: int = Field(4, ge=1, description="Attention heads; d_model must be divisible by it.")
    layers: int = Field(2, ge=1, description="Blocks in the stack (each of the encoder and the decoder).")
    feed_forward: int | None = Field(None, ge=1, description="Hidden size of the feed-forward networks "
                                                             "(null: 4 * d_model).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on embeddings, attention weights and residuals.")
    positions: Literal["sinusoidal", "learned", "rotary"] = Field(
        "sinusoidal", description="Position information: sinusoidal (added, Vaswani et al. 2017), learned (an "
                                  "embedding per position, up to max_positions) or rotary (RoPE, Su et al. 2021: "
                                  "queries and keys rotated by position).")
    max_positions: int = Field(512, ge=1, description="learned positions: the longest sequence the model can read.")
    norm: Literal["pre", "post"] = Field("pre", description="Layer normalisation before each sublayer (GPT-2) or "
                                                            "after its residual sum (the original transformer).")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Share of the target probability spread over the "
                                                                "vocabulary in the training loss (0.1 in Vaswani et al.).")
    compile: bool = Field(False, description="Compile the network with torch.compile (measured in "
                                             "benchmarks/bench_transformer.py: it does not pay off on CPU here).")

    @model_validator(mode="after")
    def _heads_divide_d_model(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by heads {self.heads}")
        if self.positions == "rotary" and (self.d_model // self.heads) % 2:
            raise ValueError(f"rotary positions need an even head size, got d_model / heads = "
                             f"{self.d_model // self.heads}")
        return self

    def check_length(self, length: int, what: str) -> None:
        """A ValueError (exit 2 at validate) when learned positions cannot represent `length` tokens."""
        if self.positions == "learned" and length > self.max_positions:
            raise ValueError(f"{what} has {length} tokens, more than max_positions {self.max_positions} of learned "
                             "positions (raise max_positions, or use sinusoidal or rotary positions)")


class Embedding(nn.Module):
    """Token ids (B, T) -> (B, T, D): token embeddings scaled by sqrt(D), plus sinusoidal or
    learned positions (rotary positions are applied inside attention instead)."""

    def __init__(self, p: TransformerParams, vocab_size: int, pad_id: int | None = None):
        super().__init__()
        self.d_model, self.kind, self.max_positions = p.d_model, p.positions, p.max_positions
        self.tokens = nn.Embedding(vocab_size, p.d_model, padding_idx=pad_id)
        self.learned = nn.Embedding(p.max_positions, p.d_model) if p.positions == "learned" else None
        self.drop = nn.Dropout(p.dropout)

    def forward(self, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = ids.shape[1]
        x = self.tokens(ids) * math.sqrt(self.d_model)  # (B, T, D)
        positions = torch.arange(offset, offset + T, device=ids.device)
        if self.kind == "learned":
            if offset + T > self.max_positions:
                raise ValueError(f"position {offset + T - 1} is beyond max_positions {self.max_positions}")
            x = x + self.learned(positions)
        elif self.kind == "sinusoidal":
            x = x + sinusoid(positions, self.d_model).to(x.dtype)
        return self.drop(x)


def sinusoid(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/D)), PE(pos, 2i+1) = cos(...): (T, D), for any position."""
    rates = torch.exp(torch.arange(0, d_model, 2, device=positions.device) * (-math.log(10000.0) / d_model))
    angles = positions.float().unsqueeze(1) * rates  # (T, D/2)
    table = torch.zeros(len(positions), d_model, device=positions.device)
    table[:, 0::2], table[:, 1::2] = angles.sin(), angles.cos()[:, :d_model // 2]
    return table


@dataclass
class Attended:
    """What a stack returns besides its output: each block's self-attention keys and values
    (the next step's cache) and, when asked, each block's attention weights (B, h, T, S)."""

    caches: list[KeysValues]
    self_weights: list[torch.Tensor | None]
    cross_weights: list[torch.Tensor | None]


class Block(nn.Module):
    def __init__(self, p: TransformerParams, cross: bool, rotary: Rotary | None):
        super().__init__()
        self.pre_norm = p.norm == "pre"
        self.attention = MultiHeadAttention(p.d_model, p.heads, p.dropout, rotary)
        self.cross_attention = MultiHeadAttention(p.d_model, p.heads, p.dropout) if cross else None
        hidden = p.feed_forward or 4 * p.d_model
        self.feed_forward = nn.Sequential(nn.Linear(p.d_model, hidden), nn.GELU(), nn.Dropout(p.dropout),
                                          nn.Linear(hidden, p.d_model))
        self.norms = nn.ModuleList(nn.LayerNorm(p.d_model) for _ in range(3 if cross else 2))
        self.drop = nn.Dropout(p.dropout)

    def _residual(self, i: int, x: torch.Tensor, sublayer) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop(sublayer(self.norms[i](x)))
        return self.norms[i](x + self.drop(sublayer(x)))

    def forward(self, x, key_mask=None, causal=False, cache=None, memory=None, memory_mask=None,
                need_weights=False):
        found = {}

        def self_attention(h):
            out, found["self"], found["cache"] = self.attention(h, key_mask, causal, cache, need_weights=need_weights)
            return out

        def cross_attention(h):
            out, found["cross"], _ = self.cross_attention(h, memory_mask, memory=memory, need_weights=need_weights)
            return out

        x = self._residual(0, x, self_attention)
        if self.cross_attention is not None:
            x = self._residual(1, x, cross_attention)
        x = self._residual(len(self.norms) - 1, x, self.feed_forward)
        return x, found["cache"], found["self"], found.get("cross")


class Stack(nn.Module):
    """`layers` blocks, and a final LayerNorm under pre-norm. An encoder's stack has no cross-
    attention; a decoder's reads its encoder's output through `memory` (one (k, v) per block)."""

    def __init__(self, p: TransformerParams, cross: bool = False):
        super().__init__()
        rotary = Rotary(p.d_model // p.heads) if p.positions == "rotary" else None
        self.blocks = nn.ModuleList(Block(p, cross, rotary) for _ in range(p.layers))
        self.final_norm = nn.LayerNorm(p.d_model) if p.norm == "pre" else nn.Identity()

    def memory_keys_values(self, encoded: torch.Tensor) -> list[KeysValues]:
        """Each block's cross-attention keys and values of an encoder output (B, S, D)."""
        return [block.cross_attention.memory_keys_values(encoded) for block in self.blocks]

    def forward(self, x: torch.Tensor, key_mask=None, causal=False, caches: list[KeysValues] | None = None,
                memory: list[KeysValues] | None = None, memory_mask=None, need_weights=False):
        attended = Attended([], [], [])
        for i, block in enumerate(self.blocks):
            x, cache, self_weights, cross_weights = block(
                x, key_mask, causal, caches[i] if caches else None, memory[i] if memory else None, memory_mask,
                need_weights)
            attended.caches.append(cache)
            attended.self_weights.append(self_weights)
            attended.cross_weights.append(cross_weights)
        return self.final_norm(x), attended
