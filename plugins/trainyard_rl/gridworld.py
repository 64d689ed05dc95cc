"""GridWorld: a scalable grid MDP (up to millions of cells) that exposes its transition model.

Registered with Gymnasium as `trainyard/GridWorld-v0`. The agent starts at S and moves
LEFT=0, DOWN=1, RIGHT=2, UP=3 (FrozenLake's numbering). With probability `slip` the move goes
to one of the two perpendicular directions instead (half each). A move into a wall or off the
grid leaves the agent where it is. Entering the goal G or a trap T ends the episode.

    observation  Discrete(rows * cols): the cell, row * cols + col
    action       Discrete(4)
    reward       goal_reward on entering G, trap_reward on entering T, step_reward otherwise
    info         {"is_success": True} when the episode ends at the goal

The layout is either given (`layout`: rows of 'S', 'G', 'T', '#' (wall) and '.') or generated:
start top-left, goal bottom-right, and a `wall_fraction` / `trap_fraction` of the other cells
drawn with `layout_seed`. `transition_model()` builds the sparse model with array operations,
so a 1000x1000 grid (10^6 states) takes about a second.
"""

from __future__ import annotations

from functools import cached_property

import gymnasium as gym
import numpy as np
import scipy.sparse as sp
from gymnasium import spaces

from trainyard_rl.mdp import TabularMDP

LEFT, DOWN, RIGHT, UP = 0, 1, 2, 3
MOVES = np.array([[0, -1], [1, 0], [0, 1], [-1, 0]])  # (row, col) step of each action
FREE, WALL, START, GOAL, TRAP = 0, 1, 2, 3, 4
SYMBOLS = {".": FREE, "#": WALL, "S": START, "G": GOAL, "T": TRAP}
COLOURS = np.array([[240, 240, 240], [60, 60, 60], [90, 140, 230], [80, 190, 90], [220, 80, 70]], dtype=np.uint8)


def make_layout(rows: int, cols: int, wall_fraction: float, trap_fraction: float, seed: int) -> np.ndarray:
    cells = np.full((rows, cols), FREE, dtype=np.int8)
    draw = np.random.default_rng(seed).random((rows, cols))
    cells[draw < wall_fraction + trap_fraction] = TRAP
    cells[draw < wall_fraction] = WALL
    cells[0, 0], cells[-1, -1] = START, GOAL
    return cells


def parse_layout(layout: list[str]) -> np.ndarray:
    if not layout or len({len(row) for row in layout}) != 1:
        raise ValueError("layout must be a non-empty list of equally long rows")
    unknown = set("".join(layout)) - set(SYMBOLS)
    if unknown:
        raise ValueError(f"layout has unknown cells {''.join(sorted(unknown))!r}; use . # S G T")
    cells = np.array([[SYMBOLS[c] for c in row] for row in layout], dtype=np.int8)
    if (cells == START).sum() != 1 or not (cells == GOAL).any():
        raise ValueError("layout needs exactly one S and at least one G")
    return cells


class GridWorldEnv(gym.Env):
    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, rows: int = 8, cols: int = 8, layout: list[str] | None = None, slip: float = 0.0,
                 step_reward: float = 0.0, goal_reward: float = 1.0, trap_reward: float = -1.0,
                 wall_fraction: float = 0.0, trap_fraction: float = 0.0, layout_seed: int = 0,
                 render_mode: str | None = None):
        if not 0.0 <= slip <= 1.0:
            raise ValueError(f"slip must be in [0, 1], got {slip}")
        if layout is not None:
            self.cells = parse_layout(list(layout))
        else:
            if rows < 1 or cols < 1 or rows * cols < 2:
                raise ValueError(f"a grid needs at least 2 cells, got {rows}x{cols}")
            if not (0.0 <= wall_fraction and 0.0 <= trap_fraction and wall_fraction + trap_fraction < 1.0):
                raise ValueError("wall_fraction and trap_fraction must be >= 0 with a sum below 1")
            self.cells = make_layout(rows, cols, wall_fraction, trap_fraction, layout_seed)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.rows, self.cols = self.cells.shape
        self.slip = slip
        # Indexed by cell kind (FREE, WALL, START, GOAL, TRAP): lookups, not branches, for 10^6 cells.
        self._reward_of_kind = np.array([step_reward, step_reward, step_reward, goal_reward, trap_reward])
        self._ends_in_kind = np.array([False, False, False, True, True])
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(self.rows * self.cols)
        self.action_space = spaces.Discrete(4)
        self.start = int(np.flatnonzero(self.cells.ravel() == START)[0])
        self.state = self.start

    # --- dynamics, shared by step() and the model --------------------------------------------

    def _next(self, states: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Cells reached by moving from `states` in `directions` (same shapes); walls block."""
        row, col = np.divmod(states, self.cols)
        row2, col2 = row + MOVES[directions, 0], col + MOVES[directions, 1]
        # A move off the grid stays where it is; clipping keeps the cell lookup in range.
        inside = (row2 >= 0) & (row2 < self.rows) & (col2 >= 0) & (col2 < self.cols)
        target = np.where(inside, np.clip(row2, 0, self.rows - 1) * self.cols + np.clip(col2, 0, self.cols - 1), states)
        return np.where(self.cells.ravel()[target] == WALL, states, target)

    def _reward_and_end(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        kind = self.cells.ravel()[cells]
        return self._reward_of_kind[kind], self._ends_in_kind[kind]

    def transition_model(self) -> TabularMDP:
        """The sparse model: row s*4 + a lists the three cells the move can reach (intended, two sideways)."""
        n = self.rows * self.cols
        index = np.int32 if 12 * n < np.iinfo(np.int32).max else np.int64
        cells = np.arange(n, dtype=index)
        # The neighbour in each direction once per cell, then gathered for each (action, outcome).
        neighbours = np.stack([self._next(cells, np.full(n, d)) for d in range(4)], axis=1).astype(index)  # (S, 4)
        outcomes = np.array([[a, (a + 1) % 4, (a + 3) % 4] for a in range(4)])                          # (A, 3)
        targets = neighbours[:, outcomes].reshape(n * 4, 3)                                              # (S*A, 3)
        probs = np.tile(np.array([1.0 - self.slip, self.slip / 2, self.slip / 2]), (n * 4, 1))         # (S*A, 3)
        reward, ends = self._reward_and_end(targets)
        # Episodes are over in the goal and traps: those states loop on themselves, earning nothing.
        over = np.flatnonzero(self._ends_in_kind[self.cells.ravel()])
        rows = (over[:, None] * 4 + np.arange(4)).ravel()
        targets[rows], probs[rows], reward[rows], ends[rows] = np.repeat(over, 4)[:, None], (1.0, 0.0, 0.0), 0.0, True
        expected = np.einsum("ij,ij->i", probs, reward)                                                  # (S*A,)
        if 0.0 < self.slip < 1.0:  # every outcome possible: three stored transitions a row (a few zeros are harmless)
            data, indices, indptr = probs.ravel(), targets.ravel(), np.arange(0, 12 * n + 1, 3, dtype=index)
            flags = ends.ravel()
        else:  # no stored zeros when a move never (or always) slips
            keep = probs > 0
            data, indices, flags = probs[keep], targets[keep], ends[keep]
            indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(index)
        matrix = sp.csr_array((data, indices, indptr), shape=(4 * n, n))
        initial = np.zeros(n)
        initial[self.start] = 1.0
        return TabularMDP(matrix, expected, flags, initial, 4, (self.rows, self.cols))

    @cached_property
    def P(self) -> dict[int, dict[int, list[tuple[float, int, float, bool]]]]:
        """Gymnasium toy-text's model format, built from transition_model() on first use (slow for big grids)."""
        model = self.transition_model()
        matrix, kinds = model.transitions, self.cells.ravel()
        rewards, _ = self._reward_and_end(matrix.indices)
        table: dict[int, dict[int, list[tuple[float, int, float, bool]]]] = {}
        for s in range(model.n_states):
            over = self._ends_in_kind[kinds[s]]
            table[s] = {}
            for a in range(4):
                span = range(matrix.indptr[s * 4 + a], matrix.indptr[s * 4 + a + 1])
                table[s][a] = [(float(matrix.data[i]), int(matrix.indices[i]), 0.0 if over else float(rewards[i]),
                                bool(model.ends[i])) for i in span]
        return table

    # --- Gymnasium API -----------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = self.start
        return self.state, {}

    def step(self, action: int):
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action must be 0..3, got {action}")
        u = self.np_random.random()
        direction = action if u >= self.slip else (action + 1) % 4 if u < self.slip / 2 else (action + 3) % 4
        cell = int(self._next(np.array([self.state]), np.array([direction]))[0])
        kind = self.cells.ravel()[cell]
        reward, terminated = float(self._reward_of_kind[kind]), bool(self._ends_in_kind[kind])
        self.state = cell
        info = {"is_success": bool(kind == GOAL)} if terminated else {}
        return cell, reward, terminated, False, info

    def render(self):
        if self.render_mode == "ansi":
            symbols = np.array(list(".#SGT"))[self.cells]
            symbols.ravel()[self.state] = "A"
            return "\n".join("".join(row) for row in symbols) + "\n"
        if self.render_mode == "rgb_array":
            pixels = max(1, 256 // max(self.rows, self.cols))
            image = COLOURS[self.cells].copy()
            image[divmod(self.state, self.cols)] = (240, 200, 40)
            return np.repeat(np.repeat(image, pixels, axis=0), pixels, axis=1)
        return None
