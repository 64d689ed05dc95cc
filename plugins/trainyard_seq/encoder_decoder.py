"""What every encoder-decoder does with text.pairs, whatever its network (recurrent here, a
transformer in the transformer family): decoding, evaluation and the test records.

A subclass builds the network and gives:

    encode(source, source_lengths)          -> (memory, state): what the decoder reads of the
                                               source, and the decoder's initial state
    decode_step(previous, state, memory)    -> (logits (N, V), state, attention (N, S) or None):
                                               one step from the previous tokens (N,)
    reorder_state(state, rows)              -> the state of these rows (beam search)
    teacher_forced(source, source_lengths, target)
                                            -> (logits (B, T-1, V), attention): every step at once
    test_attention_of(...)                  -> what the reports draw for one test example

Evaluation is summed over a whole split and logged once at its end: the loss and token accuracy
under teacher forcing, and, on decoded outputs (greedy in validation, the beam in testing),
exact match, BLEU, and the character error rate of character targets, or the phoneme and word
error rates of word targets (G2P). A word with several pronunciations is right when the output
is any of them, and its edits are counted against the closest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from pytorch_lightning import LightningModule

from trainyard import Params
from trainyard.media import log_text

from trainyard_seq import decoding

SPECIAL_TOKENS = 4  # <pad> <unk> <bos> <eos>: the text plugin's tokenizers put them first


class DecodingParams(Params):
    beam_width: int = Field(1, ge=1, description="Hypotheses kept by beam search at test time (1: greedy decoding).")
    length_penalty: float = Field(0.0, ge=0, description="alpha of GNMT's length penalty ((5 + length) / 6)^alpha "
                                                         "that beam search divides log-probabilities by (0: none).")
    max_decode_length: int = Field(60, ge=1, description="Most tokens a decoded output may have (EOS included).")

    def check_targets_fit(self, longest_target: int) -> None:
        """A ValueError (exit 2 at validate) when the data's longest target, <eos> included, is
        longer than any output the model can write: it would be scored on what it cannot produce."""
        if longest_target > self.max_decode_length:
            raise ValueError(f"the data's longest target has {longest_target} tokens (with <eos>), more than "
                             f"max_decode_length {self.max_decode_length}")


class EncoderDecoderModel(LightningModule):
    def __init__(self, params: DecodingParams, source_vocab_size: int, target_vocab_size: int, pad_id: int,
                 bos_id: int, eos_id: int, source_tokens: list[str], target_tokens: list[str],
                 char_targets: bool = True):
        super().__init__()
        self.params = params
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.source_tokens, self.target_tokens = source_tokens, target_tokens
        # Character targets (generated tasks) are compared by characters, word targets (g2p:
        # phonemes separated by spaces) by words.
        self.char_targets = char_targets
        # Keyword arguments of forward, for the kit and Lightning's summary: two sources of 5 and 3 tokens.
        source = torch.arange(10).view(2, 5) % max(1, source_vocab_size - SPECIAL_TOKENS) + SPECIAL_TOKENS  # (B, S)
        source[1, 3:] = pad_id
        a, b = (SPECIAL_TOKENS + i % max(1, target_vocab_size - SPECIAL_TOKENS) for i in range(2))
        target = torch.tensor([[bos_id, a, b, eos_id], [bos_id, b, eos_id, pad_id]])  # (B, T)
        self.example_input_array = {"source": source, "source_lengths": torch.tensor([5, 3]), "target": target}
        self.val_example: tuple[str, str, str] | None = None  # logged as text at each validation
        self.test_records: list[dict] = []  # the reports' material: every test example, decoded
        self.test_attention: list[dict] = []  # the attention of the first few test examples

    # --- what the network gives --------------------------------------------------------------
    def encode(self, source: torch.Tensor, source_lengths: torch.Tensor):
        raise NotImplementedError

    def decode_step(self, previous: torch.Tensor, state, memory):
        raise NotImplementedError

    def reorder_state(self, state, rows: torch.Tensor):
        raise NotImplementedError

    def teacher_forced(self, source, source_lengths, target):
        raise NotImplementedError

    def test_attention_of(self, source: torch.Tensor, source_lengths: torch.Tensor, decoded: decoding.Decoded,
                          row: int, inputs: int, outputs: int):
        """The attention the reports draw for test example `row` (`inputs` source tokens, `outputs`
        decoded tokens): by default, the decoding's own weights (outputs, inputs)."""
        if decoded.attention is None:
            return None
        return decoded.attention[row, :outputs, :inputs].float().cpu()

    # --- training and decoding ----------------------------------------------------------------
    def forward(self, source: torch.Tensor, source_lengths: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The teacher-forced logits (B, T-1, V) of target[:, 1:] given target[:, :-1]."""
        return self.teacher_forced(source, source_lengths, target)[0]

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
              label_smoothing: float = 0.0) -> torch.Tensor:
        gold = target[:, 1:]  # (B, T-1): predict the target from its previous tokens
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), gold.reshape(-1), ignore_index=self.pad_id,
                               reduction=reduction, label_smoothing=label_smoothing)

    @torch.no_grad()
    def greedy(self, source: torch.Tensor, source_lengths: torch.Tensor) -> decoding.Decoded:
        """The most likely next token at each step, until <eos>: token ids (B, L) and attention (B, L, S)."""
        return decoding.greedy(self, source, source_lengths, self.params.max_decode_length)

    @torch.no_grad()
    def beam_search(self, source: torch.Tensor, source_lengths: torch.Tensor, beam_width: int | None = None,
                    length_penalty: float | None = None) -> decoding.Decoded:
        """The best of `beam_width` hypotheses per sequence, by log-probability over GNMT's length penalty."""
        width = self.params.beam_width if beam_width is None else beam_width
        alpha = self.params.length_penalty if length_penalty is None else length_penalty
        return decoding.beam_search(self, source, source_lengths, width, alpha, self.params.max_decode_length)

    @torch.no_grad()
    def log_probability(self, source: torch.Tensor, source_lengths: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """log p(tokens | source) of decoded outputs (B, L): <eos> included, <pad> after it not. (B,)"""
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        target = torch.cat([bos, tokens], dim=1)  # (B, 1 + L)
        logits, _ = self.teacher_forced(source, source_lengths, target)
        return -self._loss(logits, target, reduction="none").view(tokens.shape).sum(-1)

    def target_pieces(self, ids) -> list[str]:
        """The target tokens of decoded ids, up to <eos>."""
        pieces = []
        for i in ids.tolist() if isinstance(ids, torch.Tensor) else ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.bos_id):
                pieces.append(self.target_tokens[i])
        return pieces

    def target_text(self, pieces: list[str]) -> str:
        return ("" if self.char_targets else " ").join(pieces)

    def reference_pieces(self, text: str) -> list[str]:
        return list(text) if self.char_targets else text.split()

    # --- evaluation: summed over the split, logged once at its end (as seq.rnn_lm does) -----
    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch, batch_idx):
        decoded = self.greedy(batch["source"], batch["source_lengths"])  # fast; the test uses the beam
        self._evaluate(batch, decoded)
        if batch_idx == 0:
            self.val_example = (batch["source_text"][0], batch["target_text"][0], self.eval_predictions[0])

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")
        if not self.trainer.sanity_checking and self.val_example is not None:
            source, reference, prediction = self.val_example
            log_text(self, "decoded", f"source:     {source}\nreference:  {reference}\nprediction: {prediction}\n")

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()
        self.test_records, self.test_attention = [], []

    def test_step(self, batch, batch_idx):
        source, lengths = batch["source"], batch["source_lengths"]
        decoded = self.greedy(source, lengths) if self.params.beam_width == 1 else self.beam_search(source, lengths)
        start = len(self.eval_predictions)
        self._evaluate(batch, decoded)
        for row, text in enumerate(batch["source_text"]):
            prediction = self.eval_predictions[start + row]
            references = batch["references"][row]
            self.test_records.append({"source": text, "reference": " | ".join(references), "prediction": prediction,
                                      "correct": prediction in references})
            if len(self.test_attention) < 4:
                pieces = self.target_pieces(decoded.tokens[row])
                inputs = [self.source_tokens[i] for i in source[row, :int(lengths[row])].tolist()]
                outputs = [*pieces, "<eos>"][:decoded.tokens.shape[1]]
                weights = self.test_attention_of(source, lengths, decoded, row, len(inputs), len(outputs))
                if weights is not None:
                    self.test_attention.append({"inputs": inputs, "outputs": outputs, "weights": weights,
                                                "references": references})

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _start_evaluation(self) -> None:
        self.eval_loss, self.eval_tokens, self.eval_correct = 0.0, 0, 0
        self.eval_predictions: list[str] = []
        self.eval_pieces: list[tuple[list[str], list[str]]] = []  # (predicted, reference) tokens

    @torch.no_grad()
    def _evaluate(self, batch, decoded: decoding.Decoded) -> None:
        logits = self(batch["source"], batch["source_lengths"], batch["target"])  # (B, T-1, V)
        gold = batch["target"][:, 1:]
        real = gold != self.pad_id
        self.eval_loss += float(self._loss(logits, batch["target"], reduction="sum"))
        self.eval_tokens += int(real.sum())
        self.eval_correct += int(((logits.argmax(-1) == gold) & real).sum())
        for row, references in enumerate(batch["references"]):
            pieces = self.target_pieces(decoded.tokens[row])
            self.eval_predictions.append(self.target_text(pieces))
            self.eval_pieces.append((pieces, self._closest_reference(pieces, references)))

    def _closest_reference(self, pieces: list[str], references: list[str]) -> list[str]:
        """The reference a prediction is scored against: the one it matches, else the one it is
        fewest edits from (G2P's convention when a word has several pronunciations)."""
        candidates = [self.reference_pieces(r) for r in references]
        if pieces in candidates:
            return pieces
        if len(candidates) == 1:
            return candidates[0]
        from torchmetrics.functional.text import word_error_rate

        return min(candidates, key=lambda r: float(word_error_rate(_words(pieces), _words(r))) * len(r))

    def _log_evaluation(self, stage: str) -> None:
        from torchmetrics.text import BLEUScore, CharErrorRate, WordErrorRate

        pairs = self.eval_pieces
        if not pairs:
            return
        predicted = [_words(p) for p, _ in pairs]
        references = [_words(r) for _, r in pairs]
        exact = sum(p == r for p, r in pairs) / len(pairs)
        metrics = {f"{stage}/loss": self.eval_loss / max(1, self.eval_tokens),
                   f"{stage}/token_accuracy": self.eval_correct / max(1, self.eval_tokens),
                   f"{stage}/exact_match": exact,
                   f"{stage}/bleu": float(BLEUScore()(predicted, [[r] for r in references]))}
        if self.char_targets:
            metrics[f"{stage}/cer"] = float(CharErrorRate()([self.target_text(p) for p, _ in pairs],
                                                           ["".join(r) for _, r in pairs]))
        else:
            # Phoneme error rate: edits per reference phoneme; word error rate, as G2P papers count
            # it (Yao & Zweig 2015): the share of words with any phoneme wrong.
            metrics[f"{stage}/per"] = float(WordErrorRate()(predicted, references))
            metrics[f"{stage}/wer"] = 1.0 - exact
        self.log_dict(metrics, sync_dist=True)


def _words(pieces: list[str]) -> str:
    """Tokens as one space-separated string (a space token made visible), as BLEU and WER read them."""
    return " ".join(piece if piece.strip() else "\u2581" for piece in pieces)
