"""Value iteration's sweep as one compiled loop (numba): Bellman.sweep.

Written by hand because torch has no fused sparse product, maximum and reduction: as separate
operations (CSR addmv into Q, amax over actions, the change in V) a sweep writes Q, (S*A,), and
reads it back, while this loop reads each CSR array once and writes V only: the
memory-bandwidth bound that benchmarks/bench_mdp.py measures against.

The loop releases the GIL, so that Bellman.sweep runs it on ranges of states in several threads
for a large MDP. Not numba's own parallel loops: their OpenMP thread pool is a second one beside
torch's, and on a busy machine it cost milliseconds a call where a small MDP's sweep takes
microseconds.

Compiled with fastmath's `reassoc` only (dp._compiled_sweep): a row's sum may be added in another
order, a rounding difference of about 1e-16 relative, and the loop runs about 30% faster on a
1000x1000 grid (benchmarks/bench_mdp.py). NaN and infinity keep their meaning.

Two layouts of the same matrix, one loop each:
- `sweep` reads scipy's CSR arrays as they are: a row is a run of entries between two indptr values.
- `sweep_fixed_width` reads rows padded to one width w (the ELL layout of sparse libraries): w
  arrays of S*A entries, the j-th holding every row's j-th transition. The width is the length
  of a tuple, so numba compiles one loop per width with the inner loop unrolled, and the sweep
  reads no indptr; on the 1000x1000 grid (3 transitions a row) it took 0.65-0.85 of the CSR
  loop's time (docs/rl.md). Bellman uses it where padding adds few entries (dp.FIXED_WIDTH_*).
"""

from __future__ import annotations

import numpy as np


def sweep(indptr, indices, data, rewards, V, out, actions, first, last):
    """out[s] = max_a (rewards[s*A + a] + sum_k data[k] V[indices[k]]) over the entries k of row
    s*A + a (gamma is folded into data), for the states first <= s < last; returns their
    max |out[s] - V[s]|."""
    largest = 0.0
    k = indptr[first * actions]  # a state's rows are consecutive: one pointer walks them all
    for s in range(first, last):
        best = -np.inf
        for a in range(actions):
            row = s * actions + a
            end = indptr[row + 1]
            q = rewards[row]
            while k < end:
                q += data[k] * V[indices[k]]
                k += 1
            if q > best:
                best = q
        out[s] = best
        change = abs(best - V[s])
        if change > largest:
            largest = change
    return largest


def sweep_fixed_width(indices, data, rewards, V, out, actions, first, last):
    """The same sweep on rows padded to width w: indices and data are tuples of w arrays (S*A,),
    the j-th holding entry j of every row; a padding entry has weight 0."""
    largest = 0.0
    for s in range(first, last):
        best = -np.inf
        for a in range(actions):
            row = s * actions + a
            q = rewards[row]
            for j in range(len(data)):  # a constant of the compiled loop: unrolled
                q += data[j][row] * V[indices[j][row]]
            if q > best:
                best = q
        out[s] = best
        change = abs(best - V[s])
        if change > largest:
            largest = change
    return largest


def pad_rows(indptr, indices, data, actions, padded_indices, padded_data):
    """Fill the (w, S*A) arrays sweep_fixed_width reads from CSR arrays whose rows hold at most w
    entries; a padding entry is weight 0 at the row's own state. (A loop: numpy's scatter of the
    10^6-state grid's 12 million entries took about 1 s, this about 0.25 s, mostly new pages.)"""
    width, rows = padded_data.shape
    for row in range(rows):
        start = indptr[row]
        length = indptr[row + 1] - start
        for j in range(width):
            if j < length:
                padded_indices[j, row] = indices[start + j]
                padded_data[j, row] = data[start + j]
            else:
                padded_indices[j, row] = row // actions
                padded_data[j, row] = 0.0
