"""What runs inside a trial, on whichever node Ray places it.

    Tune --> trial_main(config, job)           in a trial actor (a Tune function)
               sampled values set on the spec, validated with this node's registry
               workers: 1  --> fit_trial(rank 0)      reports with tune.report
               workers: N  --> TorchTrainer          a Ray Train run of N workers, each
                                 worker_main --> fit_trial(rank r)   reports with ray.train.report
                                 (TuneReportCallback passes rank 0's reports on to Tune)
               an algorithm --> run_algorithm_trial   one report, when it ends

Only rank 0 writes the trial's MLflow child run. A trial that Tune starts again (a retry, a
resumed sweep, a PBT exploit) restores the checkpoint it is given and continues the same child
run; a trial whose child run already FINISHED (it ended while the driver was down, before Tune's
last snapshot) reports its result again and trains nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainyard.errors import SpecError
from trainyard.spec import set_path
from trainyard.sweep.child_run import LOOK_UP
from trainyard.sweep.reporting import ENDED_KEY, FINAL_KEY, RUN_ID_KEY
from trainyard.sweep.space import shown_values, trial_values, with_model


@dataclass(frozen=True)
class SweepJob:
    """Everything a trial needs besides its sampled values; shipped once to the cluster."""

    spec: dict[str, Any]  # the spec's mapping, --set applied, without its sweep section
    source: str  # the spec file's name, for messages
    name: str  # the sweep's folder name under the storage path (unique per sweep)
    storage_path: str  # where checkpoints go (a folder or a URI), shared by every node
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str]  # provenance tags of the parent, copied onto every child run
    metric: str
    mode: str
    checkpoint_every: int
    reports: str  # sweep.reports: best, all or none
    workers: int
    cpu: float
    gpu: float
    max_failures: int

    def trial_experiment(self, config: Mapping[str, Any]):
        """The spec with this trial's sampled values set, validated against this node's registry."""
        from trainyard.validate import validate_experiment

        model, values = trial_values(config)
        data = self.spec if model is None else with_model(self.spec, model)
        for key, value in values.items():
            data = set_path(data, key, value)
        try:
            return validate_experiment(data)
        except SpecError as error:  # checked on the driver already: here only a plugin mismatch
            raise RuntimeError(f"this node rejects the trial's spec: {error.with_source(self.source)}") from None


def local_folder(job: SweepJob, trial_id: str, rank: int) -> Path:
    """A scratch folder for one rank of one trial, at the same path on every attempt, so that
    Lightning's best-checkpoint state restores unchanged (as Ray's own Lightning callback does)."""
    folder = Path(tempfile.gettempdir()) / "trainyard-trials" / job.name / trial_id / f"rank{rank}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# --- entry points ----------------------------------------------------------------------------


def trial_main(config: dict[str, Any], job: SweepJob) -> None:
    """The Tune function: one trial, from its sampled values to a finished child run."""
    from mlflow import MlflowClient
    from ray import tune

    from trainyard.sweep.child_run import find_child

    trial_id = tune.get_context().get_trial_id()
    existing = find_child(MlflowClient(job.tracking_uri), job.experiment_id, job.parent_run_id, trial_id)
    if existing is not None and existing.info.status == "FINISHED":
        # It ended while the driver was down, after Tune's last snapshot: report, do not rerun.
        tune.report(dict(existing.data.metrics) | {RUN_ID_KEY: existing.info.run_id, FINAL_KEY: True, ENDED_KEY: True,
                                                   "done": True})
        return
    experiment = job.trial_experiment(config)
    if experiment.spec.kind == "algorithm":
        run_algorithm_trial(experiment, job, trial_id, config, existing)
    elif job.workers == 1:
        checkpoint = tune.get_checkpoint()
        with checkpoint.as_directory() if checkpoint else nullcontext() as restored:
            fit_trial(experiment, job, trial_id, config, rank=0, report=_tune_report,
                      restored=Path(restored) if restored else None, existing=existing)
    else:
        _train_with_workers(config, job, trial_id)


def worker_main(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of a multi-worker trial."""
    import ray.train
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment

    job: SweepJob = loop_config["job"]
    config = loop_config["config"]
    rank = ray.train.get_context().get_world_rank()
    experiment = job.trial_experiment(config)
    # The class: make_trainer makes it with the DistributedDataParallel arguments the module needs.
    trainer_options = {"strategy": RayDDPStrategy, "plugins": [RayLightningEnvironment()],
                       "accelerator": "gpu" if job.gpu > 0 else "cpu", "devices": "auto"}

    def report(metrics: dict, checkpoint: Path | None) -> None:
        # Every worker reports (Ray Train waits for all of them); only rank 0 saved files.
        kept = ray.train.Checkpoint.from_directory(str(checkpoint)) if checkpoint and rank == 0 else None
        ray.train.report(metrics, checkpoint=kept)

    trial_id = loop_config["trial_id"]
    log = Path(tempfile.gettempdir()) / "trainyard-trials" / job.name / f"{trial_id}-rank{rank}.log"
    checkpoint = ray.train.get_checkpoint()
    try:
        with _output_to(log), checkpoint.as_directory() if checkpoint else nullcontext() as restored:
            fit_trial(experiment, job, trial_id, config, rank=rank, report=report,
                      restored=Path(restored) if restored else None, trainer_options=trainer_options)
    finally:
        _upload(log, _join(_join(job.storage_path, job.name), f"{trial_id}/rank{rank}.log"))


def _train_with_workers(config: dict[str, Any], job: SweepJob, trial_id: str) -> None:
    """A Ray Train run for one trial. Ray Train restarts failed workers from the last checkpoint
    and, given the same name and storage, resumes its run when Tune restarts this trial."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer = TorchTrainer(
        worker_main,
        train_loop_config={"config": config, "job": job, "trial_id": trial_id},
        scaling_config=ray.train.ScalingConfig(
            num_workers=job.workers, use_gpu=job.gpu > 0,
            resources_per_worker={"CPU": job.cpu} | ({"GPU": job.gpu} if job.gpu else {})),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}", storage_path=_join(job.storage_path, job.name),
            failure_config=ray.train.FailureConfig(max_failures=job.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


# --- a Lightning trial -----------------------------------------------------------------------


def fit_trial(experiment, job: SweepJob, trial_id: str, config: Mapping[str, Any], rank: int, report,
              restored: Path | None, trainer_options: dict[str, Any] | None = None, existing=LOOK_UP) -> None:
    """One trial through the lifecycle every run shares (trainyard.build, .train, .record); rank 0
    records it in the child run. What is the sweep's own: reports to Tune and checkpoints
    (TrialProgress), the trial's current optimizer settings after a restore, the child run."""
    from trainyard.build import build, make_trainer
    from trainyard.components import OWN
    from trainyard.record import record_trained
    from trainyard.tracking import metric_step
    from trainyard.sweep.reporting import (
        ApplyOptimizerSettings,
        TrialLogger,
        TrialProgress,
        restore_files,
    )
    from trainyard.train import fit_and_test

    folder = local_folder(job, trial_id, rank)
    try:
        built = build(experiment, folder, store=job.tracking_uri)
        progress = TrialProgress(report, job.metric, job.mode, job.checkpoint_every, folder / "reported")
        callbacks = [progress]
        if experiment.optimizers != OWN:  # the core built them from the spec, so the spec's values apply
            callbacks.append(ApplyOptimizerSettings(experiment.spec.optimizer,
                                                    experiment.components["model"].registered.component.optimizer_names))
        trainer = make_trainer(experiment, folder / "checkpoints", callbacks, quiet=True, built=built,
                               options={"devices": 1, "enable_checkpointing": True} | (trainer_options or {}))
        trainer.callbacks = [c for c in trainer.callbacks if c is not progress] + [progress]  # after ModelCheckpoint
        state = None
        if restored is not None:
            state = folder / "state.ckpt"
            restore_files(restored, state, folder / "checkpoints" if rank == 0 else None)
        # The child run opens once nothing is left to build: from here on it ends with a status.
        progress.child = child = _open_child(experiment, job, trial_id, config, existing) if rank == 0 else None
        trainer.loggers = [TrialLogger(child)]
        finishing = False
        try:
            trained = fit_and_test(built, trainer, ckpt_path=state)
            if child is not None:  # the test metrics reached the child through Lightning's logger
                # The trial's own work, for telling it apart from the sweep's bookkeeping.
                child.buffer({f"trial/{key}": value for key, value in trained.timings.items()},
                             metric_step(trainer))
                everything = job.reports == "all"
                reported = f"best/{job.metric}"  # TrialProgress logs the sweep metric's best already

                def log_metrics(metrics, step):
                    child.buffer({key: value for key, value in metrics.items() if key != reported}, step)

                record_trained(experiment, built, trainer, trained, child.tracked, folder, log_metrics=log_metrics,
                               reports=everything, log_model=everything)
                child.commit()
            # The last validation is reported after testing, as the trial's end: Tune answers it by
            # stopping this thread.
            finishing = True
            progress.flush(trainer, final=True)
        except SystemExit:
            # Tune stopped the trial. After its last report that is the end; before, a scheduler's
            # decision or a PBT pause: keep what was measured, and let the driver set the status
            # (a paused trial goes on later).
            if child is not None and finishing:
                child.end("FINISHED")
            elif child is not None:
                child.commit()
            raise
        except BaseException as error:
            if child is not None:
                child.end("FAILED", error)
            raise
        if child is not None:
            child.end("FINISHED")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _open_child(experiment, job: SweepJob, trial_id: str, config: Mapping[str, Any], existing=LOOK_UP,
                params_with_metrics: bool = False):
    import ray

    from trainyard.sweep.child_run import ChildRun

    runtime = ray.get_runtime_context()
    trained = (experiment.model or experiment.algorithm).registered
    tags = job.tags | {"trainyard.ray.node_id": runtime.get_node_id(), "trainyard.ray.pid": str(os.getpid()),
                       "trainyard.trial.workers": str(job.workers),
                       # The family (plugin) and model of the trial: a sweep across models is read by them.
                       "trainyard.family": trained.plugin, "trainyard.model": trained.name,
                       "trainyard.sweep.values": ", ".join(f"{k}={v}" for k, v in shown_values(config).items())[:500]}
    return ChildRun.open(job.tracking_uri, job.experiment_id, job.parent_run_id, trial_id, f"trial-{trial_id}",
                         experiment.flat_params(), tags, existing, params_with_metrics)


# --- an algorithm trial ----------------------------------------------------------------------


class _ChildSink:
    """The MetricSink an algorithm logs to, held for the child run until the algorithm ends."""

    def __init__(self, child, artifact_dir: Path):
        self.child = child
        self.artifact_dir = artifact_dir

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.child.buffer(metrics, step)


def run_algorithm_trial(experiment, job: SweepJob, trial_id: str, config: Mapping[str, Any],
                        existing=LOOK_UP) -> None:
    """An algorithm runs to its end and reports once (it has no epochs to checkpoint between)."""
    from ray import tune

    from trainyard.build import build
    from trainyard.record import make_reports

    folder = local_folder(job, trial_id, 0)
    try:
        built = build(experiment, folder, store=job.tracking_uri)
        child = _open_child(experiment, job, trial_id, config, existing, params_with_metrics=True)
        artifacts = folder / "artifacts"
        artifacts.mkdir()
        try:
            started = time.perf_counter()
            metrics = {key: float(value) for key, value in (built.algorithm.run(_ChildSink(child, artifacts)) or {}).items()}
            child.buffer(metrics | {"trial/fit_seconds": time.perf_counter() - started}, 0)
            if any(artifacts.iterdir()):
                child.tracked.log_artifacts(artifacts)
            if job.reports == "all":
                make_reports(experiment, built.algorithm, None, built.env, None, metrics, child.tracked,
                             folder / "reports")
        except BaseException as error:
            child.end("FAILED", error)
            raise
        child.end("FINISHED")
        tune.report(metrics | {RUN_ID_KEY: child.run_id, FINAL_KEY: True, ENDED_KEY: True, "done": True})
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- helpers ---------------------------------------------------------------------------------


def _tune_report(metrics: dict, checkpoint: Path | None) -> None:
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)) if checkpoint else None)


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """A Ray Train worker's prints and warnings, into a file of its own (Tune's per-trial output
    file covers the trial actor only, not the workers it starts)."""
    from contextlib import redirect_stderr, redirect_stdout

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", buffering=1) as sink, redirect_stdout(sink), redirect_stderr(sink):
        yield


def _upload(path: Path, target: str) -> None:
    """Copy a worker's log next to the trial's output.log in the storage (a folder or a URI)."""
    import pyarrow.fs as pafs

    if not path.is_file():
        return
    try:
        filesystem, location = pafs.FileSystem.from_uri(target if "://" in target else str(Path(target).resolve()))
        filesystem.create_dir(location.rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(str(path), location, destination_filesystem=filesystem)
        path.unlink()
    except OSError:
        pass  # the log stays in the node's temporary folder; losing it must not fail the trial


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"
