"""A sweep across models (sweep.branches): each branch checked against its own model before Ray
starts, every branch's values reaching its trials under random search and under Optuna, and one
sweep comparing the recurrent and the transformer encoder-decoder, read back from MLflow."""

from __future__ import annotations

import pytest
import yaml
from ray.tune.search.variant_generator import generate_variants
from typer.testing import CliRunner

from conftest import Store, run_sweep
from helpers import EXPERIMENTS, subprocess_env
from trainyard.cli import app
from trainyard.sweep import space
from trainyard.sweep.trial import SweepJob
from trainyard.validate import load_experiment

SPEC = EXPERIMENTS / "transformer" / "rnn_vs_transformer_sweep.yaml"
TRANSFORMER = "sweep.branches.transformer.encoder_decoder"


def job_for(experiment) -> SweepJob:
    """A trial's job with nothing but the spec (trial_experiment reads only that)."""
    spec = {key: value for key, value in experiment.data.items() if key != "sweep"}
    return SweepJob(spec, "spec.yaml", "sweep", "/tmp", "sqlite://", "0", "parent", {}, "val/exact_match", "max",
                    1, "best", 1, 1.0, 0.0, 0)


def test_random_search_tries_every_branch_with_its_own_values():
    experiment = load_experiment(SPEC)
    configs = [config for _ in range(2) for _, config in generate_variants(space.param_space(experiment.spec.sweep))]
    trials = [job_for(experiment).trial_experiment(config) for config in configs[:8]]
    models = [trial.model.registered.name for trial in trials]
    assert sorted(models) == ["seq.seq2seq"] * 4 + ["transformer.encoder_decoder"] * 4
    rnn = [t for t in trials if t.model.registered.name == "seq.seq2seq"]
    assert sorted((t.model.params.attention, t.model.params.hidden) for t in rnn) == [
        ("additive", 64), ("additive", 128), ("general", 64), ("general", 128)]
    assert all(t.model.params.cell == "gru" for t in rnn)  # the spec's own params: the same model
    transformers = [t for t in trials if t.model.registered.name == "transformer.encoder_decoder"]
    assert sorted((t.model.params.d_model, t.model.params.layers) for t in transformers) == [
        (64, 1), (64, 2), (128, 1), (128, 2)]
    for t in transformers:  # the branch's fixed values, on the model's defaults
        assert (t.model.params.label_smoothing, t.spec.schedule.name, t.spec.optimizer.betas) == (
            0.1, "inverse_sqrt", (0.9, 0.98))
        assert t.model.params.max_decode_length == 12 and t.spec.data.params["task"] == "dates"


def test_optuna_chooses_a_branch_then_its_values():
    from ray.tune.search.optuna import OptunaSearch

    experiment = load_experiment(SPEC, ["sweep.search=optuna", "sweep.space.data.params.batch_size={choice: [32, 64]}",
                                        f"{TRANSFORMER}.model.params.d_model={{choice: [64, 128]}}",
                                        f"{TRANSFORMER}.model.params.layers={{randint: [1, 3]}}",
                                        "sweep.branches.seq.seq2seq.model.params.attention={choice: [additive, dot]}",
                                        "sweep.branches.seq.seq2seq.model.params.hidden={choice: [64, 128]}"])
    assert space.param_space(experiment.spec.sweep) == {}  # Optuna's define-by-run function holds it all
    searcher = OptunaSearch(space=space.define_by_run(experiment.spec.sweep), metric="val/exact_match", mode="max",
                            seed=0)
    trials = [job_for(experiment).trial_experiment(searcher.suggest(f"trial{i}")) for i in range(12)]
    assert {t.model.registered.name for t in trials} == {"seq.seq2seq", "transformer.encoder_decoder"}
    for trial in trials:
        assert trial.spec.data.params["batch_size"] in (32, 64)
        if trial.model.registered.name == "transformer.encoder_decoder":
            assert trial.model.params.d_model in (64, 128) and trial.model.params.layers in (1, 2)
            assert trial.spec.schedule.name == "inverse_sqrt"
        else:
            assert trial.model.params.attention in ("additive", "dot") and trial.spec.schedule.name == "none"


@pytest.mark.parametrize("override,message", [
    (f"{TRANSFORMER}.model.params.dmodel={{grid: [64]}}",
     f"{TRANSFORMER}.model.params.dmodel: not a field of this spec (did you mean 'model.params.d_model'?)"),
    (f"{TRANSFORMER}.model.params.heads={{grid: [4, 3]}}",
     f"{TRANSFORMER}.model.params.heads: grid value 3 is invalid here: d_model 128 is not divisible by heads 3"),
    (f"{TRANSFORMER}.model.params.positions=absolute",
     f"{TRANSFORMER}: model.params.positions: expected one of 'sinusoidal', 'learned', 'rotary', got 'absolute'"),
    ("sweep.branches.seq.seq3seq={}", "sweep.branches.seq.seq3seq: unknown model 'seq.seq3seq'"),
    (f"{TRANSFORMER}.data.params.batch_size={{grid: [8]}}",
     "sweep: branches.transformer.encoder_decoder.data.params.batch_size: data.params.batch_size is also searched "
     "in sweep.space; give it in one place"),
    ("sweep.scheduler.name=pbt", "pbt mutates the values of running trials and cannot switch a trial's model"),
])
def test_a_bad_branch_is_one_line_and_exit_2_before_ray_starts(override, message):
    result = CliRunner().invoke(app, ["validate", str(SPEC), "--set", override])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output


@pytest.mark.slow
@pytest.mark.xdist_group("ray")
def test_a_sweep_compares_the_recurrent_and_the_transformer_model(tmp_path):
    data = yaml.safe_load(SPEC.read_text())
    data["data"]["params"] |= {"train_size": 64, "val_size": 16, "test_size": 16, "batch_size": 16}
    data["sweep"]["space"] = {"data.params.batch_size": {"grid": [16]}}
    data["sweep"]["branches"]["seq.seq2seq"] |= {"model.params.attention": {"grid": ["additive"]},
                                                 "model.params.hidden": {"grid": [16]}}
    data["sweep"]["branches"]["transformer.encoder_decoder"] |= {"model.params.d_model": {"grid": [16]},
                                                                 "model.params.layers": {"grid": [1]}}
    data["trainer"]["max_epochs"] = 1
    spec = tmp_path / "rnn_vs_transformer.yaml"
    spec.write_text(yaml.safe_dump(data))
    result = run_sweep(spec, env=subprocess_env(plugins="text,seq,transformer"))
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", "rnn-vs-transformer")
    [parent] = store.parents()
    children = store.children(parent.info.run_id)
    assert sorted((run.data.tags["trainyard.family"], run.data.params["model.name"]) for run in children) == [
        ("seq", "seq.seq2seq"), ("transformer", "transformer.encoder_decoder")]
    assert all(run.info.status == "FINISHED" for run in children)
    for model in ("seq.seq2seq", "transformer.encoder_decoder"):
        assert f"best_of/{model}/val/exact_match" in parent.data.metrics
    artifacts = {item.path for item in store.client.list_artifacts(parent.info.run_id)}
    assert {"best_per_model.json", "trials.csv", "metric_vs_params.png", "search_space.yaml",
            "learning_curves.png", "parallel_coordinates.png", "top_trials.json"} <= artifacts
