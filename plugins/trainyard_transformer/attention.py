"""Multi-head attention (Vaswani et al. 2017) on torch's scaled_dot_product_attention.

    head_i = softmax(Q_i K_i^T / sqrt(d_head) + mask) V_i,   MultiHead = concat(head_1..head_h) W_o

`F.scaled_dot_product_attention` picks the fused kernels (flash, memory-efficient) on a GPU and
an efficient math path on a CPU. The projections are laid out as nn.MultiheadAttention's (one
packed in_proj of [W_q; W_k; W_v], then out_proj), so the two load the same weights and give the
same outputs; a test holds them to it.

Masks are boolean, True where a query may look: a key-padding mask (B, S) with True at real
tokens, and/or causality (query i sees keys 0..i). With a key-value cache, the keys and values of
earlier positions are kept rather than recomputed: a decoder then feeds only its newest token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021, RoFormer): each pair of channels of the queries
    and keys is rotated by an angle proportional to the position, so q_i . k_j depends on i - j
    only. Nothing is added to the embeddings and there is no maximum length. The channel pairs
    are (c, c + d/2), as in GPT-NeoX and Llama."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head size (d_model / heads), got {head_dim}")
        self.register_buffer("inv_freq", base ** (-torch.arange(0, head_dim, 2).float() / head_dim), persistent=False)
        # cos and sin of every position so far, grown on demand: one module serves every block of a
        # stack, so a decoding step does not recompute them per block and per step.
        self._cos = self._sin = torch.empty(0)

    def _tables(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos.shape[0] < length or self._cos.device != device:
            size = max(length, 2 * self._cos.shape[0], 64)
            angles = torch.outer(torch.arange(size, device=device, dtype=torch.float32), self.inv_freq)  # (P, d/2)
            self._cos, self._sin = angles.cos(), angles.sin()
        return self._cos, self._sin

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """x: (B, h, T, d) at positions offset .. offset + T - 1."""
        T = x.shape[-2]
        cos, sin = self._tables(offset + T, x.device)
        cos, sin = cos[offset:offset + T].to(x.dtype), sin[offset:offset + T].to(x.dtype)  # (T, d/2)
        first, second = x.chunk(2, dim=-1)  # (B, h, T, d/2) each
        return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, rotary: Rotary | None = None):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.dropout = heads, d_model // heads, dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)  # [W_q; W_k; W_v], as nn.MultiheadAttention packs them
        self.out_proj = nn.Linear(d_model, d_model)
        self.rotary = rotary

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, T, D) -> (B, h, T, d)

    def memory_keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of an encoder's output (B, S, D), each (B, h, S, d): computed once
        per source, and read by every decoding step (cross-attention)."""
        D = memory.shape[-1]
        k, v = F.linear(memory, self.in_proj.weight[D:], self.in_proj.bias[D:]).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                memory: tuple[torch.Tensor, torch.Tensor] | None = None, need_weights: bool = False):
        """Attention of the queries x (B, T, D) over

        - x itself (self-attention), after the cached keys and values of earlier positions
          (`cache`, each (B, h, t, d): x is then at positions t .. t + T - 1), or
        - `memory`, an encoder's keys and values from memory_keys_values (cross-attention). Its
          batch may be a divisor B' of B: row b of x then reads memory row b // (B / B'), so that
          the K hypotheses of a beam share their source's memory rather than copy it.

        key_mask: (B or B', S) bool, True at real keys. causal: a query sees no later key.
        Returns the output (B, T, D), the attention weights (B, h, T, S) when need_weights (else
        None), and the self-attention's keys and values so far (the next step's cache).
        """
        B, T, D = x.shape
        if memory is None:
            q, k, v = (self._split(part) for part in self.in_proj(x).chunk(3, dim=-1))  # (B, h, T, d) each
            offset = 0 if cache is None else cache[0].shape[2]
            if self.rotary is not None:
                q, k = self.rotary(q, offset), self.rotary(k, offset)
            if cache is not None:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)  # (B, h, t + T, d)
            new_cache = (k, v)
        else:
            k, v = memory  # (B', h, S, d)
            per_source = B // k.shape[0]
            # The K queries of each source's hypotheses attend together: (B, T, D) -> (B', K*T, D).
            q = self._split(F.linear(x, self.in_proj.weight[:D], self.in_proj.bias[:D]).reshape(k.shape[0], -1, D))
            new_cache = None
        mask = self._mask(key_mask, causal, q.shape[2], k.shape[2], x.device)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            # The weights themselves, for reports (the fused kernels never form them).
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, h, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(torch.softmax(scores, dim=-1), dropout, self.training)
            out = weights @ v  # (B, h, T, d)
        else:
            weights = None
            plain_causal = causal and key_mask is None and cache is None and q.shape[2] > 1  # torch's own causal path
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if plain_causal else mask,
                                                 dropout_p=dropout, is_causal=plain_causal)
        out = out.transpose(1, 2).reshape(B, T, D)  # (B, h, T, d) -> (B, T, D), also undoing (B', K*T)
        if memory is not None and weights is not None:
            weights = weights.reshape(k.shape[0], self.heads, per_source, T, -1).transpose(1, 2).reshape(B, self.heads, T, -1)
        return self.out_proj(out), weights, new_cache

    @staticmethod
    def _mask(key_mask: torch.Tensor | None, causal: bool, queries: int, keys: int, device) -> torch.Tensor | None:
        """Where each query may look, broadcastable to (B, h, T, S); None: everywhere."""
        mask = None
        if key_mask is not None:
            mask = key_mask[:, None, None, :]  # (B, 1, 1, S)
        if causal and queries > 1:  # a single query (the newest position) sees every key anyway
            # The T queries are the last T positions of the S keys: query i sees keys 0 .. S - T + i.
            allowed = torch.ones(queries, keys, dtype=torch.bool, device=device).tril(diagonal=keys - queries)
            mask = allowed if mask is None else mask & allowed
        return mask
