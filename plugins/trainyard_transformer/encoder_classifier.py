"""Sequence classification with a transformer encoder and [CLS]-style pooling (as BERT does):
a learned [CLS] vector is put before the source, every block lets it read the whole source, and
its final representation alone is classified.

    source (B, S) --embedding--> (B, S, D), [CLS] first --> (B, 1 + S, D)
                  --encoder blocks (padding masked)--> (B, 1 + S, D) --position 0--> (B, D) --linear--> (B, C)

It reads text.pairs tasks whose targets are one token, the class: `recall` (which of 8 letters
began a source of 50 distractors; the recurrent family's long-lag lesson) is the example. The
classes are the target vocabulary's tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import nn

from trainyard_transformer.layers import Embedding, Stack, TransformerParams


class EncoderClassifierParams(TransformerParams):
    pass


class EncoderClassifier(LightningModule):
    def __init__(self, params: EncoderClassifierParams, source_vocab_size: int, classes: int, pad_id: int,
                 source_tokens: list[str], class_tokens: list[str]):
        super().__init__()
        self.params = params
        self.pad_id, self.source_tokens, self.class_tokens = pad_id, source_tokens, class_tokens
        self.embedding = Embedding(params, source_vocab_size, pad_id)
        self.cls = nn.Parameter(torch.randn(params.d_model) * 0.02)
        self.encoder = Stack(params)
        self.head = nn.Linear(params.d_model, classes)
        self.example_input_array = {"source": torch.tensor([[4, 5, 6], [5, 4, 0]]),
                                    "source_lengths": torch.tensor([3, 2])}
        self.test_examples: list[dict] = []  # attention maps of the first four test sources

    def _encode(self, source: torch.Tensor, source_lengths: torch.Tensor, need_weights: bool = False):
        B, S = source.shape
        x = self.embedding(source, offset=1)  # (B, S, D): positions 1.., [CLS] is at 0
        x = torch.cat([self.cls.expand(B, 1, -1), x], dim=1)  # (B, 1 + S, D)
        real = torch.arange(1 + S, device=source.device) < 1 + source_lengths.to(source.device).unsqueeze(1)
        return self.encoder(x, key_mask=real, need_weights=need_weights)

    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C) from the [CLS] position."""
        encoded, _ = self._encode(source, source_lengths)
        return self.head(encoded[:, 0])

    def _step(self, batch, stage: str):
        logits = self(batch["source"], batch["source_lengths"])
        labels = batch["target"][:, 1]  # <bos> class <eos>
        smoothing = self.params.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        size = labels.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", batch_size=size, on_step=stage == "train",
                 on_epoch=stage != "train")
        if stage != "train":
            self.log(f"{stage}/acc", (logits.argmax(-1) == labels).float().mean(), batch_size=size, on_epoch=True)
        return loss, logits

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def on_test_epoch_start(self) -> None:
        self.test_examples = []

    def test_step(self, batch, batch_idx):
        _, logits = self._step(batch, "test")
        for row in range(min(4 - len(self.test_examples), len(batch["source_text"]))):
            length = int(batch["source_lengths"][row])
            _, attended = self._encode(batch["source"][row:row + 1, :length], batch["source_lengths"][row:row + 1],
                                       need_weights=True)
            self.test_examples.append({
                "tokens": ["[CLS]", *(self.source_tokens[i] for i in batch["source"][row, :length].tolist())],
                "weights": [w[0].float().cpu() for w in attended.self_weights],  # per block (h, 1 + S, 1 + S)
                "label": batch["target_text"][row], "predicted": self.class_tokens[int(logits[row].argmax())]})
