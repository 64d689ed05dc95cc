"""Value iteration's sweep as one compiled loop (numba, parallel over states): Bellman.sweep.

Written by hand because torch has no fused sparse product, maximum and reduction: as separate
operations (CSR addmv into Q, amax over actions, the change in V) a sweep writes Q, (S*A,), and
reads it back, while this loop reads each CSR array once and writes V only: the
memory-bandwidth bound that benchmarks/bench_mdp.py measures against.

This module imports numba; dp.py imports it only when value iteration runs.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from trainyard import jit


def compiled():
    return jit.compiled(_sweep, parallel=True)


def _sweep(indptr, indices, data, rewards, V, out, actions, chunks):
    """out[s] = max_a (rewards[s*A + a] + sum_k data[k] V[indices[k]]) over row s*A + a's entries
    (gamma is folded into data), for every state, prange splitting them into `chunks`; returns
    max_s |out[s] - V[s]|."""
    states = V.shape[0]
    size = (states + chunks - 1) // chunks
    worst = np.zeros(chunks)
    for chunk in prange(chunks):
        largest = 0.0
        for s in range(chunk * size, min(states, (chunk + 1) * size)):
            best = -np.inf
            for a in range(actions):
                row = s * actions + a
                q = rewards[row]
                for k in range(indptr[row], indptr[row + 1]):
                    q += data[k] * V[indices[k]]
                best = max(best, q)
            out[s] = best
            largest = max(largest, abs(best - V[s]))
        worst[chunk] = largest
    return worst.max()
