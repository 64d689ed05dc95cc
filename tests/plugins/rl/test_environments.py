"""The plugin's environments follow Gymnasium's conventions, and their models match their dynamics."""

from __future__ import annotations

import re

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from trainyard import BuildContext
from trainyard.registry import get_registry
from trainyard_rl import dp
from trainyard_rl.gridworld import GridWorldEnv
from trainyard_rl.mdp import NoModel, TabularMDP

FROZEN_LAKE_4X4 = ["S...", ".T.T", "...T", "T..G"]  # FrozenLake's map: F is '.', H is 'T'


@pytest.fixture
def mdp_file(tmp_path):
    """A 3-state, 2-action MDP written in the file format, with per-transition rewards."""
    transitions = np.array([
        [[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.0, 0.0, 1.0]],
        [[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]],
    ])
    rewards = np.zeros((2, 3, 3))
    rewards[:, :, 2] = 10.0  # entering state 2
    rewards[1, 1, 0] = -1.0
    path = tmp_path / "mdp.npz"
    np.savez(path, transitions=transitions, rewards=rewards, terminal=np.array([False, False, True]))
    return path


def registered_environments(mdp_file) -> dict[str, dict]:
    return {"rl.gridworld": {"rows": 5, "cols": 6, "slip": 0.2, "wall_fraction": 0.2, "trap_fraction": 0.1},
            "rl.file_mdp": {"path": str(mdp_file)}}


def test_every_registered_environment_passes_gymnasiums_check_env(mdp_file):
    registry = get_registry()
    rl_environments = [name for name in registry.names("environment") if name.startswith("rl.")]
    examples = registered_environments(mdp_file)
    assert sorted(rl_environments) == sorted(examples), "a new environment needs an example here"
    for name in rl_environments:
        component = registry.get("environment", name).component
        env = component.build(component.params(**examples[name]), BuildContext())
        check_env(env.unwrapped)  # with its spec: every render mode is made and rendered too
        assert env.spec is not None and env.spec.id.startswith("trainyard/")


@pytest.mark.parametrize("env_id", ["trainyard/GridWorld-v0"])
def test_registered_ids_are_made_by_gymnasium(env_id):
    env = gymnasium.make(env_id, rows=3, cols=4, render_mode="ansi")
    env.reset(seed=1)
    assert env.render().count("\n") == 3
    rgb = gymnasium.make(env_id, rows=3, cols=4, render_mode="rgb_array")
    rgb.reset(seed=1)
    frame = rgb.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_seeded_resets_and_steps_repeat():
    def trajectory(seed):
        env = GridWorldEnv(rows=6, cols=6, slip=0.5)
        env.reset(seed=seed)
        return [env.step(a)[0] for a in [2, 2, 1, 1, 2, 1, 0, 3] * 3]

    assert trajectory(5) == trajectory(5)
    assert any(trajectory(5) != trajectory(s) for s in range(6, 10))


def test_gridworld_with_frozen_lakes_map_is_frozen_lake():
    """Same map, same slip (1/3 intended, 1/3 each side), same rewards: the same optimal values."""
    grid = GridWorldEnv(layout=FROZEN_LAKE_4X4, slip=2 / 3, trap_reward=0.0).transition_model()
    lake = TabularMDP.from_env(gymnasium.make("FrozenLake-v1", map_name="4x4", is_slippery=True))
    np.testing.assert_allclose(dp.value_iteration(grid, 0.95, 1e-10).V, dp.value_iteration(lake, 0.95, 1e-10).V,
                               atol=1e-9)
    np.testing.assert_array_equal(grid.terminal, lake.terminal)


def test_gridworld_model_matches_its_sampled_dynamics():
    env = GridWorldEnv(layout=["S.#", "..T", "#.G"], slip=0.3, step_reward=-0.1)
    model = env.transition_model()
    matrix = model.transitions.toarray()
    rng_counts = np.zeros((model.n_states * 4, model.n_states))
    env.reset(seed=0)
    for state in (0, 1, 3, 4, 7):
        for action in range(4):
            for _ in range(3000):
                env.state = state
                next_state, *_ = env.step(action)
                rng_counts[state * 4 + action, next_state] += 1
    sampled = rng_counts / np.maximum(rng_counts.sum(axis=1, keepdims=True), 1)
    rows = [s * 4 + a for s in (0, 1, 3, 4, 7) for a in range(4)]
    np.testing.assert_allclose(sampled[rows], matrix[rows], atol=0.035)
    # Moving right from (1,1) enters the trap at (1,2) with 0.7; slipping up or down, free cells.
    assert model.rewards[4 * 4 + 2] == pytest.approx(0.7 * -1.0 + 0.3 * -0.1)


def test_gridworld_builds_a_million_states():
    model = GridWorldEnv(rows=1000, cols=1000, slip=0.2).transition_model()
    assert model.transitions.shape == (4_000_000, 1_000_000)
    np.testing.assert_allclose(model.transitions.sum(axis=1), 1.0)


def test_gridworld_p_is_toy_text_format():
    env = GridWorldEnv(layout=FROZEN_LAKE_4X4, slip=2 / 3, trap_reward=0.0)
    lake = gymnasium.make("FrozenLake-v1", is_slippery=True).unwrapped
    for state in range(16):
        for action in range(4):
            # FrozenLake lists an outcome reached two ways (slipping into a wall) twice: compare sums.
            theirs = outcomes(lake.P[state][action])
            assert outcomes(env.P[state][action]) == {key: pytest.approx(p) for key, p in theirs.items()}


def outcomes(listed) -> dict[tuple[int, float, bool], float]:
    """{(next state, reward, ends): total probability} of a toy-text P[s][a] list."""
    merged: dict[tuple[int, float, bool], float] = {}
    for p, s, r, d in listed:
        merged[(int(s), float(r), bool(d))] = merged.get((int(s), float(r), bool(d)), 0.0) + p
    return merged


def test_file_mdp_reads_arrays_and_samples_per_transition_rewards(mdp_file):
    env = gymnasium.make("trainyard/FileMDP-v0", path=str(mdp_file))
    model = TabularMDP.from_env(env)
    assert (model.n_states, model.n_actions) == (3, 2)
    assert model.rewards[0 * 2 + 0] == pytest.approx(0.0) and model.rewards[1 * 2 + 0] == pytest.approx(8.0)
    assert model.terminal.tolist() == [False, False, True]
    env.reset(seed=0)
    env.unwrapped.state = 1
    _, reward, terminated, _, info = env.step(0)
    assert (reward, terminated) in ((10.0, True), (0.0, False)) and info["prob"] in (0.8, 0.2)


@pytest.mark.parametrize("arrays, message", [
    (dict(transitions=np.ones((2, 3, 3)), rewards=np.zeros((3, 2))), "sum to 3, not 1"),
    (dict(transitions=np.ones((2, 3, 2)) / 2, rewards=np.zeros((3, 2))), "must be (actions, states, states)"),
    (dict(transitions=np.eye(3)[None].repeat(2, 0), rewards=np.zeros((4, 2))), "rewards must be"),
    (dict(transitions=np.eye(3)[None].repeat(2, 0)), "lacks rewards"),
])
def test_file_mdp_rejects_bad_files_in_one_line(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as error:
        gymnasium.make("trainyard/FileMDP-v0", path=str(path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_environment_without_a_model_says_which_algorithms_to_use():
    with pytest.raises(NoModel, match=r"CartPole-v1 exposes no transition model .*rl.q_learning"):
        TabularMDP.from_env(gymnasium.make("CartPole-v1"))


def test_models_of_toy_text_environments():
    lake = TabularMDP.from_env(gymnasium.make("FrozenLake-v1", map_name="8x8"))
    assert lake.grid == (8, 8) and lake.n_states == 64
    np.testing.assert_allclose(lake.transitions.sum(axis=1), 1.0)
    holes_and_goal = [i for i, c in enumerate("".join(gymnasium.make("FrozenLake-v1", map_name="8x8").unwrapped.desc
                                                      .ravel().astype(str))) if c in "HG"]
    assert np.flatnonzero(lake.terminal).tolist() == holes_and_goal
    cliff = TabularMDP.from_env(gymnasium.make("CliffWalking-v1"))
    assert cliff.grid == (4, 12) and cliff.initial[36] == 1.0


def documented_render_modes() -> dict[str, list[str]]:
    """{component: render modes} from the environments table of docs/rl.md."""
    from helpers import ROOT

    rows = re.findall(r"^\| `(rl\.\w+)` \| `[^`]+` \| ([^|]*) \|", (ROOT / "docs" / "rl.md").read_text(), re.MULTILINE)
    return {name: re.findall(r"`(\w+)`", modes) for name, modes in rows}


def test_docs_list_each_environments_render_modes(mdp_file):
    registry, examples = get_registry(), registered_environments(mdp_file)
    documented = documented_render_modes()
    assert sorted(documented) == sorted(examples)
    for name, modes in documented.items():
        component = registry.get("environment", name).component
        env = component.build(component.params(**examples[name]), BuildContext())
        assert env.metadata["render_modes"] == modes, name  # check_env above renders each of them


CHAIN = np.array([[0.5, 0.5, 0.0], [0.0, 0.2, 0.8], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".txt", ".npz"])
def test_file_mdp_reads_a_markov_chains_matrix_as_one_action(suffix, tmp_path):
    path = tmp_path / f"chain{suffix}"
    if suffix == ".npy":
        np.save(path, CHAIN)
    elif suffix == ".npz":
        np.savez(path, transitions=CHAIN)
    else:
        separator = ", " if suffix == ".csv" else " "
        path.write_text("# a chain\n" + "\n".join(separator.join(map(str, row)) for row in CHAIN) + "\n")
    env = gymnasium.make("trainyard/FileMDP-v0", path=str(path))
    model = TabularMDP.from_env(env)
    assert (model.n_states, model.n_actions) == (3, 1)
    np.testing.assert_allclose(model.transitions.toarray(), CHAIN)
    assert (model.rewards == 0).all() and not model.terminal.any()
    check_env(env.unwrapped)


@pytest.mark.parametrize("content, message", [
    (b"", "chain.npy is not a NumPy .npz or .npy file: "),
    (b"not numpy at all", "chain.npy is not a NumPy .npz or .npy file: "),
])
def test_file_mdp_rejects_unreadable_files_in_one_line(content, message, tmp_path):
    (tmp_path / "chain.npy").write_bytes(content)
    with pytest.raises(ValueError) as error:
        gymnasium.make("trainyard/FileMDP-v0", path=str(tmp_path / "chain.npy"))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)
