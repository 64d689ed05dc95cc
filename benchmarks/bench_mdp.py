"""Dynamic programming: trainyard's sparse solvers against pymdptoolbox 4.0b3 and against the
ten-line scipy CSR loop a user would write (the same stopping rule), in one process.

    value iteration   random sparse MDP, 10,000 states x 4 actions, 4 successors per pair;
                      end to end: model construction (from one sparse matrix per action and
                      R (S, A), the layout both take) and the solve.        target >= 100x
    policy iteration  the same kind of MDP at 8,000 states, end to end.     target >= 100x
    1000x1000 grid    a slippery GridWorld (10^6 states): model construction plus value
                      iteration under 10 s, and each sweep within 1.5x of the memory-bandwidth
                      bound: the bytes a sweep must touch (the CSR arrays, r, V read and
                      written) over the copy bandwidth measured here, now.

Timings are medians of --repeats runs (pymdptoolbox runs once by default: it takes minutes),
after one uncounted solve that loads trainyard's compiled sweep.
Both solvers get the same discount and epsilon, and both answers are compared with V* from an
exact policy iteration, so a fast wrong answer cannot pass. pymdptoolbox's value iteration
stops on the span of V_k+1 - V_k, an earlier stop than the sup-norm rule that makes the greedy
policy epsilon-optimal: it does fewer sweeps, and its V is off by about a constant.

    .venv/bin/python benchmarks/bench_mdp.py [--repeats 3] [--toolbox-repeats 1] [--quick] [--grid-only]
    (make benchmark-mdp installs pymdptoolbox, the `bench` extra, first)
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from trainyard_rl import dp
from trainyard_rl.gridworld import GridWorldEnv
from trainyard_rl.mdp import TabularMDP

GAMMA, EPSILON = 0.99, 0.01


def random_mdp(states: int, actions: int = 4, successors: int = 4, seed: int = 0):
    """One (S, S) CSR matrix per action with `successors` random next states per row, and R (S, A)."""
    rng = np.random.default_rng(seed)
    matrices = []
    for _ in range(actions):
        rows = np.repeat(np.arange(states), successors)
        cols = rng.integers(0, states, states * successors)
        weights = rng.random(states * successors)
        matrix = sp.csr_matrix((weights, (rows, cols)), shape=(states, states))
        matrix.sum_duplicates()
        matrices.append(sp.csr_matrix(sp.diags(1 / np.asarray(matrix.sum(axis=1)).ravel()) @ matrix))
    return matrices, rng.random((states, actions))


def timed(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def trainyard_vi(matrices, rewards):
    return dp.value_iteration(TabularMDP.from_sparse(matrices, rewards), GAMMA, EPSILON)


def scipy_loop(transitions, rewards, n_actions: int, gamma: float, epsilon: float):
    """The value iteration a user writes in ten lines with scipy: Q = R + gamma P V over one
    (S*A, S) CSR matrix, V = max over actions, with the same stopping rule as trainyard's
    (||V_k+1 - V_k|| < epsilon (1 - gamma) / (2 gamma)). Returns (V, policy, sweeps)."""
    V = np.zeros(transitions.shape[1])
    threshold = epsilon * (1 - gamma) / (2 * gamma)
    for sweep in range(1, 100_001):
        Q = (rewards + gamma * (transitions @ V)).reshape(-1, n_actions)
        new = Q.max(axis=1)
        done = np.abs(new - V).max() < threshold
        V = new
        if done:
            return V, Q.argmax(axis=1), sweep
    return V, Q.argmax(axis=1), sweep


def scipy_vi(matrices, rewards):
    """scipy_loop end to end: the per-action matrices stacked state-major, (S*A, S), then solved."""
    states, actions = rewards.shape
    stacked = sp.vstack(matrices, format="csr")  # rows (a, s)
    order = np.arange(states * actions).reshape(actions, states).T.ravel()  # rows (s, a)
    return scipy_loop(stacked[order], rewards.ravel(), actions, GAMMA, EPSILON)


def trainyard_pi(matrices, rewards):
    return dp.policy_iteration(TabularMDP.from_sparse(matrices, rewards), GAMMA)


def toolbox_vi(matrices, rewards):
    from mdptoolbox.mdp import ValueIteration

    solver = ValueIteration(matrices, rewards, GAMMA, epsilon=EPSILON)
    solver.run()
    return solver


def toolbox_pi(matrices, rewards):
    from mdptoolbox.mdp import PolicyIteration

    solver = PolicyIteration(matrices, rewards, GAMMA)
    solver.run()
    return solver


def compare(name: str, states: int, ours, theirs, repeats: int, toolbox_repeats: int) -> float:
    matrices, rewards = random_mdp(states)
    ours_time, solution = timed(lambda: ours(matrices, rewards), repeats)
    theirs_time, solver = timed(lambda: theirs(matrices, rewards), toolbox_repeats)
    # Accuracy against V* from policy iteration with exact evaluation (checked against
    # pymdptoolbox's own policy iteration below): a fast wrong answer shows here.
    optimum = trainyard_pi(matrices, rewards).V
    ratio = theirs_time / ours_time
    print(f"{name:<17} {states:>7,} states   trainyard {ours_time * 1e3:8.1f} ms, {solution.iterations:4} iterations, "
          f"max|V-V*| {np.abs(solution.V - optimum).max():.1e}   pymdptoolbox {theirs_time:7.2f} s, "
          f"{solver.iter:4} iterations, max|V-V*| {np.abs(np.asarray(solver.V) - optimum).max():.1e}   "
          f"same policy in {np.mean(solution.policy == np.asarray(solver.policy)):.1%} of states   "
          f"speed-up {ratio:6.0f}x")
    return ratio


def compare_with_scipy(states: int, repeats: int) -> float:
    """trainyard's value iteration against the scipy loop, end to end, on the same MDP."""
    matrices, rewards = random_mdp(states)
    ours_time, solution = timed(lambda: trainyard_vi(matrices, rewards), repeats)
    scipy_time, (V, policy, sweeps) = timed(lambda: scipy_vi(matrices, rewards), repeats)
    print(f"{'value iteration':<17} {states:>7,} states   trainyard {ours_time * 1e3:8.1f} ms, {solution.iterations:4} "
          f"iterations   scipy CSR loop {scipy_time * 1e3:8.1f} ms, {sweeps:4} iterations, "
          f"max|V - V_trainyard| {np.abs(V - solution.V).max():.1e}, same policy in "
          f"{np.mean(policy == solution.policy):.1%} of states   speed-up {scipy_time / ours_time:5.1f}x")
    return scipy_time / ours_time


class CopyBandwidth:
    """Bytes per second of a large copy, reads and writes counted; the better of numpy (one core)
    and torch (all cores), so that the bound is not flattered by a slow copy. Measured once per
    round of sweeps, beside them: this machine's speed drifts over minutes."""

    def __init__(self, megabytes: int = 400):
        self.source = np.ones(megabytes * 1_000_000 // 8)
        self.target = np.empty_like(self.source)
        np.copyto(self.target, self.source)  # fault the pages in first
        self.source_t, self.target_t = torch.from_numpy(self.source), torch.from_numpy(self.target)

    def measure(self) -> float:
        seconds = []
        for copy in (lambda: np.copyto(self.target, self.source), lambda: self.target_t.copy_(self.source_t)):
            started = time.perf_counter()
            copy()
            seconds.append(time.perf_counter() - started)
        return 2 * self.source.nbytes / min(seconds)


def grid(repeats: int, side: int) -> tuple[float, float]:
    env = GridWorldEnv(rows=side, cols=side, slip=0.2, step_reward=-0.01)
    gamma, epsilon = 0.98, 1e-3
    build_time, mdp = timed(env.transition_model, repeats)
    solve_time, solution = timed(lambda: dp.value_iteration(mdp, gamma, epsilon), repeats)
    V, new = torch.zeros(mdp.n_states, dtype=torch.float64), torch.empty(mdp.n_states, dtype=torch.float64)

    # The padded rows value iteration uses, and the CSR loop beside them (fused_sweep.py), each
    # against the bytes it reads; and the padded rows on one thread, which says whether the
    # second core was there to use. One sweep of each in turn, so that all see the same machine.
    bellman, on_csr = dp.Bellman(mdp, gamma), dp.Bellman(mdp, gamma, layout="csr")
    threads = torch.get_num_threads()
    variants = {(bellman, threads): [], (on_csr, threads): [], (bellman, 1): []}
    copy, bandwidths = CopyBandwidth(), []
    for repeat in range(33):
        for (operator, count), seconds in variants.items():
            torch.set_num_threads(count)
            started = time.perf_counter()
            operator.sweep(V, new)
            if repeat >= 3:  # the first rounds warm the caches
                seconds.append(time.perf_counter() - started)
        torch.set_num_threads(threads)
        bandwidths.append(copy.measure())
    sweep, csr_sweep, one_thread = (statistics.median(seconds) for seconds in variants.values())
    bandwidth = statistics.median(bandwidths[3:])
    del copy
    # The same solve as the ten-line scipy loop a user would write, on the same model.
    continuation, rewards = mdp.continuation, mdp.rewards
    scipy_time, (_, _, scipy_sweeps) = timed(lambda: scipy_loop(continuation, rewards, mdp.n_actions, gamma, epsilon),
                                             repeats)
    bound, csr_bound = bellman.bytes_per_sweep / bandwidth, on_csr.bytes_per_sweep / bandwidth
    total = build_time + solve_time
    print(f"{side}x{side} GridWorld (slip 0.2, gamma {gamma}, epsilon {epsilon}): {mdp.n_states:,} states, "
          f"{mdp.transitions.nnz:,} transitions")
    print(f"  model construction {build_time:6.2f} s + value iteration {solve_time:6.2f} s "
          f"({solution.iterations} sweeps) = {total:6.2f} s   target < 10 s: {'met' if total < 10 else 'NOT met'}")
    print(f"  copy bandwidth {bandwidth / 1e9:5.1f} GB/s: the median of 30 rounds, a 400 MB copy in each round of "
          f"sweeps (the fastest round {max(bandwidths[3:]) / 1e9:5.1f} GB/s)")
    print(f"  per sweep, padded rows {sweep * 1e3:6.2f} ms; bytes read and written "
          f"{bellman.bytes_per_sweep / 1e6:6.1f} MB -> bound {bound * 1e3:5.2f} ms; ratio {sweep / bound:4.2f}x   "
          f"target <= 1.5x: {'met' if sweep <= 1.5 * bound else 'NOT met'}")
    print(f"  per sweep, padded rows on 1 thread {one_thread * 1e3:6.2f} ms, ratio {one_thread / bound:4.2f}x: "
          f"{threads} threads are {one_thread / sweep:4.2f}x faster")
    print(f"  per sweep, CSR rows    {csr_sweep * 1e3:6.2f} ms; bytes read and written "
          f"{on_csr.bytes_per_sweep / 1e6:6.1f} MB -> bound {csr_bound * 1e3:5.2f} ms; ratio {csr_sweep / csr_bound:4.2f}x")
    print(f"  value iteration on the built model: trainyard {solve_time:6.2f} s ({solution.iterations} sweeps), "
          f"scipy CSR loop {scipy_time:6.2f} s ({scipy_sweeps} sweeps): speed-up {scipy_time / solve_time:4.1f}x")
    return total, sweep / bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--toolbox-repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    parser.add_argument("--grid-only", action="store_true", help="only the 1000x1000 grid (no pymdptoolbox)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # pymdptoolbox's SparseEfficiencyWarning, torch's sparse beta note
    torch.set_num_threads(torch.get_num_threads())
    print(f"threads: torch {torch.get_num_threads()}; gamma {GAMMA}, epsilon {EPSILON}; medians of {args.repeats} "
          f"(pymdptoolbox: {args.toolbox_repeats})")
    vi_states, pi_states, side = (1_000, 800, 200) if args.quick else (10_000, 8_000, 1000)
    if args.grid_only:
        grid(args.repeats, side)
        return
    # A process's first solve loads the compiled sweep from numba's disk cache (about 0.5 s, once
    # per process; the first run on a machine compiles it): not counted, as no import is.
    trainyard_vi(*random_mdp(100))
    vi = compare("value iteration", vi_states, trainyard_vi, toolbox_vi, args.repeats, args.toolbox_repeats)
    print(f"  target >= 100x: {'met' if vi >= 100 else 'NOT met'}")
    # pymdptoolbox's time is mostly its dense construction; the baseline a user would write:
    compare_with_scipy(vi_states, args.repeats)
    pi = compare("policy iteration", pi_states, trainyard_pi, toolbox_pi, args.repeats, args.toolbox_repeats)
    print(f"  target >= 100x: {'met' if pi >= 100 else 'NOT met'}")
    grid(args.repeats, side)


if __name__ == "__main__":
    main()
