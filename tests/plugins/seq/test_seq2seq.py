"""seq.seq2seq: an encoder-decoder with attention on text.pairs. Its attention is a distribution
over the real source tokens, beam search of width 1 is greedy search and a wider beam finds what
greedy misses, it learns to reverse strings, and a run records its metrics, tokenizers, decoded
samples, attention heatmaps and predictions."""

from __future__ import annotations

import csv
import math
import subprocess
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import EXPERIMENTS, subprocess_env, trained_a_little, trainyard_command
from trainyard.build import build, make_trainer
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.train import fit_and_test
from trainyard.validate import load_experiment
from trainyard_seq.seq2seq import Attention, Memory, Seq2Seq, Seq2SeqParams
from trainyard_text.data import collate_pairs

SPEC = """\
name: reverse
seed: {seed}
data: {{name: text.pairs, params: {{task: reverse, train_lengths: [3, 6], train_size: {train_size}, val_size: 50,
                                  test_size: 50, batch_size: 16, split_seed: {seed}}}}}
model: {{name: seq.seq2seq, params: {{cell: lstm, embedding: 32, hidden: 64, attention: {attention}, dropout: 0.0,
                                  max_decode_length: 10}}}}
optimizer: {{name: adam, lr: 0.001}}
trainer: {{max_epochs: {epochs}, gradient_clip_val: 1.0, progress_bar: false,
          checkpoint: {{monitor: val/exact_match, mode: max}}}}
tracking: {{experiment: seq2seq}}
"""


def write(folder: Path, seed: int = 0, attention: str = "additive", epochs: int = 12, train_size: int = 500) -> Path:
    path = folder / f"reverse-{attention}-{seed}.yaml"
    path.write_text(SPEC.format(seed=seed, attention=attention, epochs=epochs, train_size=train_size))
    return path


# --- attention -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_attention_weights_sum_to_one_over_the_input_and_padding_gets_none(kind):
    torch.manual_seed(0)
    attention = Attention(kind, 8)
    values = torch.randn(3, 5, 8)  # (B, S, H)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([[5], [2], [1]])  # (B, S)
    context, weights = attention(torch.randn(3, 8), Memory(values, attention.keys(values), mask))
    assert weights.shape == (3, 5) and context.shape == (3, 8)
    assert torch.allclose(weights.sum(-1), torch.ones(3))
    assert torch.all(weights[~mask] == 0.0)  # exactly: -inf before the softmax
    assert torch.all(weights[mask] > 0.0)
    # The context is the weighted average of the real positions only.
    assert torch.allclose(context[2], values[2, 0])


def test_decoded_attention_covers_the_real_source_tokens_only(tmp_path, one_thread):
    model, batches = trained_a_little(write(tmp_path), steps=5)
    source = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 0, 0, 0]])
    lengths = torch.tensor([5, 2])
    decoded = model.greedy(source, lengths)
    attention = decoded.attention  # (B, L, S)
    written = decoded.tokens != model.pad_id  # the tokens up to <eos>
    assert torch.allclose(attention[written].sum(-1), torch.ones(int(written.sum())))
    assert torch.all(attention[1, :, 2:] == 0.0)
    assert torch.all(attention[~written] == 0.0)  # nothing behind the padding after <eos>


# --- decoding ------------------------------------------------------------------------------------


def test_beam_width_one_is_greedy_search(tmp_path, one_thread):
    model, batches = trained_a_little(write(tmp_path))
    for batch in batches:
        greedy = model.greedy(batch["source"], batch["source_lengths"])
        beam = model.beam_search(batch["source"], batch["source_lengths"], beam_width=1, length_penalty=0.6)
        assert torch.equal(beam.tokens, greedy.tokens)
        # The beam decodes only the rows still undecided: the same weights, up to float rounding.
        torch.testing.assert_close(beam.attention, greedy.attention)
    # Far from perfect: the decoded outputs are not all the references.
    outputs = [model.target_text(model.target_pieces(row)) for row in greedy.tokens]
    assert outputs != batch["target_text"]


def test_a_batch_is_beam_searched_as_its_sequences_are_one_by_one(tmp_path, one_thread):
    model, batches = trained_a_little(write(tmp_path))
    batch = batches[0]
    together = model.beam_search(batch["source"], batch["source_lengths"], beam_width=3, length_penalty=0.6)
    for row in range(4):
        length = int(batch["source_lengths"][row])
        alone = model.beam_search(batch["source"][row:row + 1, :length], batch["source_lengths"][row:row + 1],
                                  beam_width=3, length_penalty=0.6)
        width = alone.tokens.shape[1]
        assert torch.equal(together.tokens[row, :width], alone.tokens[0])
        assert torch.all(together.tokens[row, width:] == model.pad_id)


def constructed_decoder() -> Seq2Seq:
    """A decoder whose next token depends on the previous token alone, by a table of logits:

        after <bos>:  A 0.55, B 0.45
        after A:      <eos> 0.12, or one of eight fillers at 0.11 each
        after B:      <eos>, almost surely

    Greedy takes A, then can only end badly: p(A <eos>) = 0.066. A beam of two keeps B and
    finds p(B <eos>) = 0.45.
    """
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    tokens = [*specials, "A", "B", *"cdefghij"]
    V = len(tokens)
    A, B, EOS, fillers = 4, 5, 3, range(6, V)
    params = Seq2SeqParams(cell="gru", embedding=V, hidden=V, bidirectional=False, attention="none", dropout=0.0,
                           max_decode_length=6)
    model = Seq2Seq(params, 6, V, 0, 2, 3, [*specials, "x", "y"], tokens).eval()
    table = torch.full((V, V), -30.0)  # table[previous, next]: the next token's logit
    table[2, A], table[2, B] = math.log(0.55), math.log(0.45)
    table[A, EOS] = math.log(0.12)
    table[A, list(fillers)] = math.log(0.11)
    table[B, EOS] = 0.0
    table[list(fillers), EOS] = 0.0
    gru, scale = model.decoder.rnn, math.tanh(3.0)
    with torch.no_grad():
        model.decoder.embed.weight.copy_(torch.eye(V))  # e = one-hot(previous)
        for parameter in (gru.weight_hh_l0, gru.bias_hh_l0, gru.weight_ih_l0, gru.bias_ih_l0):
            parameter.zero_()
        gru.bias_ih_l0[V:2 * V] = -30.0  # update gate z ~ 0: s_i = n_i, the previous state forgotten
        gru.weight_ih_l0[2 * V:] = 3.0 * torch.eye(V)  # n_i = tanh(3 e) ~ 0.995 one-hot(previous)
        model.decoder.out.weight.copy_(table.T / scale)  # logits = table[previous]
        model.decoder.out.bias.zero_()
    return model


def test_beam_search_finds_a_more_likely_output_than_greedy():
    model = constructed_decoder()
    source, lengths = torch.tensor([[4, 5, 4]]), torch.tensor([3])
    greedy = model.greedy(source, lengths).tokens
    beam = model.beam_search(source, lengths, beam_width=2, length_penalty=0.0).tokens
    assert greedy.tolist() == [[4, 3]]  # A <eos>
    assert beam.tolist() == [[5, 3]]  # B <eos>
    greedy_score, beam_score = model.log_probability(source, lengths, greedy), model.log_probability(source, lengths,
                                                                                                     beam)
    assert greedy_score.item() == pytest.approx(math.log(0.55 * 0.12), abs=1e-3)
    assert beam_score.item() == pytest.approx(math.log(0.45), abs=1e-3)


# --- metrics -------------------------------------------------------------------------------------


def test_word_targets_get_phoneme_and_word_error_rates(monkeypatch):
    """g2p's targets are phonemes separated by spaces: per counts phoneme edits, wer whole words."""
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    phonemes = [*specials, "K", "AE1", "T", "D", "AO1", "G"]
    model = Seq2Seq(Seq2SeqParams(hidden=8, embedding=4), 10, len(phonemes), 0, 2, 3, [*specials, *"catdog"],
                    phonemes, char_targets=False)
    batch = collate_pairs([
        {"source": [4, 5, 6], "target": [2, 4, 5, 6, 3], "source_text": "cat", "target_text": "K AE1 T"},
        {"source": [7, 8, 9], "target": [2, 7, 8, 9, 3], "source_text": "dog", "target_text": "D AO1 G"}])
    decoded = type("Decoded", (), {"tokens": torch.tensor([[4, 5, 6, 3], [7, 8, 4, 3]])})  # cat right, dog: G -> K
    logged = {}
    monkeypatch.setattr(model, "log_dict", lambda metrics, **_: logged.update(metrics))
    model._start_evaluation()
    model._evaluate(batch, decoded)
    model._log_evaluation("test")
    assert model.eval_predictions == ["K AE1 T", "D AO1 K"]
    assert logged["test/exact_match"] == 0.5
    assert logged["test/per"] == pytest.approx(1 / 6)
    assert logged["test/wer"] == 0.5
    assert "test/cer" not in logged


def test_a_word_with_several_pronunciations_is_right_in_any_of_them(monkeypatch):
    """Scored as G2P papers score it: right when the output is any of the word's pronunciations,
    and phoneme errors counted against the closest one."""
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    phonemes = [*specials, "IY", "AY", "DH", "ER", "T", "AH", "M", "EY", "AA", "OW"]
    ids = {p: i for i, p in enumerate(phonemes)}
    model = Seq2Seq(Seq2SeqParams(hidden=8, embedding=4), 12, len(phonemes), 0, 2, 3, [*specials, *"eithrmao"],
                    phonemes, char_targets=False)

    def item(word, references):
        return {"source": [4] * len(word), "target": [2, *(ids[p] for p in references[0].split()), 3],
                "source_text": word, "target_text": references[0], "references": references}

    batch = collate_pairs([item("either", ["IY DH ER", "AY DH ER"]),
                           item("tomato", ["T AH M EY T OW", "T AH M AA T OW"])])
    said = ["AY DH ER", "T AH M AA T AH"]  # the second pronunciation; one phoneme off the second
    tokens = [[ids[p] for p in text.split()] + [3] for text in said]
    width = max(map(len, tokens))
    decoded = type("Decoded", (), {"tokens": torch.tensor([t + [0] * (width - len(t)) for t in tokens])})
    logged = {}
    monkeypatch.setattr(model, "log_dict", lambda metrics, **_: logged.update(metrics))
    model._start_evaluation()
    model._evaluate(batch, decoded)
    model._log_evaluation("test")
    assert logged["test/exact_match"] == 0.5 and logged["test/wer"] == 0.5
    assert logged["test/per"] == pytest.approx(1 / 9)  # 1 edit over 3 + 6 reference phonemes


# --- runs ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_an_attentional_lstm_learns_to_reverse(tmp_path, seed, one_thread):
    # Chance is 1/26 per letter: a reversal of 3 to 6 letters is guessed whole with p < 6e-5.
    experiment = load_experiment(write(tmp_path, seed=seed))
    built = build(experiment)
    trained = fit_and_test(built, make_trainer(experiment, tmp_path / "checkpoints", quiet=True, built=built))
    assert trained.best_score >= 0.9, trained  # val/exact_match, greedy
    assert trained.metrics["test/exact_match"] >= 0.8, trained
    assert trained.metrics["test/cer"] <= 0.1, trained


@pytest.mark.parametrize("attention", ["additive", "none"])
def test_a_run_records_metrics_tokenizers_samples_and_reports(tmp_path, attention, one_thread):
    experiment = load_experiment(write(tmp_path, attention=attention, epochs=2, train_size=64), [
        "model.params.beam_width=2", "model.params.teacher_forcing_final=0.5"])
    result = run_experiment(experiment, quiet=True)
    client = MlflowClient(result.tracking_uri)

    def history(key):
        return [m.value for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]

    assert len(history("val/exact_match")) == 2
    assert history("train/teacher_forcing") == [1.0, 0.5]  # linear to the final ratio at the last epoch
    for key in ("val/loss", "val/token_accuracy", "val/bleu", "val/cer", "test/exact_match", "test/bleu"):
        assert len(history(key)) >= 1, key
    artifacts = {item.path for folder in ("data", "reports", "samples/decoded")
                 for item in client.list_artifacts(result.run_id, folder)}
    assert {"data/source_tokenizer.json", "data/target_tokenizer.json", "reports/predictions.csv"} <= artifacts
    assert ("reports/attention.png" in artifacts) == (attention != "none")
    assert len([path for path in artifacts if path.startswith("samples/decoded/")]) == 2
    table = Path(client.download_artifacts(result.run_id, "reports/predictions.csv", str(tmp_path)))
    with table.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 50 and set(rows[0]) == {"source", "reference", "prediction", "correct"}
    assert all(row["reference"] == row["source"][::-1] for row in rows)
    exact = sum(row["correct"] == "True" for row in rows) / len(rows)
    assert exact == pytest.approx(result.metrics["test/exact_match"])


@pytest.mark.slow
@pytest.mark.xdist_group("small-sweeps")
def test_a_sweep_compares_attention_types_in_nested_child_runs(tmp_path):
    """experiments/seq/attention_sweep.yaml, smaller: each attention type is a child run."""
    spec = tmp_path / "attention_sweep.yaml"
    spec.write_text((EXPERIMENTS / "seq" / "attention_sweep.yaml").read_text())
    overrides = ["sweep.space.model.params.hidden={grid: [16]}", "data.params.train_size=128",
                 "data.params.val_size=32", "data.params.test_size=32", "trainer.max_epochs=1"]
    result = subprocess.run([*trainyard_command(), "sweep", str(spec), *(arg for o in overrides for arg in ("--set", o))],
                            env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("seq-attention-sweep").experiment_id])
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(run.data.params["model.params.attention"] for run in children) == ["additive", "dot", "general",
                                                                                    "none"]
    assert all(run.info.status == "FINISHED" and "val/exact_match" in run.data.metrics for run in children)
    assert "best_trial/val/exact_match" in parent.data.metrics


def test_beam_width_zero_is_bad_input():
    spec = Path(__file__).parents[3] / "experiments" / "seq" / "reverse_attention.yaml"
    result = CliRunner().invoke(app, ["validate", str(spec), "--set", "model.params.beam_width=0"])
    assert result.exit_code == 2
    assert result.output.strip() == ("reverse_attention.yaml: model.params.beam_width: expected an integer >= 1, "
                                      "got 0 (set with --set)")


def test_a_test_length_the_decoder_cannot_write_is_bad_input(tmp_path):
    """Reversal tested on lengths 20-30 needs 31 output tokens: a decoder limited to 25 could
    never be right on the longest, so the spec is refused before anything runs."""
    spec = tmp_path / "too_long.yaml"
    spec.write_text("name: too-long\n"
                    "data: {name: text.pairs, params: {task: reverse, train_lengths: [5, 10], test_lengths: [20, 30],"
                    " train_size: 50, val_size: 10, test_size: 10}}\n"
                    "model: {name: seq.seq2seq, params: {max_decode_length: 25}}\n")
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2
    assert result.output.strip() == ("too_long.yaml: model.params: the data's longest target has 31 tokens (with <eos>), "
                                     "more than max_decode_length 25")
    assert not (tmp_path / "mlflow.db").exists()
