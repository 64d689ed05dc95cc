"""trainyard's sequence family: recurrent networks for sequential data (the course notes'
RNNs, LSTMs and GRUs), on the text data of the `text` plugin.

- seq.rnn_lm: a language model, next-token prediction as classification over the vocabulary,
  with a vanilla RNN, LSTM or GRU cell, trained with truncated backpropagation through time.
- seq.seq2seq: an encoder-decoder (LSTM or GRU, bidirectional encoder) with no, additive
  (Bahdanau) or multiplicative (Luong: dot, general) attention, teacher forcing on a schedule,
  greedy decoding and batched beam search; its runs report attention heatmaps and predictions.

    model: {name: seq.rnn_lm, params: {cell: lstm, hidden: 256, layers: 2}}
    data: {name: text.corpus, params: {source: pydoc, tokenizer: char}}

    model: {name: seq.seq2seq, params: {cell: gru, attention: additive, beam_width: 5}}
    data: {name: text.pairs, params: {task: reverse, train_lengths: [5, 20], test_lengths: [20, 30]}}
"""

from __future__ import annotations

from trainyard import BuildContext, Example, hookimpl, model

from trainyard_seq.language_model import RNNLanguageModel, RNNLMParams
from trainyard_seq.seq2seq import Seq2Seq, Seq2SeqParams

LM_METRICS = ("train/loss", "val/loss", "val/perplexity", "val/bpc", "test/loss", "test/perplexity", "test/bpc")
# Decoded metrics: exact match and BLEU always; cer for character targets, per (phoneme error
# rate) and wer (words with any error) for word targets such as g2p's phonemes.
SEQ2SEQ_METRICS = ("train/loss", "train/teacher_forcing", *(
    f"{stage}/{name}" for stage in ("val", "test")
    for name in ("loss", "token_accuracy", "exact_match", "bleu", "cer", "per", "wer")))
SEQ2SEQ_FACTS = ("source_vocab_size", "target_vocab_size", "pad_id", "bos_id", "eos_id", "source_tokens",
                 "target_tokens", "target_tokenizer", "max_target_length")


def _tiny_corpus(folder):
    from trainyard_text import tiny_corpus

    return tiny_corpus(folder)


@model(RNNLMParams, metrics=LM_METRICS, facts=("vocab_size", "tokens", "tokenizer"),
       example=Example(params={"embedding": 16, "hidden": 16, "layers": 1, "sample_length": 8},
                       data={"name": "text.corpus", "params": _tiny_corpus}, output_shape=(2, 8, None)))
def rnn_lm(params: RNNLMParams, ctx: BuildContext) -> RNNLanguageModel:
    """A recurrent language model (RNN, LSTM or GRU) trained with truncated backpropagation through time."""
    return RNNLanguageModel(params, ctx.facts["vocab_size"], ctx.facts["tokens"], ctx.facts["tokenizer"])


def _tiny_pairs(folder):
    from trainyard_text import TINY_PAIRS

    return TINY_PAIRS


@model(Seq2SeqParams, metrics=SEQ2SEQ_METRICS, facts=SEQ2SEQ_FACTS,
       example=Example(params={"embedding": 8, "hidden": 16, "max_decode_length": 8, "beam_width": 2},
                       data={"name": "text.pairs", "params": _tiny_pairs}, output_shape=(2, 3, None)))
def seq2seq(params: Seq2SeqParams, ctx: BuildContext) -> Seq2Seq:
    """An encoder-decoder (LSTM or GRU) with optional attention, greedy decoding and beam search."""
    f = ctx.facts
    params.check_targets_fit(f["max_target_length"])
    return Seq2Seq(params, f["source_vocab_size"], f["target_vocab_size"], f["pad_id"], f["bos_id"], f["eos_id"],
                   f["source_tokens"], f["target_tokens"], char_targets=f["target_tokenizer"] == "char")


@hookimpl
def register_models():
    return [rnn_lm, seq2seq]


@hookimpl
def make_run_reports(report):
    if isinstance(report.model, Seq2Seq):
        from trainyard_seq.reports import write_reports

        return write_reports(report.model, report.directory)
    return None
