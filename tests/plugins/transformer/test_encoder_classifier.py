"""transformer.encoder_classifier: a [CLS] transformer encoder recalls a letter across any lag,
reports where [CLS] read, and refuses data whose targets are not one token."""

from __future__ import annotations


import pytest
import torch
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import EXPERIMENTS
from trainyard.build import build
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.validate import load_experiment

SPEC = EXPERIMENTS / "transformer" / "recall_classifier.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_attention_recalls_a_letter_fifty_to_a_hundred_steps_back(tmp_path, seed, one_thread):
    """What a vanilla RNN cannot learn (tests/plugins/seq/test_long_lag_recall.py), with lags
    longer than any in training at test time. Chance is 1/8."""
    experiment = load_experiment(SPEC, [f"seed={seed}", f"data.params.split_seed={seed}", "trainer.progress_bar=false",
                                        "data.params.train_size=3000", "trainer.max_epochs=3",
                                        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"])
    result = run_experiment(experiment, quiet=True)
    assert result.metrics["test/acc"] >= 0.95, result.metrics
    client = MlflowClient(result.tracking_uri)
    assert "reports/attention.png" in {item.path for item in client.list_artifacts(result.run_id, "reports")}


def test_padding_never_changes_a_class(tmp_path):
    built = build(load_experiment(SPEC, ["data.params.train_size=64", "data.params.val_size=16",
                                         "data.params.test_size=16"]))
    model = built.model.eval()
    source = torch.randint(4, 20, (2, 12))
    alone = model(source, torch.tensor([12, 12]))
    padded = torch.cat([source, torch.zeros(2, 6, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(padded, torch.tensor([12, 12])), alone, atol=1e-5, rtol=1e-5)


def test_targets_longer_than_one_token_are_bad_input(tmp_path):
    spec = tmp_path / "classify_reversal.yaml"
    spec.write_text("name: classify-reversal\n"
                    "data: {name: text.pairs, params: {task: reverse, train_lengths: [3, 5], train_size: 50,"
                    " val_size: 10, test_size: 10}}\n"
                    "model: {name: transformer.encoder_classifier}\n")
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2
    assert result.output.strip() == ("classify_reversal.yaml: model.params: encoder_classifier needs targets of one "
                                     "token, the class (task: recall); this data's longest target has 5")
    assert not (tmp_path / "mlflow.db").exists()
