"""A recurrent language model: next-token prediction as classification over the vocabulary.

The course notes' recurrent network, in the shape of PyTorch's examples/word_language_model:
one class whose cell is a parameter (a vanilla tanh RNN, an LSTM or a GRU, all torch's cuDNN-backed
layers), an embedding in, a linear layer out (optionally tied to the embedding, Press & Wolf 2017),
trained with cross-entropy on the next token.

Truncated backpropagation through time: the data module (text.corpus) gives windows that
continue each other row by row, so the hidden state left by one batch is the starting state of
the next; it is detached, so gradients flow back at most one window (seq_len tokens).

Exploding and vanishing gradients are the lesson here: gradients are clipped by norm by default
(`clip`, as in the PyTorch example), unless the spec's trainer.gradient_clip_val says otherwise.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from pytorch_lightning import LightningModule

from trainyard import Params
from trainyard.media import log_text

from trainyard_seq.cells import FORGET_BIAS_HELP, recurrent_layer



class RNNLMParams(Params):
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Recurrent cell: rnn (tanh), lstm or gru.")
    embedding: int = Field(128, ge=1, description="Size of the token embeddings.")
    hidden: int = Field(256, ge=1, description="Size of the hidden state of each layer.")
    layers: int = Field(2, ge=1, description="Stacked recurrent layers.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings, between layers and on the output.")
    forget_bias: float = Field(1.0, description=FORGET_BIAS_HELP)
    tie_weights: bool = Field(False, description="Share the embedding and output weights (needs embedding == hidden).")
    clip: float | None = Field(0.25, gt=0, description="Clip the gradient norm at this value when the spec's "
                                                       "trainer.gradient_clip_val is not set (null: never).")
    sample_length: int = Field(120, ge=0, description="Tokens generated as a text sample at each validation (0: none).")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature of the generated samples.")
    top_k: int | None = Field(None, ge=1, description="Sample among the k most likely tokens only (null: all).")

    @model_validator(mode="after")
    def _tying_needs_equal_sizes(self) -> RNNLMParams:
        if self.tie_weights and self.embedding != self.hidden:
            raise ValueError(f"tie_weights needs embedding == hidden, got {self.embedding} and {self.hidden}")
        return self


class RNNLanguageModel(LightningModule):
    def __init__(self, params: RNNLMParams, vocab_size: int, tokens: list[str], tokenizer: str):
        super().__init__()
        self.params = params
        self.tokens, self.tokenizer = tokens, tokenizer
        self.embed = torch.nn.Embedding(vocab_size, params.embedding)
        self.rnn = recurrent_layer(params.cell, params.embedding, params.hidden, params.layers, params.dropout,
                                   params.forget_bias)
        self.drop = torch.nn.Dropout(params.dropout)
        self.head = torch.nn.Linear(params.hidden, vocab_size)
        if params.tie_weights:
            self.head.weight = self.embed.weight
        self.state = None  # the hidden state carried from one training window to the next
        self.example_input_array = torch.zeros(2, 8, dtype=torch.long)  # (B, T) token ids

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._logits(ids)[0]

    def _logits(self, ids: torch.Tensor, state=None):
        x = self.drop(self.embed(ids))  # (B, T) -> (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)

    def _loss(self, batch, state=None, reduction: str = "mean"):
        logits, state = self._logits(batch["ids"], state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1), reduction=reduction)
        return loss, state

    def on_train_epoch_start(self) -> None:
        self.state = None  # a new epoch starts the streams again

    def training_step(self, batch, batch_idx):
        loss, state = self._loss(batch, _detached(self.state, batch["ids"].shape[0]))
        self.state = state
        self.log("train/loss", loss, prog_bar=True)
        return loss

    # Evaluation reads a split as one stream (the state carried across windows) and reports the
    # loss per token over all of it: summed here, divided once at the end.
    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch, batch_idx):
        self._evaluate(batch)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")
        if not self.trainer.sanity_checking and self.params.sample_length:
            log_text(self, "samples", self.sample(self.params.sample_length))

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def test_step(self, batch, batch_idx):
        self._evaluate(batch)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _start_evaluation(self) -> None:
        self.eval_state, self.eval_loss, self.eval_tokens = None, 0.0, 0

    def _evaluate(self, batch) -> None:
        loss, self.eval_state = self._loss(batch, _detached(self.eval_state, batch["ids"].shape[0]), reduction="sum")
        self.eval_loss += float(loss)
        self.eval_tokens += batch["targets"].numel()

    def _log_evaluation(self, stage: str) -> None:
        loss = self.eval_loss / max(1, self.eval_tokens)  # nats per token
        metrics = {f"{stage}/loss": loss, f"{stage}/perplexity": math.exp(min(loss, 50.0))}
        if self.tokenizer == "char":
            metrics[f"{stage}/bpc"] = loss / math.log(2)
        self.log_dict(metrics, sync_dist=True)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        # The model's own default when the spec sets none: recurrent nets need it.
        value = gradient_clip_val if gradient_clip_val is not None else self.params.clip
        if value is not None:
            self.clip_gradients(optimizer, gradient_clip_val=value, gradient_clip_algorithm=gradient_clip_algorithm
                                or "norm")

    @torch.no_grad()
    def sample(self, length: int, prompt: list[int] | None = None, seed: int = 0) -> str:
        """Generate `length` tokens with the params' temperature and top-k, from `prompt` (default:
        a newline or the first ordinary token)."""
        was_training = self.training
        self.eval()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        ids = prompt or [self._start_token()]
        state, step_input, out = None, torch.tensor([ids], device=self.device), []
        for _ in range(length):
            logits, state = self.rnn(self.embed(step_input), state)
            logits = self.head(logits[:, -1]) / self.params.temperature  # (1, V)
            if self.params.top_k is not None:
                kth = torch.topk(logits, min(self.params.top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probabilities = torch.softmax(logits.float().cpu(), dim=-1)
            token = int(torch.multinomial(probabilities, 1, generator=generator))
            out.append(token)
            step_input = torch.tensor([[token]], device=self.device)
        self.train(was_training)
        separator = "" if self.tokenizer in ("char", "bpe") else " "
        return separator.join(self.tokens[t] for t in out if t >= 4)

    def _start_token(self) -> int:
        return self.tokens.index("\n") if "\n" in self.tokens else min(4, len(self.tokens) - 1)


def _detached(state, rows: int):
    """The carried state without its history (truncated BPTT); None when the batch shape changed."""
    if state is None:
        return None
    tensors = state if isinstance(state, tuple) else (state,)
    if tensors[0].shape[1] != rows:
        return None
    detached = tuple(t.detach() for t in tensors)
    return detached if isinstance(state, tuple) else detached[0]
