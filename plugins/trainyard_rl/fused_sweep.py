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
