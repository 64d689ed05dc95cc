"""Dynamic programming against closed forms, known values, and each other."""

from __future__ import annotations

import dataclasses

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


def near_tie(r3: float) -> TabularMDP:
    """State 0 chooses: action 0 to state 1, which pays 1 forever, or action 1 to state 2, which
    pays nothing and moves to state 3, which pays r3 forever. At gamma 0.9 the two are worth 10 and
    9 r3 from states 1 and 2: nearly tied for r3 near 1/0.9, and the ordering of the partial sums
    that modified policy iteration sees flips on the way."""
    transitions = np.zeros((2, 4, 4))
    transitions[0, 0, 1] = transitions[1, 0, 2] = 1.0
    transitions[:, 1, 1] = transitions[:, 2, 3] = transitions[:, 3, 3] = 1.0
    rewards = np.zeros((4, 2))
    rewards[1], rewards[3] = 1.0, r3
    return TabularMDP.from_arrays(transitions, rewards)


@pytest.mark.parametrize("sweeps", [1, 2, 3])
@pytest.mark.parametrize("r3, epsilon", [(1.1139, 0.5), (1.1116, 0.1), (1.13, 3.0)])
def test_modified_policy_iteration_returns_the_policy_greedy_for_its_v_and_q(sweeps, r3, epsilon):
    mdp, gamma = near_tie(r3), 0.9
    solution = dp.policy_iteration(mdp, gamma, evaluation_sweeps=sweeps, epsilon=epsilon)
    assert solution.converged
    # Q is the backup of the returned V, and the policy is greedy for that Q.
    np.testing.assert_allclose(solution.Q, dp.Bellman(mdp, gamma).q(solution.V), atol=1e-12)
    chosen = solution.Q[np.arange(mdp.n_states), solution.policy]
    np.testing.assert_allclose(chosen, solution.Q.max(axis=1), atol=1e-12)
    # And the guarantees of the epsilon-optimal stop (Puterman, Theorem 6.3.1).
    optimum = dp.policy_iteration(mdp, gamma)
    assert np.abs(solution.V - optimum.V).max() < epsilon / 2
    assert (optimum.V - dp.evaluate_policy(mdp, solution.policy, gamma, "exact")).max() < epsilon


def mirrored(gamma: float) -> TabularMDP:
    """State 0 moves to state 1 (action 0) or state 2 (action 1), which pay 1 forever: the two
    actions are exactly tied, V(1) = V(2) = 1 / (1 - gamma)."""
    transitions = np.zeros((2, 3, 3))
    transitions[0, 0, 1] = transitions[1, 0, 2] = 1.0
    transitions[:, 1, 1] = transitions[:, 2, 2] = 1.0
    return TabularMDP.from_arrays(transitions, np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]))


@pytest.mark.parametrize("gamma", [0.9, 0.99, 0.999])
def test_policy_iteration_keeps_exactly_tied_actions_through_solver_noise(gamma, monkeypatch):
    """The exact evaluation accepts a residual up to its tolerance (1e-10 here, rewards <= 1), so
    its V may be off V^pi by up to 1e-10 / (1 - gamma). An answer with 0.9 of that residual, of
    alternating sign on the two mirrored states, must not make the tied actions at state 0 flip
    from one iteration to the next."""
    mdp = mirrored(gamma)
    solve, calls = dp._solve, []

    def noisy(matrix, rhs, tolerance):
        sign = 1.0 if len(calls) % 2 == 0 else -1.0
        calls.append(sign)
        # The exact solution of a system off by `residual`: an answer the solver may give.
        residual = 0.9 * tolerance * sign * np.array([0.0, 1.0, -1.0])
        V = solve(matrix, rhs + residual, tolerance)
        assert np.abs(matrix @ V - rhs).max() <= tolerance * max(1.0, float(np.abs(rhs).max()))
        return V

    monkeypatch.setattr(dp, "_solve", noisy)
    for start in (0, 1):
        calls.clear()
        solution = dp.policy_iteration(mdp, gamma, max_iterations=20, policy0=np.array([start, 0, 0]))
        assert solution.converged and solution.iterations == 1, (start, solution.iterations)
        assert solution.policy[0] == start
    # Without the noise the tie is exact: nothing to explain away.
    monkeypatch.undo()
    assert dp.policy_iteration(mdp, gamma, policy0=np.array([1, 0, 0])).policy[0] == 1


def ragged_mdp(states: int, seed: int) -> TabularMDP:
    """Rows of 1 to 12 transitions, and an action that is never worth taking (reward -inf)."""
    rng = np.random.default_rng(seed)
    transitions = np.zeros((3, states, states))
    for a in range(3):
        for s in range(states):
            successors = rng.integers(1, 13)
            transitions[a, s, rng.choice(states, successors, replace=False)] = rng.random(successors)
    transitions /= transitions.sum(axis=2, keepdims=True)
    rewards = rng.normal(size=(states, 3))
    rewards[::7, 2] = -np.inf
    return TabularMDP.from_arrays(transitions, rewards)


# Each of the compiled loop's layouts (fused_sweep.py): rows of one length, rows of a few lengths
# padded to the longest (the grid's walls shorten some), and ragged rows or infinite rewards, on CSR.
LAYOUTS = {
    "fixed width": (lambda: random_mdp(1_003, actions=3, seed=4), "sweep_fixed_width"),
    "padded": (lambda: GridWorldEnv(rows=9, cols=13, slip=0.2).transition_model(), "sweep_fixed_width"),
    "csr": (lambda: ragged_mdp(301, seed=6), "sweep"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_compiled_sweep_is_the_bellman_backup(layout, threads, monkeypatch):
    """Value iteration's fused loop (numba) gives torch's CSR product and maximum, and the change in
    V, in each layout. (A state count that does not split evenly over the threads.)"""
    import torch

    make_mdp, loop = LAYOUTS[layout]
    mdp = make_mdp()
    bellman = dp.Bellman(mdp, 0.9)
    V = torch.from_numpy(np.random.default_rng(1).normal(size=mdp.n_states))
    expected = torch.amax(bellman.q_into(V), dim=1)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    monkeypatch.setattr(dp, "PARALLEL_ENTRIES", 0)  # split across the threads however small the MDP
    out = torch.empty_like(V)
    residual = bellman.sweep(V, out)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12, atol=1e-12)
    assert residual == pytest.approx(float((expected - V).abs().max()), rel=1e-12)
    assert bellman._compiled_layout[0].py_func.__name__ == loop  # numba is a dependency: the compiled loop ran


def test_infinite_rewards_keep_the_csr_loop():
    """Padding reads V with weight 0, NaN where V is infinite: an MDP whose V can be infinite is swept
    on its CSR rows, and value iteration takes no infinite start."""
    mdp = GridWorldEnv(rows=9, cols=13, slip=0.2).transition_model()
    assert dp.Bellman(mdp, 0.9)._compiled_layout[0].py_func.__name__ == "sweep_fixed_width"
    rewards = mdp.rewards.copy()
    rewards[0] = np.inf
    bellman = dp.Bellman(dataclasses.replace(mdp, rewards=rewards), 0.9)
    assert bellman._compiled_layout[0].py_func.__name__ == "sweep"
    with pytest.raises(ValueError, match="finite"):
        dp.value_iteration(mdp, 0.9, V0=np.full(mdp.n_states, np.inf))


def test_padding_is_counted_as_bytes_the_sweep_reads():
    """The grid's padded layout reads no indptr, but its padding: bytes_per_sweep counts what the loop reads."""
    mdp = GridWorldEnv(rows=9, cols=13, slip=0.2).transition_model()
    bellman = dp.Bellman(mdp, 0.9)
    rows = mdp.n_states * mdp.n_actions
    width = int(np.diff(bellman._indptr).max())
    assert width * rows > bellman._data.size  # some rows are padded
    assert bellman.bytes_per_sweep == width * rows * (8 + 4) + rows * 8 + 2 * 8 * mdp.n_states


def test_the_compiled_sweep_reads_64_bit_indices():
    """An MDP of 2^31 transitions or more keeps signed 64-bit indices; the loop gives the same sweep."""
    mdp = random_mdp(300, actions=3, seed=5)
    bellman = dp.Bellman(mdp, 0.9)
    assert bellman._loop_indices.dtype == np.uint32  # the usual case, read unsigned
    V = np.random.default_rng(2).normal(size=mdp.n_states)
    narrow, wide = np.empty_like(V), np.empty_like(V)
    sweep = dp._compiled_sweep()
    arguments = (bellman._data, bellman._rewards.numpy(), V)
    r32 = sweep(bellman._loop_indptr, bellman._loop_indices, *arguments, narrow, 3, 0, mdp.n_states)
    r64 = sweep(bellman._indptr.astype(np.int64), bellman._indices.astype(np.int64), *arguments, wide, 3, 0,
                mdp.n_states)
    np.testing.assert_array_equal(wide, narrow)
    assert r64 == r32
