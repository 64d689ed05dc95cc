"""seq.rnn_lm: a recurrent language model on text.corpus learns beyond character frequencies,
carries its hidden state across windows, and records its tokenizer, samples and bits per character."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import unigram_bits
from trainyard.build import build
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.validate import load_experiment

SPEC = """\
name: char-lm
seed: {seed}
data: {{name: text.corpus, params: {{source: pydoc, tokenizer: char, seq_len: 32, batch_size: 16, max_chars: 40000,
                                   split_seed: {seed}}}}}
model: {{name: seq.rnn_lm, params: {{cell: {cell}, embedding: 32, hidden: 128, layers: 1, dropout: 0.0,
                                 sample_length: 40}}}}
optimizer: {{name: adam, lr: 0.01}}
trainer: {{max_epochs: 3, progress_bar: false, checkpoint: {{monitor: val/bpc, mode: min}}}}
tracking: {{experiment: seq}}
"""


def write(folder: Path, cell: str = "lstm", seed: int = 0) -> Path:
    path = folder / f"{cell}.yaml"
    path.write_text(SPEC.format(cell=cell, seed=seed))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_character_lstm_learns_beyond_character_frequencies(tmp_path, seed):
    experiment = load_experiment(write(tmp_path, seed=seed))
    documents = build(experiment).data.documents()
    baseline = unigram_bits(documents["train"], documents["val"])
    result = run_experiment(experiment, quiet=True)
    client = MlflowClient(result.tracking_uri)
    bpc = [m.value for m in sorted(client.get_metric_history(result.run_id, "val/bpc"), key=lambda m: m.step)]
    assert len(bpc) == 3 and bpc[-1] < bpc[0]
    assert result.metrics["best/val/bpc"] < baseline - 0.75, (bpc, baseline)
    # The run can be read later: its tokenizer, and a generated sample at each validation.
    artifacts = {item.path for folder in ("data", "samples/samples")
                 for item in client.list_artifacts(result.run_id, folder)}
    assert "data/tokenizer.json" in artifacts
    assert len([path for path in artifacts if path.startswith("samples/")]) == 3


def test_the_hidden_state_is_carried_across_windows_and_detached(tmp_path):
    built = build(load_experiment(write(tmp_path)))
    model, data = built.model, built.data
    data.setup("fit")
    first, second = list(data.train_dataloader())[:2]
    model.on_train_epoch_start()
    model.training_step(first, 0).backward()
    assert model.state[0].shape == (1, 16, 128)  # (layers, B, H)
    # The second window starts from the first's state, without its history: backward through
    # it would otherwise reach the freed graph of the first window.
    carried = model.training_step(second, 1)
    carried.backward()
    model.state = None
    fresh = model.training_step(second, 1)
    assert not torch.isclose(carried, fresh)
    model.on_train_epoch_start()
    assert model.state is None


def test_samples_follow_temperature_and_top_k(tmp_path):
    built = build(load_experiment(write(tmp_path), ["model.params.top_k=1"]))
    model = built.model
    # top_k 1 is greedy: the same sample whatever the seed.
    assert model.sample(20, seed=0) == model.sample(20, seed=1)
    assert len(model.sample(20)) <= 20


def test_tied_weights_need_equal_sizes():
    result = CliRunner().invoke(app, ["validate", str(Path(__file__).parents[3] / "experiments" / "seq" /
                                                     "char_lstm_pydoc.yaml"), "--set", "model.params.tie_weights=true"])
    assert result.exit_code == 2
    assert result.output.strip() == ("char_lstm_pydoc.yaml: model.params: tie_weights needs embedding == hidden, "
                                     "got 128 and 256 (set with --set)")


def test_gradient_clipping_is_on_by_default(tmp_path, monkeypatch):
    from trainyard.build import make_trainer
    from trainyard.train import fit_and_test
    from trainyard_seq.language_model import RNNLanguageModel

    calls = []
    original = RNNLanguageModel.clip_gradients

    def spy(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        calls.append((gradient_clip_val, gradient_clip_algorithm))
        return original(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    monkeypatch.setattr(RNNLanguageModel, "clip_gradients", spy)
    overrides = ["trainer.max_steps=2", "trainer.checkpoint=null", "model.params.sample_length=0"]
    for extra, expected in (([], 0.25), (["trainer.gradient_clip_val=1.5"], 1.5)):
        calls.clear()
        experiment = load_experiment(write(tmp_path), [*overrides, *extra])
        built = build(experiment)
        fit_and_test(built, make_trainer(experiment, tmp_path / "ckpt", quiet=True, built=built))
        assert calls == [(expected, "norm")] * 2
