"""trainyard's sequence family: recurrent networks for sequential data (the course notes'
RNNs, LSTMs and GRUs), on the text data of the `text` plugin.

- seq.rnn_lm: a language model, next-token prediction as classification over the vocabulary,
  with a vanilla RNN, LSTM or GRU cell, trained with truncated backpropagation through time.

    model: {name: seq.rnn_lm, params: {cell: lstm, hidden: 256, layers: 2}}
    data: {name: text.corpus, params: {source: pydoc, tokenizer: char}}
"""

from __future__ import annotations

from trainyard import BuildContext, Example, hookimpl, model

from trainyard_seq.language_model import RNNLanguageModel, RNNLMParams

LM_METRICS = ("train/loss", "val/loss", "val/perplexity", "val/bpc", "test/loss", "test/perplexity", "test/bpc")


def _tiny_corpus(folder):
    from trainyard_text import tiny_corpus

    return tiny_corpus(folder)


@model(RNNLMParams, metrics=LM_METRICS, facts=("vocab_size", "tokens", "tokenizer"),
       example=Example(params={"embedding": 16, "hidden": 16, "layers": 1, "sample_length": 8},
                       data={"name": "text.corpus", "params": _tiny_corpus}, output_shape=(2, 8, None)))
def rnn_lm(params: RNNLMParams, ctx: BuildContext) -> RNNLanguageModel:
    """A recurrent language model (RNN, LSTM or GRU) trained with truncated backpropagation through time."""
    return RNNLanguageModel(params, ctx.facts["vocab_size"], ctx.facts["tokens"], ctx.facts["tokenizer"])


@hookimpl
def register_models():
    return [rnn_lm]
