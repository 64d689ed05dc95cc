"""The vanishing-gradient lesson, as a test (Hochreiter & Schmidhuber 1997): recall the first
token of a source after 50 distractors. With the same size, data, optimizer and step budget, an
LSTM learns it and a vanilla tanh RNN stays near chance (1/8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.build import build, make_trainer
from trainyard.train import fit_and_test
from trainyard.validate import load_experiment
from trainyard_text import tasks

SPEC = Path(__file__).parents[3] / "experiments" / "seq" / "recall_rnn_vs_lstm.yaml"
CHANCE = 1 / len(tasks.RECALL_TOKENS)


def recall(tmp_path: Path, cell: str, seed: int = 0) -> dict[str, float]:
    experiment = load_experiment(SPEC, [f"model.params.cell={cell}", f"seed={seed}", f"data.params.split_seed={seed}",
                                        "trainer.progress_bar=false"])
    built = build(experiment)
    trained = fit_and_test(built, make_trainer(experiment, tmp_path / cell / "checkpoints", quiet=True, built=built))
    return trained.metrics


def test_the_recall_task_hides_its_token_fifty_steps_back():
    pairs = tasks.generate("recall", 200, (50, 50), seed=0)
    assert all(len(source) == 51 and source[0] == target for source, target in pairs)
    assert all(set(source[1:]) <= set(tasks.DISTRACTORS) for source, _ in pairs)
    assert {target for _, target in pairs} == set(tasks.RECALL_TOKENS)


@pytest.mark.slow
def test_an_lstm_recalls_fifty_steps_back_and_a_vanilla_rnn_stays_near_chance(tmp_path, one_thread):
    lstm = recall(tmp_path, "lstm")
    assert lstm["test/exact_match"] >= 0.95, lstm
    rnn = recall(tmp_path, "rnn")  # the same size, data, optimizer and budget (it never reaches the threshold)
    assert rnn["test/exact_match"] <= 2.5 * CHANCE, rnn
