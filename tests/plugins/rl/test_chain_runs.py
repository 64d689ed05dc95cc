"""rl.markov_chain through `trainyard run`: a chain from a matrix file (gambler's ruin, the
two-state chain) or from a policy on an environment, checked against closed forms in what MLflow
records (metrics, curves, the markov/ tables, the reports); bad input exits 2 with one line."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import EXPERIMENTS, subprocess_env, trainyard_command
from test_markov import FROZEN_LAKE_GOOD, frozen_lake_success, gamblers_ruin, ruin_duration, ruin_win_probability, \
    two_state_power
from trainyard.cli import app

RUIN_SPEC = EXPERIMENTS / "rl" / "gamblers_ruin_chain.yaml"
RUIN_FILE = EXPERIMENTS / "rl" / "gamblers_ruin.csv"


def trainyard_run(spec, *overrides: str):
    """`trainyard run SPEC --set ...` into the test's folder; the run and a client to read it."""
    uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"  # absolute: MLflow caches a store per URI
    arguments = ["run", "-q", str(spec)]
    for override in (*overrides, f"tracking.uri={uri}"):
        arguments += ["--set", override]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return run, client


def curve(client, run, key: str) -> np.ndarray:
    history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(len(history)))
    return np.array([m.value for m in history])


def table(client, run, name: str, folder) -> list[dict[str, str]]:
    path = client.download_artifacts(run.info.run_id, f"markov/{name}", str(folder))
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def artifacts(client, run, folder: str) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id, folder)}


def test_gamblers_ruin_example_spec_matches_the_closed_forms(tmp_path):
    n, p, start = 10, 0.4, 5
    np.testing.assert_allclose(np.loadtxt(RUIN_FILE, delimiter=","), gamblers_ruin(n, p))
    run, client = trainyard_run(RUIN_SPEC, f"env.params.path={RUIN_FILE}")
    assert run.info.status == "FINISHED" and run.data.tags["trainyard.algorithm"] == "rl.markov_chain"
    metrics = run.data.metrics
    assert (metrics["states"], metrics["absorbing_states"], metrics["transient_states"]) == (11, 2, 9)
    assert metrics["closed_classes"] == 2 and "stationary/target" not in metrics  # {0} and {10}: none unique
    assert metrics["absorption/target"] == pytest.approx(ruin_win_probability(np.array(start), n, p), abs=1e-12)
    assert metrics["steps_to_absorption"] == pytest.approx(ruin_duration(np.array(start), n, p), abs=1e-9)

    # From every start state, in markov/absorption.csv.
    rows = table(client, run, "absorption.csv", tmp_path)
    states = np.array([int(row["state"]) for row in rows])
    assert states.tolist() == list(range(1, n))
    np.testing.assert_allclose([float(row["absorbed_in_10"]) for row in rows], ruin_win_probability(states, n, p),
                               atol=1e-12)
    np.testing.assert_allclose([float(row["absorbed_in_0"]) for row in rows], 1 - ruin_win_probability(states, n, p),
                               atol=1e-12)
    np.testing.assert_allclose([float(row["expected_steps"]) for row in rows], ruin_duration(states, n, p), atol=1e-9)

    # P(X_n = 10): nothing before 5 straight wins, 0.4^5 at n = 5, then up towards the win probability.
    winning = curve(client, run, "distribution/target")
    assert len(winning) == 101 and (winning[:5] == 0).all() and winning[5] == pytest.approx(p ** 5, abs=1e-15)
    assert (np.diff(winning) >= -1e-15).all() and winning[-1] == pytest.approx(metrics["absorption/target"], abs=1e-3)
    distributions = np.array([[float(v) for k, v in row.items() if k != "step"]
                              for row in table(client, run, "distributions.csv", tmp_path)])
    powers = [np.linalg.matrix_power(gamblers_ruin(n, p), k)[start] for k in range(101)]
    np.testing.assert_allclose(distributions, powers, atol=1e-12)
    assert artifacts(client, run, "reports") == {"reports/absorption.png", "reports/distributions.png"}
    assert artifacts(client, run, "markov") == {"markov/absorption.csv", "markov/distributions.csv",
                                                "markov/summary.txt"}


def test_fair_gamblers_ruin_from_an_npy_matrix(tmp_path):
    n, start = 8, 3
    np.save(tmp_path / "fair.npy", gamblers_ruin(n, 0.5))
    run, _ = trainyard_run(RUIN_SPEC, f"env.params.path={tmp_path / 'fair.npy'}", f"algorithm.params.start={start}",
                           f"algorithm.params.target=[{n}]", "algorithm.params.steps=10")
    assert run.data.metrics["absorption/target"] == pytest.approx(start / n, abs=1e-12)  # i / n
    assert run.data.metrics["steps_to_absorption"] == pytest.approx(start * (n - start), abs=1e-9)  # i (n - i)


@pytest.mark.parametrize("a, b", [(0.3, 0.6), (1.0, 1.0)])  # the second is periodic
def test_two_state_chain_matches_the_closed_forms(a, b, tmp_path):
    path = tmp_path / "two.csv"
    path.write_text(f"# a two-state chain\n{1 - a}, {a}\n{b}, {1 - b}\n")
    run, client = trainyard_run(RUIN_SPEC, f"env.params.path={path}", "algorithm.params.start=0",
                                "algorithm.params.target=null", "algorithm.params.steps=30")
    metrics, pi = run.data.metrics, np.array([b / (a + b), a / (a + b)])
    assert metrics["closed_classes"] == 1 and metrics["absorbing_states"] == 0
    assert metrics["stationary/target"] == pytest.approx(pi[1], abs=1e-12)  # the target is the last state
    assert "absorption/target" not in metrics and "steps_to_absorption" not in metrics
    stationary = table(client, run, "stationary.csv", tmp_path)
    np.testing.assert_allclose([float(row["probability"]) for row in stationary], pi, atol=1e-12)
    n = np.arange(31)
    # From state 0: P(X_n = 1) = pi_1 (1 - (1 - a - b)^n), and its distance to pi is |1 - a - b|^n pi_1.
    np.testing.assert_allclose(curve(client, run, "distribution/target"), pi[1] * (1 - (1 - a - b) ** n), atol=1e-12)
    np.testing.assert_allclose(curve(client, run, "distribution/tv_to_stationary"), np.abs(1 - a - b) ** n * pi[1],
                               atol=1e-12)
    distributions = np.array([[float(row["state_0"]), float(row["state_1"])]
                              for row in table(client, run, "distributions.csv", tmp_path)])
    np.testing.assert_allclose(distributions, [two_state_power(a, b, k)[0] for k in n], atol=1e-12)
    assert artifacts(client, run, "reports") == {"reports/stationary.png", "reports/distributions.png"}
    summary = client.download_artifacts(run.info.run_id, "markov/summary.txt", str(tmp_path))
    assert "absorption: undefined: chain has no absorbing state" in open(summary).read()


@pytest.mark.parametrize("policy", ["good", "uniform"])
def test_a_policy_on_frozen_lake_gives_its_success_probability(policy, tmp_path):
    """A list of actions, and a file of probabilities (uniform: 0.25 each)."""
    spec = tmp_path / "lake.yaml"
    np.save(tmp_path / "uniform.npy", np.full((16, 4), 0.25))
    value = "[" + ", ".join(map(str, FROZEN_LAKE_GOOD)) + "]" if policy == "good" else str(tmp_path / "uniform.npy")
    spec.write_text(f"""\
name: lake-chain
env: {{name: FrozenLake-v1, params: {{is_slippery: true}}}}
algorithm: {{name: rl.markov_chain, params: {{policy: {value}, steps: 20}}}}
""")
    run, _ = trainyard_run(spec)
    table_ = gymnasium.make("FrozenLake-v1", is_slippery=True).unwrapped.P
    probabilities = np.eye(4)[FROZEN_LAKE_GOOD] if policy == "good" else np.full((16, 4), 0.25)
    # The goal is the last state, the default target: absorption there is the success rate.
    assert run.data.metrics["absorption/target"] == pytest.approx(frozen_lake_success(table_, probabilities)[0],
                                                                  abs=1e-12)
    assert run.data.metrics["absorbing_states"] == 5  # four holes and the goal


def test_the_optimal_policy_on_the_deterministic_lake_walks_six_steps_to_the_goal(tmp_path):
    spec = tmp_path / "lake.yaml"
    spec.write_text("name: lake\nenv: {name: FrozenLake-v1, params: {is_slippery: false}}\n"
                    "algorithm: {name: rl.markov_chain, params: {gamma: 0.9, steps: 10}}\n")
    run, client = trainyard_run(spec)
    assert run.data.metrics["absorption/target"] == pytest.approx(1.0, abs=1e-12)
    assert run.data.metrics["steps_to_absorption"] == pytest.approx(6.0, abs=1e-12)
    np.testing.assert_array_equal(curve(client, run, "distribution/target"), [0] * 6 + [1] * 5)


BAD = {
    "a policy of the wrong length": (
        "env: {name: FrozenLake-v1}\nalgorithm: {name: rl.markov_chain, params: {policy: [0, 1, 2]}}\n",
        "bad.yaml: algorithm.params.policy: expected 16 actions (one per state) or (16, 4) probabilities, "
        "got shape (3,) of int64"),
    "an action out of range": (
        "env: {name: FrozenLake-v1}\nalgorithm: {name: rl.markov_chain, params: {policy: [" + "0, " * 15 + "4]}}\n",
        "bad.yaml: algorithm.params.policy: action 4 in state 15 is not one of the 4 actions (0..3)"),
    "an unknown policy": (
        "env: {name: FrozenLake-v1}\nalgorithm: {name: rl.markov_chain, params: {policy: greedy}}\n",
        "bad.yaml: algorithm.params.policy: expected optimal, uniform, a list of actions or an .npy file; "
        "no such .npy file: 'greedy'"),
    "a start state out of range": (
        "env: {name: FrozenLake-v1}\nalgorithm: {name: rl.markov_chain, params: {start: 16}}\n",
        "bad.yaml: algorithm.params.start: state 16 is not one of the 16 states (0..15)"),
    "a target state out of range": (
        "env: {name: FrozenLake-v1}\nalgorithm: {name: rl.markov_chain, params: {target: [3, 99]}}\n",
        "bad.yaml: algorithm.params.target: state 99 is not one of the 16 states (0..15)"),
    "too many distributions to keep": (
        "env: {name: rl.gridworld, params: {rows: 100, cols: 1000}}\n"
        "algorithm: {name: rl.markov_chain, params: {steps: 100}}\n",
        "bad.yaml: algorithm.params.steps: 101 distributions over 100000 states exceed 10,000,000 numbers; "
        "take fewer steps"),
    "a matrix whose row does not sum to 1": (
        "env: {name: rl.file_mdp, params: {path: bad.csv}}\nalgorithm: {name: rl.markov_chain}\n",
        "bad.yaml: env.params: transition probabilities of state 1, action 0 sum to 0.9, not 1"),
    "an empty matrix file": (
        "env: {name: rl.file_mdp, params: {path: empty.npy}}\nalgorithm: {name: rl.markov_chain}\n",
        "bad.yaml: env.params: empty.npy is not a NumPy .npz or .npy file: "),
    "no model": (
        "env: {name: CartPole-v1}\nalgorithm: {name: rl.markov_chain}\n",
        "bad.yaml: env.name: CartPole-v1 exposes no transition model"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_chain_specs_exit_2_with_one_line_and_write_nothing(case, tmp_path):
    body, expected = BAD[case]
    (tmp_path / "bad.csv").write_text("0.5, 0.5\n0.3, 0.6\n")
    (tmp_path / "empty.npy").write_bytes(b"")
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\n" + body)
    result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(expected), line
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("small-sweeps")
def test_chain_sweep_over_gamma_on_ice(tmp_path):
    """Two trials, not the example's eight: Ray's start-up and each trial's imports dominate this test."""
    spec = tmp_path / "frozenlake_chain_sweep.yaml"
    spec.write_text((EXPERIMENTS / "rl" / "frozenlake_chain_sweep.yaml").read_text())
    result = subprocess.run([*trainyard_command(), "sweep", str(spec),
                             "--set", "sweep.space.algorithm.params.gamma={grid: [0.5, 0.999]}",
                             "--set", "sweep.space.env.params.is_slippery={grid: [true]}"],
                            env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("rl-markov-sweep").experiment_id])
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and all(run.info.status == "FINISHED" for run in children)
    success = {run.data.params["algorithm.params.gamma"]: run.data.metrics["absorption/target"] for run in children}
    # On ice a far-sighted policy reaches the goal more often than a short-sighted one.
    assert success["0.999"] > success["0.5"]
    assert parent.data.metrics["best_trial/absorption/target"] == pytest.approx(success["0.999"], abs=1e-12)
