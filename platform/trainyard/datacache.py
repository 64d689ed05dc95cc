"""An on-disk cache for what a data module derives from its input files.

A model may be sized by facts only the data knows after reading it: a vocabulary's size, a
tokenizer's special-token ids, the longest sequence. `trainyard validate` builds the data module
and asks it for those facts, so they must come cheaply after the first time. A data module's
build function receives `ctx.cache`, a DataCache keyed by the component's name and its params;
each entry is further keyed by the identity of the input files it was derived from:

    vocab = ctx.cache.json("vocab", inputs=[params.path], compute=lambda: count_words(params.path))
    tokenizer = ctx.cache.file("tokenizer.json", inputs=[params.path], write=train_and_save)

A file's identity is its resolved path, size and modification time (as make and ccache's
"direct mode" judge staleness): a changed file gets a new entry, an unchanged one is never read
again. Entries are written to a temporary name and renamed, so sweep trials that compute the
same entry at once never see half a file.

The cache lives in $TRAINYARD_CACHE_DIR, else $XDG_CACHE_HOME/trainyard, else ~/.cache/trainyard.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

CACHE_ENV = "TRAINYARD_CACHE_DIR"
# Bump when the layout of entries changes, so that old entries are not misread.
LAYOUT = "1"


def cache_root() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainyard"


def file_identity(paths: Iterable[str | Path]) -> list[list[Any]]:
    """(path, size, mtime_ns) of every input file; a folder counts as every file under it.
    A missing input raises FileNotFoundError: there is nothing to derive from it."""
    identity = []
    for path in paths:
        path = Path(path).expanduser().resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            identity.append([str(file), stat.st_size, stat.st_mtime_ns])
    return identity


class DataCache:
    """The cache folder of one data component at one configuration (see the module docstring)."""

    def __init__(self, component: str, params: Mapping[str, Any], seed: int = 0, root: Path | None = None):
        self.component = component
        self.params = dict(params)
        self.seed = seed  # splits are drawn from the seed, and what is derived from a split with them
        self.root = root or cache_root()

    def folder(self, inputs: Iterable[str | Path] = ()) -> Path:
        """The folder for entries derived from `inputs` at this component's params."""
        key = json.dumps({"layout": LAYOUT, "component": self.component, "params": self.params, "seed": self.seed,
                          "inputs": file_identity(inputs)}, sort_keys=True, default=str)
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.root / self.component / digest

    def file(self, name: str, inputs: Iterable[str | Path], write: Callable[[Path], None]) -> Path:
        """The path of entry `name`; `write(path)` creates it the first time."""
        target = self.folder(inputs) / name
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=target.parent)
        os.close(handle)
        try:
            write(Path(temporary))
            os.replace(temporary, target)  # atomic: a concurrent reader sees all of it or nothing
        finally:
            Path(temporary).unlink(missing_ok=True)
        return target

    def json(self, name: str, inputs: Iterable[str | Path], compute: Callable[[], Any]) -> Any:
        """Entry `name` as JSON: read if present, else `compute()`d and stored."""
        inputs = list(inputs)

        def write(path: Path) -> None:
            path.write_text(json.dumps(compute()), encoding="utf-8")

        return json.loads(self.file(name if name.endswith(".json") else f"{name}.json", inputs, write)
                          .read_text(encoding="utf-8"))
