"""Phase 2 of every run: fit, then test the best weights.

The same for `trainyard run`, a sweep trial and each data-parallel worker: Lightning's logger
(which run the metrics go to) and callbacks (what a sweep reports to Tune) are what differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from trainyard.build import Built


@dataclass
class Trained:
    """What training produced: the test metrics, and the best checkpoint when there is one."""

    metrics: dict[str, float]
    best_path: Path | None = None  # on rank 0 only: the file may live on no other node
    best_score: float | None = None
    timings: dict[str, float] = field(default_factory=dict)  # fit_seconds, test_seconds


def fit_and_test(built: Built, trainer, ckpt_path: Path | None = None) -> Trained:
    """Fit (resuming the full training state from `ckpt_path` if given), then test the best
    checkpoint's weights (the last weights without checkpointing). Every rank calls it."""
    started = time.perf_counter()
    trainer.fit(built.model, datamodule=built.data, ckpt_path=ckpt_path)
    fitted = time.perf_counter()
    best = _load_best(trainer, built)
    results = trainer.test(built.model, datamodule=built.data, verbose=False)
    metrics = {key: float(value) for result in results for key, value in result.items()}
    timings = {"fit_seconds": fitted - started, "test_seconds": time.perf_counter() - fitted}
    checkpoint = trainer.checkpoint_callback
    score = float(checkpoint.best_model_score) if best is not None and checkpoint.best_model_score is not None else None
    return Trained(metrics, best, score, timings)


def _load_best(trainer, built: Built) -> Path | None:
    """Load the best checkpoint's weights into the model on every rank. Rank 0 alone holds the
    file (workers may sit on other nodes), so it reads the weights and sends them to the others."""
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    checkpoint = trainer.checkpoint_callback
    best = ""
    if isinstance(checkpoint, ModelCheckpoint) and trainer.is_global_zero:
        best = checkpoint.best_model_path
    state = None
    if best and Path(best).is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    state = trainer.strategy.broadcast(state, src=0)
    if state is not None:
        built.model.load_state_dict(state)
    return Path(best) if best and Path(best).is_file() else None
