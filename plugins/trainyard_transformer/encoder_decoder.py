"""The transformer of Vaswani et al. (2017): an encoder of self-attention blocks reads the source,
a decoder of causal self-attention and cross-attention blocks writes the target.

    source (B, S) --embedding--> (B, S, D) --encoder blocks (padding masked)--> memory (B, S, D)
    target (B, T) --embedding--> (B, T, D) --decoder blocks (causal; cross-attention to the memory)
                                           --> (B, T, D) --head (tied to the target embedding)--> (B, T, V)

Training reads the whole target at once (teacher forcing, no loop over time), with label
smoothing. Decoding (greedy, or batched beam search with a length penalty, shared with the
sequence family: trainyard_seq.decoding) feeds one token at a time with a key-value cache: each
block keeps the keys and values of the tokens already written, and the cross-attention keys and
values of the memory are computed once per source. Evaluation, metrics and the test records are
the sequence family's (trainyard_seq.encoder_decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn

from trainyard_seq.encoder_decoder import DecodingParams, EncoderDecoderModel
from trainyard_transformer.layers import Embedding, KeysValues, Stack, TransformerParams


class EncoderDecoderParams(TransformerParams, DecodingParams):
    tie_weights: bool = Field(True, description="Share the target embedding and the output weights (Press & Wolf "
                                                "2017, as Vaswani et al. do).")


@dataclass
class TransformerMemory:
    """The encoder's output as the decoder reads it: each decoder block's cross-attention keys
    and values (B, h, S, d), and which source positions are real tokens (B, S)."""

    keys_values: list[KeysValues]
    mask: torch.Tensor


class TransformerEncoderDecoder(EncoderDecoderModel):
    def __init__(self, params: EncoderDecoderParams, source_vocab_size: int, target_vocab_size: int, pad_id: int,
                 bos_id: int, eos_id: int, source_tokens: list[str], target_tokens: list[str],
                 char_targets: bool = True):
        super().__init__(params, source_vocab_size, target_vocab_size, pad_id, bos_id, eos_id, source_tokens,
                         target_tokens, char_targets)
        self.source_embedding = Embedding(params, source_vocab_size, pad_id)
        self.target_embedding = Embedding(params, target_vocab_size, pad_id)
        self.encoder = Stack(params)
        self.decoder = Stack(params, cross=True)
        self.head = nn.Linear(params.d_model, target_vocab_size, bias=False)
        if params.tie_weights:
            self.head.weight = self.target_embedding.tokens.weight
        for name, weight in self.named_parameters():
            if weight.dim() > 1 and "tokens" not in name:
                nn.init.xavier_uniform_(weight)  # Vaswani et al.'s (and torch's nn.Transformer's) initialisation
        nn.init.normal_(self.source_embedding.tokens.weight, std=params.d_model ** -0.5)
        nn.init.normal_(self.target_embedding.tokens.weight, std=params.d_model ** -0.5)
        self.compiled_teacher_forced = torch.compile(self._teacher_forced) if params.compile else self._teacher_forced

    # --- the network ---------------------------------------------------------------------------
    def encode(self, source: torch.Tensor, source_lengths: torch.Tensor, need_weights: bool = False):
        """The memory the decoder reads and the decoder's initial state (an empty key-value cache)."""
        mask = torch.arange(source.shape[1], device=source.device) < source_lengths.to(source.device).unsqueeze(1)
        encoded, attended = self.encoder(self.source_embedding(source), key_mask=mask, need_weights=need_weights)
        memory = TransformerMemory(self.decoder.memory_keys_values(encoded), mask)  # (B, S, D) -> per block (k, v)
        return (memory, attended) if need_weights else (memory, None)

    def decode_step(self, previous: torch.Tensor, state: list[KeysValues] | None, memory: TransformerMemory):
        """One token per row (N,) after the cached ones: logits (N, V) and the extended cache.
        N may be B * K (beam search): the cross-attention then shares each source's memory."""
        offset = state[0][0].shape[2] if state else 0
        x = self.target_embedding(previous.unsqueeze(1), offset)  # (N, 1, D)
        x, attended = self.decoder(x, causal=True, caches=state, memory=memory.keys_values, memory_mask=memory.mask)
        return self.head(x[:, 0]), attended.caches, None

    def reorder_state(self, state: list[KeysValues] | None, rows: torch.Tensor):
        if state is None:
            return None
        return [(k[rows], v[rows]) for k, v in state]

    def _teacher_forced(self, source, source_lengths, target):
        memory, _ = self.encode(source, source_lengths)
        x = self.target_embedding(target[:, :-1])  # (B, T-1, D)
        x, _ = self.decoder(x, causal=True, memory=memory.keys_values, memory_mask=memory.mask)
        return self.head(x)  # (B, T-1, V)

    def teacher_forced(self, source, source_lengths, target):
        """Logits (B, T-1, V) of target[:, 1:] from target[:, :-1], every position at once."""
        return self.compiled_teacher_forced(source, source_lengths, target), None

    def training_step(self, batch, batch_idx):
        logits, _ = self.teacher_forced(batch["source"], batch["source_lengths"], batch["target"])
        loss = self._loss(logits, batch["target"], label_smoothing=self.params.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["source"].shape[0])
        return loss

    # --- reports -------------------------------------------------------------------------------
    @torch.no_grad()
    def attention_maps(self, source: torch.Tensor, source_lengths: torch.Tensor, tokens: torch.Tensor) -> dict:
        """Every block's and head's attention for one source (1, S) and its decoded tokens (1, L):
        encoder self-attention (layers, h, S, S), decoder self-attention (layers, h, L, L) and
        cross-attention (layers, h, L, S), the decoder reading <bos> and the tokens before each."""
        was_training = self.training
        self.eval()
        memory, encoded = self.encode(source, source_lengths, need_weights=True)
        previous = torch.cat([torch.full_like(tokens[:, :1], self.bos_id), tokens[:, :-1]], dim=1)
        _, decoded = self.decoder(self.target_embedding(previous), causal=True, memory=memory.keys_values,
                                  memory_mask=memory.mask, need_weights=True)
        self.train(was_training)
        return {"encoder": torch.cat(encoded.self_weights).float().cpu(),
                "decoder": torch.cat(decoded.self_weights).float().cpu(),
                "cross": torch.cat(decoded.cross_weights).float().cpu()}

    def test_attention_of(self, source, source_lengths, decoded, row, inputs, outputs):
        maps = self.attention_maps(source[row:row + 1, :inputs], source_lengths[row:row + 1],
                                   decoded.tokens[row:row + 1, :outputs])
        return {"encoder": maps["encoder"][:, :, :inputs, :inputs], "decoder": maps["decoder"][:, :, :outputs, :outputs],
                "cross": maps["cross"][:, :, :outputs, :inputs]}
