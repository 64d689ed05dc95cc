"""Phase 3 of every run: what a trained model leaves in its MLflow run.

    the family's reports (on the trained model, before it is moved or exported)
    --> data/ (what the data module needs to read the run later: a vocabulary, a tokenizer)
    --> checkpoints/ (the best checkpoint, and the other kept ones)
    --> model/ (mlflow.pytorch: an exported pt2 graph when the model has an example input)

`trainyard run` records everything; a sweep trial records its checkpoint, and its reports and
model as `sweep.reports` says (the best trial's are recorded at the end of the sweep).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trainyard
from trainyard.components import RunReport
from trainyard.registry import get_registry
from trainyard.tracking import TrackedRun, metric_step


def make_reports(experiment, model, data, env, trainer, metrics: Mapping[str, float], tracked: TrackedRun,
                 directory: Path) -> None:
    """The `make_run_reports` hook of the plugin that provided the model (or algorithm), and only
    that one: another family's hook never sees a model that merely looks like its own."""
    section = "model" if experiment.components.get("model") is not None else "algorithm"
    plugin = experiment.components[section].registered.plugin
    directory.mkdir(parents=True, exist_ok=True)
    report = RunReport(experiment.spec, model, data, env, trainer, dict(metrics), directory)
    registry = get_registry()
    if registry.manager.has_plugin(plugin):
        others = [other for name, other in registry.manager.list_name_plugin() if name != plugin]
        registry.manager.subset_hook_caller("make_run_reports", remove_plugins=others)(report=report)
    if any(directory.iterdir()):
        tracked.log_artifacts(directory, "reports")


def record_trained(experiment, built, trainer, trained, tracked: TrackedRun, workdir: Path, *,
                   log_metrics: Callable[[Mapping[str, float], int], None], reports: bool = True,
                   log_model: bool = True) -> dict[str, float]:
    """Reports, checkpoints, the best score and the model of a trained Lightning module; returns
    the metrics to show (the test metrics and best/<monitor>)."""
    spec = experiment.spec
    metrics = dict(trained.metrics)
    if trained.best_score is not None:
        score = {f"best/{spec.trainer.checkpoint.monitor}": trained.best_score}
        log_metrics(score, metric_step(trainer))  # the score the tested weights earned
        metrics |= score
    if reports:
        make_reports(experiment, built.model, built.data, built.env, trainer, metrics, tracked, workdir / "reports")
    log_data_artifacts(tracked, built.data, workdir / "data-artifacts")
    if trained.best_path is not None:
        log_checkpoints(tracked, trainer.checkpoint_callback, trained.best_path, workdir / "checkpoint-artifacts")
    if log_model and spec.tracking.log_model:
        log_pytorch_model(tracked, built.model)
    return metrics


def log_data_artifacts(tracked: TrackedRun, data: Any, directory: Path) -> None:
    """What the data module says a run needs to be read later (a vocabulary, a tokenizer), under
    data/: a data module may define `write_artifacts(directory)`."""
    if not hasattr(data, "write_artifacts"):
        return
    directory.mkdir(parents=True, exist_ok=True)
    data.write_artifacts(directory)
    if any(directory.iterdir()):
        tracked.log_artifacts(directory, "data")


def log_checkpoints(tracked: TrackedRun, checkpoint, best: Path, staging: Path) -> None:
    """checkpoints/best.ckpt (the tested weights), last.ckpt and the other kept ones."""
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "best.ckpt").symlink_to(best.resolve())
    if getattr(checkpoint, "last_model_path", ""):
        (staging / "last.ckpt").symlink_to(Path(checkpoint.last_model_path).resolve())
    for path in getattr(checkpoint, "best_k_models", {}):
        if Path(path) != best and Path(path).is_file():
            (staging / Path(path).name).symlink_to(Path(path).resolve())
    tracked.log_artifacts(staging, "checkpoints")


def log_pytorch_model(tracked: TrackedRun, model: Any) -> None:
    """Log the trained module with mlflow.pytorch.

    With an example input (Lightning's `example_input_array`) the model is exported as a
    traced graph ('pt2': loading it runs no pickled code); without one, or when torch.export
    cannot trace the model, it is pickled. The tag trainyard.model_format says which.
    """
    import mlflow
    import torch

    # Requirements are given, not inferred: MLflow's inference re-imports the model in a
    # subprocess, which costs seconds per run.
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"trainyard=={trainyard.__version__}"]
    # mlflow.pytorch.log_model files the model under the process's active experiment (else
    # $MLFLOW_EXPERIMENT_ID, else experiment 0), whatever run_id says: make that the run's own,
    # also for a run continued by `--resume` and when the environment names another experiment.
    mlflow.set_experiment(experiment_id=tracked.experiment_id)
    example = getattr(model, "example_input_array", None)
    model = model.cpu().eval()
    if isinstance(example, torch.Tensor):
        # A batch of 2, so the exported batch dimension stays dynamic (size 1 is specialised).
        batch = example[:1].expand(2, *example.shape[1:]).contiguous().cpu().numpy()
        try:
            info = mlflow.pytorch.log_model(model, name="model", run_id=tracked.run_id, input_example=batch,
                                            pip_requirements=requirements, serialization_format="pt2")
            tracked.set_tags({"trainyard.model_format": "pt2", "trainyard.model_uri": info.model_uri})
            return
        except Exception as error:  # noqa: BLE001 - export is best effort; pickling still works
            reason = f"pickle (torch.export failed: {str(error).strip().splitlines()[0][:200]})"
    else:
        reason = "pickle (the model has no example_input_array tensor)"
    info = mlflow.pytorch.log_model(model, name="model", run_id=tracked.run_id, pip_requirements=requirements,
                                    serialization_format="pickle")
    tracked.set_tags({"trainyard.model_format": reason, "trainyard.model_uri": info.model_uri})
