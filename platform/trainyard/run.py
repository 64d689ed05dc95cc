"""Running a validated experiment, recorded as one MLflow run.

    Experiment --build()--> data module + model (registry) --Trainer.fit/test--> MLflow run
    Experiment --build()--> environment + algorithm        --algorithm.run()---> MLflow run

Order matters for "nothing half-written": everything that can reject the input (params, shapes,
init_from, Trainer settings, the tracking store) is done before the MLflow run is created.
The run then always ends with a true status: FINISHED, FAILED (error recorded) or KILLED.
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

import trainyard
from trainyard.components import BuildContext, RunReport
from trainyard.environments import GYMNASIUM
from trainyard.errors import Problem, SpecError
from trainyard.registry import get_registry
from trainyard.tracking import TrackedRun, check_reachable, git_tags, lightning_logger, tracking_uri
from trainyard.validate import Experiment

log = logging.getLogger(__name__)


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived during a run. A BaseException, like KeyboardInterrupt, so that
    no `except Exception` in user code swallows it, and Lightning re-raises it after cleanup."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class Built:
    """The components of an experiment, built and ready to train."""

    model: Any = None
    data: Any = None
    env: Any = None
    algorithm: Any = None
    notes: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    run_id: str
    experiment_id: str
    tracking_uri: str
    status: str
    metrics: dict[str, float]
    seconds: float
    url: str | None = None
    notes: list[str] = field(default_factory=list)


def build(experiment: Experiment, workdir: Path | None = None) -> Built:
    """Seed, then build the experiment's components. Bad params or shapes raise SpecError."""
    from pytorch_lightning import seed_everything

    spec = experiment.spec
    seed_everything(spec.seed, workers=True, verbose=False)
    built = Built()
    ctx = BuildContext(seed=spec.seed)
    for section in ("data", "env"):
        if (resolved := experiment.components.get(section)) is not None:
            setattr(built, section, _build_checked(section, resolved, ctx))
    env_section = experiment.components.get("env")
    make_env = partial(env_section.build, BuildContext(seed=spec.seed)) if env_section is not None else None
    ctx = BuildContext(seed=spec.seed, data=built.data, env=built.env, make_env=make_env)
    if (resolved := experiment.components.get("algorithm")) is not None:
        built.algorithm = _build_checked("algorithm", resolved, ctx)
    if (resolved := experiment.components.get("model")) is not None:
        built.model = _build_checked("model", resolved, ctx)
        _prepare_model(experiment, built, workdir)
    return built


def _build_checked(section: str, resolved, ctx: BuildContext) -> Any:
    try:
        return resolved.build(ctx)
    except SpecError:
        raise  # a component that knows which field is wrong (e.g. env.name) says so itself
    except (ValueError, TypeError) as error:
        # Components reject configurations they cannot build (a feature map that shrinks to
        # nothing, a model that needs image data) with ValueError: that is bad input.
        raise SpecError([Problem(f"{section}.params", str(error).strip().splitlines()[0])]) from None


def _prepare_model(experiment: Experiment, built: Built, workdir: Path | None) -> None:
    from trainyard import optim, transfer

    spec = experiment.spec
    if spec.model.init_from:
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = transfer.fetch_checkpoint(spec.model.init_from, tracking_uri(spec.tracking.uri), Path(tmp))
            built.notes.append(transfer.load_weights(built.model, path, spec.model.init_from).summary())
    if spec.model.freeze:
        transfer.freeze(built.model, spec.model.freeze)
        built.notes.append(f"froze {', '.join(spec.model.freeze)}")
    optim.attach_optimizers(built.model, spec.optimizer, spec.schedule, spec.trainer.max_epochs)


def make_trainer(experiment: Experiment, checkpoint_dir: Path, callbacks: Sequence[Any] = (),
                 quiet: bool = False, options: Mapping[str, Any] | None = None):
    """A Lightning Trainer for the spec's trainer section (no logger yet: the run does not exist).

    `options` are Trainer arguments that win over the spec's (a sweep trial's strategy and
    devices under Ray Train)."""
    from pytorch_lightning import Trainer
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    _quiet_lightning_chatter()
    spec = experiment.spec
    t = spec.trainer
    all_callbacks = list(callbacks)
    if t.checkpoint is not None:
        all_callbacks.append(ModelCheckpoint(
            dirpath=checkpoint_dir, filename="epoch{epoch:03d}", auto_insert_metric_name=False,
            monitor=t.checkpoint.monitor, mode=t.checkpoint.mode, save_top_k=t.checkpoint.save_top_k,
            save_last=t.checkpoint.save_last))
    if t.early_stopping is not None:
        e = t.early_stopping
        all_callbacks.append(EarlyStopping(monitor=e.monitor, mode=e.mode, patience=e.patience, min_delta=e.min_delta))
    if spec.schedule.name != "none" or spec.schedule.warmup_epochs:
        all_callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    arguments = dict(
        max_epochs=t.max_epochs, precision=t.precision, accelerator=t.accelerator, devices=t.devices,
        gradient_clip_val=t.gradient_clip_val, gradient_clip_algorithm=t.gradient_clip_algorithm,
        accumulate_grad_batches=t.accumulate_grad_batches,
        # None (Lightning's default) rather than 1.0: Lightning announces explicit full limits.
        limit_train_batches=None if t.limit_train_batches == 1.0 else t.limit_train_batches,
        limit_val_batches=None if t.limit_val_batches == 1.0 else t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic, enable_progress_bar=t.progress_bar and not quiet,
        enable_model_summary=not quiet, enable_checkpointing=t.checkpoint is not None,
        callbacks=all_callbacks, logger=False, default_root_dir=checkpoint_dir.parent)
    try:
        return Trainer(**arguments | dict(options or {}))
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        # e.g. accelerator: gpu on a machine without one
        raise SpecError([Problem("trainer", str(error).strip().splitlines()[0])]) from None


def launched_as_rank_zero() -> bool:
    """False in the processes a distributed launcher starts for devices and nodes after the first."""
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def run_experiment(experiment: Experiment, *, callbacks: Sequence[Any] = (),
                   quiet: bool = False) -> RunResult | None:
    """Build, train, test and record an experiment. Raises SpecError before any run exists on
    bad input, RunInterrupted on SIGINT/SIGTERM (run KILLED), and the error itself on failure
    (run FAILED). Returns None in the extra processes of multi-device training, which record
    nothing."""
    spec = experiment.spec
    uri = tracking_uri(spec.tracking.uri)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trainyard-") as tmp:
        workdir = Path(tmp)
        built = build(experiment, workdir)
        trainer = make_trainer(experiment, workdir / "checkpoints", callbacks, quiet) if built.model is not None else None
        if trainer is not None and not launched_as_rank_zero():
            # With devices > 1, Lightning's launcher runs this command again once per extra
            # device. Those processes train in step with rank 0, which alone records the run.
            trainer.loggers = [lightning_logger(uri, run_id=None)]
            trainer.fit(built.model, datamodule=built.data)
            trainer.test(built.model, datamodule=built.data, ckpt_path="best" if trainer.checkpoint_callback else None,
                         verbose=False)
            return None
        check_reachable(uri)
        with _signals_interrupt():
            tracked = TrackedRun.start(uri, spec.tracking.experiment or spec.name, spec.tracking.run_name or spec.name,
                                       _tags(experiment), spec.description)
            try:
                tracked.log_params(experiment.flat_params())
                tracked.log_text(yaml.safe_dump(experiment.resolved(), sort_keys=False), "spec.yaml")
                if built.notes:
                    tracked.set_tags({"trainyard.init": "; ".join(built.notes)[:500]})
                if trainer is not None:
                    metrics = _train(experiment, built, trainer, tracked, workdir)
                else:
                    metrics = _run_algorithm(built, tracked, workdir)
                _reports(experiment, built, trainer, metrics, tracked, workdir)
            except RunInterrupted as stop:
                _ignore_signals()
                tracked.end("KILLED")
                raise stop
            except BaseException as error:
                _ignore_signals()
                tracked.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", error)
                raise
            _ignore_signals()
            tracked.end("FINISHED")
    return RunResult(tracked.run_id, tracked.experiment_id, uri, "FINISHED", metrics,
                     time.perf_counter() - started, tracked.ui_url(), built.notes)


def _train(experiment: Experiment, built: Built, trainer, tracked: TrackedRun, workdir: Path) -> dict[str, float]:
    spec = experiment.spec
    trainer.loggers = [tracked.lightning_logger()]
    trainer.fit(built.model, datamodule=built.data)
    checkpoint = trainer.checkpoint_callback if spec.trainer.checkpoint is not None else None
    best = checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
    results = trainer.test(built.model, datamodule=built.data, ckpt_path="best" if best else None, verbose=False)
    metrics = {key: float(value) for result in results for key, value in result.items()}
    if best:
        _log_checkpoints(tracked, checkpoint, Path(best))
        score = {f"best/{spec.trainer.checkpoint.monitor}": float(checkpoint.best_model_score)}
        tracked.log_metrics(score, step=trainer.global_step)  # the score the tested weights earned
        metrics |= score
    if spec.tracking.log_model:
        _log_model(tracked, built.model)
    return metrics


def _log_checkpoints(tracked: TrackedRun, checkpoint, best: Path) -> None:
    staging = best.parent.parent / "checkpoint-artifacts"
    staging.mkdir()
    (staging / "best.ckpt").symlink_to(best.resolve())
    if checkpoint.last_model_path:
        (staging / "last.ckpt").symlink_to(Path(checkpoint.last_model_path).resolve())
    for path in checkpoint.best_k_models:
        if Path(path) != best:
            (staging / Path(path).name).symlink_to(Path(path).resolve())
    tracked.log_artifacts(staging, "checkpoints")


def _log_model(tracked: TrackedRun, model) -> None:
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
        reason = "pickle (the model has no example_input_array)"
    info = mlflow.pytorch.log_model(model, name="model", run_id=tracked.run_id, pip_requirements=requirements,
                                    serialization_format="pickle")
    tracked.set_tags({"trainyard.model_format": reason, "trainyard.model_uri": info.model_uri})


class _Sink:
    """The MetricSink an algorithm logs to: asynchronous, buffered log_batch calls."""

    def __init__(self, tracked: TrackedRun, artifact_dir: Path):
        self.tracked = tracked
        self.artifact_dir = artifact_dir
        self.last_step = 0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.last_step = max(self.last_step, step)
        self.tracked.log_metrics(metrics, step)


def _run_algorithm(built: Built, tracked: TrackedRun, workdir: Path) -> dict[str, float]:
    artifacts = workdir / "artifacts"
    artifacts.mkdir()
    sink = _Sink(tracked, artifacts)
    metrics = {key: float(value) for key, value in (built.algorithm.run(sink) or {}).items()}
    # At the last step logged, as Lightning logs test metrics at the last global step: a final
    # value continues the curve of the same metric instead of landing before its first point.
    sink.log_metrics(metrics, step=sink.last_step)
    if any(artifacts.iterdir()):
        tracked.log_artifacts(artifacts)
    return metrics


def _reports(experiment: Experiment, built: Built, trainer, metrics: dict[str, float],
             tracked: TrackedRun, workdir: Path) -> None:
    directory = workdir / "reports"
    directory.mkdir()
    report = RunReport(experiment.spec, built.model if built.model is not None else built.algorithm,
                       built.data, built.env, trainer, metrics, directory)
    get_registry().hook.make_run_reports(report=report)
    if any(directory.iterdir()):
        tracked.log_artifacts(directory, "reports")


def _tags(experiment: Experiment) -> dict[str, str]:
    registry = get_registry()
    tags = {"trainyard.version": trainyard.__version__, "trainyard.kind": experiment.spec.kind}
    for section, resolved in experiment.components.items():
        tags[f"trainyard.{section}"] = resolved.registered.name
        if resolved.registered.plugin == GYMNASIUM:
            import gymnasium

            tags["trainyard.gymnasium.version"] = gymnasium.__version__
            continue
        plugin = registry.plugins[resolved.registered.plugin]
        tags[f"trainyard.plugin.{plugin.name}.version"] = plugin.version or "unknown"
    if experiment.path is not None:
        tags["trainyard.spec"] = str(experiment.path)
        tags["mlflow.source.name"] = str(experiment.path)  # the UI's "Source" column
        tags |= git_tags(experiment.path.resolve().parent)
    if experiment.overrides:
        tags["trainyard.overrides"] = ", ".join(experiment.overrides)[:500]
    return tags | experiment.spec.tracking.tags


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into RunInterrupted while the run is live (main thread only)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, _frame):
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_signals() -> None:
    """While the run's final status is written, a second Ctrl-C must not cut it short."""
    import threading

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


def _quiet_lightning_chatter() -> None:
    # Single-process CPU data loading from memory is deliberate; Lightning's advice to add
    # workers is noise here, as is a deprecation inside Lightning itself. Real problems still warn.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    # Lightning's info lines (available devices, tips, checkpoint restores) repeat what the
    # run summary says; its progress bar and model summary stay unless quiet.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
