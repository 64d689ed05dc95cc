"""Markov chains against closed forms (two-state chain, gambler's ruin), dense linear algebra
(eigenvectors, a hand-written policy evaluation on FrozenLake), and their own simulations."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import scipy.sparse as sp

from trainyard_rl.markov import MarkovChain
from trainyard_rl.mdp import TabularMDP


def two_state_power(a: float, b: float, n: int) -> np.ndarray:
    """P^n of [[1-a, a], [b, 1-b]] in closed form."""
    return (np.array([[b, a], [b, a]]) + (1 - a - b) ** n * np.array([[a, -a], [-b, b]])) / (a + b)


def gamblers_ruin(n: int, p: float) -> np.ndarray:
    """Fortune 0..n, +1 with probability p, -1 otherwise; 0 and n absorb."""
    matrix = np.zeros((n + 1, n + 1))
    matrix[0, 0] = matrix[n, n] = 1.0
    for i in range(1, n):
        matrix[i, i + 1] = p
        matrix[i, i - 1] = 1 - p
    return matrix


def ruin_win_probability(i: np.ndarray, n: int, p: float) -> np.ndarray:
    if p == 0.5:
        return i / n
    ratio = (1 - p) / p
    return (1 - ratio ** i) / (1 - ratio ** n)


def ruin_duration(i: np.ndarray, n: int, p: float) -> np.ndarray:
    if p == 0.5:
        return i * (n - i)
    q = 1 - p
    return i / (q - p) - n / (q - p) * ruin_win_probability(i, n, p)


# An irreducible, aperiodic 4-state chain with some impossible moves.
FOUR = np.array([[0.5, 0.5, 0.0, 0.0],
                 [0.1, 0.2, 0.7, 0.0],
                 [0.0, 0.3, 0.0, 0.7],
                 [0.6, 0.0, 0.2, 0.2]])


def left_eigenvector_for_one(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eig(matrix.T)
    vector = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    return vector / vector.sum()


TWO_STATE = [(0.3, 0.6), (0.9, 0.05), (0.02, 0.01), (1.0, 1.0)]  # the last is periodic


@pytest.mark.parametrize("a,b", TWO_STATE)
def test_two_state_stationary_is_closed_form(a, b):
    chain = MarkovChain([[1 - a, a], [b, 1 - b]])
    np.testing.assert_allclose(chain.stationary(), [b / (a + b), a / (a + b)], atol=1e-12)


@pytest.mark.parametrize("a,b", TWO_STATE)
def test_two_state_n_step_distribution_is_closed_form(a, b):
    chain = MarkovChain([[1 - a, a], [b, 1 - b]], initial=[0.25, 0.75])
    mu = np.array([0.25, 0.75])
    for n in [0, 1, 2, 5, 17, 60]:
        np.testing.assert_allclose(chain.distribution(n), mu @ two_state_power(a, b, n), atol=1e-12)
        np.testing.assert_allclose(chain.distribution(n, initial=[0.0, 1.0]), two_state_power(a, b, n)[1], atol=1e-12)
    # A batch of start distributions (the identity) gives the rows of P^n.
    np.testing.assert_allclose(chain.distribution(7, initial=np.eye(2)), two_state_power(a, b, 7), atol=1e-12)


def test_distributions_stack_every_step():
    chain = MarkovChain(FOUR, initial=[0.1, 0.2, 0.3, 0.4])
    steps = chain.distributions(6)
    assert steps.shape == (7, 4)
    expected = np.stack([np.array([0.1, 0.2, 0.3, 0.4]) @ np.linalg.matrix_power(FOUR, k) for k in range(7)])
    np.testing.assert_allclose(steps, expected, atol=1e-12)


def test_stationary_matches_dense_eigenvector_and_long_run_distribution():
    chain = MarkovChain(sp.csr_array(FOUR))
    pi = chain.stationary()
    np.testing.assert_allclose(pi, left_eigenvector_for_one(FOUR), atol=1e-12)
    np.testing.assert_allclose(pi @ FOUR, pi, atol=1e-12)
    for start in np.eye(4):
        np.testing.assert_allclose(chain.distribution(300, initial=start), pi, atol=1e-10)


def test_stationary_is_zero_on_transient_states_with_one_closed_class():
    # State 0 leaks into the irreducible block {1, 2, 3} and never comes back.
    matrix = np.array([[0.5, 0.5, 0.0, 0.0],
                       [0.0, 0.2, 0.8, 0.0],
                       [0.0, 0.0, 0.4, 0.6],
                       [0.0, 0.9, 0.0, 0.1]])
    chain = MarkovChain(matrix)
    assert not chain.is_irreducible
    assert chain.transient_states().tolist() == [0]
    pi = chain.stationary()
    assert pi[0] == 0.0
    np.testing.assert_allclose(pi, left_eigenvector_for_one(matrix), atol=1e-12)


def test_reducible_chain_has_no_unique_stationary_distribution():
    matrix = np.array([[0.5, 0.5, 0.0, 0.0],
                       [0.5, 0.5, 0.0, 0.0],
                       [0.0, 0.0, 0.3, 0.7],
                       [0.1, 0.0, 0.8, 0.1]])  # 3 -> 0 leaks, so only {0, 1} is closed
    assert [c.tolist() for c in MarkovChain(matrix).closed_classes()] == [[0, 1]]
    matrix[3] = [0.0, 0.0, 0.9, 0.1]  # no leak: {0, 1} and {2, 3} are both closed
    chain = MarkovChain(matrix)
    assert [c.tolist() for c in chain.closed_classes()] == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="not irreducible"):
        chain.stationary()


@pytest.mark.parametrize("matrix,message", [
    ([[0.5, 0.5], [0.3, 0.6]], "row 1 .* sums to 0.9"),
    ([[1.2, -0.2], [0.5, 0.5]], "row 0 .* negative"),
    ([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]], "square"),
    ([[0.5, 0.5], [np.nan, 0.5]], "row 1"),
])
def test_invalid_matrices_are_rejected(matrix, message):
    with pytest.raises(ValueError, match=message):
        MarkovChain(matrix)
    with pytest.raises(ValueError, match=message):
        MarkovChain.from_matrix(sp.csr_array(np.array(matrix)))


def test_invalid_initial_is_rejected():
    with pytest.raises(ValueError, match="probability vector"):
        MarkovChain(FOUR, initial=[0.5, 0.5, 0.5, 0.0])


def test_sparse_duplicates_and_explicit_zeros_are_normalised():
    # (0, 1) stored twice and (1, 0) stored as an explicit zero: the chain is [[0.5, 0.5], [0, 1]].
    matrix = sp.csr_array((np.array([0.5, 0.25, 0.25, 0.0, 1.0]), np.array([0, 1, 1, 0, 1]), np.array([0, 3, 5])),
                          shape=(2, 2))
    chain = MarkovChain(matrix)
    np.testing.assert_array_equal(chain.matrix.toarray(), [[0.5, 0.5], [0.0, 1.0]])
    assert chain.absorbing_states().tolist() == [1]
    assert chain.transient_states().tolist() == [0]


@pytest.mark.parametrize("p", [0.3, 0.5, 0.6])
def test_gamblers_ruin_absorption_and_duration_are_closed_form(p):
    n = 10
    chain = MarkovChain(sp.csr_array(gamblers_ruin(n, p)))
    assert chain.absorbing_states().tolist() == [0, n]
    transient = chain.transient_states()
    assert transient.tolist() == list(range(1, n))
    win = ruin_win_probability(transient, n, p)
    absorption = chain.absorption_probabilities()
    assert absorption.shape == (n - 1, 2)
    np.testing.assert_allclose(absorption[:, 1], win, atol=1e-12)
    np.testing.assert_allclose(absorption[:, 0], 1 - win, atol=1e-12)
    np.testing.assert_allclose(chain.expected_steps_to_absorption(), ruin_duration(transient, n, p), atol=1e-9)
    start = np.eye(n + 1)[3]
    expected = np.zeros(n + 1)
    expected[[0, n]] = 1 - win[2], win[2]
    np.testing.assert_allclose(chain.absorption_distribution(start), expected, atol=1e-12)
    # Mass that starts on an absorbing state stays there.
    mixed = 0.5 * start + 0.5 * np.eye(n + 1)[n]
    np.testing.assert_allclose(chain.absorption_distribution(mixed), 0.5 * expected + 0.5 * np.eye(n + 1)[n], atol=1e-12)


def test_absorption_needs_absorbing_states_every_state_reaches():
    with pytest.raises(ValueError, match="no absorbing state"):
        MarkovChain(FOUR).absorption_probabilities()
    # State 0 absorbs, but {1, 2} is closed and never reaches it.
    stuck = MarkovChain([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"\[1, 2\] form a closed class"):
        stuck.expected_steps_to_absorption()


def test_simulated_path_follows_the_chain_and_visits_at_stationary_frequencies():
    chain = MarkovChain(FOUR)
    path = chain.simulate(20_000, rng=7, start=2)
    assert path.shape == (20_001,) and path[0] == 2
    assert (FOUR[path[:-1], path[1:]] > 0).all()  # never an impossible move
    np.testing.assert_allclose(np.bincount(path, minlength=4) / path.size, chain.stationary(), atol=0.02)
    np.testing.assert_array_equal(chain.simulate(50, rng=3), chain.simulate(50, rng=np.random.default_rng(3)))


def test_simulated_one_step_frequencies_match_the_row():
    chain = MarkovChain(FOUR)
    paths = chain.simulate_many(40_000, 1, rng=11, start=3)
    assert paths.shape == (40_000, 2) and (paths[:, 0] == 3).all()
    np.testing.assert_allclose(np.bincount(paths[:, 1], minlength=4) / 40_000, FOUR[3], atol=0.01)


def test_simulated_absorption_frequency_matches_gamblers_ruin():
    n, p, start, runs = 6, 0.45, 2, 20_000
    chain = MarkovChain(gamblers_ruin(n, p))
    ends = chain.simulate_many(runs, 300, rng=5, start=start)[:, -1]
    assert np.isin(ends, [0, n]).all()  # every run absorbed within 300 steps
    win = ruin_win_probability(np.array(start), n, p)
    assert abs((ends == n).mean() - win) < 4 * np.sqrt(win * (1 - win) / runs)


def test_from_policy_makes_terminal_states_absorbing():
    # One action. Entering state 1 ends the episode, but the model still moves on from it
    # (1 -> 2 -> 0): as given, the chain would cycle forever and never be absorbed.
    transitions = np.array([[[0.5, 0.5, 0.0],
                             [0.0, 0.0, 1.0],
                             [1.0, 0.0, 0.0]]])
    mdp = TabularMDP.from_arrays(transitions, np.zeros(3), terminal=[False, True, False])
    chain = MarkovChain.from_policy(mdp, np.zeros(3, dtype=int))
    np.testing.assert_array_equal(chain.matrix.toarray(), [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert chain.absorbing_states().tolist() == [1]
    assert chain.transient_states().tolist() == [0, 2]
    np.testing.assert_allclose(chain.expected_steps_to_absorption(), [2.0, 3.0])  # geometric(1/2), +1 from 2
    np.testing.assert_allclose(chain.absorption_distribution(), [0.0, 1.0, 0.0])


def frozen_lake_success(table: dict, policy: np.ndarray) -> np.ndarray:
    """Probability of ever reaching the goal from each state, by dense policy evaluation with
    reward 1 on entering the goal and gamma = 1, straight from Gymnasium's P table."""
    n_states = len(table)
    continuing, reward = np.zeros((n_states, n_states)), np.zeros(n_states)
    for s in range(n_states):
        for a, weight in enumerate(policy[s]):
            for prob, s_next, r, done in table[s][a]:
                reward[s] += weight * prob * r  # FrozenLake pays 1 only on entering the goal
                if not done:
                    continuing[s, s_next] += weight * prob
    return np.linalg.solve(np.eye(n_states) - continuing, reward)


# An optimal policy for slippery 4x4 FrozenLake (0 left, 1 down, 2 right, 3 up).
FROZEN_LAKE_GOOD = np.array([0, 3, 3, 3, 0, 0, 0, 0, 3, 1, 0, 0, 0, 2, 1, 0])


@pytest.mark.parametrize("policy", ["uniform", "good"])
def test_from_policy_success_on_frozen_lake_matches_policy_evaluation(policy):
    env = gymnasium.make("FrozenLake-v1", is_slippery=True)
    mdp = TabularMDP.from_env(env)
    probabilities = np.full((16, 4), 0.25) if policy == "uniform" else np.eye(4)[FROZEN_LAKE_GOOD]
    chain = MarkovChain.from_policy(mdp, probabilities if policy == "uniform" else FROZEN_LAKE_GOOD)
    goal = 15
    holes_and_goal = np.flatnonzero(np.asarray(env.unwrapped.desc).ravel() != b"F")
    holes_and_goal = holes_and_goal[holes_and_goal != 0]  # the start is a frozen tile too
    assert chain.absorbing_states().tolist() == holes_and_goal.tolist()
    expected = frozen_lake_success(env.unwrapped.P, probabilities)
    success = chain.absorption_distribution()
    assert success[goal] == pytest.approx(expected[0], abs=1e-12)
    assert 0.0 < success[goal] < 1.0
    # From every transient state too, not only the start.
    transient, absorbing = chain.transient_states(), chain.absorbing_states()
    column = chain.absorption_probabilities()[:, absorbing.tolist().index(goal)]
    np.testing.assert_allclose(column, expected[transient], atol=1e-12)
    env.close()
