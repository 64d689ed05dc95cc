"""trainyard's transformer family: multi-head attention (Vaswani et al. 2017) on torch's
scaled_dot_product_attention, on the text data of the `text` plugin, scored as the sequence
family scores its models (whose language-model and encoder-decoder evaluation it shares).

- transformer.decoder_lm: a GPT-style decoder-only language model; samples drawn with a
  key-value cache at each validation.

    model: {name: transformer.decoder_lm, params: {d_model: 128, heads: 4, layers: 4, positions: rotary}}
    data: {name: text.corpus, params: {source: pydoc, tokenizer: char, seq_len: 128}}
"""

from __future__ import annotations

from trainyard import BuildContext, Example, hookimpl, model

from trainyard_transformer.decoder_lm import DecoderLM, DecoderLMParams

LM_METRICS = ("train/loss", "val/loss", "val/perplexity", "val/bpc", "test/loss", "test/perplexity", "test/bpc")


def _tiny_corpus(folder):
    from trainyard_text import tiny_corpus

    return tiny_corpus(folder)


@model(DecoderLMParams, name="decoder_lm", metrics=LM_METRICS, facts=("vocab_size", "tokens", "tokenizer", "seq_len"),
       example=Example(params={"d_model": 16, "heads": 2, "layers": 1, "sample_length": 8},
                       data={"name": "text.corpus", "params": _tiny_corpus}, output_shape=(2, 8, None)))
def decoder_lm(params: DecoderLMParams, ctx: BuildContext) -> DecoderLM:
    """A GPT-style decoder-only transformer language model."""
    f = ctx.facts
    params.check_length(f["seq_len"], "a training window (data seq_len)")
    params.check_length(params.sample_length + 1, "a generated sample (sample_length + its first token)")
    return DecoderLM(params, f["vocab_size"], f["tokens"], f["tokenizer"])


@hookimpl
def register_models():
    return [decoder_lm]
