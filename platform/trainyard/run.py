"""`trainyard run`: a validated experiment, recorded as one MLflow run.

    Experiment --build.build()--> data module + model --train.fit_and_test()--> record.record_trained()
    Experiment --build.build()--> environment + algorithm --algorithm.run()--> record.make_reports()

The phases live in build.py, train.py and record.py, which sweep trials use too; this module
adds what belongs to one command: the MLflow run's creation and truthful end, and signals.

Order matters for "nothing half-written": everything that can reject the input (params, shapes,
init_from, Trainer settings, the tracking store) is done before the MLflow run is created.
The run then always ends with a true status: FINISHED, FAILED (error recorded) or KILLED.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import trainyard
from trainyard.build import Built, build, make_trainer
from trainyard.environments import GYMNASIUM
from trainyard.record import make_reports, record_trained
from trainyard.registry import get_registry
from trainyard.tracking import (TrackedRun, check_reachable, environment_uri_kept, git_tags, lightning_logger,
                                tracking_uri)
from trainyard.train import fit_and_test
from trainyard.validate import Experiment

__all__ = ["Built", "RunInterrupted", "RunResult", "build", "make_trainer", "run_experiment"]

log = logging.getLogger(__name__)


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived during a run. A BaseException, like KeyboardInterrupt, so that
    no `except Exception` in user code swallows it, and Lightning re-raises it after cleanup."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


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
    with tempfile.TemporaryDirectory(prefix="trainyard-") as tmp, _torch_threads_kept(), environment_uri_kept():
        workdir = Path(tmp)
        built = build(experiment, workdir, store=uri)
        trainer = make_trainer(experiment, workdir / "checkpoints", callbacks, quiet, built=built) \
            if built.model is not None else None
        if trainer is not None and not launched_as_rank_zero():
            # With devices > 1, Lightning's launcher runs this command again once per extra
            # device. Those processes train in step with rank 0, which alone records the run.
            trainer.loggers = [lightning_logger(uri, run_id=None)]
            fit_and_test(built, trainer)
            return None
        check_reachable(uri)
        with _signals_interrupt(trainer) as guard:
            tracked = guard.tracked = TrackedRun.start(uri, spec.tracking.experiment or spec.name,
                                                       spec.tracking.run_name or spec.name, _tags(experiment),
                                                       spec.description)
            try:
                tracked.log_params(experiment.flat_params())
                tracked.log_text(yaml.safe_dump(experiment.resolved(), sort_keys=False), "spec.yaml")
                if built.notes:
                    tracked.set_tags({"trainyard.init": "; ".join(built.notes)[:500]})
                if trainer is not None:
                    metrics = _train(experiment, built, trainer, tracked, workdir)
                else:
                    metrics = _run_algorithm(built, tracked, workdir)
                if trainer is None:  # a trained model's reports were made before it was exported
                    make_reports(experiment, built.algorithm, None, built.env, None, metrics, tracked,
                                 workdir / "reports")
            except RunInterrupted as stop:
                _ignore_signals()
                tracked.end("KILLED")
                raise stop
            except BaseException as error:
                _ignore_signals()
                if guard.signum is not None:  # the ranks were killed for a signal: this error is its echo
                    tracked.end("KILLED")
                    raise RunInterrupted(guard.signum) from None
                tracked.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED", error)
                raise
            _ignore_signals()
            tracked.end("FINISHED")
    return RunResult(tracked.run_id, tracked.experiment_id, uri, "FINISHED", metrics,
                     time.perf_counter() - started, tracked.ui_url(), built.notes)


def _train(experiment: Experiment, built: Built, trainer, tracked: TrackedRun, workdir: Path) -> dict[str, float]:
    trainer.loggers = [tracked.lightning_logger()]
    trained = fit_and_test(built, trainer)
    return record_trained(experiment, built, trainer, trained, tracked, workdir, log_metrics=tracked.log_metrics)


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


@contextmanager
def _torch_threads_kept() -> Iterator[None]:
    """trainer.threads is the run's: a process that runs an experiment (a notebook, a test) gets
    its own thread count back afterwards."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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


# After SIGINT or SIGTERM, the seconds the run has to end itself before the watchdog ends it.
INTERRUPT_GRACE = 5.0


@dataclass
class _Guard:
    tracked: TrackedRun | None = None  # the run to mark KILLED if the process must be ended
    signum: int | None = None  # the signal received, once the watchdog has seen it
    finished: threading.Event = field(default_factory=threading.Event)


@contextmanager
def _signals_interrupt(trainer=None) -> Iterator[_Guard]:
    """Turn SIGINT and SIGTERM into RunInterrupted while the run is live (main thread only).

    Python runs a signal handler only when the main thread is back in Python code, and with
    devices > 1 it may be waiting in C++ for the other processes to meet it (start-up can take
    seconds) or in a collective. So a watchdog thread, woken through the signal wakeup fd, kills
    the data-parallel ranks this process launched at once, and if the run has not ended itself
    INTERRUPT_GRACE seconds later, marks it KILLED and ends the process: nothing of the run
    outlives a Ctrl-C or a SIGTERM by more than that."""
    guard = _Guard()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return

    def interrupt(signum, _frame):
        _kill_launched_ranks(trainer)
        raise RunInterrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    watchdog = threading.Thread(target=_watch, args=(read_end, trainer, guard), name="trainyard-signals", daemon=True)
    watchdog.start()
    try:
        yield guard
    finally:
        guard.finished.set()
        signal.set_wakeup_fd(previous_fd)
        os.close(write_end)  # the watchdog reads end-of-file and returns
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(read_end: int, trainer, guard: _Guard) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as wakeups:
        while True:
            received = wakeups.read(1)  # a signal's number, written by Python's C-level handler
            if not received:
                return  # the run is over: its context closed the other end
            if received[0] in (signal.SIGINT, signal.SIGTERM):
                break
        signum = guard.signum = received[0]
        _kill_launched_ranks(trainer)
        if guard.finished.wait(INTERRUPT_GRACE):
            return
    # The main thread is still blocked (in C++, waiting for ranks that are gone): end it here.
    if guard.tracked is not None:
        with suppress(Exception):
            guard.tracked.end("KILLED")
    sys.stderr.write(f"interrupted by {signal.Signals(signum).name}; the MLflow run is marked KILLED\n")
    sys.stderr.flush()
    os._exit(128 + signum)


def _kill_launched_ranks(trainer) -> None:
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    if launcher is None or not getattr(launcher, "procs", None):  # not Lightning's subprocess launcher
        return
    # Lightning's observer thread SIGKILLs this process when a rank dies, which would leave the
    # run RUNNING in MLflow: it is told to watch nothing first (it has no public switch).
    for thread in threading.enumerate():
        if thread.name == "child-process-observer" and hasattr(thread, "_child_processes"):
            thread._child_processes = []
    launcher.kill(signal.SIGKILL)


def _ignore_signals() -> None:
    """While the run's final status is written, a second Ctrl-C must not cut it short."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

