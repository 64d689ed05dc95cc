"""Learning from rewards: tabular Q-learning and SARSA reach the dynamic-programming optimum."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest

from trainyard import BuildContext, SpecError
from trainyard.registry import get_registry
from trainyard_rl import dp, tabular
from trainyard_rl.mdp import TabularMDP


def deterministic_lake():
    return gymnasium.make("FrozenLake-v1", map_name="4x4", is_slippery=False)


@pytest.mark.parametrize("method", ["q_learning", "sarsa"])
def test_tabular_learning_on_deterministic_frozenlake_reaches_the_optimal_policy(method):
    env, gamma = deterministic_lake(), 0.95
    mdp = TabularMDP.from_env(env)
    optimum = dp.policy_iteration(mdp, gamma)
    Q = tabular.learn(env, 1500, gamma, 0.5, tabular.Exploration(1.0, 0.05, 0.5), seed=0, method=method)
    policy = Q.argmax(axis=1)
    learned = dp.evaluate_policy(mdp, policy, gamma, "exact")
    assert learned[0] == pytest.approx(optimum.V[0], abs=1e-9) == pytest.approx(gamma ** 5)  # 6 steps to the goal
    # The greedy policy walks the shortest path in the real environment.
    state, _ = env.reset(seed=0)
    for _ in range(6):
        state, reward, terminated, _, _ = env.step(int(policy[state]))
    assert terminated and reward == 1.0


def test_q_learning_values_approach_q_star_on_visited_pairs():
    env, gamma = deterministic_lake(), 0.9
    optimum = dp.value_iteration(TabularMDP.from_env(env), gamma, 1e-10)
    Q = tabular.learn(env, 3000, gamma, 0.5, tabular.Exploration(1.0, 0.2, 0.8), seed=1)
    on_path = [0, 4, 8, 9, 13, 14]  # down, down, right, down, right, right
    best = Q[on_path].max(axis=1)
    np.testing.assert_allclose(best, optimum.V[on_path], atol=1e-3)


def test_exploration_decays_linearly_then_holds():
    schedule = tabular.Exploration(1.0, 0.1, 0.5)
    assert [round(schedule.at(e, 100), 3) for e in (0, 25, 50, 99)] == [1.0, 0.55, 0.1, 0.1]


def test_tabular_learners_refuse_continuous_observations():
    registry = get_registry()
    component = registry.get("algorithm", "rl.q_learning").component
    env = gymnasium.make("CartPole-v1")
    with pytest.raises(SpecError) as error:
        component.build(component.params(), BuildContext(env=env, make_env=lambda: gymnasium.make("CartPole-v1")))
    [line] = error.value.lines()
    assert line.startswith("env.name: rl.q_learning is tabular: it needs Discrete observations") and "rl.dqn" in line
