"""`trainyard sweep`: a validated spec with a sweep section, run on Ray Tune, recorded in MLflow.

    validated spec --> Ray (local instance or --address) --> preflight --> parent MLflow run
      --> Tuner(trial_main, search space, searcher, scheduler) --> trials (trial.py), child runs
      --> summary of every child run, into the parent (summary.py)

The sweep folder `<storage_path>/<spec name>-<date>-<time>-<microseconds>/` holds Tune's state and checkpoints,
`trainyard-sweep.json` (the spec and the parent run, for `--resume`), `driver.log` (everything
Ray and Tune print) and one folder per trial with its `output.log`. `--resume` finds the newest
such folder for the spec's name, restores Tune from it and reattaches the parent run.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainyard.errors import Problem, SpecError
from trainyard.sweep import reaper
from trainyard.spec import flatten
from trainyard.tracking import TrackedRun, check_reachable, environment_uri_kept, experiment_id_for, tracking_uri
from trainyard.validate import Experiment, validate_experiment

STATE_FILE = "trainyard-sweep.json"
DEFAULT_STORAGE = "sweeps"
# Tune's defaults cost about 1.45 s per trivial trial here; without its automatic file loggers
# (CSV, JSON, TensorBoard: trainyard records trials in MLflow) and with actors reused, 47 ms.
TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
                    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}


@dataclass(frozen=True)
class SweepOptions:
    address: str | None = None  # a Ray cluster to join; None: RAY_ADDRESS, else a local instance
    resume: bool = False
    max_concurrent: int | None = None


@dataclass
class SweepResult:
    name: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    status: str  # FINISHED, FAILED (no trial succeeded) or KILLED (interrupted; resumable)
    seconds: float
    folder: str
    summary: Any = None  # summary.Summary
    driver_log: str = ""
    timings: dict[str, float] = field(default_factory=dict)  # seconds: ray_start, trials, summary
    warnings: list[str] = field(default_factory=list)
    url: str | None = None

    @property
    def failed(self) -> int:
        return self.summary.count("FAILED") if self.summary else 0


def run_sweep(experiment: Experiment, options: SweepOptions, console=None) -> SweepResult:
    """Run the spec's sweep. Raises SpecError before anything launches on bad input."""
    with environment_uri_kept():
        return _run_sweep(experiment, options, console)


def _run_sweep(experiment: Experiment, options: SweepOptions, console=None) -> SweepResult:
    spec = experiment.spec
    if spec.sweep is None:
        raise SpecError([Problem("sweep", "this spec has no sweep section (trainyard run trains it once)")])
    uri = tracking_uri(spec.tracking.uri)
    storage = storage_location(spec.sweep.storage_path)
    if options.resume:
        state = find_resumable(storage, spec.name, uri)
        experiment = validate_experiment(state["spec"])
        experiment.source, experiment.path = state["source"], Path(state["spec_path"]) if state.get("spec_path") else None
        spec = experiment.spec
    else:
        state = {"name": sweep_name(spec.name), "spec": experiment.data,
                 "source": experiment.source, "spec_path": str(experiment.path) if experiment.path else None}
    if not uri.startswith(("sqlite:", "file:")) and "://" in uri:
        check_reachable(uri)  # a server that cannot be reached is bad input, found before Ray starts
    # What `trainyard validate` checks by building (an algorithm that rejects its environment, a
    # model's optimizers and facts, what manual optimization cannot do) is bad input found here,
    # before Ray starts and before the parent run exists.
    _build_once(experiment)
    name = state["name"]
    folder = _join(storage, name)
    local = Path(folder) if _is_local(storage) else Path(DEFAULT_STORAGE).resolve() / name
    for key, value in TUNE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)

    started = time.perf_counter()
    # Ray's and Tune's output goes to a log file: a temporary one until the sweep is sure to
    # start (a preflight error leaves no sweep folder behind), then driver.log in its folder
    # (_keep_output).
    log = Path(tempfile.mkstemp(prefix="trainyard-driver-", suffix=".log")[1])
    launched = False
    try:
        with _driver_output(log) as log_file:
            from trainyard.sweep import cluster

            env_vars = {key: os.environ[key] for key in ("TRAINYARD_PLUGINS",) if key in os.environ}
            # A Ray instance of its own dies with this process, even by SIGKILL (reaper.py).
            watcher = reaper.start() if not (options.address or os.environ.get("RAY_ADDRESS")) else None
            try:
                ray_cluster = cluster.connect(options.address, env_vars)
                ray_start = time.perf_counter() - started
                _route_ray_logging(log_file)
                parent, warnings = _start_parent(experiment, state, ray_cluster, uri, storage, options)
                launched = True
                _keep_output(log_file, log, local / "driver.log")
                if not options.resume:
                    _write_state(folder, state)
                result = _tune(experiment, state, parent, storage, options, ray_cluster, console, local)
                result.warnings = warnings + result.warnings
                result.timings = {"ray_start": ray_start} | result.timings
            finally:
                import ray

                ray.shutdown()
                if watcher is not None:
                    watcher.terminate()  # the sweep ended itself: nothing left to reap
                    watcher.wait()
    finally:
        log.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - started
    result.folder = folder
    result.driver_log = str(local / "driver.log")
    return result


def _build_once(experiment: Experiment) -> None:
    """Build the components once on the driver (each branch's, in a sweep across models). Not the
    Trainer: the accelerator and precision are the trial nodes' to satisfy, and the driver may
    have no GPU."""
    from trainyard.build import build

    for name, each in (experiment.branches() or {"": experiment}).items():
        with tempfile.TemporaryDirectory(prefix="trainyard-preflight-") as tmp:
            try:
                build(each, Path(tmp))
            except SpecError as error:
                if not name:
                    raise
                raise SpecError([Problem(f"sweep.branches.{name}", f"{p.path}: {p.message}")
                                 for p in error.problems]) from None


def _start_parent(experiment: Experiment, state: dict, ray_cluster, uri: str, storage: str,
                  options: SweepOptions) -> tuple[TrackedRun, list[str]]:
    """Preflight, then the parent run: created for a new sweep, reattached by --resume."""
    from mlflow import MlflowClient

    from trainyard.run import _tags
    from trainyard.sweep import cluster

    spec, sweep = experiment.spec, experiment.spec.sweep
    experiment_name = spec.tracking.experiment or spec.name
    problems, warnings = cluster.preflight(ray_cluster, uri, storage, sweep.workers, sweep.resources.cpu,
                                           sweep.resources.gpu)
    if problems:
        raise SpecError(problems)
    check_reachable(uri)  # a SQLite store is created here, once nothing can stop the sweep
    client = MlflowClient(uri)
    experiment_id = experiment_id_for(client, experiment_name)
    problems = cluster.artifact_problems(ray_cluster, client.get_experiment(experiment_id).artifact_location)
    if problems:
        raise SpecError(problems)
    if options.resume:
        parent = TrackedRun.attach(uri, state["parent_run_id"])
        parent.set_tags({"trainyard.sweep.resumed": time.strftime("%Y-%m-%d %H:%M:%S")})
        return parent, warnings
    tags = _tags(experiment) | {"trainyard.kind": "sweep", "trainyard.sweep.folder": _join(storage, state["name"])}
    parent = TrackedRun.start(uri, experiment_name, spec.tracking.run_name or state["name"], tags, spec.description)
    try:
        # The values every trial shares: not what is searched, nor (across models) the model's.
        varies = set(sweep.searched_keys()) | {key for values in (sweep.branches or {}).values() for key in values}
        fixed = {key: value for key, value in experiment.flat_params().items()
                 if key not in varies and not (sweep.branches and key.startswith("model."))}
        settings = flatten(sweep.model_dump(mode="json", exclude={"space", "branches"}), "sweep")
        parent.log_params(fixed | {key: value for key, value in settings.items() if value is not None})
        parent.log_text(yaml.safe_dump(experiment.resolved() | {"sweep": sweep.model_dump(mode="json")},
                                       sort_keys=False), "spec.yaml")
        searched = {key: {d.kind: d.args} for key, d in sweep.space.items()}
        if sweep.branches:
            searched["branches"] = sweep.branches
        parent.log_text(yaml.safe_dump(searched, sort_keys=False), "search_space.yaml")
    except BaseException as error:
        parent.end("FAILED", error)
        raise
    state |= {"tracking_uri": uri, "parent_run_id": parent.run_id}
    return parent, warnings


def _tune(experiment: Experiment, state: dict, parent: TrackedRun, storage: str, options: SweepOptions,
          ray_cluster, console, local: Path) -> SweepResult:
    from ray import tune

    from trainyard.sweep import report, space, summary
    from trainyard.sweep.progress import SweepProgress
    from trainyard.sweep.trial import SweepJob, trial_main

    spec, sweep = experiment.spec, experiment.spec.sweep
    job = SweepJob(
        spec={key: value for key, value in state["spec"].items() if key != "sweep"}, source=state["source"],
        name=state["name"], storage_path=storage, tracking_uri=parent.uri, experiment_id=parent.experiment_id,
        parent_run_id=parent.run_id, tags=_child_tags(parent),
        metric=sweep.metric, mode=sweep.mode, checkpoint_every=sweep.checkpoint_every, reports=sweep.reports,
        workers=sweep.workers,
        cpu=sweep.resources.cpu, gpu=sweep.resources.gpu, max_failures=sweep.max_failures)
    if sweep.workers == 1:
        resources = {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
    else:
        # The trial actor only drives a Ray Train run: it must not hold a CPU one of its workers
        # needs, and Tune refuses an empty request, so it asks for one byte of memory.
        resources = {"memory": 1}
    trainable = tune.with_resources(tune.with_parameters(trial_main, job=job), resources)
    progress = SweepProgress(console, sweep.searched_keys(), sweep.metric,
                             spec.trainer.epoch_limit if spec.kind == "model" else None,
                             {"uri": parent.uri, "experiment_id": parent.experiment_id,
                              "parent_run_id": parent.run_id})
    path = _join(storage, state["name"])
    if options.resume:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=False)
        _replace_callbacks(tuner, progress)
    else:
        tuner = tune.Tuner(
            trainable, param_space=space.param_space(sweep),
            tune_config=tune.TuneConfig(
                metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples,
                search_alg=space.search_algorithm(spec, options.max_concurrent or sweep.max_concurrent
                                                  or _default_concurrency(ray_cluster, sweep)),
                scheduler=space.scheduler(spec), reuse_actors=True, trial_dirname_creator=_trial_folder),
            run_config=tune.RunConfig(
                name=state["name"], storage_path=storage, verbose=0, callbacks=[progress],
                # Each trial's output goes to output.log in its working folder, which Tune copies
                # to the trial's folder in the storage whenever it checkpoints and when it ends.
                log_to_file="output.log", sync_config=tune.SyncConfig(sync_artifacts=True),
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                # A retry needs the latest checkpoint; PBT may hand an older one of the trial it
                # copies to another trial, so with PBT every checkpoint is kept.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=None if sweep.scheduler.name == "pbt" else 2)))
    timings = {}
    try:
        started = time.perf_counter()
        with _sigterm_as_sigint():
            results = tuner.fit()
            # A trial whose node died can end ERROR with retries left: Tune counts the lost actor
            # once per task it had in flight, and the second count finds the trial already
            # pending its retry. When every trial that ended ERROR ended so (its actor lost, not
            # its own exception), they are resumed from their last checkpoints, up to
            # max_failures more times; finished trials are not run again.
            for _ in range(sweep.max_failures):
                if progress.unfinished or not _lost_with_their_workers(results):
                    break
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
                _replace_callbacks(tuner, progress)
                results = tuner.fit()
        timings["trials"] = time.perf_counter() - started
        if progress.unfinished:
            _mark_unfinished(parent, "KILLED")
            return _result(state, parent, "KILLED", None, timings)
        started = time.perf_counter()
        found = summary.collect(parent, sweep)
        summary.record(parent, sweep, found, local / "summary")
        report_warning = report.record(parent, sweep, found, local / "summary")
        if sweep.reports == "best" and found.best is not None:
            _record_best(job, results, found.best, parent)
    except BaseException as error:
        _mark_unfinished(parent, "FAILED", error)
        raise
    status = "FINISHED" if found.best is not None else "FAILED"
    parent.end(status, RuntimeError("no trial finished") if status == "FAILED" else None)
    timings["summary"] = time.perf_counter() - started
    result = _result(state, parent, status, found, timings)
    if report_warning:
        result.warnings.append(report_warning)
    return result


def _record_best(job, results, best, parent: TrackedRun) -> None:
    """The best trial's reports and model (sweep.reports: best), with the values it ended with
    (PBT's mutations included), from Tune's result for it."""
    from trainyard.sweep.best import BEST_MODEL_TAG, record_best

    configs = {result.metrics.get("trial_id"): result.config for result in results
               if result.metrics and result.config is not None}
    if best.trial_id not in configs:
        parent.set_tags({BEST_MODEL_TAG: f"none: Tune has no result for trial {best.trial_id}"})
        return
    recorded = record_best(job, configs[best.trial_id], best.run_id)
    parent.set_tags({BEST_MODEL_TAG: f"{recorded} in run {best.run_id}"})


# --- the sweep folder ------------------------------------------------------------------------


def storage_location(configured: str | None) -> str:
    """sweep.storage_path as Ray expects it: an absolute folder, or a URI (s3://, gs://, ...)."""
    value = configured or DEFAULT_STORAGE
    if "://" in value and not value.startswith("file://"):
        return value.rstrip("/")
    return str(Path(value.removeprefix("file://")).expanduser().resolve())


def sweep_name(spec_name: str) -> str:
    """`<spec name>-<date>-<time>-<microseconds>`: two sweeps of one spec started in the same
    second get folders of their own, and names still sort by start time (find_resumable)."""
    now = time.time_ns() // 1000  # microseconds
    seconds, micro = divmod(now, 1_000_000)
    return f"{spec_name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(seconds))}-{micro:06d}"


def find_resumable(storage: str, spec_name: str, uri: str) -> dict[str, Any]:
    """The newest sweep of `spec_name` in the storage, if it did not finish. SpecError if none."""
    import pyarrow.fs as pafs
    from mlflow import MlflowClient

    filesystem, root = pafs.FileSystem.from_uri(storage)
    try:
        entries = filesystem.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError as error:
        raise SpecError([Problem("sweep.storage_path", f"cannot read {storage}: {error}")]) from None
    prefix = f"{spec_name}-"
    names = sorted((e.base_name for e in entries
                    if e.type == pafs.FileType.Directory and e.base_name.startswith(prefix)
                    and e.base_name[len(prefix):].replace("-", "").isdigit()), reverse=True)
    for name in names:
        try:
            with filesystem.open_input_stream(f"{root}/{name}/{STATE_FILE}") as stream:
                state = json.loads(stream.read().decode())
        except (OSError, ValueError):
            continue
        if "parent_run_id" not in state:
            continue
        status = MlflowClient(state.get("tracking_uri", uri)).get_run(state["parent_run_id"]).info.status
        if status == "FINISHED":
            raise SpecError([Problem("", f"--resume: the latest sweep of {spec_name} ({storage}/{name}) finished; "
                                         "there is nothing to resume")])
        return state
    raise SpecError([Problem("", f"--resume: no sweep of {spec_name} to resume in {storage}")])


def _write_state(folder: str, state: dict[str, Any]) -> None:
    import pyarrow.fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(folder)
    filesystem.create_dir(path, recursive=True)
    with filesystem.open_output_stream(f"{path}/{STATE_FILE}") as stream:
        stream.write(json.dumps(state, indent=2, default=str).encode())


def _trial_folder(trial) -> str:
    return trial.trial_id


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def _is_local(storage: str) -> bool:
    return "://" not in storage


# --- the run of Tune -------------------------------------------------------------------------


def _default_concurrency(ray_cluster, sweep) -> int | None:
    """Trials of several Ray Train workers start only when all their workers fit; running more
    trial actors than that only makes them wait (Ray's advice: cap the concurrency)."""
    if sweep.workers == 1:
        return None
    per_trial_cpus = sweep.workers * sweep.resources.cpu
    fits = int(ray_cluster.cpus // per_trial_cpus)
    if sweep.resources.gpu:
        fits = min(fits, int(ray_cluster.gpus // (sweep.workers * sweep.resources.gpu)))
    return max(1, fits)


def _lost_with_their_workers(results) -> bool:
    """Whether some trials ended ERROR and every one of them because Ray lost its actor (a node
    or worker process died), none because of an exception of its own."""
    from ray.exceptions import RayActorError

    errors = [result.error for result in results if result.error is not None]
    return bool(errors) and all(isinstance(error, RayActorError) or isinstance(error.__cause__, RayActorError)
                                for error in errors)


def _replace_callbacks(tuner, progress) -> None:
    """A restored Tuner brings back the callbacks pickled with the sweep; the progress display
    is this session's, so it replaces them (Tune offers no public setter for this)."""
    tuner._local_tuner.get_run_config().callbacks = [progress]


def _child_tags(parent: TrackedRun) -> dict[str, str]:
    tags = parent.client.get_run(parent.run_id).data.tags
    keep = ("trainyard.version", "trainyard.kind", "trainyard.spec", "mlflow.source.name", "mlflow.source.git.commit",
            "trainyard.git_dirty", "trainyard.model", "trainyard.data", "trainyard.env", "trainyard.algorithm")
    return {key: value for key, value in tags.items()
            if key in keep or key.startswith("trainyard.plugin.")} | {"trainyard.kind": "trial"}


def _mark_unfinished(parent: TrackedRun, status: str, error: BaseException | None = None) -> None:
    """The parent and every child still RUNNING get `status` (a resumed sweep sets them back)."""
    for run in parent.client.search_runs([parent.experiment_id], max_results=10000,
                                         filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}' "
                                                       "and attributes.status = 'RUNNING'"):
        parent.client.set_terminated(run.info.run_id, status)
    parent.end(status, error)


def _result(state: dict, parent: TrackedRun, status: str, found, timings: dict[str, float]) -> SweepResult:
    return SweepResult(state["name"], parent.run_id, parent.experiment_id, parent.uri, status, 0.0, "", found,
                       url=parent.ui_url(), timings=timings)


@contextmanager
def _driver_output(path: Path) -> Iterator[Any]:
    """Everything Ray and Tune print during the sweep goes to driver.log, not the terminal."""
    with open(path, "a", encoding="utf-8", buffering=1) as sink, redirect_stdout(sink), redirect_stderr(sink):
        yield sink


def _keep_output(sink, temporary: Path, kept: Path) -> None:
    """Once the sweep has started, its output so far is appended to `kept` (driver.log) and
    `sink`'s file descriptor is pointed there for the rest: a driver killed with SIGKILL leaves
    its log in the sweep's folder, where `--resume` appends to it, and nothing in /tmp."""
    sink.flush()
    kept.parent.mkdir(parents=True, exist_ok=True)
    with open(kept, "ab") as out:
        out.write(temporary.read_bytes())
        out.flush()
        os.dup2(out.fileno(), sink.fileno(), inheritable=False)  # the sink now appends to driver.log
    temporary.unlink()


def _route_ray_logging(sink) -> None:
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logger = logging.getLogger(name)
        logger.handlers = [handler] if name == "ray" else []
        logger.propagate = name != "ray"


@contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """Tune stops gracefully on SIGINT (saving its state for --resume); SIGTERM does the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
