"""An environment simulated from a TabularMDP, and the file-based MDP built on it.

`trainyard/FileMDP-v0` reads the user's own arrays from a NumPy `.npz` file:

    transitions  (A, S, S)  P[a, s, s'], each row summing to 1; or (S, S), a Markov chain
    rewards      (S, A), (S,) or (A, S, S) per transition; optional for a Markov chain (default 0)
    terminal     (S,) bool, optional: entering one of these states ends the episode
    initial      (S,), optional: the start distribution (default: state 0)

or a Markov chain's (S, S) matrix alone, in an `.npy` file or a text file (`.csv` comma-separated,
`.txt` whitespace-separated, `#` comments). A Markov chain is an MDP with one action and no reward:
`rl.markov_chain` analyses it, and stepping the environment simulates it.

It is checked on load (shapes, probabilities) and exposes `transition_model()` like GridWorld.

    observation  Discrete(S)
    action       Discrete(A) (Discrete(1) for a Markov chain)
    reward       r(s, a, s') for (A, S, S) rewards, else the expected r(s, a)
    info         {"prob": P(s' | s, a)}, as Gymnasium's toy-text environments give
    render       "ansi": the current state, as text (no "rgb_array": the states have no layout to draw)
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from trainyard_rl.mdp import TabularMDP


class TabularEnv(gym.Env):
    """Samples episodes from a TabularMDP: reset draws from `initial`, step from row s*A + a."""

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, model: TabularMDP, transition_rewards: np.ndarray | None = None,
                 render_mode: str | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.model = model
        # One reward per stored transition (aligned with model.transitions.data), or None: expected rewards.
        self.transition_rewards = transition_rewards
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(model.n_states)
        self.action_space = spaces.Discrete(model.n_actions)
        self._cumulative_initial = np.cumsum(model.initial)
        self.state = 0

    def transition_model(self) -> TabularMDP:
        return self.model

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = int(min(np.searchsorted(self._cumulative_initial, self.np_random.random(), side="right"),
                             self.model.n_states - 1))
        return self.state, {"prob": float(self.model.initial[self.state])}

    def step(self, action: int):
        action = int(action)
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in 0..{self.model.n_actions - 1}, got {action}")
        matrix = self.model.transitions
        row = self.state * self.model.n_actions + action
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        pick = start + min(int(np.searchsorted(np.cumsum(matrix.data[start:stop]), self.np_random.random(),
                                               side="right")), stop - start - 1)
        self.state = int(matrix.indices[pick])
        reward = self.transition_rewards[pick] if self.transition_rewards is not None else self.model.rewards[row]
        return self.state, float(reward), bool(self.model.ends[pick]), False, {"prob": float(matrix.data[pick])}

    def render(self):
        if self.render_mode == "ansi":
            return f"state {self.state} of {self.model.n_states}\n"
        return None


class FileMDPEnv(TabularEnv):
    def __init__(self, path: str = "", render_mode: str | None = None):
        file = Path(path)
        if not path or not file.is_file():
            raise ValueError(f"no such MDP file: {path!r} (an .npz with transitions and rewards, or a Markov "
                             "chain's matrix in .npy or .csv)")
        arrays = read_arrays(file)
        transitions = np.asarray(arrays["transitions"])
        if transitions.ndim == 2:  # a Markov chain: one action, nothing earned unless the file says
            transitions = transitions[None]
            arrays.setdefault("rewards", np.zeros(transitions.shape[-1]))
        if "rewards" not in arrays:
            raise ValueError(f"{file.name} lacks rewards (it has {', '.join(arrays)})")
        rewards = arrays["rewards"]
        model = TabularMDP.from_arrays(transitions, rewards, arrays.get("terminal"), arrays.get("initial"))
        per_transition = None
        if rewards.ndim == 3:
            # Actual r(s, a, s') for each stored transition of the CSR (row s*A + a, column s').
            rows = np.repeat(np.arange(model.transitions.shape[0]), np.diff(model.transitions.indptr))
            states, actions = np.divmod(rows, model.n_actions)
            per_transition = rewards[actions, states, model.transitions.indices].astype(float)
        super().__init__(model, per_transition, render_mode)
        self.path = str(file)


def read_arrays(file: Path) -> dict[str, np.ndarray]:
    """The arrays of an MDP file: an .npz's by name, or the one matrix of an .npy or text file as
    `transitions`. Anything unreadable is a one-line ValueError."""
    suffix = file.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            return {"transitions": np.loadtxt(file, delimiter="," if suffix == ".csv" else None, ndmin=2)}
        loaded = np.load(file, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return {"transitions": loaded}
        with loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        kind = "text matrix" if suffix in (".csv", ".txt") else "NumPy .npz or .npy file"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{file.name} is not a {kind}: {reason}") from None
    if "transitions" not in arrays:
        raise ValueError(f"{file.name} lacks transitions (it has {', '.join(arrays) or 'no arrays'})")
    return arrays
