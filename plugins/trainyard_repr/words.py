"""The examples word2vec learns from: centre words and the context words around them.

    documents (pydoc, or your UTF-8 files) --split by document--> train / val / test
    --words (lower-cased)--> vocabulary of the training split (min_count) --> word ids (words
    outside the vocabulary dropped) --each epoch: subsample frequent words, draw each centre
    word's window--> batches {"centres": (B,), "contexts": (B, 2b)}

Two of word2vec's steps are drawn here, anew each epoch, as gensim draws them:

- frequent-word subsampling (Mikolov et al. 2013): a word seen a fraction f of the time is kept
  with probability (sqrt(f / sample) + 1) * sample / f, so that "the" and "of" stop crowding
  out the words that carry meaning; windows are then drawn over the words kept;
- shrinking windows: each centre word draws how far its window reaches, b from 1 to `window`
  words on each side, so nearer words count more; a window stops at its document's end.

A batch holds windows of one reach b, so its contexts are a (B, 2b) tensor with no padding
beyond documents' edges: no time is spent on empty places. Windows are shuffled, batches
come in random order, and each epoch has the same number of batches (for Lightning, and for
a learning rate that falls with each step): the windows of each reach are cut into as many
batches as their expected number calls for.

The text comes from the text family's corpora (`trainyard_text.corpora`), split as it splits
it: by document, from a seed alone, so a paragraph never straddles two splits.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from trainyard import Params
from trainyard_text import corpora

# A word starts with a letter and runs on through letters, digits and underscores, with inner
# apostrophes ("don't", "object's"). Python's documentation is full of identifiers (__init__,
# sys_path) that are words of that text; numbers alone (3, 0x1f) are dropped, as gensim's
# simple_preprocess drops them: they would fill the vocabulary with values, not meanings.
# Lower-cased: "The" and "the" are one word, as in word2vec's usual preprocessing.
WORD = re.compile(r"[^\W\d]\w*(?:'\w+)*")
# Windows are drawn and shuffled within pieces of this many words, which bounds the memory an
# epoch's windows take however large the corpus (a window never reaches across two pieces).
PIECE = 1_000_000


def words(text: str) -> list[str]:
    """The lower-cased words of `text`, in order."""
    return WORD.findall(text.lower())


def keep_probabilities(counts: torch.Tensor, sample: float) -> torch.Tensor:
    """Probability (V,) of keeping each word, gensim's formula: (sqrt(n / t) + 1) * t / n for a
    word seen n times, where t = sample * (all words seen), capped at 1 (sample 0: keep all)."""
    counts = counts.double()
    if sample == 0:
        return torch.ones_like(counts)
    threshold = sample * counts.sum()
    return (((counts / threshold).sqrt() + 1) * threshold / counts).clamp(max=1.0)


class WordsParams(Params):
    source: str = Field("pydoc", description="'pydoc' (Python's own documentation, offline) or the path of a "
                                             "UTF-8 text file or a folder of them.")
    min_count: int = Field(5, ge=1, description="Words seen fewer times in the training split are dropped "
                                                "(gensim's min_count).")
    window: int = Field(5, ge=1, description="Most context words on each side of a centre word; each centre "
                                             "draws its reach from 1 to this (gensim's shrinking windows).")
    sample: float = Field(1e-3, ge=0, lt=1, description="Subsampling threshold: words much more frequent than "
                                                        "this fraction of the text are randomly dropped, the more "
                                                        "so the more frequent (gensim's formula; 0: none).")
    batch_size: int = Field(500, ge=1, description="Centre words (windows) per batch, one SGD step on their summed "
                                                   "loss. Much larger batches diverge at gensim's rate (skip-gram: "
                                                   "2,000 did on pydoc; CBOW, one prediction a window, takes 4,000).")
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of the documents for validation.")
    test_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of the documents for testing.")
    split_seed: int = Field(0, ge=0, description="Seed of the split into train, val and test documents.")


class Words(LightningDataModule):
    """A corpus as word2vec's windows: batches of centre word ids (B,) and their context word
    ids (B, 2b), where `pad_id` (the vocabulary's size) marks a place past a document's edge."""

    def __init__(self, params: WordsParams, cache, seed: int = 0):
        super().__init__()
        self.params, self.cache, self.seed = params, cache, seed
        if params.source != "pydoc" and not Path(params.source).expanduser().exists():
            raise ValueError(f"no such corpus file or folder: {Path(params.source).expanduser()}")
        self._documents: dict[str, list[list[str]]] | None = None
        self._vocabulary: dict[str, list] | None = None
        self.streams: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._train: DataLoader | None = None

    def documents(self) -> dict[str, list[list[str]]]:
        """Each split's documents as lists of words."""
        if self._documents is None:
            p = self.params
            parts = corpora.split_documents(p.source, p.val_fraction, p.test_fraction, p.split_seed)
            self._documents = {name: [words(text) for text in items] for name, items in parts.items()}
        return self._documents

    def vocabulary(self) -> dict[str, list]:
        """{"words": [...], "counts": [...]}: the training split's words seen min_count times, most
        frequent first (ties by the word, so that it never depends on the order of the files)."""
        if self._vocabulary is None:
            p = self.params

            def count() -> dict[str, list]:
                # The training split only: a word met only in val or test is unknown there, as it
                # would be in use (the text family's tokenizers follow the same rule).
                counts = Counter(word for document in self.documents()["train"] for word in document)
                kept = sorted(((w, n) for w, n in counts.items() if n >= p.min_count),
                              key=lambda item: (-item[1], item[0]))
                return {"words": [w for w, _ in kept], "counts": [n for _, n in kept]}

            inputs = [] if p.source == "pydoc" else [p.source]
            self._vocabulary = self.cache.json(f"vocabulary-{_source_tag(p.source)}", inputs, count)
            if not self._vocabulary["words"]:
                raise ValueError(f"no word of the training split is seen min_count={p.min_count} times")
        return self._vocabulary

    def facts(self) -> dict[str, Any]:
        vocabulary = self.vocabulary()
        return {"vocab_size": len(vocabulary["words"]), "words": vocabulary["words"], "counts": vocabulary["counts"],
                "pad_id": len(vocabulary["words"])}

    def write_artifacts(self, directory: Path) -> None:
        """The vocabulary with its training counts, one `word<TAB>count` a line, most frequent first."""
        vocabulary = self.vocabulary()
        lines = (f"{w}\t{n}\n" for w, n in zip(vocabulary["words"], vocabulary["counts"]))
        (directory / "vocabulary.tsv").write_text("".join(lines), encoding="utf-8")

    def setup(self, stage: str | None = None) -> None:
        if self.streams:
            return
        vocabulary = self.vocabulary()
        index = {word: i for i, word in enumerate(vocabulary["words"])}
        for name, documents in self.documents().items():
            # Words outside the vocabulary are dropped before windows are drawn, as gensim does:
            # their neighbours become each other's context.
            ids = [[index[w] for w in document if w in index] for document in documents]
            if not any(ids):
                raise ValueError(f"the {name} split has no word of the vocabulary")
            self.streams[name] = (  # the word ids (N,), and the index of the document each is in (N,)
                torch.tensor([i for document in ids for i in document], dtype=torch.long),
                torch.tensor([d for d, document in enumerate(ids) for _ in document], dtype=torch.long))
        self.keep = keep_probabilities(torch.tensor(vocabulary["counts"]), self.params.sample).float()

    def _loader(self, split: str, fresh: bool) -> DataLoader:
        ids, documents = self.streams[split]
        offset = {"train": 0, "val": 1, "test": 2}[split]
        windows = _Windows(ids, documents, self.keep, self.params.window, self.params.batch_size,
                           pad=len(self.keep), seed=self.seed * 3 + offset, fresh=fresh)
        # Lightning warns that a length may be wrong when several worker processes each iterate
        # such a dataset; here the one process does, and the length is exact.
        warnings.filterwarnings("ignore", message="Your `IterableDataset` has `__len__` defined")
        return DataLoader(windows, batch_size=None)

    def train_dataloader(self) -> DataLoader:
        # One dataset for the whole fit, so that every epoch draws new windows from its generator.
        if self._train is None:
            self._train = self._loader("train", fresh=False)
        return self._train

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", fresh=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", fresh=True)


class _Windows(IterableDataset):
    """An epoch of windows over a word stream, drawn as the module docstring says.

    fresh: every pass draws the same windows (evaluation: val/loss is measured on the same
    examples at each validation); otherwise each pass draws new ones (training).
    """

    def __init__(self, ids: torch.Tensor, documents: torch.Tensor, keep: torch.Tensor, window: int, batch_size: int,
                 pad: int, seed: int, fresh: bool):
        self.ids, self.documents, self.keep = ids, documents, keep  # (N,), (N,), (V,)
        self.window, self.batch_size, self.pad = window, batch_size, pad
        self.seed, self.fresh = seed, fresh
        self.generator = torch.Generator().manual_seed(seed)
        # Batches per reach in each piece: its expected number of windows (the expected number
        # of words kept) shared among the reaches, cut into batches of about batch_size.
        self.batches = [math.ceil(float(keep[ids[start:start + PIECE]].sum()) / window / batch_size)
                        for start in range(0, len(ids), PIECE)]

    def __len__(self) -> int:
        return sum(self.batches) * self.window

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed) if self.fresh else self.generator
        for piece, start in enumerate(range(0, len(self.ids), PIECE)):
            ids, documents = self.ids[start:start + PIECE], self.documents[start:start + PIECE]
            kept = torch.rand(ids.shape, generator=generator) < self.keep[ids]
            batches = []
            for reach, (centres, contexts) in enumerate(self._windows(ids[kept], documents[kept], generator), 1):
                shuffled = torch.randperm(len(centres), generator=generator)
                for part in torch.tensor_split(shuffled, self.batches[piece]):
                    batches.append({"centres": centres[part], "contexts": contexts[part]})  # (B,), (B, 2 * reach)
            for i in torch.randperm(len(batches), generator=generator).tolist():
                yield batches[i]

    def _windows(self, ids: torch.Tensor, documents: torch.Tensor, generator: torch.Generator):
        """For each reach b from 1 to `window`: the centre words (n,) that drew it and their
        context words (n, 2b), pad where the window passes its document's edge."""
        reach = torch.randint(1, self.window + 1, ids.shape, generator=generator)  # (N,)
        for b in range(1, self.window + 1):
            centres = (reach == b).nonzero().squeeze(1)  # positions (n,)
            offsets = torch.cat([torch.arange(-b, 0), torch.arange(1, b + 1)])  # (2b,)
            places = centres[:, None] + offsets  # (n, 2b)
            inside = (places >= 0) & (places < len(ids))
            places = places.clamp(0, max(len(ids) - 1, 0))
            inside &= documents[places] == documents[centres][:, None]
            yield ids[centres], torch.where(inside, ids[places], self.pad)


def _source_tag(source: str) -> str:
    """Part of a cached entry's name: the built-in corpus changes with Python's version, not with files."""
    return f"pydoc-py{sys.version_info.major}.{sys.version_info.minor}" if source == "pydoc" else "files"


def tiny_corpus(folder: Path) -> dict[str, Any]:
    """The text family's few kilobytes of Python's documentation, and the params that read them."""
    from trainyard_text import tiny_corpus as text_tiny_corpus

    return {"source": text_tiny_corpus(folder)["source"], "min_count": 2, "window": 2, "batch_size": 16}
