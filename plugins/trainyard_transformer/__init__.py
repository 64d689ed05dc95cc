"""trainyard's transformer family: multi-head attention (Vaswani et al. 2017) on torch's
scaled_dot_product_attention, on the text data of the `text` plugin, scored as the sequence
family scores its models (whose language-model and encoder-decoder evaluation it shares).

- transformer.decoder_lm: a GPT-style decoder-only language model; samples drawn with a
  key-value cache at each validation.
- transformer.encoder_decoder: Vaswani et al.'s encoder-decoder, greedy decoding and batched
  beam search with a key-value cache; its runs report attention maps per block and head.
- transformer.encoder_classifier: sequence classification from a [CLS] position, on text.pairs
  tasks whose targets are one token (recall: which letter began 50 distractors).

    model: {name: transformer.decoder_lm, params: {d_model: 128, heads: 4, layers: 4, positions: rotary}}
    data: {name: text.corpus, params: {source: pydoc, tokenizer: char, seq_len: 128}}

    model: {name: transformer.encoder_decoder, params: {d_model: 128, positions: learned, beam_width: 5}}
    data: {name: text.pairs, params: {task: dates}}
"""

from __future__ import annotations

from trainyard import BuildContext, Example, hookimpl, model
from trainyard_seq import LM_METRICS, SEQ2SEQ_FACTS, SEQ2SEQ_METRICS

from trainyard_transformer.decoder_lm import DecoderLM, DecoderLMParams
from trainyard_transformer.encoder_classifier import EncoderClassifier, EncoderClassifierParams
from trainyard_transformer.encoder_decoder import EncoderDecoderParams, TransformerEncoderDecoder



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


def _tiny_pairs(folder):
    from trainyard_text import TINY_PAIRS

    return TINY_PAIRS


# The encoder-decoders of both families are scored alike (the transformer has no teacher-forcing schedule).
ENCODER_DECODER_METRICS = tuple(m for m in SEQ2SEQ_METRICS if m != "train/teacher_forcing")


@model(EncoderDecoderParams, name="encoder_decoder", metrics=ENCODER_DECODER_METRICS, facts=SEQ2SEQ_FACTS + ("max_source_length",),
       example=Example(params={"d_model": 16, "heads": 2, "layers": 1, "max_decode_length": 8, "beam_width": 2},
                       data={"name": "text.pairs", "params": _tiny_pairs}, output_shape=(2, 3, None)))
def encoder_decoder(params: EncoderDecoderParams, ctx: BuildContext) -> TransformerEncoderDecoder:
    """A transformer encoder-decoder (Vaswani et al. 2017) with greedy decoding and beam search."""
    f = ctx.facts
    params.check_targets_fit(f["max_target_length"])
    params.check_length(f["max_source_length"], "the data's longest source")
    params.check_length(params.max_decode_length, "a decoded output (max_decode_length)")
    return TransformerEncoderDecoder(params, f["source_vocab_size"], f["target_vocab_size"], f["pad_id"], f["bos_id"],
                                     f["eos_id"], f["source_tokens"], f["target_tokens"],
                                     char_targets=f["target_tokenizer"] == "char")


TINY_RECALL = {"task": "recall", "train_lengths": [4, 6], "train_size": 64, "val_size": 16, "test_size": 16,
               "batch_size": 8}


@model(EncoderClassifierParams, name="encoder_classifier",
       metrics=("train/loss", "val/loss", "val/acc", "test/loss", "test/acc"),
       facts=("source_vocab_size", "target_vocab_size", "pad_id", "source_tokens", "target_tokens", "max_source_length",
              "max_target_length"),
       example=Example(params={"d_model": 16, "heads": 2, "layers": 1},
                       data={"name": "text.pairs", "params": TINY_RECALL}, output_shape=(2, None)))
def encoder_classifier(params: EncoderClassifierParams, ctx: BuildContext) -> EncoderClassifier:
    """A transformer encoder that classifies a sequence from its [CLS] position."""
    f = ctx.facts
    if f["max_target_length"] != 2:
        raise ValueError(f"encoder_classifier needs targets of one token, the class (task: recall); this data's "
                         f"longest target has {f['max_target_length'] - 1}")
    params.check_length(f["max_source_length"] + 1, "the data's longest source with its [CLS]")
    return EncoderClassifier(params, f["source_vocab_size"], f["target_vocab_size"], f["pad_id"], f["source_tokens"],
                             f["target_tokens"])


@hookimpl
def register_models():
    return [decoder_lm, encoder_decoder, encoder_classifier]


@hookimpl
def make_run_reports(report):
    from trainyard_transformer.reports import write_reports

    return write_reports(report.model, report.data, report.directory)
