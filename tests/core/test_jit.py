"""trainyard.jit: compiled loops with numba where it is installed, the plugins' torch paths where
it is not (a GPU image may carry only torch and Lightning)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from trainyard import jit


@pytest.fixture
def without_numba(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    jit.compiled.cache_clear()
    yield
    jit.compiled.cache_clear()  # the other tests compile again, with numba


def _total(values):
    result = 0.0
    for value in values:
        result += value
    return result


def test_a_function_is_compiled_with_numba():
    total = jit.compiled(_total)
    assert total is not None and total(np.arange(5.0)) == 10.0
    assert type(total).__module__.startswith("numba")


def test_fastmath_flags_are_given_as_a_frozenset():
    total = jit.compiled(_total, fastmath=frozenset({"reassoc"}))
    assert total is not None and total(np.arange(5.0)) == 10.0
    assert total.targetoptions["fastmath"] == {"reassoc"}


def test_without_numba_the_plugins_take_their_torch_paths(without_numba):
    from trainyard_repr import cbow_update
    from trainyard_rl import dp
    from trainyard_rl.gridworld import GridWorldEnv

    assert jit.compiled(_total) is None
    assert cbow_update.compiled() is None  # CBOW then trains on the batched path (docs/repr.md)
    assert dp._compiled_sweep() is None
    mdp = GridWorldEnv(rows=4, cols=4, slip=0.1).transition_model()
    bellman = dp.Bellman(mdp, 0.9)
    V, out = torch.zeros(mdp.n_states, dtype=torch.float64), torch.empty(mdp.n_states, dtype=torch.float64)
    residual = bellman.sweep(V, out)
    assert residual == pytest.approx(float(out.abs().max())) and residual > 0
    solution = dp.value_iteration(mdp, 0.9, 1e-6)
    exact = dp.policy_iteration(mdp, 0.9)
    np.testing.assert_allclose(solution.V, exact.V, atol=1e-6)
