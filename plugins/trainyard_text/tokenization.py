"""Character, word and byte-level BPE tokenizers with the same four special tokens.

    tokenizer = TextTokenizer.train("char", train_texts)
    ids = tokenizer.encode("hello")            # no <bos>/<eos>: the data modules add them
    tokenizer.decode(ids) == "hello"
    tokenizer.save("vocab.json"); TextTokenizer.load("vocab.json")

Every kind gives the special tokens the same ids, <pad>=0 <unk>=1 <bos>=2 <eos>=3, so models and
data modules never need to ask which kind they have. `vocab_size` counts everything, specials
included (as HuggingFace does), so `len(tokenizer) <= vocab_size`.

- char: every character seen at least `min_count` times, most frequent first. Unseen ones -> <unk>.
- word: whitespace-separated words, the same rules; decoding joins words with single spaces.
- bpe: HuggingFace `tokenizers`, byte-level, so every text, however unusual, round-trips exactly
  (there is no <unk>: any byte has a token).

Train on the training split only (the data modules do). A vocabulary built with val or test text
would hand the model knowledge of those splits: test-only words would get their own ids instead
of <unk>, and BPE merges would fit the test text, so val and test scores would flatter the model
on text it was meant never to have seen.

A saved tokenizer is one JSON file, logged as an artifact so that a run can be decoded later.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = 0, 1, 2, 3
KINDS = ("char", "word", "bpe")

# Byte-level BPE starts from one token per byte value, before any merge.
BYTE_ALPHABET_SIZE = 256
MIN_BPE_VOCAB = BYTE_ALPHABET_SIZE + len(SPECIALS)
# char and word need room for the specials and at least one real token.
MIN_VOCAB = len(SPECIALS) + 1

_FILE_FORMAT = "trainyard-text-tokenizer"
_FILE_VERSION = 1


class TextTokenizer:
    """A trained tokenizer of one `kind`: "char", "word" or "bpe". Build with `train` or `load`."""

    def __init__(self, kind: str, tokens: Sequence[str] | None = None, hf_json: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; kinds: {', '.join(KINDS)}")
        self.kind = kind
        if kind == "bpe":
            from tokenizers import Tokenizer

            self._hf = Tokenizer.from_str(hf_json)
            # Text that happens to contain "<pad>" is text, not a pad token: encode it byte by
            # byte, so that encode never emits a special id and decode gives the text back.
            # (This setting is not saved in the HF JSON, so it is set again on every load.)
            self._hf.encode_special_tokens = True
            size = self._hf.get_vocab_size(with_added_tokens=True)
            self.tokens = [self._hf.id_to_token(i) for i in range(size)]
        else:
            self.tokens = list(tokens)
            # Specials are reachable by id only: a word "<unk>" in the text is just an unknown word.
            self._ids = {token: i for i, token in enumerate(self.tokens) if i >= len(SPECIALS)}
        if tuple(self.tokens[:len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a {kind} vocabulary must start with the special tokens {SPECIALS}")

    # --- training ------------------------------------------------------------------------------
    @classmethod
    def train(cls, kind: str, texts: Iterable[str], vocab_size: int | None = None,
              min_count: int = 1) -> TextTokenizer:
        """Learn a vocabulary of at most `vocab_size` tokens (specials included) from `texts`."""
        if kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; kinds: {', '.join(KINDS)}")
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if kind == "bpe":
            if vocab_size is None or vocab_size < MIN_BPE_VOCAB:
                raise ValueError(f"bpe needs vocab_size of at least {MIN_BPE_VOCAB} ({BYTE_ALPHABET_SIZE} "
                                 f"byte tokens + {len(SPECIALS)} specials), got {vocab_size}")
            return cls._train_bpe(list(texts), vocab_size, min_count)
        if vocab_size is not None and vocab_size < MIN_VOCAB:
            raise ValueError(f"{kind} needs vocab_size of at least {MIN_VOCAB} ({len(SPECIALS)} specials + "
                             f"one token), got {vocab_size}")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text if kind == "char" else text.split())
        if not counts:
            raise ValueError(f"no text to train the {kind} tokenizer on")
        # Most frequent first; ties by the token itself, so the vocabulary never depends on input order.
        kept = [token for token, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
                if n >= min_count and token not in SPECIALS]
        if not kept:
            raise ValueError(f"no {kind} token is seen min_count={min_count} times")
        if vocab_size is not None:
            kept = kept[:vocab_size - len(SPECIALS)]
        return cls(kind, tokens=[*SPECIALS, *kept])

    @classmethod
    def _train_bpe(cls, texts: list[str], vocab_size: int, min_count: int) -> TextTokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if not any(texts):
            raise ValueError("no text to train the bpe tokenizer on")
        hf = Tokenizer(models.BPE())
        # Byte level: text is split into UTF-8 bytes mapped to printable characters, so any text
        # can be encoded without <unk> and decoded back exactly. No prefix space: it would add a
        # space to the decoded text that the original did not have.
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_count, special_tokens=list(SPECIALS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        hf.train_from_iterator(texts, trainer=trainer)
        return cls("bpe", hf_json=hf.to_str())

    # --- use -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without <bos> or <eos>."""
        if self.kind == "bpe":
            return self._hf.encode(text, add_special_tokens=False).ids
        pieces = text if self.kind == "char" else text.split()
        return [self._ids.get(piece, UNK) for piece in pieces]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """The text of `ids`; special tokens are dropped unless `skip_special` is False."""
        ids = [int(i) for i in ids]  # also accepts a tensor's or array's elements
        if self.kind == "bpe":
            return self._hf.decode(ids, skip_special_tokens=skip_special)
        pieces = [self.tokens[i] for i in ids if not (skip_special and i < len(SPECIALS))]
        return ("" if self.kind == "char" else " ").join(pieces)

    # --- files ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the tokenizer to one JSON file (a BPE one embeds HuggingFace's own JSON)."""
        path = Path(path)
        payload: dict = {"format": _FILE_FORMAT, "version": _FILE_VERSION, "kind": self.kind}
        if self.kind == "bpe":
            payload["huggingface"] = self._hf.to_str()
        else:
            payload["tokens"] = self.tokens
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Read a tokenizer written by `save`."""
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read a tokenizer ({error})") from None
        if not isinstance(payload, dict) or payload.get("format") != _FILE_FORMAT:
            raise ValueError(f"{path}: not a trainyard tokenizer file")
        if payload["kind"] == "bpe":
            return cls("bpe", hf_json=payload["huggingface"])
        return cls(payload["kind"], tokens=payload["tokens"])

    def __repr__(self) -> str:
        return f"TextTokenizer(kind={self.kind!r}, size={len(self)})"
