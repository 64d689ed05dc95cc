"""The plots logged with every RL run (through the `make_run_reports` hook).

- value.png: for grid environments, V as a heatmap with the greedy policy drawn as arrows
  (arrows only up to 40x40 cells, where they can still be read; terminal cells and walls get none);
- convergence.png: the Bellman residual per iteration, on a log scale (dynamic programming);
- learning_curve.png: the training return (tabular learners, DQN).

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
    from trainyard_rl.algorithms import Learner, Planner

    algorithm, directory, paths = report.model, report.directory, []
    if isinstance(algorithm, Planner) and algorithm.solution is not None:
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
