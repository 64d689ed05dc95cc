"""The algorithm components: what `algorithm: {name: rl.value_iteration, ...}` builds and runs.

Each object's `run(sink)` solves or learns, logs its progress to the sink (per iteration or per
block of episodes), evaluates the policy it returns in the real environment, and returns the
final metrics. It keeps what it found (`mdp`, `solution` or `Q`, the curves) for the plots in
plots.py, which the plugin's `make_run_reports` hook draws.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from pydantic import Field

from trainyard import BuildContext, Params, Problem, SpecError
from trainyard_rl import dp, tabular
from trainyard_rl.mdp import NoModel, TabularMDP
from trainyard_rl.rollouts import SuccessRule, rollouts

EVALUATION_METRICS = ("eval/return", "eval/return_ci_low", "eval/return_ci_high", "eval/success",
                      "eval/success_ci_low", "eval/success_ci_high", "eval/length", "eval/discounted_return")
PLANNING_METRICS = ("bellman_residual", "value/start", "iterations", "seconds", "converged", *EVALUATION_METRICS)
LEARNING_METRICS = ("train/return", "train/length", "train/epsilon", "gap/start", "value/optimal_start",
                    "value/start", "episodes", "seconds", *EVALUATION_METRICS)
# An evaluation episode that never ends (a policy walking into a wall) is cut here.
MAX_EVALUATION_STEPS = 100_000


class EvaluationParams(Params):
    gamma: float = Field(0.99, gt=0, lt=1, description="Discount factor.")
    eval_episodes: int = Field(200, ge=1, description="Greedy episodes in the real environment after training.")
    success: SuccessRule = Field("auto", description="What counts as a successful episode: auto (info['is_success'], "
                                                     "else ending on a positive reward), goal, or survive.")


class PlanningParams(EvaluationParams):
    epsilon: float = Field(1e-6, gt=0, description="Stop when the greedy policy is epsilon-optimal.")
    max_iterations: int = Field(100_000, ge=1, description="Give up after this many sweeps (logged as converged 0).")


class PolicyIterationParams(PlanningParams):
    evaluation_sweeps: int | None = Field(
        None, ge=1, description="None: evaluate each policy exactly (policy iteration); m: m sweeps per "
                                "evaluation (modified policy iteration).")


class LearningParams(EvaluationParams):
    episodes: int = Field(2000, ge=1, description="Training episodes.")
    alpha: float = Field(0.1, gt=0, le=1, description="Learning rate of the Q update.")
    epsilon_start: float = Field(1.0, ge=0, le=1, description="Exploration rate at the first episode.")
    epsilon_end: float = Field(0.05, ge=0, le=1, description="Exploration rate after the decay.")
    exploration_fraction: float = Field(0.5, gt=0, le=1, description="Fraction of the episodes over which epsilon decays.")
    log_every: int = Field(50, ge=1, description="Episodes per logged point of the learning curve.")
    max_episode_steps: int = Field(10_000, ge=1, description="Cut a training episode after this many steps.")


def model_of(env) -> TabularMDP:
    """The environment's model, or the spec error that says to use a model-free algorithm."""
    try:
        return TabularMDP.from_env(env)
    except NoModel as error:
        raise SpecError([Problem("env.name", str(error))]) from None


def check_discrete(env, algorithm: str) -> None:
    from gymnasium import spaces

    if not (isinstance(env.observation_space, spaces.Discrete) and isinstance(env.action_space, spaces.Discrete)):
        raise SpecError([Problem("env.name", f"{algorithm} is tabular: it needs Discrete observations and actions, "
                                             f"got {env.observation_space} and {env.action_space}; use rl.dqn")])


class _Evaluated:
    """Shared by the algorithms: evaluation rollouts of the returned policy in the real environment."""

    params: EvaluationParams
    ctx: BuildContext

    def evaluate(self, act) -> dict[str, float]:
        env = self.ctx.make_env() if self.ctx.make_env is not None else self.ctx.env
        try:
            evaluation = rollouts(env, act, self.params.eval_episodes, seed=self.ctx.seed + 1_000_000,
                                  success=self.params.success, max_steps=MAX_EVALUATION_STEPS,
                                  gamma=self.params.gamma)
        finally:
            if env is not self.ctx.env:
                env.close()
        return evaluation.metrics("eval")


class Planner(_Evaluated):
    """Value iteration or (modified) policy iteration on the environment's model."""

    def __init__(self, method: str, params: PlanningParams, ctx: BuildContext):
        self.method, self.params, self.ctx = method, params, ctx
        self.mdp = model_of(ctx.env)
        self.solution: dp.Solution | None = None

    def run(self, sink) -> dict[str, float]:
        p = self.params
        if self.method == "value_iteration":
            solution = dp.value_iteration(self.mdp, p.gamma, p.epsilon, p.max_iterations)
        else:
            solution = dp.policy_iteration(self.mdp, p.gamma, p.evaluation_sweeps, p.epsilon, p.max_iterations)
        self.solution = solution
        # Logged after solving, not from inside the loop: a sweep of a small MDP takes less time
        # than a call into the tracking client.
        for iteration, residual in enumerate(solution.residuals, start=1):
            sink.log_metrics({"bellman_residual": residual}, step=iteration)
        policy = solution.policy
        metrics = {"value/start": solution.start_value(self.mdp), "iterations": float(solution.iterations),
                   "seconds": solution.seconds, "converged": float(solution.converged)}
        return metrics | self.evaluate(lambda observation: int(policy[observation]))


class Learner(_Evaluated):
    """Tabular Q-learning or SARSA; with a model at hand, the gap to the optimum is logged too."""

    def __init__(self, method: str, params: LearningParams, ctx: BuildContext):
        self.method, self.params, self.ctx = method, params, ctx
        check_discrete(ctx.env, f"rl.{method}")
        try:
            self.mdp: TabularMDP | None = TabularMDP.from_env(ctx.env)
        except NoModel:
            self.mdp = None
        self.Q: np.ndarray | None = None
        self.curve: list[tuple[int, float]] = []  # (episode, mean return of the block)

    def run(self, sink) -> dict[str, float]:
        p = self.params
        optimum = dp.value_iteration(self.mdp, p.gamma, 1e-8) if self.mdp is not None else None
        block: list[tuple[float, int]] = []

        def on_episode(episode: int, total: float, length: int, epsilon: float, Q: np.ndarray) -> None:
            block.append((total, length))
            if len(block) == p.log_every or episode == p.episodes - 1:
                returns, lengths = zip(*block)
                point = {"train/return": float(np.mean(returns)), "train/length": float(np.mean(lengths)),
                         "train/epsilon": epsilon}
                if optimum is not None:
                    point["gap/start"] = optimum.start_value(self.mdp) - self._policy_value(Q.argmax(axis=1))
                self.curve.append((episode + 1, point["train/return"]))
                sink.log_metrics(point, step=episode + 1)
                block.clear()

        started = time.perf_counter()
        exploration = tabular.Exploration(p.epsilon_start, p.epsilon_end, p.exploration_fraction)
        self.Q = tabular.learn(self.ctx.env, p.episodes, p.gamma, p.alpha, exploration, self.ctx.seed,
                               self.method, on_episode, p.max_episode_steps)
        metrics: dict[str, Any] = {"episodes": float(p.episodes), "seconds": time.perf_counter() - started}
        policy = self.Q.argmax(axis=1)
        metrics |= self.evaluate(lambda observation: int(policy[observation]))
        if optimum is not None:
            metrics["value/start"] = self._policy_value(policy)
            metrics["value/optimal_start"] = optimum.start_value(self.mdp)
            metrics["gap/start"] = metrics["value/optimal_start"] - metrics["value/start"]
        else:
            # Without a model, the value of the start distribution is estimated by the
            # discounted returns of the evaluation episodes.
            metrics["value/start"] = metrics["eval/discounted_return"]
        return metrics

    def _policy_value(self, policy: np.ndarray) -> float:
        return float(self.mdp.initial @ dp.evaluate_policy(self.mdp, policy, self.params.gamma, "exact"))
