"""transformer.decoder_lm: a GPT-style language model on text.corpus learns beyond character
frequencies, records its samples and attention maps, and refuses windows its learned positions
cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import unigram_bits
from trainyard.build import build
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.validate import load_experiment

SPEC = """\
name: char-gpt
seed: {seed}
data: {{name: text.corpus, params: {{source: pydoc, tokenizer: char, seq_len: 32, batch_size: 16, max_chars: 40000,
                                   split_seed: {seed}}}}}
model: {{name: transformer.decoder_lm, params: {{d_model: 64, heads: 4, layers: 2, dropout: 0.0, positions: {positions},
                                             sample_length: 40}}}}
optimizer: {{name: adamw, lr: 0.003, betas: [0.9, 0.95], weight_decay: 0.01}}
schedule: {{name: cosine, warmup_steps: 20, eta_min: 0.0003}}
trainer: {{max_epochs: 5, progress_bar: false, checkpoint: {{monitor: val/bpc, mode: min}}}}
tracking: {{experiment: transformer-lm}}
"""


def write(folder: Path, positions: str = "rotary", seed: int = 0) -> Path:
    path = folder / f"gpt-{positions}.yaml"
    path.write_text(SPEC.format(positions=positions, seed=seed))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("positions,seed", [("rotary", 0), ("learned", 1), ("sinusoidal", 2)])
def test_a_character_transformer_learns_beyond_character_frequencies(tmp_path, positions, seed, one_thread):
    experiment = load_experiment(write(tmp_path, positions, seed))
    documents = build(experiment).data.documents()
    baseline = unigram_bits(documents["train"], documents["val"])
    result = run_experiment(experiment, quiet=True)
    client = MlflowClient(result.tracking_uri)
    bpc = [m.value for m in sorted(client.get_metric_history(result.run_id, "val/bpc"), key=lambda m: m.step)]
    assert len(bpc) == 5 and bpc[-1] < bpc[0]
    assert result.metrics["best/val/bpc"] < baseline - 0.75, (bpc, baseline)
    artifacts = {item.path for folder in ("data", "reports", "samples/samples")
                 for item in client.list_artifacts(result.run_id, folder)}
    assert {"data/tokenizer.json", "reports/attention.png"} <= artifacts
    assert len([path for path in artifacts if path.startswith("samples/samples/")]) == 5


def test_a_window_longer_than_the_learned_positions_is_bad_input(tmp_path):
    spec = write(tmp_path, "learned")
    result = CliRunner().invoke(app, ["validate", str(spec), "--set", "model.params.max_positions=16"])
    assert result.exit_code == 2
    assert result.output.strip() == ("gpt-learned.yaml: model.params: a training window (data seq_len) has 32 tokens, "
                                     "more than max_positions 16 of learned positions (raise max_positions, or use "
                                     "sinusoidal or rotary positions)")
    assert not (tmp_path / "mlflow.db").exists()
