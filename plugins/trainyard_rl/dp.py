"""Dynamic programming on a TabularMDP: policy evaluation, value iteration, policy iteration.

Every algorithm works on the stacked continuation matrix C (S*A, S) (transitions that end an
episode dropped: nothing is earned after them) and the expected rewards r (S*A,):

    Q = r + gamma * C @ V        (S*A,) -> viewed as (S, A)
    V = max_a Q                  (S,)

One such sweep is one sparse matrix-vector product; no Python loop runs over states.

Value iteration's sweep is one compiled loop (numba, through trainyard.jit) over C's rows,
padded to one width where that adds few entries, else scipy's CSR arrays: each state's Q
values, their maximum and the change in V in one pass (on torch's number of threads for a large
MDP), so that a sweep reads each array once and writes V, with no (S*A,) Q in between
(benchmarks/bench_mdp.py measures it against the memory-bandwidth bound; docs/rl.md has the
figures). Without numba, and for the other algorithms, Q comes from torch's CSR `addmv` on the
same buffers (no copy), which fuses the reward addition into the product and runs on every core,
where scipy's product is single-threaded and allocates its result. Linear solves stay in scipy.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch

from trainyard import jit
from trainyard_rl.mdp import TabularMDP

# Called after every iteration with (iteration, Bellman residual); the platform logs it.
Progress = Callable[[int, float], None]
# The exact policy evaluation's residual, relative to max(1, |r_pi|) (see solver_error).
EXACT_TOLERANCE = 1e-10
# Floating-point noise in comparing two Q values computed by different sums, relative to |Q|.
ROUNDING = 1e-12
# Transitions from which a value-iteration sweep is split across torch's threads: below, one
# thread's sweep is shorter than handing out the work.
PARALLEL_ENTRIES = 1_000_000
# The compiled sweep pads rows to the longest one (fused_sweep.sweep_fixed_width) when that width is
# at most FIXED_WIDTH_MAX and padding adds at most FIXED_WIDTH_PADDING of the transitions; past
# either, the unrolled loop grows or reads mostly zeros, and the CSR loop is the better one.
FIXED_WIDTH_MAX = 8
FIXED_WIDTH_PADDING = 0.25


@dataclass
class Solution:
    """What every algorithm here returns. V (S,), Q (S, A), policy (S,) greedy w.r.t. Q."""

    V: np.ndarray
    Q: np.ndarray
    policy: np.ndarray
    iterations: int
    residuals: list[float] = field(default_factory=list)  # the Bellman residual of each iteration
    converged: bool = True
    seconds: float = 0.0

    def start_value(self, mdp: TabularMDP) -> float:
        """The value of the initial state distribution: sum_s mu(s) V(s)."""
        return float(mdp.initial @ self.V)


def check_gamma(gamma: float) -> None:
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma}")


class Bellman:
    """The Bellman operators of one MDP at one discount, on torch CSR views of scipy's arrays."""

    def __init__(self, mdp: TabularMDP, gamma: float, layout: str = "auto"):
        """layout: the compiled sweep's, "auto" (padded rows where cheap, else CSR) or "csr"."""
        check_gamma(gamma)
        if layout not in ("auto", "csr"):
            raise ValueError(f"layout must be auto or csr, got {layout!r}")
        self.mdp, self.gamma, self.layout = mdp, gamma, layout
        self.shape = (mdp.n_states, mdp.n_actions)
        discounted = mdp.continuation * gamma  # gamma folded in once, not once per sweep
        index = np.int32 if discounted.nnz < np.iinfo(np.int32).max else np.int64
        self._indptr = discounted.indptr.astype(index, copy=False)
        self._indices = discounted.indices.astype(index, copy=False)
        self._data = discounted.data
        # The compiled sweep reads the same indices as unsigned: numba then skips its negative-index
        # wrap-around on every access (about 20% of a sweep). int64 stays signed: numba mixes
        # uint64 with int64 arithmetic into floats.
        loop_index = np.uint32 if index is np.int32 else np.int64
        self._loop_indptr, self._loop_indices = self._indptr.view(loop_index), self._indices.view(loop_index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta": the kernels used here are stable
            self._matrix = torch.sparse_csr_tensor(torch.from_numpy(self._indptr), torch.from_numpy(self._indices),
                                                   torch.from_numpy(self._data), size=discounted.shape,
                                                   dtype=torch.float64)
        self._rewards = torch.from_numpy(np.ascontiguousarray(mdp.rewards, dtype=np.float64))
        self._q = torch.empty(mdp.n_states * mdp.n_actions, dtype=torch.float64)

    def q_into(self, V: torch.Tensor) -> torch.Tensor:
        """Q = r + gamma C V as an (S, A) view of a buffer reused by the next call."""
        torch.addmv(self._rewards, self._matrix, V, out=self._q)
        return self._q.view(self.shape)

    def q(self, V: np.ndarray) -> np.ndarray:
        """Q = r + gamma C V, (S, A), a fresh array."""
        return self.q_into(torch.from_numpy(np.ascontiguousarray(V, dtype=np.float64))).numpy().copy()

    def greedy(self, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Q = self.q(V)
        return Q, Q.argmax(axis=1)

    def sweep(self, V: torch.Tensor, out: torch.Tensor) -> float:
        """One value-iteration sweep: out = max_a (r + gamma C V), (S,); returns ||out - V||_inf.
        V must be finite (see _compiled_layout)."""
        if _compiled_sweep() is None:
            torch.amax(self.q_into(V), dim=1, out=out)
            return float((out - V).abs_().max())
        fused, layout = self._compiled_layout
        states, actions = self.shape
        arrays = (*layout, self._rewards.numpy(), V.numpy(), out.numpy(), actions)
        threads = torch.get_num_threads()
        if threads == 1 or self._data.size < PARALLEL_ENTRIES:
            return fused(*arrays, 0, states)
        bounds = np.linspace(0, states, threads + 1).astype(int)  # one range of states per thread
        # The calling thread sweeps the first range itself: waking one pool thread fewer is a
        # measurable share of a sweep of a few milliseconds.
        others = [_sweep_threads(threads - 1).submit(fused, *arrays, first, last)
                  for first, last in zip(bounds[1:-1], bounds[2:])]
        first_range = fused(*arrays, bounds[0], bounds[1])
        return max([first_range, *(part.result() for part in others)])

    @cached_property
    def _compiled_layout(self) -> tuple[Callable, tuple]:
        """The compiled loop and the arrays it reads: C's rows padded to one width where that is
        cheap (see FIXED_WIDTH_MAX), else the CSR arrays themselves."""
        rows = self.shape[0] * self.shape[1]
        lengths = np.diff(self._indptr)
        width = int(lengths.max(initial=0))
        # A padding entry reads V at the row's own state with weight 0: exact while V is finite
        # (0 * inf would be NaN), which finite rewards keep from a finite start (value_iteration
        # refuses any other), so infinite rewards keep CSR.
        padded = width * rows <= (1 + FIXED_WIDTH_PADDING) * self._data.size
        if (self.layout == "auto" and 0 < width <= FIXED_WIDTH_MAX and padded
                and np.isfinite(self._rewards.numpy()).all()):
            from trainyard_rl import fused_sweep

            indices, data = np.empty((width, rows), dtype=self._loop_indices.dtype), np.empty((width, rows))
            pad = jit.compiled(fused_sweep.pad_rows)
            pad(self._loop_indptr, self._loop_indices, self._data, self.shape[1], indices, data)
            return _compiled_sweep(fixed_width=True), (tuple(indices), tuple(data))
        return _compiled_sweep(), (self._loop_indptr, self._loop_indices, self._data)

    @property
    def bytes_per_sweep(self) -> int:
        """The least memory one value-iteration sweep must touch: the arrays of C it reads (padded
        rows, or CSR), r, V read and V written."""
        if _compiled_sweep() is None:
            matrix = self._data.nbytes + self._indices.nbytes + self._indptr.nbytes
        else:
            matrix = sum(array.nbytes for part in self._compiled_layout[1]
                         for array in (part if isinstance(part, tuple) else (part,)))
        return matrix + self._rewards.numpy().nbytes + 2 * 8 * self.mdp.n_states


def _compiled_sweep(fixed_width: bool = False):
    """Value iteration's compiled sweep (trainyard_rl/fused_sweep.py) for CSR or padded rows, or
    None without numba."""
    from trainyard_rl import fused_sweep

    loop = fused_sweep.sweep_fixed_width if fixed_width else fused_sweep.sweep
    return jit.compiled(loop, fastmath=frozenset({"reassoc"}))


@cache
def _sweep_threads(count: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="trainyard-sweep")


# --- policy evaluation -------------------------------------------------------------------------


def evaluate_policy(mdp: TabularMDP, policy: np.ndarray, gamma: float, method: str = "exact",
                    tolerance: float = EXACT_TOLERANCE, V0: np.ndarray | None = None,
                    max_iterations: int = 1_000_000, progress: Progress | None = None) -> np.ndarray:
    """V^pi for a deterministic ((S,) actions) or stochastic ((S, A) probabilities) policy.

    exact:     solve (I - gamma P_pi) V = r_pi to a residual of at most tolerance * max(1, |r_pi|),
               so V is within `solver_error(mdp, gamma, tolerance)` of V^pi.
    iterative: V <- r_pi + gamma P_pi V until the change is below tolerance * (1 - gamma) / gamma,
               which bounds the distance to V^pi by `tolerance`.
    """
    check_gamma(gamma)
    P, r = mdp.under_policy(policy)
    if method == "exact":
        return _solve(sp.identity(mdp.n_states, format="csr") - gamma * P, r, tolerance)
    if method != "iterative":
        raise ValueError(f"method must be exact or iterative, got {method!r}")
    V = np.zeros(mdp.n_states) if V0 is None else np.array(V0, dtype=float)
    threshold = tolerance * (1 - gamma) / gamma
    discounted = sp.csr_array(gamma * P)
    for iteration in range(1, max_iterations + 1):
        new = r + discounted @ V
        residual = float(np.abs(new - V).max())
        V = new
        if progress is not None:
            progress(iteration, residual)
        if residual < threshold:
            break
    return V


def solver_error(mdp: TabularMDP, gamma: float, tolerance: float = EXACT_TOLERANCE) -> float:
    """How far the exact evaluation's V may be from V^pi, in the sup norm.

    `_solve` accepts a residual |(I - gamma P_pi) V - r_pi| up to tolerance * max(1, |r_pi|), and
    ||(I - gamma P_pi)^-1||_inf <= 1 / (1 - gamma): the error in V can reach the residual / (1 - gamma)."""
    largest = float(np.abs(mdp.rewards).max()) if mdp.rewards.size else 0.0
    return tolerance * max(1.0, largest) / (1 - gamma)


def _solve(matrix: sp.csr_array, rhs: np.ndarray, tolerance: float) -> np.ndarray:
    """(I - gamma P_pi) V = r_pi, which is strictly diagonally dominant by rows for gamma < 1.

    BiCGSTAB first: a direct sparse LU fills in badly on unstructured transition graphs (6 s at
    8,000 random states here, against milliseconds); the direct solver is the fallback when the
    iteration does not reach the tolerance. Either way the returned V has a residual of at most
    tolerance * max(1, |rhs|) (see solver_error for what that means for V)."""
    scale = max(1.0, float(np.abs(rhs).max()))
    V, info = sla.bicgstab(matrix, rhs, rtol=0.0, atol=tolerance * 1e-3 * scale, maxiter=10 * matrix.shape[0])
    if info != 0 or not np.all(np.isfinite(V)) or np.abs(matrix @ V - rhs).max() > tolerance * scale:
        V = sla.spsolve(matrix.tocsc(), rhs)
    return np.asarray(V, dtype=float)


# --- value iteration ---------------------------------------------------------------------------


def value_iteration(mdp: TabularMDP, gamma: float, epsilon: float = 1e-6, max_iterations: int = 100_000,
                    V0: np.ndarray | None = None, progress: Progress | None = None,
                    bellman: Bellman | None = None) -> Solution:
    """Value iteration with the epsilon-optimal stopping rule (Puterman, Theorem 6.3.1).

    Stops at the first k with ||V_k+1 - V_k||_inf < epsilon (1 - gamma) / (2 gamma); then the
    greedy policy w.r.t. V_k+1 is epsilon-optimal and ||V_k+1 - V*||_inf < epsilon / 2.
    """
    started = time.perf_counter()
    bellman = bellman or Bellman(mdp, gamma)
    threshold = epsilon * (1 - gamma) / (2 * gamma)
    if V0 is not None and not np.isfinite(V0).all():
        raise ValueError("value iteration's V0 must be finite")
    V = torch.zeros(mdp.n_states, dtype=torch.float64) if V0 is None else torch.tensor(V0, dtype=torch.float64)
    new = torch.empty_like(V)
    residuals: list[float] = []
    converged = False
    for iteration in range(1, max_iterations + 1):
        residual = bellman.sweep(V, new)
        V, new = new, V
        residuals.append(residual)
        if progress is not None:
            progress(iteration, residual)
        if residual < threshold:
            converged = True
            break
    Q, policy = bellman.greedy(V.numpy())
    return Solution(V.numpy().copy(), Q, policy, len(residuals), residuals, converged, time.perf_counter() - started)


# --- policy iteration --------------------------------------------------------------------------


def policy_iteration(mdp: TabularMDP, gamma: float, evaluation_sweeps: int | None = None, epsilon: float = 1e-6,
                     max_iterations: int = 10_000, policy0: np.ndarray | None = None,
                     progress: Progress | None = None) -> Solution:
    """Howard's policy iteration; with `evaluation_sweeps = m`, modified policy iteration.

    Policy iteration evaluates each policy exactly and stops when the greedy policy is stable:
    it is then optimal. An action replaces the current one only if its Q is higher by more than
    the evaluation's error can explain: V is within e = solver_error(...) of V^pi, so each Q is
    within gamma e of its true value and two of them may differ by 2 gamma e from noise alone.
    Truly tied actions then never flip, and a policy kept because its improvement is below that
    tolerance is within about 2 gamma e / (1 - gamma) of optimal.

    Modified policy iteration evaluates with m sweeps of T_pi from the last V (Puterman, section
    6.5); a stable policy is not enough there, since V may still be short of V^pi, so it also
    waits for the Bellman residual ||T V - V|| to fall below epsilon (1 - gamma) / (2 gamma),
    value iteration's epsilon-optimal rule. It then returns V' = T V, Q = r + gamma C V' and the
    policy greedy for that Q (Puterman, Theorem 6.3.1): ||V' - V*|| < epsilon / 2 and the policy
    is epsilon-optimal. Both hold for any V with that residual, so they hold here as in value iteration.
    """
    started = time.perf_counter()
    bellman = Bellman(mdp, gamma)
    threshold = epsilon * (1 - gamma) / (2 * gamma)
    noise = 2 * gamma * solver_error(mdp, gamma) if evaluation_sweeps is None else 0.0
    policy = np.zeros(mdp.n_states, dtype=np.int64) if policy0 is None else np.asarray(policy0, dtype=np.int64).copy()
    V = np.zeros(mdp.n_states)
    residuals: list[float] = []
    converged = False
    for iteration in range(1, max_iterations + 1):
        if evaluation_sweeps is None:
            V = evaluate_policy(mdp, policy, gamma, "exact")
        else:
            P, r = mdp.under_policy(policy)
            discounted = sp.csr_array(gamma * P)
            for _ in range(evaluation_sweeps):
                V = r + discounted @ V
        Q = bellman.q(V)
        best = Q.max(axis=1)
        residual = float(np.abs(best - V).max())
        improved = _improve(Q, best, policy, noise)
        stable = np.array_equal(improved, policy)
        policy = improved
        residuals.append(residual)
        if progress is not None:
            progress(iteration, residual)
        if stable and (evaluation_sweeps is None or residual < threshold):
            converged = True
            break
    if evaluation_sweeps is not None:
        # One more backup, and the policy greedy for it: the returned V, Q and policy agree.
        V = Q.max(axis=1)
        Q = bellman.q(V)
        policy = _improve(Q, Q.max(axis=1), policy, 0.0)
    return Solution(V, Q, policy, len(residuals), residuals, converged, time.perf_counter() - started)


def _improve(Q: np.ndarray, best: np.ndarray, policy: np.ndarray, noise: float) -> np.ndarray:
    """The greedy policy for Q, keeping the current action unless another is better by more than
    `noise` plus rounding: with ties, switching between equally good actions would never let
    the policy become stable."""
    current = Q[np.arange(len(policy)), policy]
    tolerance = noise + ROUNDING * max(1.0, float(np.abs(best).max()))
    return np.where(best > current + tolerance, Q.argmax(axis=1), policy)
