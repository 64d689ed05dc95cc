"""Markov chains on a sparse row-stochastic matrix: what an MDP becomes once a policy is fixed.

    matrix   (S, S) CSR  row s holds P(s' | s); rows sum to 1, duplicates summed, zeros dropped
    initial  (S,)        start distribution (default: state 0, as in TabularMDP.from_arrays)

It answers the questions a fixed policy raises without sampling the environment:
  - where the chain is after n steps (`distribution`, `distributions`), and in the long run
    (`stationary`, unique when the chain has one closed class);
  - for absorbing chains, where it ends up and how long that takes (`absorption_probabilities`,
    `absorption_distribution`, `expected_steps_to_absorption`): with `from_policy`, the ending
    states of an episodic MDP are absorbing, so these are a policy's exact success rate and
    expected episode length;
  - sample paths (`simulate`, `simulate_many`), to check the above against the real environment.

Everything is sparse: steps are sparse vector-matrix products and the linear systems go through
sparse LU (spsolve, splu), so chains with many states never build a dense (S, S) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import splu, spsolve

if TYPE_CHECKING:
    from trainyard_rl.mdp import TabularMDP

ROW_SUM_ATOL = 1e-8


def point_mass(n_states: int, state: int = 0) -> np.ndarray:
    """The distribution (S,) that puts all its mass on `state` (np.eye(S)[state] without the S x S matrix)."""
    mass = np.zeros(n_states)
    mass[state] = 1.0
    return mass


@dataclass(frozen=True, eq=False)
class MarkovChain:
    matrix: sp.csr_array
    initial: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Normalised once here so every method can rely on a canonical CSR: duplicates hang
        # scipy's connected_components (FrozenLake's table stores some), explicit zeros would add
        # false edges to the class structure, and exact row sums make a lone diagonal entry 1.
        matrix = self.matrix
        if sp.issparse(matrix):
            matrix = sp.csr_array(matrix, dtype=float, copy=True)
        else:
            dense = np.asarray(matrix, dtype=float)
            if dense.ndim != 2:
                raise ValueError(f"transition matrix must be 2-D (S, S), got shape {dense.shape}")
            matrix = sp.csr_array(dense)
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"transition matrix must be square (S, S), got shape {matrix.shape}")
        matrix.sum_duplicates()
        matrix.eliminate_zeros()
        negative = matrix.data < 0
        if negative.any():
            k = int(np.flatnonzero(negative)[0])
            row = int(np.searchsorted(matrix.indptr, k, side="right") - 1)
            raise ValueError(f"row {row} of the transition matrix has a negative probability "
                             f"{matrix.data[k]:.6g} (column {matrix.indices[k]})")
        sums = matrix.sum(axis=1)
        bad = ~np.isclose(sums, 1.0, rtol=0.0, atol=ROW_SUM_ATOL)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"row {row} of the transition matrix sums to {sums[row]:.6g}, not 1")
        matrix.data /= np.repeat(sums, np.diff(matrix.indptr))
        object.__setattr__(self, "matrix", matrix)
        object.__setattr__(self, "initial", self._as_distribution(self.initial, "initial"))

    @classmethod
    def from_matrix(cls, matrix, initial: np.ndarray | None = None) -> MarkovChain:
        """From a dense ndarray or any scipy.sparse matrix (validated as in the constructor)."""
        return cls(matrix, initial)

    @classmethod
    def from_policy(cls, mdp: TabularMDP, policy: np.ndarray) -> MarkovChain:
        """The chain of states under a fixed policy ((S,) actions or (S, A) probabilities).

        Terminal states become absorbing (their rows replaced by a self-loop): the MDP's rows for
        them describe moves that never happen once the episode has ended, and an absorbing state
        makes "the episode ended here" permanent, so absorption probabilities are the policy's
        episode-outcome probabilities (FrozenLake: success = absorption into the goal)."""
        transitions, _ = mdp.under_policy(policy, continuing=False)  # keeps the episode-ending moves
        terminal = mdp.terminal.astype(float)
        matrix = sp.diags_array(1.0 - terminal) @ transitions + sp.diags_array(terminal)
        return cls(sp.csr_array(matrix), mdp.initial)

    @property
    def n_states(self) -> int:
        return self.matrix.shape[0]

    @cached_property
    def _transposed(self) -> sp.csr_array:
        """P^T in CSR: mu P is computed as P^T mu, a row-parallel sparse product."""
        return sp.csr_array(self.matrix.T)

    def _as_distribution(self, mu, name: str) -> np.ndarray:
        if mu is None:
            return point_mass(self.n_states)
        mu = np.asarray(mu, dtype=float)
        if mu.shape[-1:] != (self.n_states,) or (mu < 0).any() or not np.allclose(mu.sum(axis=-1), 1.0):
            raise ValueError(f"{name} must be a probability vector over {self.n_states} states "
                             f"(shape (..., {self.n_states})), got shape {mu.shape}")
        return mu / mu.sum(axis=-1, keepdims=True)

    # --- distributions -------------------------------------------------------------------------

    def distribution(self, n: int, initial: np.ndarray | None = None) -> np.ndarray:
        """mu P^n: (S,), or (B, S) for a batch of start distributions (B, S).

        n sparse products rather than a matrix power, whose fill-in would make P^n dense."""
        return self.distributions(n, initial)[-1]

    def distributions(self, n: int, initial: np.ndarray | None = None) -> np.ndarray:
        """mu P^k for k = 0..n: (n+1, S), or (n+1, B, S) for a batch of start distributions."""
        if n < 0:
            raise ValueError(f"number of steps must be >= 0, got {n}")
        mu = self.initial if initial is None else self._as_distribution(initial, "initial")
        column = mu.T  # (S,) or (S, B): the product works on columns
        out = [column]
        for _ in range(n):
            column = self._transposed @ column
            out.append(column)
        return np.stack([c.T for c in out])

    # --- class structure -----------------------------------------------------------------------

    @cached_property
    def _classes(self) -> tuple[np.ndarray, np.ndarray]:
        """(labels (S,), closed (C,) bool): each state's communicating class, and which classes
        no transition leaves (a chain that enters one stays there)."""
        n_classes, labels = connected_components(self.matrix, directed=True, connection="strong")
        coo = self.matrix.tocoo()
        leaving = labels[coo.row] != labels[coo.col]
        closed = np.ones(n_classes, dtype=bool)
        closed[labels[coo.row[leaving]]] = False
        return labels, closed

    def closed_classes(self) -> list[np.ndarray]:
        """Sorted state indices of each closed (recurrent) class, ordered by smallest state."""
        labels, closed = self._classes
        classes = [np.flatnonzero(labels == c) for c in np.flatnonzero(closed)]
        return sorted(classes, key=lambda states: states[0])

    @property
    def is_irreducible(self) -> bool:
        """Every state reaches every other: a single strongly connected component."""
        return len(self._classes[1]) == 1

    def transient_states(self) -> np.ndarray:
        """States in no closed class: the chain leaves them for good with probability 1."""
        labels, closed = self._classes
        return np.flatnonzero(~closed[labels])

    def absorbing_states(self) -> np.ndarray:
        """States with P[s, s] == 1: rows holding a single (diagonal) entry."""
        indptr, indices = self.matrix.indptr, self.matrix.indices
        single = np.flatnonzero(np.diff(indptr) == 1)
        return single[indices[indptr[single]] == single]

    # --- long run ------------------------------------------------------------------------------

    def stationary(self) -> np.ndarray:
        """The stationary distribution pi = pi P, (S,): unique when the chain has one closed class
        (irreducible, or irreducible after its transient states, which get 0).

        Solved as a sparse linear system rather than by iterating mu P^n, which converges slowly
        near eigenvalue -1 or 1 and never for periodic chains: the equations of P^T - I sum to
        zero, so one of them is redundant and is replaced by sum(pi) = 1."""
        closed = self.closed_classes()
        if len(closed) > 1:
            shown = ", ".join(str(c.tolist()) for c in closed[:3])
            raise ValueError(f"chain is not irreducible: it has {len(closed)} closed classes ({shown}"
                             f"{', ...' if len(closed) > 3 else ''}), so its stationary distribution is not unique")
        n = self.n_states
        system = sp.vstack([(self._transposed - sp.eye_array(n, format="csr"))[:-1],
                            sp.csr_array(np.ones((1, n)))], format="csc")
        rhs = np.zeros(n)
        rhs[-1] = 1.0
        pi = np.atleast_1d(spsolve(system, rhs))
        residual = np.abs(self._transposed @ pi - pi).sum()
        if not np.all(np.isfinite(pi)) or pi.min() < -1e-8 or residual > 1e-8:
            raise ValueError(f"stationary solve is inaccurate (residual {residual:.3g}, min {pi.min():.3g}): "
                             "the chain is too badly conditioned for a direct solve")
        pi = np.clip(pi, 0.0, None)
        pi[self.transient_states()] = 0.0  # exactly, not to rounding: they are never revisited
        return pi / pi.sum()

    # --- absorption ----------------------------------------------------------------------------

    @cached_property
    def _absorption(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(transient, absorbing, B (S_t, S_a), t (S_t,)) from one LU factorisation of I - Q."""
        absorbing = self.absorbing_states()
        if absorbing.size == 0:
            raise ValueError("chain has no absorbing state (no row with P[s, s] == 1), "
                             "so absorption probabilities are undefined")
        # A closed class of more than one state is never left, so its states never reach an
        # absorbing one and I - Q would be singular: report it instead of failing in the solver.
        stuck = [c for c in self.closed_classes() if c.size > 1]
        if stuck:
            raise ValueError(f"states {stuck[0].tolist()} form a closed class without an absorbing state: "
                             "they never get absorbed (I - Q is singular)")
        transient = self.transient_states()
        if transient.size == 0:
            return transient, absorbing, np.zeros((0, absorbing.size)), np.zeros(0)
        rows = self.matrix[transient]
        q = rows[:, transient]   # (S_t, S_t)
        r = rows[:, absorbing]   # (S_t, S_a)
        lu = splu(sp.csc_array(sp.eye_array(transient.size) - q))
        # N = (I - Q)^-1 is dense even when Q is sparse, so only the products N R and N 1 are formed.
        b = lu.solve(np.asfortranarray(r.toarray())).reshape(transient.size, absorbing.size)
        t = lu.solve(np.ones(transient.size))
        return transient, absorbing, b, t

    def absorption_probabilities(self) -> np.ndarray:
        """B = N R, (S_t, S_a): B[i, j] = P(absorbed in absorbing_states()[j] | start in
        transient_states()[i]). Raises ValueError when some state is never absorbed."""
        return self._absorption[2].copy()

    def expected_steps_to_absorption(self) -> np.ndarray:
        """t = N 1, (S_t,): expected steps before absorption from each of transient_states()."""
        return self._absorption[3].copy()

    def absorption_distribution(self, initial: np.ndarray | None = None) -> np.ndarray:
        """(S,): probability of ending in each absorbing state from a start distribution
        (default: the chain's), 0 elsewhere; e.g. a policy's success rate is its goal entry."""
        transient, absorbing, b, _ = self._absorption
        mu = self.initial if initial is None else self._as_distribution(initial, "initial")
        if mu.ndim != 1:
            raise ValueError(f"initial must be one distribution (S,), got shape {mu.shape}")
        out = np.zeros(self.n_states)
        out[absorbing] = mu[absorbing] + mu[transient] @ b
        return out

    # --- sampling ------------------------------------------------------------------------------

    @cached_property
    def _cumulative(self) -> tuple[np.ndarray, np.ndarray]:
        """(cumsum of all stored probabilities (nnz,), its value before each row (S,)).

        One global cumulative sum serves every row, so a batch of chains in different states
        steps with a single searchsorted instead of a loop over states."""
        cumulative = np.cumsum(self.matrix.data)
        before = np.concatenate([[0.0], cumulative])[self.matrix.indptr[:-1]]
        return cumulative, before

    def _step(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        indptr, indices = self.matrix.indptr, self.matrix.indices
        cumulative, before = self._cumulative
        first, last = indptr[states], indptr[states + 1] - 1
        span = cumulative[last] - before[states]  # the row's sum, as the cumulative sum sees it
        targets = before[states] + rng.random(states.shape) * span
        # side="right" skips nothing positive: the first entry whose cumulative sum exceeds the
        # target; the clip guards against rounding at either end of the row.
        k = np.clip(np.searchsorted(cumulative, targets, side="right"), first, last)
        return indices[k]

    def simulate_many(self, n: int, steps: int, rng=None, start=None) -> np.ndarray:
        """n independent paths, (n, steps+1) states. rng: a seed or np.random.Generator; start: a
        state, (n,) states, or None to draw each from the initial distribution."""
        rng = np.random.default_rng(rng)
        if start is None:
            states = rng.choice(self.n_states, size=n, p=self.initial)
        else:
            states = np.broadcast_to(np.asarray(start, dtype=np.int64), (n,)).copy()
            if states.size and (states.min() < 0 or states.max() >= self.n_states):
                raise ValueError(f"start states must lie in 0..{self.n_states - 1}")
        paths = np.empty((n, steps + 1), dtype=np.int64)
        paths[:, 0] = states
        for step in range(1, steps + 1):
            states = self._step(states, rng)
            paths[:, step] = states
        return paths

    def simulate(self, steps: int, rng=None, start: int | None = None) -> np.ndarray:
        """One path, (steps+1,) states, starting at `start` or drawn from the initial distribution."""
        return self.simulate_many(1, steps, rng, start)[0]
