"""The plots logged with every RL run (through the `make_run_reports` hook).

- value.png: for grid environments, V as a heatmap with the greedy policy drawn as arrows
  (arrows only up to 40x40 cells, where they can still be read; terminal cells and walls get none);
- convergence.png: the Bellman residual per iteration, on a log scale (dynamic programming);
- learning_curve.png: the training return (tabular learners, DQN);
- for a Markov chain (rl.markov_chain): stationary.png (pi over the states), absorption.png (from
  each transient state: the probability of ending in each absorbing state, and the expected steps),
  distributions.png (mu P^n as a heatmap over steps and states, and P(X_n in target) below it),
  each drawn when the chain has the thing it shows.

Figures are drawn with matplotlib's object API (no pyplot): nothing depends on a display.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from trainyard_rl.gridworld import WALL

# (column, row) step of LEFT, DOWN, RIGHT, UP on an image whose rows grow downwards.
ARROWS = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], dtype=float)
MAX_ARROW_SIDE = 40


def write_reports(report) -> list[Path]:
    from trainyard_rl.algorithms import ChainAnalysis, Learner, Planner

    algorithm, directory, paths = report.model, report.directory, []
    if isinstance(algorithm, ChainAnalysis) and algorithm.chain is not None:
        paths += chain_pngs(algorithm, directory, _name(report))
    elif isinstance(algorithm, Planner) and algorithm.solution is not None:
        solution = algorithm.solution
        if algorithm.mdp.grid is not None:
            paths.append(value_png(solution.V, solution.policy, algorithm.mdp, report.env, directory / "value.png",
                                   f"{_name(report)}: V* and greedy policy"))
        threshold = algorithm.params.epsilon * (1 - algorithm.params.gamma) / (2 * algorithm.params.gamma)
        paths.append(convergence_png(solution.residuals, threshold, directory / "convergence.png", _name(report)))
    elif isinstance(algorithm, Learner) and algorithm.Q is not None:
        if algorithm.mdp is not None and algorithm.mdp.grid is not None:
            paths.append(value_png(algorithm.Q.max(axis=1), algorithm.Q.argmax(axis=1), algorithm.mdp, report.env,
                                   directory / "value.png", f"{_name(report)}: max_a Q and greedy policy"))
        paths.append(learning_curve_png(algorithm.curve, directory / "learning_curve.png", _name(report)))
    elif getattr(algorithm, "episode_returns", None):
        curve = list(enumerate(algorithm.episode_returns, start=1))
        paths.append(learning_curve_png(curve, directory / "learning_curve.png", _name(report)))
    return paths


def _name(report) -> str:
    return report.spec.name


def value_png(V: np.ndarray, policy: np.ndarray, mdp, env, path: Path, title: str) -> Path:
    rows, cols = mdp.grid
    figure = Figure(figsize=(min(10.0, 2 + 0.5 * cols), min(9.0, 1.5 + 0.5 * rows)))
    ax = figure.subplots()
    image = ax.imshow(V.reshape(rows, cols), cmap="viridis", interpolation="nearest")
    figure.colorbar(image, ax=ax, label="value")
    if max(rows, cols) <= MAX_ARROW_SIDE:
        # No arrow where nothing is decided: cells where episodes end, and walls.
        shown = ~mdp.terminal
        cells = getattr(getattr(env, "unwrapped", None), "cells", None)
        if cells is not None:
            shown &= cells.ravel() != WALL
        r, c = np.divmod(np.flatnonzero(shown), cols)
        steps = ARROWS[policy[shown]]
        ax.quiver(c, r, steps[:, 0], steps[:, 1], angles="xy", scale_units="xy", scale=2.2, color="white",
                  width=0.006)
    else:
        title += f" (arrows omitted above {MAX_ARROW_SIDE}x{MAX_ARROW_SIDE})"
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def convergence_png(residuals: list[float], threshold: float, path: Path, name: str) -> Path:
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    ax.semilogy(np.arange(1, len(residuals) + 1), np.maximum(residuals, 1e-300), label="Bellman residual")
    ax.axhline(threshold, color="grey", linestyle="--", label="epsilon-optimal stop")
    ax.set_xlabel("iteration")
    ax.set_ylabel("max |V_k+1 - V_k|")
    ax.set_title(f"{name}: convergence", fontsize=10)
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def learning_curve_png(curve: list[tuple[int, float]], path: Path, name: str) -> Path:
    episodes, returns = zip(*curve) if curve else ((), ())
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    ax.plot(episodes, returns, marker="." if len(curve) < 60 else None)
    ax.set_xlabel("episode")
    ax.set_ylabel("return")
    ax.set_title(f"{name}: learning curve", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


# Bars up to this many states; a line beyond, where bars would merge into noise.
MAX_BARS = 64
# Absorbing states drawn one line each in absorption.png; beyond, the most likely ones.
MAX_ABSORBING_LINES = 8


def chain_pngs(analysis, directory: Path, name: str) -> list[Path]:
    paths = []
    if analysis.stationary is not None:
        paths.append(stationary_png(analysis.stationary, directory / "stationary.png", name))
    if analysis.absorption is not None and analysis.absorption[0].size:
        paths.append(absorption_png(*analysis.absorption, directory / "absorption.png", name))
    paths.append(distributions_png(analysis.distributions, analysis.target, directory / "distributions.png", name))
    return paths


def _per_state(ax, states: np.ndarray, values: np.ndarray, **style) -> None:
    if len(states) <= MAX_BARS:
        ax.bar(states, values, **style)
    else:
        ax.plot(states, values, **{k: v for k, v in style.items() if k != "width"})


def stationary_png(pi: np.ndarray, path: Path, name: str) -> Path:
    figure = Figure(figsize=(6, 3.5))
    ax = figure.subplots()
    _per_state(ax, np.arange(len(pi)), pi)
    ax.set_xlabel("state")
    ax.set_ylabel("pi(s)")
    ax.set_title(f"{name}: stationary distribution", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def absorption_png(transient: np.ndarray, absorbing: np.ndarray, B: np.ndarray, steps: np.ndarray, path: Path,
                   name: str) -> Path:
    """B (S_t, S_a) and t (S_t,) against the transient start state."""
    figure = Figure(figsize=(6.5, 6))
    top, bottom = figure.subplots(2, 1, sharex=True)
    shown = np.argsort(-B.sum(axis=0), kind="stable")[:MAX_ABSORBING_LINES]
    for column in sorted(shown):
        top.plot(transient, B[:, column], marker="." if len(transient) <= MAX_BARS else None,
                 label=f"ends in {absorbing[column]}")
    top.set_ylabel("absorption probability")
    top.set_ylim(-0.02, 1.02)
    top.legend(fontsize=8)
    top.set_title(f"{name}: absorption from each transient state"
                  + (f" ({len(shown)} of {len(absorbing)} absorbing states)" if len(absorbing) > len(shown) else ""),
                  fontsize=10)
    _per_state(bottom, transient, steps, color="tab:orange")
    bottom.set_xlabel("start state")
    bottom.set_ylabel("expected steps to absorption")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def distributions_png(distributions: np.ndarray, target: np.ndarray, path: Path, name: str) -> Path:
    """mu P^n, (steps + 1, S), as an image, and the probability of the target states per step."""
    figure = Figure(figsize=(6.5, 6))
    top, bottom = figure.subplots(2, 1, height_ratios=[2, 1])
    image = top.imshow(distributions.T, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
    figure.colorbar(image, ax=top, label="P(X_n = s)")
    top.set_xlabel("step n")
    top.set_ylabel("state s")
    top.set_title(f"{name}: n-step distributions", fontsize=10)
    bottom.plot(np.arange(len(distributions)), distributions[:, target].sum(axis=1))
    bottom.set_xlabel("step n")
    bottom.set_ylabel(f"P(X_n in {target.tolist()[:4]}{'...' if len(target) > 4 else ''})")
    bottom.set_ylim(-0.02, 1.02)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
