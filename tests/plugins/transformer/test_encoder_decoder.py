"""transformer.encoder_decoder on text.pairs: decoding with the key-value cache is teacher forcing
one token at a time, beam search of width 1 is greedy, it learns to reverse strings, a run
records its attention maps per block and head, and bad configurations are refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import trained_a_little
from trainyard.build import build, make_trainer
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.train import fit_and_test
from trainyard.validate import load_experiment

SPEC = """\
name: reverse
seed: {seed}
data: {{name: text.pairs, params: {{task: reverse, train_lengths: [3, 6], train_size: {train_size}, val_size: 50,
                                  test_size: 50, batch_size: 16, split_seed: {seed}}}}}
model: {{name: transformer.encoder_decoder, params: {{d_model: 32, heads: 4, layers: 2, feed_forward: 64,
         dropout: 0.0, positions: {positions}, max_decode_length: 10}}}}
optimizer: {{name: adam, lr: 0.003, betas: [0.9, 0.98]}}
schedule: {{name: inverse_sqrt, warmup_steps: 50}}
trainer: {{max_epochs: {epochs}, gradient_clip_val: 1.0, progress_bar: false,
          checkpoint: {{monitor: val/exact_match, mode: max}}}}
tracking: {{experiment: transformer}}
"""


def write(folder: Path, seed: int = 0, positions: str = "sinusoidal", epochs: int = 12, train_size: int = 500) -> Path:
    path = folder / f"reverse-{positions}-{seed}.yaml"
    path.write_text(SPEC.format(seed=seed, positions=positions, epochs=epochs, train_size=train_size))
    return path


@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "rotary"])
def test_decoding_with_the_cache_gives_the_teacher_forced_logits(tmp_path, positions, one_thread):
    model, batches = trained_a_little(write(tmp_path, positions=positions), steps=5)
    batch = batches[0]
    source, lengths, target = batch["source"], batch["source_lengths"], batch["target"]
    whole = model(source, lengths, target)  # (B, T-1, V): every position at once
    memory, state = model.encode(source, lengths)
    steps = []
    for i in range(target.shape[1] - 1):
        logits, state, _ = model.decode_step(target[:, i], state, memory)
        steps.append(logits)
    real = target[:, 1:] != model.pad_id
    torch.testing.assert_close(torch.stack(steps, 1)[real], whole[real], atol=1e-5, rtol=1e-5)


def test_beam_width_one_is_greedy_and_a_batch_is_searched_as_its_rows_alone(tmp_path, one_thread):
    model, batches = trained_a_little(write(tmp_path))
    for batch in batches:
        greedy = model.greedy(batch["source"], batch["source_lengths"])
        beam = model.beam_search(batch["source"], batch["source_lengths"], beam_width=1, length_penalty=0.6)
        assert torch.equal(beam.tokens, greedy.tokens)
    outputs = [model.target_text(model.target_pieces(row)) for row in greedy.tokens]
    assert outputs != batch["target_text"]  # far from perfect: decoding has choices to make
    batch = batches[0]
    together = model.beam_search(batch["source"], batch["source_lengths"], beam_width=3, length_penalty=0.6)
    for row in range(4):
        length = int(batch["source_lengths"][row])
        alone = model.beam_search(batch["source"][row:row + 1, :length], batch["source_lengths"][row:row + 1],
                                  beam_width=3, length_penalty=0.6)
        assert torch.equal(together.tokens[row, :alone.tokens.shape[1]], alone.tokens[0])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_transformer_learns_to_reverse(tmp_path, seed, one_thread):
    # Chance is 1/26 per letter: a reversal of 3 to 6 letters is guessed whole with p < 6e-5.
    experiment = load_experiment(write(tmp_path, seed=seed, epochs=10, train_size=2000))
    built = build(experiment)
    trained = fit_and_test(built, make_trainer(experiment, tmp_path / "checkpoints", quiet=True, built=built))
    assert trained.best_score >= 0.9, trained
    assert trained.metrics["test/exact_match"] >= 0.8, trained


def test_a_run_records_attention_maps_per_block_and_head(tmp_path, one_thread):
    experiment = load_experiment(write(tmp_path, epochs=1, train_size=64), ["model.params.beam_width=2"])
    result = run_experiment(experiment, quiet=True)
    client = MlflowClient(result.tracking_uri)
    for key in ("val/exact_match", "val/bleu", "test/exact_match", "test/cer", "train/lr"):
        assert client.get_metric_history(result.run_id, key), key
    reports = {item.path for item in client.list_artifacts(result.run_id, "reports")}
    assert {"reports/predictions.csv", *(f"reports/attention_{i}.png" for i in range(4))} <= reports
    from PIL import Image

    image = Image.open(client.download_artifacts(result.run_id, "reports/attention_0.png", str(tmp_path)))
    assert image.width > 300 and image.height > 600  # 2 blocks x 3 kinds of rows, 4 heads across


@pytest.mark.parametrize("override,message", [
    ("model.params.heads=3", "model.params: d_model 32 is not divisible by heads 3"),
    ("model.params.positions=absolute", "model.params.positions: expected one of 'sinusoidal', 'learned', 'rotary', "
                                        "got 'absolute'"),
    ("model.params.positions=learned", "model.params: the data's longest source has 6 tokens, more than "
                                       "max_positions 5 of learned positions"),
])
def test_bad_configurations_are_one_line_and_exit_2(tmp_path, override, message):
    spec = write(tmp_path, epochs=1, train_size=64)
    overrides = [override] + (["model.params.max_positions=5"] if "learned" in override else [])
    result = CliRunner().invoke(app, ["validate", str(spec), *(a for o in overrides for a in ("--set", o))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output
    assert not (tmp_path / "mlflow.db").exists()
