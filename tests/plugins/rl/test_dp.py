"""Dynamic programming against closed forms, known values, and each other."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from trainyard_rl import dp
from trainyard_rl.gridworld import GridWorldEnv
from trainyard_rl.mdp import TabularMDP


def random_mdp(states: int, actions: int = 4, successors: int = 4, seed: int = 0) -> TabularMDP:
    rng = np.random.default_rng(seed)
    transitions = np.zeros((actions, states, states))
    for a in range(actions):
        for s in range(states):
            transitions[a, s, rng.choice(states, successors, replace=False)] = rng.random(successors)
    transitions /= transitions.sum(axis=2, keepdims=True)
    return TabularMDP.from_arrays(transitions, rng.normal(size=(states, actions)))


def corridor(length: int) -> TabularMDP:
    """States 0..length-1 in a row; RIGHT (1) moves on, LEFT (0) stays; entering the end pays 1 and ends."""
    transitions = np.zeros((2, length, length))
    for s in range(length):
        transitions[0, s, s] = 1.0
        transitions[1, s, min(s + 1, length - 1)] = 1.0
    rewards = np.zeros((2, length, length))
    rewards[1, length - 2, length - 1] = 1.0
    terminal = np.zeros(length, bool)
    terminal[-1] = True
    return TabularMDP.from_arrays(transitions, rewards, terminal)


ALGORITHMS = {
    "value_iteration": lambda mdp, gamma: dp.value_iteration(mdp, gamma, epsilon=1e-10),
    "policy_iteration": lambda mdp, gamma: dp.policy_iteration(mdp, gamma),
    "modified_policy_iteration": lambda mdp, gamma: dp.policy_iteration(mdp, gamma, evaluation_sweeps=5,
                                                                        epsilon=1e-10),
}


@pytest.mark.parametrize("name", ALGORITHMS)
def test_one_state_pays_a_geometric_series(name):
    mdp = TabularMDP.from_arrays(np.ones((2, 1, 1)), np.array([[1.0, 3.0]]))
    solution = ALGORITHMS[name](mdp, 0.9)
    assert solution.V[0] == pytest.approx(3.0 / (1 - 0.9), abs=1e-8)  # r / (1 - gamma), the better action
    assert solution.policy.tolist() == [1]
    np.testing.assert_allclose(solution.Q[0], [1.0 + 0.9 * 30.0, 30.0], atol=1e-8)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_corridor_values_are_discounted_distance(name):
    length, gamma = 12, 0.9
    solution = ALGORITHMS[name](corridor(length), gamma)
    distance = (length - 1) - np.arange(length - 1)  # steps to the end
    np.testing.assert_allclose(solution.V[:-1], gamma ** (distance - 1), atol=1e-8)
    assert solution.V[-1] == 0.0  # nothing is earned after the episode ends
    assert (solution.policy[:-1] == 1).all()


def test_two_state_mdp_against_its_hand_solution():
    """State 0: stay (+1) or switch to 1 (+0); state 1: stay (+2) or switch back (+0); gamma 0.6.
    V1 = 2 / (1 - 0.6) = 5; at 0, staying forever is worth 1 / 0.4 = 2.5, switching 0.6 * 5 = 3."""
    transitions = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]]], dtype=float)  # action 0 stay, 1 switch
    mdp = TabularMDP.from_arrays(transitions, np.array([[1.0, 0.0], [2.0, 0.0]]))
    for name, solve in ALGORITHMS.items():
        solution = solve(mdp, 0.6)
        np.testing.assert_allclose(solution.V, [3.0, 5.0], atol=1e-8, err_msg=name)
        assert solution.policy.tolist() == [1, 0], name


def test_value_iteration_stops_epsilon_optimal():
    mdp, gamma, epsilon = random_mdp(300, seed=1), 0.95, 1e-3
    optimum = dp.policy_iteration(mdp, gamma)
    solution = dp.value_iteration(mdp, gamma, epsilon=epsilon)
    assert solution.converged
    threshold = epsilon * (1 - gamma) / (2 * gamma)
    assert solution.residuals[-1] < threshold <= solution.residuals[-2]  # stops at the first sweep below it
    assert np.abs(solution.V - optimum.V).max() < epsilon / 2
    greedy_value = dp.evaluate_policy(mdp, solution.policy, gamma, "exact")
    assert (optimum.V - greedy_value).max() < epsilon
    # and not far from a coarser stop: a looser epsilon takes fewer sweeps
    assert dp.value_iteration(mdp, gamma, epsilon=1e-1).iterations < solution.iterations


@pytest.mark.parametrize("mdp", [
    random_mdp(500, seed=2),
    TabularMDP.from_env(gymnasium.make("FrozenLake-v1", map_name="8x8", is_slippery=True)),
    TabularMDP.from_env(gymnasium.make("CliffWalking-v1")),
    GridWorldEnv(rows=15, cols=20, slip=0.2, step_reward=-0.01, wall_fraction=0.15, trap_fraction=0.05,
                 layout_seed=3).transition_model(),
], ids=["random", "frozenlake8x8", "cliffwalking", "gridworld"])
def test_the_three_algorithms_agree(mdp):
    gamma = 0.97
    solutions = {name: solve(mdp, gamma) for name, solve in ALGORITHMS.items()}
    reference = solutions["policy_iteration"]
    for name, solution in solutions.items():
        assert solution.converged, name
        np.testing.assert_allclose(solution.V, reference.V, atol=1e-7, err_msg=name)
        # Policies may differ only between actions of equal value.
        chosen = solution.Q[np.arange(mdp.n_states), solution.policy]
        np.testing.assert_allclose(reference.Q[np.arange(mdp.n_states), solution.policy], chosen, atol=1e-6)


def test_policy_iteration_needs_few_iterations_and_is_stable():
    mdp = random_mdp(2000, seed=4)
    solution = dp.policy_iteration(mdp, 0.99)
    assert solution.converged and solution.iterations < 20
    again = dp.policy_iteration(mdp, 0.99, policy0=solution.policy)
    assert again.iterations == 1 and (again.policy == solution.policy).all()


def test_policy_evaluation_exact_and_iterative_agree_with_a_dense_solve():
    mdp, gamma = random_mdp(60, seed=5), 0.9
    rng = np.random.default_rng(0)
    stochastic = rng.random((60, 4))
    stochastic /= stochastic.sum(axis=1, keepdims=True)
    deterministic = rng.integers(0, 4, 60)
    for policy in (deterministic, stochastic):
        P, r = mdp.under_policy(policy)
        dense = np.linalg.solve(np.eye(60) - gamma * P.toarray(), r)
        np.testing.assert_allclose(dp.evaluate_policy(mdp, policy, gamma, "exact"), dense, atol=1e-9)
        np.testing.assert_allclose(dp.evaluate_policy(mdp, policy, gamma, "iterative", tolerance=1e-8), dense,
                                   atol=1e-8)


def test_evaluating_the_uniform_policy_on_frozenlake_matches_monte_carlo():
    env = gymnasium.make("FrozenLake-v1", is_slippery=True, max_episode_steps=10_000)
    mdp, gamma = TabularMDP.from_env(env), 0.9
    V = dp.evaluate_policy(mdp, np.full((16, 4), 0.25), gamma)
    rng, returns = np.random.default_rng(0), []
    for episode in range(4000):
        env.reset(seed=episode)
        total, weight, done = 0.0, 1.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(4)))
            total += weight * reward
            weight *= gamma
            done = terminated or truncated
        returns.append(total)
    standard_error = np.std(returns) / np.sqrt(len(returns))
    assert abs(np.mean(returns) - V[0]) < 4 * standard_error


@pytest.mark.parametrize("gamma", [0.0, 1.0, 1.5, -0.1])
def test_gamma_must_be_a_discount(gamma):
    with pytest.raises(ValueError, match="gamma must be in"):
        dp.value_iteration(corridor(3), gamma)
