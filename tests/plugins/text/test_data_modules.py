"""text.corpus and text.pairs: splits, tokenizers trained on the training split only and cached,
facts, batches, and bad input as one line with exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from trainyard.build import build
from trainyard.cli import app
from trainyard.validate import load_experiment
from trainyard_text import tiny_corpus
from trainyard_text.data import BucketBatchSampler
from trainyard_text.tokenization import BOS, EOS, PAD


def spec(folder: Path, data: str, model: str = "{name: seq.rnn_lm, params: {embedding: 8, hidden: 8, layers: 1}}",
         name: str = "text") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\ndata: {data}\nmodel: {model}\ntrainer: {{max_epochs: 1}}\n")
    return path


def corpus_spec(folder: Path, **params) -> Path:
    values = tiny_corpus(folder) | params
    inner = ", ".join(f"{key}: {value!r}" if isinstance(value, str) else f"{key}: {value}" for key, value in values.items())
    return spec(folder, "{name: text.corpus, params: {" + inner.replace("'", '"') + "}}")


def test_corpus_windows_continue_each_other_row_by_row(tmp_path):
    built = build(load_experiment(corpus_spec(tmp_path)))
    data = built.data
    data.setup("fit")
    first, second = list(data.train_dataloader())[:2]
    assert first["ids"].shape == (4, 16) and first["ids"].dtype == torch.long
    # Targets are the next tokens; window k+1 of a row starts where window k of it stopped.
    assert torch.equal(first["targets"][:, :-1], first["ids"][:, 1:])
    assert torch.equal(second["ids"][:, 0], first["targets"][:, -1])


def test_the_tokenizer_sees_the_training_split_only_and_is_cached(tmp_path):
    built = build(load_experiment(corpus_spec(tmp_path)))
    documents = built.data.documents()
    vocabulary = set(built.facts["tokens"][4:])
    assert vocabulary <= set(documents["train"])
    [entry] = list((tmp_path / ".trainyard-cache").rglob("tokenizer-*.json"))
    written = entry.stat().st_mtime_ns
    again = build(load_experiment(corpus_spec(tmp_path)))
    assert again.facts["vocab_size"] == built.facts["vocab_size"] and entry.stat().st_mtime_ns == written
    assert built.model.embed.num_embeddings == built.facts["vocab_size"]


@pytest.mark.parametrize("tokenizer, extra", [("char", {}), ("bpe", {"vocab_size": 300})])
def test_a_split_round_trips_through_its_tokenizer(tmp_path, tokenizer, extra):
    built = build(load_experiment(corpus_spec(tmp_path, tokenizer=tokenizer, **extra)))
    text = built.data.documents()["train"]
    tokenizer_ = built.data.tokenizer()
    assert tokenizer_.decode(tokenizer_.encode(text)) == text


def test_pairs_are_split_without_overlap_and_batched_with_masks(tmp_path):
    path = spec(tmp_path, "{name: text.pairs, params: {task: reverse, train_lengths: [3, 6], test_lengths: [8, 10], "
                          "train_size: 200, val_size: 20, test_size: 20, batch_size: 16}}",
                model="{name: seq.rnn_lm}")
    experiment = load_experiment(path)
    data = build_data(experiment)
    pairs = data.pairs()
    sources = {name: {source for source, _ in split} for name, split in pairs.items()}
    assert not (sources["train"] & sources["test"]) and not (sources["train"] & sources["val"])
    assert all(8 <= len(source) <= 10 for source in sources["test"])
    assert data.facts()["max_source_length"] == 10
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["source"].dtype == torch.long and torch.equal(batch["source_mask"], batch["source"] != PAD)
    assert torch.equal(batch["source_lengths"], batch["source_mask"].sum(1))
    assert (batch["target"][:, 0] == BOS).all()
    last = batch["target"].gather(1, (batch["target_lengths"] - 1).unsqueeze(1)).squeeze(1)
    assert (last == EOS).all()
    source, target = data.tokenizers()
    for row, text in enumerate(batch["source_text"]):
        assert source.decode(batch["source"][row, :batch["source_lengths"][row]].tolist()) == text
        assert target.decode(batch["target"][row].tolist()) == batch["target_text"][row] == text[::-1]


def test_g2p_learns_every_pronunciation_and_scores_each_word_once_against_all(tmp_path):
    path = spec(tmp_path, "{name: text.pairs, params: {task: g2p, limit: 3000}}", model="{name: seq.rnn_lm}")
    data = build_data(load_experiment(path))
    pairs = data.pairs()
    words = {name: {word for word, _ in split} for name, split in pairs.items()}
    assert not (words["train"] & words["test"]) and not (words["train"] & words["val"])
    assert len(pairs["train"]) > len(words["train"])  # some training words have several pronunciations
    data.setup("fit")
    for name in ("val", "test"):
        items = data.datasets[name]
        assert len(items) == len(words[name])  # one item per word
        every = {}
        for word, phonemes in pairs[name]:
            every.setdefault(word, []).append(phonemes)
        assert all(item["references"] == every[item["source_text"]] for item in items)
        assert all(item["target_text"] == item["references"][0] for item in items)
    assert len(data.datasets["train"]) == len(pairs["train"])


def build_data(experiment):
    from trainyard.components import BuildContext
    from trainyard.datacache import DataCache

    resolved = experiment.components["data"]
    return resolved.build(BuildContext(cache=DataCache(resolved.registered.name,
                                                       resolved.params.model_dump(mode="json"))))


def test_bucketing_batches_similar_lengths_and_covers_every_item():
    lengths = [(i * 7) % 40 + 1 for i in range(400)]
    sampler = BucketBatchSampler(lengths, batch_size=10, shuffle=True, seed=0)
    batches = list(sampler)
    assert sorted(i for batch in batches for i in batch) == list(range(400))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 3  # random batches of 10 from 1..40 spread about 30
    assert list(BucketBatchSampler(lengths, 10, True, seed=0)) == batches


# --- bad input: exit 2, one line, nothing written ---------------------------------------------


def one_problem(*args: str) -> str:
    result = CliRunner().invoke(app, ["validate", *args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


def test_an_empty_corpus_file_is_bad_input(tmp_path):
    path = corpus_spec(tmp_path)
    (tmp_path / "corpus.txt").write_text("  \n")
    assert "empty" in one_problem(str(path))
    assert not (tmp_path / "mlflow.db").exists()


def test_a_corpus_that_is_not_utf8_is_bad_input(tmp_path):
    path = corpus_spec(tmp_path)
    (tmp_path / "corpus.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    assert "not UTF-8" in one_problem(str(path))


@pytest.mark.parametrize("setting, message", [
    ("data.params.vocab_size=0", "data.params.vocab_size: expected an integer >= 1"),
    ("data.params.tokenizer=sentencepiece", "data.params.tokenizer: expected one of"),
    ("data.params.tokenizer=bpe", "the bpe tokenizer needs vocab_size"),
])
def test_tokenizer_settings_are_checked(tmp_path, setting, message):
    assert message in one_problem(str(corpus_spec(tmp_path)), "--set", setting)
