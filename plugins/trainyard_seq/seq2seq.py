"""Sequence to sequence: an encoder reads the source, a decoder writes the target token by token.

The course notes' encoder-decoder (Sutskever, Vinyals & Le 2014) with attention, which weighs
the input elements that matter (Bahdanau, Cho & Bengio 2015; Luong, Pham & Manning 2015), in the
shape of PyTorch's seq2seq-with-attention tutorial:

    encoder   source ids --embedding--> RNN/LSTM/GRU (packed, optionally bidirectional) --> h_1 .. h_S
    bridge    the encoder's final states --linear--> the decoder's initial state s_0
    decoder   for i = 1, 2, ...:  y_{i-1} --embedding--> e_i
                                  a_ij = softmax_j(score(s_{i-1}, h_j))  (padding: a_ij = 0)
                                  c_i = sum_j a_ij h_j                   (the context)
                                  s_i = RNN([e_i; c_i], s_{i-1})
                                  p(y_i | y_<i, x) = softmax(W_o [s_i; c_i])

Training is next-token cross-entropy on the target, with teacher forcing: the decoder reads the
true previous token, or (with probability 1 - teacher_forcing) its own prediction, a ratio that
can fall linearly over the epochs (scheduled sampling, Bengio et al. 2015). Without attention
(`attention: none`) the decoder sees the source only through s_0, as in Sutskever et al.

The encoder is torch's cuDNN-backed nn.LSTM / nn.GRU over packed sequences; the decoder needs a
Python loop over time (each step's attention depends on the previous state), as does decoding:
greedy and batched beam search are in decoding.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from trainyard_seq.cells import FORGET_BIAS_HELP, recurrent_layer
from trainyard_seq.encoder_decoder import DecodingParams, EncoderDecoderModel


class Seq2SeqParams(DecodingParams):
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Recurrent cell of the encoder and the decoder: "
                                                                   "rnn (a vanilla tanh RNN), lstm or gru.")
    embedding: int = Field(64, ge=1, description="Size of the source and target token embeddings.")
    hidden: int = Field(128, ge=1, description="Size of the hidden state of each layer (encoder and decoder).")
    layers: int = Field(1, ge=1, description="Stacked recurrent layers, in the encoder and in the decoder.")
    bidirectional: bool = Field(True, description="Read the source in both directions; a linear bridge maps the "
                                                  "encoder's final states to the decoder's initial state.")
    attention: Literal["none", "additive", "dot", "general"] = Field(
        "additive", description="none (Sutskever et al. 2014), additive (Bahdanau et al. 2015), or Luong et al.'s "
                                "(2015) multiplicative dot or general scores.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on embeddings, between layers and before the output.")
    forget_bias: float = Field(1.0, description=FORGET_BIAS_HELP)
    teacher_forcing: float = Field(1.0, ge=0, le=1, description="Probability that the decoder reads the true previous "
                                                                "token while training (else its own prediction).")
    teacher_forcing_final: float | None = Field(
        None, ge=0, le=1, description="The teacher-forcing ratio at the last epoch: the ratio falls (or rises) "
                                      "linearly from teacher_forcing across trainer.max_epochs (null: constant).")


# --- attention ---------------------------------------------------------------------------------


@dataclass
class Memory:
    """What the decoder attends to: the encoder's outputs h_j (values), what the score compares
    the decoder state with (keys: h_j, or its projection, computed once per source rather than at
    every step), and which source positions are real tokens (mask). One per source sequence,
    even when beam search follows several hypotheses of it."""

    values: torch.Tensor  # (B, S, H)
    keys: torch.Tensor  # (B, S, H)
    mask: torch.Tensor  # (B, S) bool, True at real tokens


class Attention(nn.Module):
    """a_j = softmax_j(score(s, h_j)) over the real source positions; context c = sum_j a_j h_j.

    additive (Bahdanau et al. 2015):  score(s, h_j) = v^T tanh(W s + U h_j)
    dot      (Luong et al. 2015):     score(s, h_j) = s^T h_j
    general  (Luong et al. 2015):     score(s, h_j) = s^T W_a h_j

    Padding positions are set to -inf before the softmax, so their weight is exactly 0 and the
    weights of the real positions sum to 1.
    """

    def __init__(self, kind: Literal["additive", "dot", "general"], size: int):
        super().__init__()
        self.kind = kind
        if kind == "additive":
            self.W = nn.Linear(size, size, bias=False)  # on the decoder state s
            self.U = nn.Linear(size, size)  # on the encoder outputs h_j
            self.v = nn.Linear(size, 1, bias=False)
        elif kind == "general":
            self.W_a = nn.Linear(size, size, bias=False)
        self.score = {"additive": self.bahdanau_additive, "dot": self.luong_dot, "general": self.luong_general}[kind]

    def keys(self, values: torch.Tensor) -> torch.Tensor:
        """The part of the score that depends on h_j alone, computed once per source: U h_j
        (additive), W_a h_j (general), h_j itself (dot)."""
        if self.kind == "additive":
            return self.U(values)  # (B, S, H)
        if self.kind == "general":
            return self.W_a(values)  # (B, S, H)
        return values

    # Each score takes the queries of K hypotheses per source (K = 1 but in beam search) as
    # (B, K, H): the K hypotheses of a source share its keys, read once rather than K times.
    def bahdanau_additive(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # v^T tanh(W s + U h_j), U h_j being the keys
        hidden = (self.W(query).unsqueeze(2) + keys.unsqueeze(1)).tanh_()  # (B, K, 1, H) + (B, 1, S, H), in place:
        # the sum is a fresh (B, K, S, H) tensor, the largest of a decoding step; no second one
        return self.v(hidden).squeeze(-1)  # (B, K, S)

    def luong_dot(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # s^T h_j for every j at once
        return torch.bmm(query, keys.transpose(1, 2))  # (B, K, H) @ (B, H, S) -> (B, K, S)

    def luong_general(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # s^T W_a h_j = s^T (W_a h_j), W_a h_j being the keys
        return torch.bmm(query, keys.transpose(1, 2))  # (B, K, S)

    def forward(self, query: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """query: the decoder states s (B*K, H), K hypotheses per source, those of source b in
        rows b*K .. b*K + K-1. Returns the contexts c (B*K, H) and the weights a (B*K, S)."""
        B, S, H = memory.values.shape
        scores = self.score(query.view(B, -1, H), memory.keys)  # (B, K, S)
        scores = scores.masked_fill(~memory.mask.unsqueeze(1), float("-inf"))  # exp(-inf) = 0: padding gets no weight
        weights = torch.softmax(scores, dim=-1)  # (B, K, S), each row sums to 1
        context = torch.bmm(weights, memory.values)  # (B, K, S) @ (B, S, H) -> (B, K, H)
        return context.view(-1, H), weights.view(-1, S)


# --- encoder and decoder -----------------------------------------------------------------------


class Encoder(nn.Module):
    """Source ids -> the outputs h_1..h_S (the memory) and the decoder's initial state (the bridge)."""

    def __init__(self, params: Seq2SeqParams, vocab_size: int, pad_id: int):
        super().__init__()
        p = params
        directions = 2 if p.bidirectional else 1
        self.cell, self.layers, self.directions = p.cell, p.layers, directions
        self.embed = nn.Embedding(vocab_size, p.embedding, padding_idx=pad_id)
        self.rnn = recurrent_layer(p.cell, p.embedding, p.hidden, p.layers, p.dropout, p.forget_bias, p.bidirectional)
        self.drop = nn.Dropout(p.dropout)
        # Bahdanau's annotation h_j = [forward h_j; backward h_j], mapped back to H so that every
        # score (dot included) compares vectors of the decoder's size.
        self.merge = nn.Linear(directions * p.hidden, p.hidden) if p.bidirectional else nn.Identity()
        # The bridge: each layer's final states (both directions) -> the decoder's initial state.
        self.bridge_h = nn.Linear(directions * p.hidden, p.hidden)
        self.bridge_c = nn.Linear(directions * p.hidden, p.hidden) if p.cell == "lstm" else None

    def forward(self, source: torch.Tensor, lengths: torch.Tensor):
        B, S = source.shape
        x = self.drop(self.embed(source))  # (B, S) -> (B, S, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, final = self.rnn(packed)  # the padding is never read
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=S)  # (B, S, D*H)
        values = self.merge(outputs)  # (B, S, H)
        mask = torch.arange(S, device=source.device).unsqueeze(0) < lengths.to(source.device).unsqueeze(1)  # (B, S)
        if self.cell == "lstm":
            h, c = final
            state = (torch.tanh(self.bridge_h(self._by_layer(h))), self.bridge_c(self._by_layer(c)))
        else:
            state = torch.tanh(self.bridge_h(self._by_layer(final)))  # (layers, B, H)
        return values, mask, state

    def _by_layer(self, final: torch.Tensor) -> torch.Tensor:
        """(layers * D, B, H) -> (layers, B, D * H): each layer's directions side by side."""
        _, B, H = final.shape
        return final.view(self.layers, self.directions, B, H).permute(0, 2, 1, 3).reshape(self.layers, B, -1)


class Decoder(nn.Module):
    """One step: the previous token and state -> next-token logits, the new state, the attention."""

    def __init__(self, params: Seq2SeqParams, vocab_size: int, pad_id: int):
        super().__init__()
        p = params
        self.embed = nn.Embedding(vocab_size, p.embedding, padding_idx=pad_id)
        self.attention = Attention(p.attention, p.hidden) if p.attention != "none" else None
        context = p.hidden if self.attention is not None else 0
        self.rnn = recurrent_layer(p.cell, p.embedding + context, p.hidden, p.layers, p.dropout, p.forget_bias)
        self.drop = nn.Dropout(p.dropout)
        self.out = nn.Linear(p.hidden + context, vocab_size)

    def step(self, previous: torch.Tensor, state, memory: Memory):
        """previous: token ids (B,); state: (layers, B, H), a pair of them for an LSTM."""
        e = self.drop(self.embed(previous))  # (B, E)
        if self.attention is None:
            inputs, c, weights = e, None, None
        else:
            s = (state[0] if isinstance(state, tuple) else state)[-1]  # s_{i-1}: the top layer's state (B, H)
            c, weights = self.attention(s, memory)  # (B, H), (B, S)
            inputs = torch.cat([e, c], dim=-1)  # (B, E + H)
        output, state = self.rnn(inputs.unsqueeze(1), state)  # (B, 1, E[+H]) -> (B, 1, H)
        s = output.squeeze(1)  # s_i (B, H)
        features = s if self.attention is None else torch.cat([s, c], dim=-1)  # (B, H[+H])
        return self.out(self.drop(features)), state, weights  # (B, V), state, (B, S) or None


# --- the model -----------------------------------------------------------------------------------


class Seq2Seq(EncoderDecoderModel):
    """Encoder and decoder; teacher-forced training with a ratio that may follow a schedule.
    Decoding and evaluation are the shared EncoderDecoderModel's."""

    def __init__(self, params: Seq2SeqParams, source_vocab_size: int, target_vocab_size: int, pad_id: int,
                 bos_id: int, eos_id: int, source_tokens: list[str], target_tokens: list[str],
                 char_targets: bool = True):
        super().__init__(params, source_vocab_size, target_vocab_size, pad_id, bos_id, eos_id, source_tokens,
                         target_tokens, char_targets)
        self.encoder = Encoder(params, source_vocab_size, pad_id)
        self.decoder = Decoder(params, target_vocab_size, pad_id)

    def encode(self, source: torch.Tensor, source_lengths: torch.Tensor):
        """The memory the decoder attends to, and the decoder's initial state."""
        values, mask, state = self.encoder(source, source_lengths)
        keys = self.decoder.attention.keys(values) if self.decoder.attention is not None else values
        return Memory(values, keys, mask), state

    def decode_step(self, previous: torch.Tensor, state, memory: Memory):
        return self.decoder.step(previous, state, memory)

    def reorder_state(self, state, rows: torch.Tensor):
        """The decoder state of these batch rows: (layers, B, H), or an LSTM's pair of them."""
        if isinstance(state, tuple):
            return tuple(s[:, rows] for s in state)
        return state[:, rows]

    def teacher_forced(self, source, source_lengths, target, ratio: float = 1.0):
        """Logits (B, T-1, V) and attention (B, T-1, S) (None without attention), reading the true
        previous token with probability `ratio`, else the decoder's own last prediction."""
        memory, state = self.encode(source, source_lengths)
        previous = target[:, 0]  # <bos> (B,)
        logits, weights = [], []
        for i in range(1, target.shape[1]):
            step_logits, state, step_weights = self.decoder.step(previous, state, memory)
            logits.append(step_logits)
            weights.append(step_weights)
            previous = target[:, i]
            if ratio < 1.0:
                truth = torch.rand(previous.shape, device=previous.device) < ratio  # (B,)
                previous = torch.where(truth, previous, step_logits.detach().argmax(-1))
        attention = torch.stack(weights, 1) if self.decoder.attention is not None else None
        return torch.stack(logits, 1), attention  # (B, T-1, V), (B, T-1, S)

    def teacher_forcing_ratio(self) -> float:
        """teacher_forcing, or on a straight line to teacher_forcing_final at the last epoch."""
        p = self.params
        trainer = self._trainer
        if p.teacher_forcing_final is None or trainer is None:
            return p.teacher_forcing
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            progress = self.current_epoch / (trainer.max_epochs - 1) if trainer.max_epochs > 1 else 1.0
        elif trainer.max_steps is not None and trainer.max_steps > 0:  # trained for max_steps only
            progress = self.global_step / max(1, trainer.max_steps - 1)
        else:
            return p.teacher_forcing
        return p.teacher_forcing + (p.teacher_forcing_final - p.teacher_forcing) * min(1.0, progress)

    def training_step(self, batch, batch_idx):
        ratio = self.teacher_forcing_ratio()
        logits, _ = self.teacher_forced(batch["source"], batch["source_lengths"], batch["target"], ratio)
        loss = self._loss(logits, batch["target"])
        size = batch["source"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/teacher_forcing", ratio, on_step=False, on_epoch=True, batch_size=size)
        return loss
