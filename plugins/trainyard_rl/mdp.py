"""Tabular MDPs in sparse form: what dynamic programming and Markov chains work on.

    transitions  (S*A, S) CSR  row s*A + a holds P(s' | s, a); rows sum to 1. State-major, so
                               the A rows of one state are adjacent and (S*A,) reshapes to (S, A).
    rewards      (S*A,)        expected immediate reward r(s, a) = sum_s' P(s' | s, a) r(s, a, s')
    ends         (nnz,) bool   per stored transition: it ends the episode (Gymnasium's `terminated`);
                               nothing is earned after it, so dynamic programming drops it
    initial      (S,)          start-state distribution

`from_env` extracts this from any environment that exposes a model: trainyard's own
environments through `transition_model()`, Gymnasium's toy-text environments through
`unwrapped.P` (P[s][a] = [(probability, next_state, reward, terminated), ...]).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from trainyard_rl.markov import point_mass


class NoModel(ValueError):
    """The environment exposes no transition model (dynamic programming needs one)."""


@dataclass(frozen=True, eq=False)
class TabularMDP:
    transitions: sp.csr_array
    rewards: np.ndarray
    ends: np.ndarray
    initial: np.ndarray
    n_actions: int
    grid: tuple[int, int] | None = field(default=None)  # (rows, cols) when states are cells, row-major

    def __post_init__(self) -> None:
        rows, n_states = self.transitions.shape
        if rows != n_states * self.n_actions:
            raise ValueError(f"transitions has {rows} rows; expected states x actions = {n_states * self.n_actions}")
        if self.rewards.shape != (rows,) or self.ends.shape != (self.transitions.nnz,):
            raise ValueError("rewards must be (S*A,) and ends one flag per stored transition")
        if self.initial.shape != (n_states,):
            raise ValueError(f"initial distribution has shape {self.initial.shape}; expected ({n_states},)")

    @property
    def n_states(self) -> int:
        return self.transitions.shape[1]

    @cached_property
    def continuation(self) -> sp.csr_array:
        """transitions without those that end the episode: (S*A, S), rows sum to <= 1."""
        if not self.ends.any():
            return self.transitions
        kept = self.transitions.copy()
        kept.data = np.where(self.ends, 0.0, kept.data)
        kept.eliminate_zeros()
        return kept

    @cached_property
    def terminal(self) -> np.ndarray:
        """(S,) bool: states that some transition ends the episode in (FrozenLake's holes and goal)."""
        mask = np.zeros(self.n_states, dtype=bool)
        mask[self.transitions.indices[self.ends]] = True
        return mask

    def rows_of(self, policy: np.ndarray) -> np.ndarray:
        """Row index s*A + policy[s] of each state's chosen action (deterministic policy, (S,) ints)."""
        return np.arange(self.n_states) * self.n_actions + np.asarray(policy)

    def under_policy(self, policy: np.ndarray, continuing: bool = True) -> tuple[sp.csr_array, np.ndarray]:
        """(P_pi (S, S), r_pi (S,)) for a deterministic policy ((S,) actions) or a stochastic one
        ((S, A) probabilities). continuing=False keeps the transitions that end episodes."""
        matrix = self.continuation if continuing else self.transitions
        policy = np.asarray(policy)
        if policy.ndim == 1:
            rows = self.rows_of(policy)
            return sp.csr_array(matrix[rows]), self.rewards[rows]
        if policy.shape != (self.n_states, self.n_actions):
            raise ValueError(f"a stochastic policy is (S, A) = ({self.n_states}, {self.n_actions}), got {policy.shape}")
        # D (S, S*A) has D[s, s*A + a] = pi(a | s), so D @ P averages each state's action rows.
        mixing = sp.csr_array((policy.ravel(), np.arange(policy.size), np.arange(0, policy.size + 1, self.n_actions)),
                              shape=(self.n_states, policy.size))
        return sp.csr_array(mixing @ matrix), mixing @ self.rewards

    @classmethod
    def from_arrays(cls, transitions: np.ndarray, rewards: np.ndarray, terminal: np.ndarray | None = None,
                    initial: np.ndarray | None = None, grid: tuple[int, int] | None = None) -> TabularMDP:
        """From dense arrays: transitions (A, S, S); rewards (S, A), (S,) or (A, S, S) per transition;
        terminal (S,) bool: entering one ends the episode; initial (S,) (default: state 0)."""
        transitions = np.asarray(transitions, dtype=float)
        if transitions.ndim != 3 or transitions.shape[1] != transitions.shape[2]:
            raise ValueError(f"transitions must be (actions, states, states), got shape {transitions.shape}")
        n_actions, n_states, _ = transitions.shape
        rewards = np.asarray(rewards, dtype=float)
        if rewards.shape == (n_actions, n_states, n_states):
            rewards = (transitions * rewards).sum(axis=2).T  # expected r(s, a): (S, A)
        return cls.from_sparse([sp.csr_array(matrix) for matrix in transitions], rewards, terminal, initial, grid)

    @classmethod
    def from_sparse(cls, transitions: list, rewards: np.ndarray, terminal: np.ndarray | None = None,
                    initial: np.ndarray | None = None, grid: tuple[int, int] | None = None) -> TabularMDP:
        """From one sparse (S, S) matrix per action (pymdptoolbox's layout) and rewards (S, A) or (S,)."""
        n_actions = len(transitions)
        n_states = transitions[0].shape[0]
        rows, cols, probs = [], [], []
        for action, matrix in enumerate(transitions):
            coo = sp.coo_array(matrix)
            if coo.shape != (n_states, n_states):
                raise ValueError(f"the transitions of action {action} are {coo.shape}, not ({n_states}, {n_states})")
            rows.append(coo.row.astype(np.int64) * n_actions + action)  # state-major: row s*A + a
            cols.append(coo.col)
            probs.append(coo.data)
        stacked = sp.csr_array((np.concatenate(probs), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(n_states * n_actions, n_states))
        stacked.sum_duplicates()
        if (stacked.data < 0).any():
            raise ValueError("transitions has negative probabilities")
        sums = stacked.sum(axis=1)
        if not np.allclose(sums, 1.0, atol=1e-8):
            s, a = divmod(int(np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-8))[0]), n_actions)
            raise ValueError(f"transition probabilities of state {s}, action {a} sum to {sums[s * n_actions + a]:.6g}, "
                             "not 1")
        index = np.int32 if stacked.nnz < np.iinfo(np.int32).max else np.int64
        stacked = sp.csr_array((stacked.data, stacked.indices.astype(index), stacked.indptr.astype(index)),
                               shape=stacked.shape)
        rewards = np.asarray(rewards, dtype=float)
        if rewards.shape == (n_states, n_actions):
            expected = rewards.ravel()
        elif rewards.shape == (n_states,):
            expected = np.repeat(rewards, n_actions)
        else:
            raise ValueError(f"rewards must be (S, A), (S,) or (A, S, S) = ({n_actions}, {n_states}, {n_states}); "
                             f"got {rewards.shape}")
        terminal = np.zeros(n_states, bool) if terminal is None else np.asarray(terminal, dtype=bool)
        if terminal.shape != (n_states,):
            raise ValueError(f"terminal must be ({n_states},) booleans, got {terminal.shape}")
        if initial is None:
            initial = point_mass(n_states)
        initial = np.asarray(initial, dtype=float)
        if initial.shape != (n_states,) or (initial < 0).any() or not np.isclose(initial.sum(), 1.0):
            raise ValueError(f"initial must be a probability vector over {n_states} states")
        return cls(stacked, expected, terminal[stacked.indices], initial, n_actions, grid)

    @classmethod
    def from_env(cls, env) -> TabularMDP:
        """The model of an environment: `unwrapped.transition_model()` or Gymnasium's `unwrapped.P`.

        Raises NoModel when it has neither."""
        unwrapped = getattr(env, "unwrapped", env)
        if hasattr(unwrapped, "transition_model"):
            return unwrapped.transition_model()
        table = getattr(unwrapped, "P", None)
        name = env.spec.id if getattr(env, "spec", None) is not None else type(unwrapped).__name__
        if not isinstance(table, dict):
            raise NoModel(f"{name} exposes no transition model (unwrapped.P); dynamic programming needs one: "
                          "use rl.q_learning, rl.sarsa or rl.dqn, which learn from rewards")
        return _from_table(table, _initial_of(unwrapped, len(table)), _grid_of(unwrapped))


def _from_table(table: dict, initial: np.ndarray, grid: tuple[int, int] | None) -> TabularMDP:
    # A loop over states is unavoidable here: the model *is* a Python dict of lists. Everything
    # downstream works on the arrays this builds.
    n_states = len(table)
    n_actions = len(table[0])
    rows, cols, probs, gains, ends = [], [], [], [], []
    for s in range(n_states):
        for a in range(n_actions):
            for p, s_next, r, done in table[s][a]:
                rows.append(s * n_actions + a)
                cols.append(s_next)
                probs.append(p)
                gains.append(p * r)
                ends.append(bool(done))
    rows, cols = np.asarray(rows), np.asarray(cols)
    probs, ends = np.asarray(probs, dtype=float), np.asarray(ends)
    rewards = np.bincount(rows, weights=np.asarray(gains, dtype=float), minlength=n_states * n_actions)
    # Sorted by row (the loop's order) and, within a row, kept as listed: duplicates are allowed
    # in CSR and sum in products, and each keeps its own end flag.
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_states * n_actions))])
    matrix = sp.csr_array((probs, cols.astype(np.int32), indptr.astype(np.int32)), shape=(n_states * n_actions, n_states))
    return TabularMDP(matrix, rewards, ends, initial, n_actions, grid)


def _initial_of(unwrapped, n_states: int) -> np.ndarray:
    initial = getattr(unwrapped, "initial_state_distrib", None)  # toy-text's name for it
    if initial is None:
        initial = point_mass(n_states)
    initial = np.asarray(initial, dtype=float)
    return initial / initial.sum()


def _grid_of(unwrapped) -> tuple[int, int] | None:
    shape = getattr(unwrapped, "shape", None)  # CliffWalking
    if shape is not None:
        return tuple(shape)
    rows, cols = getattr(unwrapped, "nrow", None), getattr(unwrapped, "ncol", None)  # FrozenLake
    return (rows, cols) if rows and cols else None
