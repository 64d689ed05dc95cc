"""Compiled loops, for the few updates that no torch operation expresses without moving each
value through memory several times (word2vec's CBOW update, value iteration's fused sweep).

    from trainyard.jit import compiled

    def _update(weights, ids, rate): ...        # plain Python on NumPy arrays, numba's subset
    update = compiled(_update, fastmath=True)     # None where numba cannot be imported
    if update is None: ...                        # the torch path

numba is imported on first use, not with the plugin: a machine without it (a GPU image with only
torch and Lightning) still imports every plugin and takes the plugin's torch path. Compiled code
is cached on disk (numba's `cache=True`), so only the first process on a machine compiles.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any


@cache
def compiled(function: Callable, **options: Any) -> Callable | None:
    """`function` compiled by numba.njit (cached on disk, releasing the GIL), or None without numba.

    Options are numba.njit's; a set of fastmath flags is given as a frozenset, which this cache
    can hash (`fastmath=frozenset({"reassoc"})`)."""
    try:
        from numba import njit
    except ImportError:
        return None
    options = {name: set(value) if isinstance(value, frozenset) else value for name, value in options.items()}
    return njit(cache=True, nogil=True, **options)(function)

