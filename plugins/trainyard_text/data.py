"""Lightning data modules over text: a token stream for language models, and (source, target)
pairs for sequence-to-sequence models. Both are sized for their models by `facts()`.

    text.corpus: documents --split--> train/val/test --tokenizer (trained on train)--> one
                 token stream per split --batchify--> (B, T) windows, consecutive across batches
    text.pairs:  a task or CMUdict --split--> (source, target) pairs --tokenizers--> padded
                 id batches with masks and lengths, similar lengths batched together

A tokenizer is trained on the training split only (nothing of the test split may shape the
vocabulary) and kept in the data cache (trainyard.datacache), so `trainyard validate`, later runs
and every sweep trial read it back instead of training it again.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Sampler

from trainyard import Params

from trainyard_text import corpora, tasks
from trainyard_text.tokenization import BOS, EOS, PAD, TextTokenizer


# --- a language-model corpus -----------------------------------------------------------------


class CorpusParams(Params):
    source: str = Field("pydoc", description="'pydoc' (Python's own documentation, offline) or the path of a "
                                             "UTF-8 text file or a folder of them.")
    tokenizer: Literal["char", "word", "bpe"] = Field("char", description="How text becomes tokens.")
    vocab_size: int | None = Field(None, ge=1, description="Most tokens in the vocabulary (required for bpe; "
                                                           "char and word: every token seen, when null).")
    min_count: int = Field(1, ge=1, description="Characters or words seen fewer times become <unk>.")
    seq_len: int = Field(64, ge=1, description="Tokens per window: the length of truncated backpropagation "
                                               "through time.")
    batch_size: int = Field(32, ge=1, description="Parallel streams of the corpus, one per batch row.")
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of the documents for validation.")
    test_fraction: float = Field(0.05, gt=0, lt=0.5, description="Share of the documents for testing.")
    max_chars: int | None = Field(None, ge=1000, description="Use only the first this many characters of each "
                                                             "split (quick experiments, tests).")
    split_seed: int = Field(0, ge=0, description="Seed of the split into train, val and test documents.")

    @model_validator(mode="after")
    def _bpe_needs_a_size(self) -> CorpusParams:
        if self.tokenizer == "bpe" and self.vocab_size is None:
            raise ValueError("the bpe tokenizer needs vocab_size (e.g. 1000)")
        return self


class Corpus(LightningDataModule):
    """A corpus as consecutive windows of token ids, for truncated backpropagation through time.

    Each split's token stream is cut into `batch_size` equal streams (rows); batch k holds
    window k of every row, so row i of batch k+1 continues row i of batch k, and a model may
    carry its hidden state across batches (PyTorch's word_language_model does the same).
    """

    def __init__(self, params: CorpusParams, cache):
        super().__init__()
        self.params = params
        self.cache = cache
        if params.source != "pydoc":
            path = Path(params.source).expanduser()
            if not path.exists():
                raise ValueError(f"no such corpus file or folder: {path}")
        self._tokenizer: TextTokenizer | None = None
        self.streams: dict[str, torch.Tensor] = {}

    def documents(self) -> dict[str, list[str]]:
        """The split's texts. Documents, not lines, are split: a paragraph never straddles two splits."""
        p = self.params
        parts = corpora.split_documents(p.source, p.val_fraction, p.test_fraction, p.split_seed)
        joined = {name: "\n\n".join(items) for name, items in parts.items()}
        if p.max_chars is not None:
            joined = {name: text[:p.max_chars] for name, text in joined.items()}
        return joined

    def tokenizer(self) -> TextTokenizer:
        if self._tokenizer is None:
            p = self.params
            inputs = [] if p.source == "pydoc" else [p.source]
            path = self.cache.file(f"tokenizer-{_source_tag(p.source)}.json", inputs, lambda target: TextTokenizer.train(
                p.tokenizer, [self.documents()["train"]], p.vocab_size, p.min_count).save(target))
            self._tokenizer = TextTokenizer.load(path)
        return self._tokenizer

    def facts(self) -> dict[str, Any]:
        tokenizer = self.tokenizer()
        return {"vocab_size": len(tokenizer), "pad_id": PAD, "bos_id": BOS, "eos_id": EOS,
                "tokens": tokenizer.tokens, "tokenizer": tokenizer.kind, "seq_len": self.params.seq_len}

    def write_artifacts(self, directory: Path) -> None:
        """The vocabulary (and tokenizer), so that a run's outputs can be decoded later."""
        self.tokenizer().save(directory / "tokenizer.json")

    def setup(self, stage: str | None = None) -> None:
        if self.streams:
            return
        tokenizer = self.tokenizer()
        for name, text in self.documents().items():
            ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
            self.streams[name] = _batchify(ids, self.params.batch_size, name)
        # Characters per token of each split: turns a loss per token into bits per character.
        self.characters_per_token = {name: len(text) / max(1, self.streams[name].numel())
                                     for name, text in self.documents().items()}

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(_Windows(self.streams[split], self.params.seq_len), batch_size=None, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def _batchify(ids: torch.Tensor, rows: int, split: str) -> torch.Tensor:
    columns = ids.numel() // rows
    if columns < 2:
        raise ValueError(f"the {split} split has {ids.numel()} tokens: too few for batch_size {rows}")
    return ids[: rows * columns].view(rows, columns)  # (B, N)


class _Windows(Dataset):
    """Window k of every stream: inputs (B, T) and the next tokens as targets (B, T)."""

    def __init__(self, streams: torch.Tensor, seq_len: int):
        self.streams, self.seq_len = streams, seq_len

    def __len__(self) -> int:
        return math.ceil((self.streams.shape[1] - 1) / self.seq_len)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        start = index * self.seq_len
        stop = min(start + self.seq_len, self.streams.shape[1] - 1)
        return {"ids": self.streams[:, start:stop], "targets": self.streams[:, start + 1:stop + 1]}


def _source_tag(source: str) -> str:
    """Part of a cached entry's name: the built-in corpora change with Python's version, not with files."""
    import sys

    return f"pydoc-py{sys.version_info.major}.{sys.version_info.minor}" if source == "pydoc" else "files"


# --- sequence-to-sequence pairs ----------------------------------------------------------------


class PairsParams(Params):
    task: Literal["copy", "reverse", "sort", "addition", "dates", "recall", "g2p"] = Field(
        "reverse", description="A generated task, or g2p: grapheme-to-phoneme on the CMU Pronouncing Dictionary.")
    train_lengths: tuple[int, int] = Field((5, 20), description="Shortest and longest source of the training "
                                                                "(and validation) pairs, for generated tasks "
                                                                "(addition: digits per operand; recall: the lag).")
    test_lengths: tuple[int, int] | None = Field(None, description="Lengths of the test pairs (default: the "
                                                                   "training lengths): longer ones measure length "
                                                                   "generalisation.")
    train_size: int = Field(5000, ge=1, description="Training pairs of a generated task.")
    val_size: int = Field(500, ge=1, description="Validation pairs of a generated task.")
    test_size: int = Field(500, ge=1, description="Test pairs of a generated task.")
    limit: int | None = Field(None, ge=30, description="g2p: use only this many words (quick experiments).")
    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="g2p: share of the words for validation.")
    test_fraction: float = Field(0.05, gt=0, lt=0.5, description="g2p: share of the words for testing.")
    batch_size: int = Field(64, ge=1, description="Pairs per batch.")
    bucket: bool = Field(True, description="Batch pairs of similar source length together (less padding).")
    split_seed: int = Field(0, ge=0, description="Seed of the generated pairs and of the split.")

    @model_validator(mode="after")
    def _lengths_are_ranges(self) -> PairsParams:
        for name in ("train_lengths", "test_lengths"):
            value = getattr(self, name)
            if value is not None and not 1 <= value[0] <= value[1]:
                raise ValueError(f"{name} must be [shortest, longest] with 1 <= shortest <= longest, got {list(value)}")
        return self


class Pairs(LightningDataModule):
    """(source, target) pairs as padded id batches; sources and targets have vocabularies of their
    own (characters for both in generated tasks; letters to ARPAbet phonemes for g2p)."""

    def __init__(self, params: PairsParams, cache):
        super().__init__()
        self.params = params
        self.cache = cache
        self._tokenizers: tuple[TextTokenizer, TextTokenizer] | None = None
        self._pairs: dict[str, list[tuple[str, str]]] | None = None
        self.datasets: dict[str, list[dict[str, Any]]] = {}

    def pairs(self) -> dict[str, list[tuple[str, str]]]:
        if self._pairs is None:
            p = self.params
            if p.task == "g2p":
                # Every pronunciation of a word: all are learnt, and any of them is a right answer.
                words = corpora.cmudict_pairs(variants=True)
                if p.limit is not None:
                    kept = set(random.Random(p.split_seed).sample(sorted({w for w, _ in words}), p.limit))
                    words = [pair for pair in words if pair[0] in kept]
                self._pairs = corpora.split_by_key(words, lambda pair: pair[0], p.val_fraction, p.test_fraction,
                                                   p.split_seed)
            else:
                train = tasks.generate(p.task, p.train_size, p.train_lengths, p.split_seed)
                seen = {source for source, _ in train}
                val = tasks.generate(p.task, p.val_size, p.train_lengths, p.split_seed + 1, exclude=seen)
                seen |= {source for source, _ in val}
                test = tasks.generate(p.task, p.test_size, p.test_lengths or p.train_lengths, p.split_seed + 2,
                                      exclude=seen)
                self._pairs = {"train": train, "val": val, "test": test}
        return self._pairs

    @property
    def target_kind(self) -> str:
        return "word" if self.params.task == "g2p" else "char"  # phonemes are space-separated

    def tokenizers(self) -> tuple[TextTokenizer, TextTokenizer]:
        """Source and target tokenizers, trained on the training pairs only."""
        if self._tokenizers is None:
            target_kind = self.target_kind

            def train(side: int, kind: str):
                def write(path: Path) -> None:
                    texts = [pair[side] for pair in self.pairs()["train"]]
                    TextTokenizer.train(kind, texts).save(path)
                return TextTokenizer.load(self.cache.file(f"{('source', 'target')[side]}.json", [], write))

            self._tokenizers = (train(0, "char"), train(1, target_kind))
        return self._tokenizers

    def facts(self) -> dict[str, Any]:
        source, target = self.tokenizers()
        lengths = [self.params.train_lengths, self.params.test_lengths or self.params.train_lengths]
        longest_target = max(len(target.encode(t)) for split in self.pairs().values() for _, t in split)
        return {"source_vocab_size": len(source), "target_vocab_size": len(target), "pad_id": PAD, "bos_id": BOS,
                "eos_id": EOS, "source_tokens": source.tokens, "target_tokens": target.tokens,
                "target_tokenizer": self.target_kind,
                # The longest source a model must read (generated tasks; g2p: its longest word),
                # and the longest target it must write, <eos> included, over every split.
                "max_source_length": self._longest_source(lengths), "max_target_length": longest_target + 1}

    def _longest_source(self, lengths) -> int:
        if self.params.task == "g2p":
            return max(len(source) for split in self.pairs().values() for source, _ in split)
        if self.params.task == "addition":
            return 2 * max(high for _, high in lengths) + 1
        if self.params.task == "dates":
            return max(len(source) for split in self.pairs().values() for source, _ in split)
        if self.params.task == "recall":
            return 1 + max(high for _, high in lengths)  # the token to recall, then the lag
        return max(high for _, high in lengths)

    def write_artifacts(self, directory: Path) -> None:
        source, target = self.tokenizers()
        source.save(directory / "source_tokenizer.json")
        target.save(directory / "target_tokenizer.json")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        source, target = self.tokenizers()
        for name, pairs in self.pairs().items():
            # Training learns every pair; evaluation scores each source once, against all of its
            # targets (a word's pronunciations), the first being the one the loss is taken on.
            references: dict[str, list[str]] = {}
            for s, t in pairs:
                references.setdefault(s, []).append(t)
            scored = pairs if name == "train" else [(s, targets[0]) for s, targets in references.items()]
            self.datasets[name] = [
                {"source": source.encode(s), "target": [BOS, *target.encode(t), EOS], "source_text": s,
                 "target_text": t, "references": references[s]} for s, t in scored]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        items = self.datasets[split]
        if self.params.bucket:
            sampler = BucketBatchSampler([len(item["source"]) for item in items], self.params.batch_size,
                                         shuffle, seed=self.params.split_seed)
            return DataLoader(items, batch_sampler=sampler, collate_fn=collate_pairs)
        generator = torch.Generator().manual_seed(self.params.split_seed)
        return DataLoader(items, batch_size=self.params.batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=collate_pairs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def collate_pairs(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad sources and targets to the longest in the batch (PAD = 0), with masks and lengths; the
    texts, and every right target of each source (`references`) for scoring decoded outputs."""
    def pad(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(s) for s in sequences])
        ids = torch.full((len(sequences), int(lengths.max())), PAD, dtype=torch.long)  # (B, L)
        for row, sequence in enumerate(sequences):
            ids[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        return ids, ids != PAD, lengths

    source, source_mask, source_lengths = pad([item["source"] for item in items])
    target, target_mask, target_lengths = pad([item["target"] for item in items])
    return {"source": source, "source_mask": source_mask, "source_lengths": source_lengths,
            "target": target, "target_mask": target_mask, "target_lengths": target_lengths,
            "source_text": [item["source_text"] for item in items],
            "target_text": [item["target_text"] for item in items],
            "references": [item.get("references", [item["target_text"]]) for item in items]}


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of pairs with similar source lengths, in a seeded random order.

    Written here because torch has no length-bucketing sampler (torchtext's, which had one, is
    retired): indices are shuffled, cut into pools of 50 batches, each pool sorted by length and
    cut into batches, and the batches shuffled, as fairseq and AllenNLP do.
    """

    POOL_BATCHES = 50

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0):
        self.lengths, self.batch_size, self.shuffle = list(lengths), batch_size, shuffle
        self.seed, self.epoch = seed, 0

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        if self.shuffle:
            rng.shuffle(order)
        pool = self.POOL_BATCHES * self.batch_size
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start:start + pool], key=self.lengths.__getitem__)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            rng.shuffle(batches)
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)


__all__ = ["BucketBatchSampler", "Corpus", "CorpusParams", "Pairs", "PairsParams", "collate_pairs"]
