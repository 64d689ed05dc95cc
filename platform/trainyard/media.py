"""What a module records into its run during training besides metrics: images and text, as
step-indexed series, and tags.

    from trainyard.media import log_image, log_text, set_tag

    def on_validation_epoch_end(self):
        log_image(self, "samples", grid)        # (H, W) or (H, W, C) array, floats in [0, 1] or uint8
        log_text(self, "samples", "\\n".join(generated))
        set_tag(self, "gan.mode_collapse", "step 1200")   # a run's state that search_runs filters on

Images go through MLflow's `log_image(key=..., step=...)`: the run's artifacts page shows each
key with a step slider. MLflow has no step-indexed text, so text goes to
`samples/<key>/step_<global step>.txt`, one file per step, in order. Both are written where the
run's metrics go: into the run of `trainyard run`, and into a sweep trial's child run. In a
module trained outside trainyard (the conformance kit, a plain Lightning Trainer), and on the
ranks other than 0 of data-parallel training, they do nothing. A tag is written at once (MLflow
has no buffered tags): set one when something happens, not at every step.
"""

from __future__ import annotations

from typing import Any

from trainyard.tracking import metric_step


def log_image(module, key: str, image: Any, step: int | None = None) -> None:
    """Log `image` under `key` at `step` (default: the step the run's metrics are at)."""
    for logger in _media_loggers(module):
        logger.log_step_image(key, image, metric_step(module.trainer) if step is None else step)


def log_text(module, key: str, text: str, step: int | None = None) -> None:
    """Log `text` under `key` at `step` (default: the step the run's metrics are at)."""
    for logger in _media_loggers(module):
        logger.log_step_text(key, text, metric_step(module.trainer) if step is None else step)


def set_tag(module, key: str, value: str) -> None:
    """Set the tag `key` of the module's run to `value` (mlflow.search_runs filters on tags)."""
    for logger in _media_loggers(module):
        logger.set_run_tag(key, str(value))


def text_artifact(key: str, step: int) -> str:
    return f"samples/{key}/step_{step:08d}.txt"


def _media_loggers(module) -> list:
    trainer = getattr(module, "_trainer", None)
    if trainer is None or not trainer.is_global_zero:
        return []
    return [logger for logger in trainer.loggers if hasattr(logger, "log_step_image")]
