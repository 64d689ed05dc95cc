"""A GPT-style decoder-only language model (Radford et al. 2018), in the shape of nanoGPT's
model.py: token (and position) embeddings, a stack of causal self-attention blocks, a final
LayerNorm and a linear head tied to the token embedding.

    ids (B, T) --embedding--> (B, T, D) --blocks (causal)--> (B, T, D) --head--> logits (B, T, V)

It trains on text.corpus windows with next-token cross-entropy, as seq.rnn_lm does, and shares
its evaluation and sampling (trainyard_seq.language_model.LanguageModel). Unlike the recurrent
model it carries nothing from one window to the next: each window is its own context. Sampling
uses a key-value cache, so each new token costs one position rather than the whole prefix.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from trainyard_seq.language_model import GenerationParams, LanguageModel
from trainyard_transformer.layers import Embedding, KeysValues, Stack, TransformerParams


class DecoderLMParams(TransformerParams, GenerationParams):
    tie_weights: bool = Field(True, description="Share the token embedding and the output weights (Press & Wolf "
                                                "2017), as GPT-2 does.")
    clip: float | None = Field(1.0, gt=0, description="Clip the gradient norm at this value when the spec's "
                                                      "trainer.gradient_clip_val is not set (null: never).")


class DecoderLM(LanguageModel):
    carries_state = False

    def __init__(self, params: DecoderLMParams, vocab_size: int, tokens: list[str], tokenizer: str):
        super().__init__(params, tokens, tokenizer)
        self.embedding = Embedding(params, vocab_size)
        self.stack = Stack(params)
        self.head = nn.Linear(params.d_model, vocab_size, bias=False)
        if params.tie_weights:
            self.head.weight = self.embedding.tokens.weight
        self.apply(_gpt_init)
        # Training reads whole windows, always alike: what torch.compile can specialise. Sampling
        # with its growing cache stays eager rather than recompiling at every length.
        self.compiled = torch.compile(self._network) if params.compile else self._network

    def _network(self, ids: torch.Tensor, caches: list[KeysValues] | None = None):
        offset = caches[0][0].shape[2] if caches else 0  # positions already in the cache
        x = self.embedding(ids, offset)  # (B, T) -> (B, T, D)
        x, attended = self.stack(x, causal=True, caches=caches)
        return self.head(x), attended.caches  # (B, T, V)

    def _logits(self, ids: torch.Tensor, state: list[KeysValues] | None = None):
        """Logits (B, T, V) of ids read after the cached keys and values `state`, and the cache
        extended by them."""
        return self.compiled(ids) if state is None else self._network(ids, state)

    @torch.no_grad()
    def attention_maps(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Each block's self-attention weights (B, h, T, T) over ids (B, T)."""
        was_training = self.training
        self.eval()
        _, attended = self.stack(self.embedding(ids), causal=True, need_weights=True)
        self.train(was_training)
        return attended.self_weights


def _gpt_init(module: nn.Module) -> None:
    """GPT-2's initialisation: N(0, 0.02) weights, zero biases (torch's defaults suit deep stacks less)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
