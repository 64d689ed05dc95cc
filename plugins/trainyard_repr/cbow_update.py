"""CBOW's update window by window, compiled with numba: gensim's `fast_sentence_cbow_neg`.

Written by hand because no library op does it: a window's update reads its context vectors and
1 + k output vectors, and writes them all back, a few hundred floats that stay in the CPU's
cache. As torch ops over a batch of windows (gather, batched products, sparse gradients, a
scatter) the same update moves each of those vectors through memory four or five times, and
ran at about a quarter of gensim's speed here (docs/repr.md). Updating window by window is also
what gensim and word2vec.c do, so CBOW here is their algorithm, not a batched approximation.

For one window with context words o (padding skipped), true centre word c and noise words n:

    h = mean(v_o)                                        (D,)
    for each target t in [c, n_1 .. n_k] (a noise word equal to c is skipped):
        g = lr * (label_t - sigmoid(h . u_t))            label 1 for c, 0 for noise
        e += g * u_t                                     the window's error, (D,)
        u_t += g * h
    v_o += e for every context word o                    (whole, not divided: cbow_mean)

Compiled by trainyard.jit (numba): where numba is missing, CBOW trains on the batched torch path.
"""

from __future__ import annotations

import math

import numpy as np

from trainyard import jit


def compiled():
    """The compiled update, or None when numba cannot be imported."""
    return jit.compiled(_update, fastmath=True)


def _update(inputs, outputs, centres, contexts, uniform, noise_cdf, pad, lr):
    """Train on every window of a batch, in order, in place. inputs (V+1, D), outputs (V, D)
    float32; centres (B,), contexts (B, C) int64; uniform (B, k) float32 draws in [0, 1) that pick
    the noise words through noise_cdf (V,). Returns the summed loss and the number of windows
    that made a prediction (a window with no context word makes none)."""
    windows, width = contexts.shape
    dim = inputs.shape[1]
    negative = uniform.shape[1]
    last = outputs.shape[0] - 1
    hidden = np.empty(dim, dtype=np.float32)
    error = np.empty(dim, dtype=np.float32)
    loss = 0.0
    predicted = 0
    # Loops over d written out, one job each, so that LLVM vectorises them (fastmath lets it
    # reorder the dot product's sum). Compiled once per machine: the first run pays a few seconds.
    for i in range(windows):
        count = 0
        for d in range(dim):
            hidden[d] = 0.0
        for j in range(width):
            o = contexts[i, j]
            if o != pad:
                vector = inputs[o]
                for d in range(dim):
                    hidden[d] += vector[d]
                count += 1
        if count == 0:
            continue
        scale = np.float32(1.0 / count)
        for d in range(dim):
            hidden[d] *= scale
            error[d] = 0.0
        predicted += 1
        centre = centres[i]
        for t in range(negative + 1):
            if t == 0:
                target, label = centre, 1.0
            else:
                target = min(np.searchsorted(noise_cdf, uniform[i, t - 1]), last)
                if target == centre:
                    continue
                label = 0.0
            row = outputs[target]
            score = np.float32(0.0)
            for d in range(dim):
                score += hidden[d] * row[d]
            # -log sigmoid(+-score), computed stably: log(1 + exp(-x)) for x = +-score.
            x = score if label == 1.0 else -score
            loss += math.log1p(math.exp(-x)) if x > 0 else -x + math.log1p(math.exp(x))
            g = np.float32(lr * (label - 1.0 / (1.0 + math.exp(-score))))
            for d in range(dim):
                error[d] += g * row[d]
            for d in range(dim):
                row[d] += g * hidden[d]
        for j in range(width):
            o = contexts[i, j]
            if o != pad:
                vector = inputs[o]
                for d in range(dim):
                    vector[d] += error[d]
    return loss, predicted
