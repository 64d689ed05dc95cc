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

What does not depend on the network (the loss, evaluation over a split, bits per character,
sampling) is in `LanguageModel`, which the transformer family's decoder-only model shares.
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


class GenerationParams(Params):
    """How a language model's text samples are drawn (every next-token model of every family)."""

    sample_length: int = Field(120, ge=0, description="Tokens generated as a text sample at each validation (0: none).")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature of the generated samples.")
    top_k: int | None = Field(None, ge=1, description="Sample among the k most likely tokens only (null: all).")


class RNNLMParams(GenerationParams):
    cell: Literal["rnn", "lstm", "gru"] = Field("lstm", description="Recurrent cell: rnn (tanh), lstm or gru.")
    embedding: int = Field(128, ge=1, description="Size of the token embeddings.")
    hidden: int = Field(256, ge=1, description="Size of the hidden state of each layer.")
    layers: int = Field(2, ge=1, description="Stacked recurrent layers.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings, between layers and on the output.")
    forget_bias: float = Field(1.0, description=FORGET_BIAS_HELP)
    tie_weights: bool = Field(False, description="Share the embedding and output weights (needs embedding == hidden).")
    clip: float | None = Field(0.25, gt=0, description="Clip the gradient norm at this value when the spec's "
                                                       "trainer.gradient_clip_val is not set (null: never).")

    @model_validator(mode="after")
    def _tying_needs_equal_sizes(self) -> RNNLMParams:
        if self.tie_weights and self.embedding != self.hidden:
            raise ValueError(f"tie_weights needs embedding == hidden, got {self.embedding} and {self.hidden}")
        return self


class LanguageModel(LightningModule):
    """What every next-token model does on text.corpus, whatever its network: the loss, its
    evaluation over a whole split, bits per character, samples at each validation, and gradient
    clipping by default. A subclass builds the network and gives `_logits(ids, state)`: the
    logits (B, T, V) of ids (B, T) read after `state` (what the network carries from earlier
    tokens: a recurrent state, a key-value cache, or None), and the state after them.

    carries_state: whether training and evaluation carry the state from one window to the next
    (truncated BPTT, for recurrent networks); sampling always carries it from token to token.
    """

    carries_state = True

    def __init__(self, params, tokens: list[str], tokenizer: str):
        super().__init__()
        self.params = params
        self.tokens, self.tokenizer = tokens, tokenizer
        self.state = None  # the state carried from one training window to the next
        self.example_input_array = torch.zeros(2, 8, dtype=torch.long)  # (B, T) token ids

    def _logits(self, ids: torch.Tensor, state=None):
        raise NotImplementedError

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self._logits(ids)[0]

    def _loss(self, batch, state=None, reduction: str = "mean"):
        logits, state = self._logits(batch["ids"], state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1), reduction=reduction,
                               label_smoothing=getattr(self.params, "label_smoothing", 0.0) if self.training else 0.0)
        return loss, (state if self.carries_state else None)

    def on_train_epoch_start(self) -> None:
        self.state = None  # a new epoch starts the streams again

    def training_step(self, batch, batch_idx):
        loss, self.state = self._loss(batch, _detached(self.state, batch["ids"].shape[0]))
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
        a newline or the first ordinary token), feeding each new token after the state the
        earlier ones left (a recurrent state, or a key-value cache)."""
        ids = self.generate(prompt or [self._start_token()], length, seed)
        separator = "" if self.tokenizer in ("char", "bpe") else " "
        return separator.join(self.tokens[t] for t in ids if t >= 4)

    @torch.inference_mode()  # no autograd bookkeeping at all: a fifth of a small model's cached step (docs/transformer.md)
    def generate(self, prompt: list[int], length: int, seed: int = 0) -> list[int]:
        """`length` sampled token ids after `prompt`."""
        was_training = self.training
        self.eval()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        state, step_input, out = None, torch.tensor([prompt], device=self.device), []
        for _ in range(length):
            logits, state = self._logits(step_input, state)
            token = sample_token(logits[:, -1], self.params.temperature, self.params.top_k, generator)
            out.append(token)
            step_input = torch.tensor([[token]], device=self.device)
        self.train(was_training)
        return out

    def _start_token(self) -> int:
        return self.tokens.index("\n") if "\n" in self.tokens else min(4, len(self.tokens) - 1)


def sample_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> int:
    """One token drawn from the logits (1, V) at this temperature, among the top k if given."""
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probabilities = torch.softmax(logits.float().cpu(), dim=-1)
    return int(torch.multinomial(probabilities, 1, generator=generator))


class RNNLanguageModel(LanguageModel):
    def __init__(self, params: RNNLMParams, vocab_size: int, tokens: list[str], tokenizer: str):
        super().__init__(params, tokens, tokenizer)
        self.embed = torch.nn.Embedding(vocab_size, params.embedding)
        self.rnn = recurrent_layer(params.cell, params.embedding, params.hidden, params.layers, params.dropout,
                                   params.forget_bias)
        self.drop = torch.nn.Dropout(params.dropout)
        self.head = torch.nn.Linear(params.hidden, vocab_size)
        if params.tie_weights:
            self.head.weight = self.embed.weight

    def _logits(self, ids: torch.Tensor, state=None):
        x = self.drop(self.embed(ids))  # (B, T) -> (B, T, E)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.drop(out)), state  # (B, T, V)


def _detached(state, rows: int):
    """The carried state without its history (truncated BPTT); None when the batch shape changed."""
    if state is None:
        return None
    tensors = state if isinstance(state, tuple) else (state,)
    if tensors[0].shape[1] != rows:
        return None
    detached = tuple(t.detach() for t in tensors)
    return detached if isinstance(state, tuple) else detached[0]
