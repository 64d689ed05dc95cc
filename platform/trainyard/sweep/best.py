"""`sweep.reports: best`: the best trial's reports and model, recorded once the sweep has ended.

Trials stay cheap: none of them makes the family's reports or logs its model. At the end the
driver rebuilds the best trial (its spec with its sampled values), loads the weights its child
run logged as checkpoints/best.ckpt, tests them as the trial did, and records the reports and
the model into that child run, through the same functions a `trainyard run` uses
(trainyard.build, trainyard.record). An algorithm is seeded and cheap to run again: the best
trial's algorithm runs once more for its reports.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

BEST_MODEL_TAG = "trainyard.sweep.best_model"


def record_best(job, config: Mapping[str, Any], run_id: str) -> str:
    """Record the reports (and the model) of the trial with `config` into its child run `run_id`;
    returns what was recorded, for the parent's tag."""
    import torch

    from trainyard.build import build, make_trainer
    from trainyard.record import log_pytorch_model, make_reports
    from trainyard.tracking import TrackedRun

    experiment = job.trial_experiment(config)
    tracked = TrackedRun(job.tracking_uri, run_id, job.experiment_id)
    with tempfile.TemporaryDirectory(prefix="trainyard-best-") as tmp:
        folder = Path(tmp)
        built = build(experiment, folder, store=job.tracking_uri)
        if built.algorithm is not None:
            metrics = {key: float(value) for key, value in (built.algorithm.run(_Discard(folder)) or {}).items()}
            make_reports(experiment, built.algorithm, None, built.env, None, metrics, tracked, folder / "reports")
            return "reports"
        try:
            path = tracked.client.download_artifacts(run_id, "checkpoints/best.ckpt", str(folder))
        except Exception:  # noqa: BLE001 - a trial stopped by its scheduler kept no best checkpoint
            return "none: the best trial logged no checkpoints/best.ckpt"
        built.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
        trainer = make_trainer(experiment, folder / "checkpoints", quiet=True, built=built,
                               options={"devices": 1, "accelerator": "cpu"})
        results = trainer.test(built.model, datamodule=built.data, verbose=False)
        metrics = {key: float(value) for result in results for key, value in result.items()}
        make_reports(experiment, built.model, built.data, built.env, trainer, metrics, tracked, folder / "reports")
        if experiment.spec.tracking.log_model:
            log_pytorch_model(tracked, built.model)
            return "reports and model"
        return "reports"


class _Discard:
    """A MetricSink for the rerun: the trial logged these metrics already."""

    def __init__(self, folder: Path):
        self.artifact_dir = folder / "artifacts"
        self.artifact_dir.mkdir()

    def log_metrics(self, metrics, step: int) -> None:
        pass
