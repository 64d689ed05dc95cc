"""Reinforcement learning and MDPs on Gymnasium: trainyard's built-in `rl` plugin.

Registered like any third-party plugin, through pyproject.toml:

    [project.entry-points."trainyard.plugins"]
    rl = "trainyard_rl"

Environments (any Gymnasium id works in a spec too, e.g. `env: {name: FrozenLake-v1}`):
    rl.gridworld        trainyard/GridWorld-v0: scalable grid, walls, slip, traps   gridworld.py
    rl.file_mdp         trainyard/FileMDP-v0: your own arrays in an .npz file       tabular_env.py
Algorithms (an `algorithm` section; they run on the `env` section):
    rl.value_iteration  epsilon-optimal value iteration                             dp.py
    rl.policy_iteration policy iteration, or modified policy iteration              dp.py
    rl.q_learning       tabular Q-learning                                          tabular.py
    rl.sarsa            tabular SARSA                                               tabular.py
    rl.markov_chain     a policy's (or a matrix file's) Markov chain, exactly       algorithms.py, markov.py
Models (a LightningModule, trained by the Trainer like any model):
    rl.dqn              deep Q-network with replay buffer and target network        dqn.py
Also: sparse models from `unwrapped.P` (mdp.py), evaluation rollouts with confidence intervals
(rollouts.py). Reports: value heatmap with the greedy policy as arrows, convergence and learning
curves, and a chain's stationary, absorption and n-step distributions (plots.py).
"""

from __future__ import annotations

from pathlib import Path

import gymnasium
import numpy as np
from pydantic import Field

from trainyard import BuildContext, Example, Params, algorithm, environment, hookimpl, model
from trainyard_rl import plots
from trainyard_rl.algorithms import (
    CHAIN_METRICS,
    LEARNING_METRICS,
    PLANNING_METRICS,
    ChainAnalysis,
    LearningParams,
    Learner,
    MarkovChainParams,
    PlanningParams,
    Planner,
    PolicyIterationParams,
)
from trainyard_rl.dqn import METRICS as DQN_METRICS
from trainyard_rl.dqn import DQNParams, build_dqn

# What the conformance kit (`trainyard plugin check rl`) builds each component with.
DETERMINISTIC_LAKE = {"name": "FrozenLake-v1", "params": {"is_slippery": False}}
SOLVES_THE_LAKE = {"eval/success": 1.0}

GRIDWORLD_ID = "trainyard/GridWorld-v0"
FILE_MDP_ID = "trainyard/FileMDP-v0"

# Gymnasium ids, so that `gymnasium.make` (and a spec naming the id) finds these environments.
for _id, _entry in ((GRIDWORLD_ID, "trainyard_rl.gridworld:GridWorldEnv"),
                    (FILE_MDP_ID, "trainyard_rl.tabular_env:FileMDPEnv")):
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry)


# --- environments ------------------------------------------------------------------------------


class GridWorldParams(Params):
    rows: int = Field(8, ge=1, description="Rows of a generated grid (ignored with layout).")
    cols: int = Field(8, ge=1, description="Columns of a generated grid (ignored with layout).")
    layout: list[str] | None = Field(None, description="Rows of S (start), G (goal), T (trap), # (wall), . (free).")
    slip: float = Field(0.0, ge=0, le=1, description="Probability that a move goes perpendicular instead.")
    step_reward: float = Field(0.0, description="Reward of a move that does not end the episode.")
    goal_reward: float = Field(1.0, description="Reward for entering the goal.")
    trap_reward: float = Field(-1.0, description="Reward for entering a trap.")
    wall_fraction: float = Field(0.0, ge=0, lt=1, description="Share of cells made walls in a generated grid.")
    trap_fraction: float = Field(0.0, ge=0, lt=1, description="Share of cells made traps in a generated grid.")
    layout_seed: int = Field(0, ge=0, description="Seed of the generated walls and traps.")
    max_episode_steps: int | None = Field(None, ge=1, description="Truncate episodes after this many steps.")


# Named explicitly: a function called `gridworld` would be replaced by the submodule
# trainyard_rl.gridworld as soon as that is imported (Python sets submodules on the package).
@environment(GridWorldParams, name="gridworld",
             example=Example(params={"rows": 4, "cols": 5, "slip": 0.2, "wall_fraction": 0.2, "trap_fraction": 0.1}))
def make_gridworld(params: GridWorldParams, ctx: BuildContext):
    """Scalable grid MDP (walls, slip, goal and traps) with its sparse transition model."""
    arguments = params.model_dump(exclude={"max_episode_steps"})
    return gymnasium.make(GRIDWORLD_ID, max_episode_steps=params.max_episode_steps, **arguments)


class FileMDPParams(Params):
    path: str = Field(description="An .npz file with transitions (A, S, S), rewards, optional terminal and initial; "
                                  "or a Markov chain's (S, S) matrix in .npy, .csv or .txt.")
    max_episode_steps: int | None = Field(1000, ge=1, description="Truncate episodes after this many steps.")


def _example_mdp_file(folder: Path) -> dict:
    """Two states, two actions: action 1 in state 0 reaches the terminal state 1 for a reward of 1."""
    transitions = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.2, 0.8], [0.0, 1.0]]])
    path = folder / "two_states.npz"
    np.savez(path, transitions=transitions, rewards=np.array([[0.0, 0.8], [0.0, 0.0]]),
             terminal=np.array([False, True]))
    return {"path": str(path)}


@environment(FileMDPParams, example=Example(params=_example_mdp_file))
def file_mdp(params: FileMDPParams, ctx: BuildContext):
    """An MDP from your own transition and reward arrays in a NumPy .npz file, or a Markov chain's matrix."""
    return gymnasium.make(FILE_MDP_ID, path=params.path, max_episode_steps=params.max_episode_steps)


# --- algorithms --------------------------------------------------------------------------------


@algorithm(PlanningParams, metrics=PLANNING_METRICS,
           example=Example(params={"eval_episodes": 20}, env=DETERMINISTIC_LAKE, solves=SOLVES_THE_LAKE))
def value_iteration(params: PlanningParams, ctx: BuildContext) -> Planner:
    """Value iteration on the environment's model, stopped when the greedy policy is epsilon-optimal."""
    return Planner("value_iteration", params, ctx)


@algorithm(PolicyIterationParams, metrics=PLANNING_METRICS,
           example=Example(params={"eval_episodes": 20}, env=DETERMINISTIC_LAKE, solves=SOLVES_THE_LAKE))
def policy_iteration(params: PolicyIterationParams, ctx: BuildContext) -> Planner:
    """Policy iteration (exact evaluation), or modified policy iteration with evaluation_sweeps."""
    return Planner("policy_iteration", params, ctx)


LEARNER_EXAMPLE = Example(params={"episodes": 1000, "alpha": 0.5, "gamma": 0.95, "eval_episodes": 20},
                          env=DETERMINISTIC_LAKE, solves=SOLVES_THE_LAKE)


@algorithm(LearningParams, metrics=LEARNING_METRICS, example=LEARNER_EXAMPLE)
def q_learning(params: LearningParams, ctx: BuildContext) -> Learner:
    """Tabular Q-learning with epsilon-greedy exploration (no model needed)."""
    return Learner("q_learning", params, ctx)


@algorithm(LearningParams, metrics=LEARNING_METRICS, example=LEARNER_EXAMPLE)
def sarsa(params: LearningParams, ctx: BuildContext) -> Learner:
    """Tabular SARSA, the on-policy counterpart of Q-learning."""
    return Learner("sarsa", params, ctx)


@algorithm(MarkovChainParams, name="markov_chain", metrics=CHAIN_METRICS,
           example=Example(params={"policy": "optimal", "gamma": 0.9, "steps": 10}, env=DETERMINISTIC_LAKE,
                           solves={"absorption/target": 1.0}))
def markov_chain(params: MarkovChainParams, ctx: BuildContext) -> ChainAnalysis:
    """A policy's Markov chain: stationary distribution, absorption, expected steps, n-step distributions."""
    return ChainAnalysis(params, ctx)


# --- models ------------------------------------------------------------------------------------


@model(DQNParams, name="dqn", metrics=DQN_METRICS,
       example=Example(params={"hidden": [16], "batch_size": 8, "warmup_steps": 32, "steps_per_epoch": 2,
                               "val_episodes": 1, "test_episodes": 1},
                       env={"name": "CartPole-v1"}, output_shape=(1, 2)))
def make_dqn(params: DQNParams, ctx: BuildContext):
    """Deep Q-network (Mnih et al. 2015): replay buffer, target network, epsilon-greedy."""
    return build_dqn(params, ctx)


# --- hooks -------------------------------------------------------------------------------------


@hookimpl
def register_environments():
    return [make_gridworld, file_mdp]


@hookimpl
def register_algorithms():
    return [value_iteration, policy_iteration, q_learning, sarsa, markov_chain]


@hookimpl
def register_models():
    return [make_dqn]


@hookimpl
def make_run_reports(report):
    return plots.write_reports(report) or None
