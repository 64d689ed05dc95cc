"""The RL family on the platform: example specs run, MLflow records read back, bad specs exit 2."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import EXPERIMENTS, subprocess_env, trainyard_command
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.validate import load_experiment


def run_spec(name: str, tmp_path, *overrides: str):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = load_experiment(EXPERIMENTS / "rl" / f"{name}.yaml", [f"tracking.uri={uri}", *overrides])
    return run_experiment(experiment, quiet=True), MlflowClient(uri)


def test_value_iteration_run_is_recorded_and_reads_back(tmp_path):
    result, client = run_spec("frozenlake_vi", tmp_path, "algorithm.params.eval_episodes=300")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["env.name"] == "FrozenLake-v1" and run.data.params["env.params.map_name"] == "8x8"
    assert run.data.params["algorithm.params.gamma"] == "0.99"
    assert run.data.tags["trainyard.env"] == "FrozenLake-v1" and "trainyard.gymnasium.version" in run.data.tags
    assert run.data.tags["trainyard.algorithm"] == "rl.value_iteration"

    residuals = client.get_metric_history(result.run_id, "bellman_residual")
    iterations = int(run.data.metrics["iterations"])
    assert [m.step for m in sorted(residuals, key=lambda m: m.step)] == list(range(1, iterations + 1))
    last = max(residuals, key=lambda m: m.step).value
    assert last < 1e-6 * (1 - 0.99) / (2 * 0.99) <= sorted(residuals, key=lambda m: m.step)[-2].value
    metrics = run.data.metrics
    # Known value: the optimal start value of slippery FrozenLake 8x8 at gamma 0.99 (policy iteration agrees).
    assert metrics["value/start"] == pytest.approx(0.4146, abs=1e-3)
    assert metrics["eval/return_ci_low"] <= metrics["eval/return"] <= metrics["eval/return_ci_high"]
    assert 0.5 < metrics["eval/success"] < 0.8 and metrics["eval/success_ci_low"] < metrics["eval/success"]
    assert metrics["seconds"] > 0 and metrics["converged"] == 1.0
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "reports")}
    assert artifacts == {"reports/value.png", "reports/convergence.png"}


def test_policy_iteration_and_q_learning_examples_run(tmp_path):
    pi, client = run_spec("frozenlake_pi", tmp_path, "algorithm.params.eval_episodes=100")
    vi_value = 0.4146
    assert client.get_run(pi.run_id).data.metrics["value/start"] == pytest.approx(vi_value, abs=1e-3)
    assert client.get_run(pi.run_id).data.metrics["iterations"] < 30

    q, _ = run_spec("frozenlake_qlearning", tmp_path)
    run = client.get_run(q.run_id)
    assert run.data.metrics["gap/start"] == pytest.approx(0.0, abs=1e-9)
    assert run.data.metrics["eval/success"] == 1.0
    curve = sorted(client.get_metric_history(q.run_id, "train/return"), key=lambda m: m.step)
    assert len(curve) == 1500 // 50 and curve[-1].value > curve[0].value  # it learned
    gaps = sorted(client.get_metric_history(q.run_id, "gap/start"), key=lambda m: m.step)
    assert gaps[0].value > 0.1 and gaps[-1].value == pytest.approx(0.0, abs=1e-9)
    assert {a.path for a in client.list_artifacts(q.run_id, "reports")} == {"reports/value.png",
                                                                           "reports/learning_curve.png"}


def test_gridworld_by_component_and_by_gymnasium_id_give_the_same_run(tmp_path):
    spec = tmp_path / "grid.yaml"
    spec.write_text("""\
name: grid
env: {name: rl.gridworld, params: {rows: 6, cols: 7, slip: 0.1, wall_fraction: 0.2, layout_seed: 2, step_reward: -0.04}}
algorithm: {name: rl.value_iteration, params: {gamma: 0.95, eval_episodes: 50}}
tracking: {log_model: false}
""")
    by_component = run_experiment(load_experiment(spec), quiet=True)
    by_id = run_experiment(load_experiment(spec, ["env.name=trainyard/GridWorld-v0"]), quiet=True)
    assert by_component.metrics["value/start"] == pytest.approx(by_id.metrics["value/start"], abs=1e-12)
    assert by_component.metrics["eval/return"] == by_id.metrics["eval/return"]


def test_value_start_is_what_the_evaluation_rollouts_earn(tmp_path):
    """value/start is V^pi of the model; the discounted returns of 3000 real episodes estimate it."""
    result, _ = run_spec("frozenlake_vi", tmp_path, "env.params.map_name=4x4", "env.params.max_episode_steps=100000",
                         "algorithm.params.eval_episodes=3000")
    m = result.metrics
    # The success rate's spread bounds the discounted return's: rewards are 0 or 1.
    assert abs(m["eval/discounted_return"] - m["value/start"]) < 4 * np.sqrt(0.25 / 3000)


BAD_SPECS = {
    "unknown Gymnasium id": (
        "env: {name: FrozenPond-v1}\nalgorithm: {name: rl.value_iteration}\n",
        "bad.yaml: env.name: unknown Gymnasium environment 'FrozenPond-v1'"),
    "no model for dynamic programming": (
        "env: {name: CartPole-v1}\nalgorithm: {name: rl.value_iteration}\n",
        "bad.yaml: env.name: CartPole-v1 exposes no transition model (unwrapped.P); dynamic programming needs one: "
        "use rl.q_learning, rl.sarsa or rl.dqn, which learn from rewards"),
    "gamma out of range": (
        "env: {name: FrozenLake-v1}\nalgorithm: {name: rl.policy_iteration, params: {gamma: 1.5}}\n",
        "bad.yaml: algorithm.params.gamma: expected a number > 0 and < 1, got 1.5"),
    "unknown environment argument": (
        "env: {name: FrozenLake-v1, params: {slippery: true}}\nalgorithm: {name: rl.value_iteration}\n",
        "bad.yaml: env.params.slippery: unknown key"),
    "environment rejects its argument": (
        "env: {name: FrozenLake-v1, params: {map_name: 5x5}}\nalgorithm: {name: rl.value_iteration}\n",
        "bad.yaml: env.params: FrozenLake-v1 rejected its params: KeyError: '5x5'"),
    "missing MDP file": (
        "env: {name: rl.file_mdp, params: {path: nowhere.npz}}\nalgorithm: {name: rl.value_iteration}\n",
        "bad.yaml: env.params: no such MDP file: 'nowhere.npz'"),
}


@pytest.mark.parametrize("case", BAD_SPECS)
@pytest.mark.parametrize("command", ["run", "validate"])
def test_bad_rl_specs_exit_2_with_one_line_and_write_nothing(case, command, tmp_path):
    body, expected = BAD_SPECS[case]
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\n" + body)
    result = CliRunner().invoke(app, [command, str(spec)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(expected), line
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("small-sweeps")
def test_sweep_over_gamma_and_slip(tmp_path):
    spec = tmp_path / "frozenlake_vi_sweep.yaml"
    spec.write_text((EXPERIMENTS / "rl" / "frozenlake_vi_sweep.yaml").read_text())
    result = subprocess.run([*trainyard_command(), "sweep", str(spec), "--set",
                             "sweep.space.algorithm.params.gamma={grid: [0.5, 0.99]}", "--set",
                             "algorithm.params.eval_episodes=200"],
                            env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rl-frozenlake-sweep")
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    success = {(run.data.params["algorithm.params.gamma"], run.data.params["env.params.is_slippery"]):
               run.data.metrics["eval/success"] for run in children}
    assert success[("0.99", "False")] == 1.0 and success[("0.99", "True")] > success[("0.5", "True")]
    assert parent.data.metrics["best_trial/eval/success"] == 1.0


def test_plugins_show_lists_a_gymnasium_ids_constructor_arguments():
    result = CliRunner().invoke(app, ["plugins", "show", "FrozenLake-v1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("FrozenLake-v1 (environment): Gymnasium environment FrozenLake-v1")
    rows = {line.split()[0] for line in result.stdout.splitlines()[2:] if line and not line.startswith(" ")}
    assert {"map_name", "is_slippery", "max_episode_steps"} <= rows and "render_mode" not in rows


@pytest.mark.slow
def test_dqn_example_trains_through_the_lightning_path(tmp_path):
    result, client = run_spec("cartpole_dqn", tmp_path, "trainer.max_epochs=2", "model.params.steps_per_epoch=300",
                              "model.params.test_episodes=5", "trainer.progress_bar=false")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["trainyard.env"] == "CartPole-v1"
    assert [m.step for m in sorted(client.get_metric_history(result.run_id, "val/return"), key=lambda m: m.step)] \
        == [299, 599]  # once per epoch, at the last step of each
    metrics = run.data.metrics
    assert metrics["value/start"] == metrics["test/discounted_return"] and metrics["test/length"] >= 8
    assert "best/val/return" in metrics and run.data.tags["trainyard.model_format"] == "pt2"
    assert {a.path for a in client.list_artifacts(result.run_id, "reports")} == {"reports/learning_curve.png"}
    assert {a.path for a in client.list_artifacts(result.run_id, "checkpoints")} >= {"checkpoints/best.ckpt"}


def test_sweeping_dynamic_programming_on_an_environment_without_a_model_stops_before_ray(tmp_path):
    spec = tmp_path / "bad_sweep.yaml"
    spec.write_text("""\
name: bad-sweep
env: {name: CartPole-v1}
algorithm: {name: rl.value_iteration}
sweep: {metric: eval/success, mode: max, space: {algorithm.params.gamma: {grid: [0.9, 0.99]}}}
""")
    result = CliRunner().invoke(app, ["sweep", str(spec)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith("bad_sweep.yaml: env.name: CartPole-v1 exposes no transition model")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "sweeps").exists()
