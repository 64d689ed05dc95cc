"""The algorithm components: what `algorithm: {name: rl.value_iteration, ...}` builds and runs.

Each object's `run(sink)` solves or learns, logs its progress to the sink (per iteration or per
block of episodes), evaluates the policy it returns in the real environment, and returns the
final metrics. It keeps what it found (`mdp`, `solution` or `Q`, the curves) for the plots in
plots.py, which the plugin's `make_run_reports` hook draws.

`ChainAnalysis` (rl.markov_chain) solves nothing: it fixes a policy on the environment's model
and reports the Markov chain that results (markov.py), exactly, without sampling.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from trainyard import BuildContext, Params, Problem, SpecError
from trainyard_rl import dp, tabular
from trainyard_rl.markov import MarkovChain, point_mass
from trainyard_rl.mdp import NoModel, TabularMDP
from trainyard_rl.rollouts import SuccessRule, rollouts

EVALUATION_METRICS = ("eval/return", "eval/return_ci_low", "eval/return_ci_high", "eval/success",
                      "eval/success_ci_low", "eval/success_ci_high", "eval/length", "eval/discounted_return")
PLANNING_METRICS = ("bellman_residual", "value/start", "iterations", "seconds", "converged", *EVALUATION_METRICS)
LEARNING_METRICS = ("train/return", "train/length", "train/epsilon", "gap/start", "value/optimal_start",
                    "value/start", "episodes", "seconds", *EVALUATION_METRICS)
CHAIN_METRICS = ("states", "closed_classes", "absorbing_states", "transient_states", "stationary/target",
                 "absorption/target", "steps_to_absorption", "distribution/target", "distribution/tv_to_stationary",
                 "seconds")
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


# --- Markov chains -----------------------------------------------------------------------------

# The n-step distributions are kept whole (for the table and the plot): at most this many numbers.
MAX_DISTRIBUTION_CELLS = 10_000_000


class MarkovChainParams(Params):
    policy: str | list[int] = Field(
        "optimal", description="What fixes the chain on an environment with several actions: optimal (greedy for "
                               "value iteration at gamma), uniform, a list of one action per state, or an .npy file "
                               "of actions (S,) or probabilities (S, A). A one-action environment (a matrix file "
                               "through rl.file_mdp) is a chain already.")
    gamma: float = Field(0.99, gt=0, lt=1, description="Discount factor of the optimal policy.")
    start: int | None = Field(None, ge=0, description="Start state (default: the environment's initial distribution).")
    target: list[int] | None = Field(None, min_length=1, description="States whose probability the scalar metrics "
                                                                     "follow (default: the last state).")
    steps: int = Field(50, ge=0, le=100_000, description="n-step distributions mu P^n for n = 0..steps.")


class ChainAnalysis:
    """The Markov chain of a policy on the environment's model: its class structure, stationary
    distribution, absorption probabilities and expected steps, and n-step distributions.

    Logged: `distribution/target` = P(X_n in target) and `distribution/tv_to_stationary` (the
    total-variation distance of mu P^n from pi) per step n; the scalar summaries at the end; the
    full vectors as CSV tables under markov/ (stationary.csv, absorption.csv, distributions.csv)
    with markov/summary.txt saying what is undefined for this chain and why."""

    def __init__(self, params: MarkovChainParams, ctx: BuildContext):
        self.params, self.ctx = params, ctx
        self.mdp = model_of(ctx.env)
        n_states = self.mdp.n_states
        self.policy = self._fixed_policy()  # None: "optimal", found in run()
        for field, states in (("start", [params.start] if params.start is not None else []),
                              ("target", params.target or [])):
            outside = [state for state in states if not 0 <= state < n_states]
            if outside:
                raise SpecError([Problem(f"algorithm.params.{field}", f"state {outside[0]} is not one of the "
                                                                      f"{n_states} states (0..{n_states - 1})")])
        if (params.steps + 1) * n_states > MAX_DISTRIBUTION_CELLS:
            raise SpecError([Problem("algorithm.params.steps", f"{params.steps + 1} distributions over {n_states} "
                                                               f"states exceed {MAX_DISTRIBUTION_CELLS:,} numbers; "
                                                               "take fewer steps")])
        self.target = np.array(params.target if params.target is not None else [n_states - 1])
        # What run() finds, for the plots: None where the chain has no such thing.
        self.chain: MarkovChain | None = None
        self.stationary: np.ndarray | None = None
        # (transient states, absorbing states, B (S_t, S_a), expected steps t (S_t,))
        self.absorption: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.distributions: np.ndarray | None = None  # (steps + 1, S)
        self.notes: list[str] = []

    def _fixed_policy(self) -> np.ndarray | None:
        """The policy as (S,) actions or (S, A) probabilities; None for "optimal"; errors name the field."""
        policy, n_states, n_actions = self.params.policy, self.mdp.n_states, self.mdp.n_actions

        def bad(message: str) -> SpecError:
            return SpecError([Problem("algorithm.params.policy", message)])

        if n_actions == 1:
            return np.zeros(n_states, dtype=np.int64)
        if policy == "optimal":
            return None
        if policy == "uniform":
            return np.full((n_states, n_actions), 1.0 / n_actions)
        if isinstance(policy, str):
            file = Path(policy)
            try:
                if file.suffix != ".npy" or not file.is_file():
                    raise bad(f"expected optimal, uniform, a list of actions or an .npy file; no such .npy file: "
                              f"{policy!r}")
                array = np.load(file, allow_pickle=False)
            except (OSError, ValueError, EOFError) as error:
                reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise bad(f"{file.name} is not a NumPy .npy file: {reason}") from None
        else:
            array = np.asarray(policy)
        if array.shape == (n_states,) and np.issubdtype(array.dtype, np.integer):
            if array.min() < 0 or array.max() >= n_actions:
                state = int(np.flatnonzero((array < 0) | (array >= n_actions))[0])
                raise bad(f"action {array[state]} in state {state} is not one of the {n_actions} actions "
                          f"(0..{n_actions - 1})")
            return array.astype(np.int64)
        if array.shape == (n_states, n_actions) and np.issubdtype(array.dtype, np.number):
            if not (np.isfinite(array).all() and (array >= 0).all() and np.allclose(array.sum(axis=1), 1.0)):
                raise bad("the rows of a stochastic policy must be probabilities summing to 1")
            return array.astype(float)
        raise bad(f"expected {n_states} actions (one per state) or ({n_states}, {n_actions}) probabilities, "
                  f"got shape {array.shape} of {array.dtype}")

    def run(self, sink) -> dict[str, float]:
        p = self.params
        started = time.perf_counter()
        policy = self.policy
        if policy is None:
            policy = dp.value_iteration(self.mdp, p.gamma, 1e-8).policy
        chain = MarkovChain.from_policy(self.mdp, policy)
        if p.start is not None:
            chain = MarkovChain(chain.matrix, point_mass(chain.n_states, p.start))
        self.chain = chain
        closed = chain.closed_classes()
        metrics = {"states": float(chain.n_states), "closed_classes": float(len(closed)),
                   "absorbing_states": float(chain.absorbing_states().size),
                   "transient_states": float(chain.transient_states().size)}
        try:
            self.stationary = chain.stationary()
            metrics["stationary/target"] = float(self.stationary[self.target].sum())
        except ValueError as error:
            self.notes.append(f"stationary distribution: undefined: {error}")
        try:
            self.absorption = (chain.transient_states(), chain.absorbing_states(), chain.absorption_probabilities(),
                               chain.expected_steps_to_absorption())
            transient, _, _, steps = self.absorption
            metrics["absorption/target"] = float(chain.absorption_distribution()[self.target].sum())
            metrics["steps_to_absorption"] = float(chain.initial[transient] @ steps)
        except ValueError as error:
            self.notes.append(f"absorption: undefined: {error}")
        self.distributions = chain.distributions(p.steps)
        for n, mu in enumerate(self.distributions):
            point = {"distribution/target": float(mu[self.target].sum())}
            if self.stationary is not None:
                point["distribution/tv_to_stationary"] = 0.5 * float(np.abs(mu - self.stationary).sum())
            sink.log_metrics(point, step=n)
        self._write_tables(sink.artifact_dir / "markov")
        metrics["seconds"] = time.perf_counter() - started
        return metrics

    def _write_tables(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        chain, states = self.chain, range(self.chain.n_states)
        if self.stationary is not None:
            _write_csv(folder / "stationary.csv", ["state", "probability"], zip(states, self.stationary))
        if self.absorption is not None:
            transient, absorbing, B, steps = self.absorption
            header = ["state", *(f"absorbed_in_{a}" for a in absorbing), "expected_steps"]
            _write_csv(folder / "absorption.csv", header,
                       ([s, *row, t] for s, row, t in zip(transient, B, steps)))
        _write_csv(folder / "distributions.csv", ["step", *(f"state_{s}" for s in states)],
                   ([n, *mu] for n, mu in enumerate(self.distributions)))
        closed = chain.closed_classes()
        lines = [f"states: {chain.n_states}", f"target: {self.target.tolist()}",
                 f"closed classes: {len(closed)} ({', '.join(str(c.tolist()) for c in closed[:5])}"
                 f"{', ...' if len(closed) > 5 else ''})",
                 f"absorbing states: {chain.absorbing_states().tolist()}", *self.notes]
        (folder / "summary.txt").write_text("\n".join(lines) + "\n")


def _write_csv(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in rows:
            writer.writerow([repr(float(value)) if isinstance(value, (float, np.floating)) else int(value)
                             for value in row])
