"""MLflow tracking: where runs go, and one run's life from creation to a truthful status.

Layout of a trainyard run in MLflow:
- params: every resolved spec value under its dotted key (`model.params.dropout`);
- tags: `trainyard.version`, `trainyard.plugin.<name>.version`, `trainyard.model` /
  `trainyard.data` / ..., `mlflow.source.git.commit` (of the spec's repository), `trainyard.spec`;
  the experiment: `mlflow.experimentKind` = `custom_model_development` (see experiment_id_for);
- metrics: `train/...`, `val/...`, `test/...` as the components log them, sent by Lightning's
  MLFlowLogger asynchronously and buffered (see BUFFER_SECONDS);
- artifacts: `spec.yaml` (the resolved spec), `checkpoints/best.ckpt`, `model/` (mlflow.pytorch),
  `reports/` (the family's plots), `error.txt` when the run failed.
"""

from __future__ import annotations

import os
import subprocess
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainyard.errors import Problem, SpecError

if TYPE_CHECKING:
    from mlflow.entities import Metric

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
# A synchronous log call into SQLite costs ~5 ms, longer than a small training step. Metrics go
# through MLflow's async queue, which, with buffering, writes whatever arrived in the last
# second as one batch instead of one write per logging call.
BUFFER_SECONDS = "1"
# MLflow's queue hands each second's batch to a pool of 10 threads without waiting for the last
# one, so against a slow server a process keeps up to 10 requests open and a server with more
# trials than it can answer in time sees its queue grow until requests time out (64 trials on one
# server did, docs/scale.md). One sender per process makes it a closed loop: while a request is
# open, the next seconds' batches wait in the process, and the server never holds more
# requests than there are trials.
SENDERS_PER_PROCESS = "1"
# The kind of experiment, in the tag and values of MLflow 3's UI (its experiment-kind enum):
# "custom_model_development" (shown as "Machine learning") or "genai_development".
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"


def tracking_uri(spec_uri: str | None = None) -> str:
    """The spec's tracking.uri, else $MLFLOW_TRACKING_URI, else MLflow 3's own default."""
    return resolve_uri(spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def resolve_uri(uri: str) -> str:
    """Make a relative SQLite path absolute (sqlite:///mlflow.db -> sqlite:////work/dir/mlflow.db).

    MLflow caches its database engine by URI string, so a relative path would keep pointing at
    the folder that was current when it was first used.
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


@contextmanager
def environment_uri_kept() -> Iterator[None]:
    """$MLFLOW_TRACKING_URI as it was before a run: mlflow.set_tracking_uri (configure_mlflow)
    also exports it, and a process that runs an experiment (a notebook, a test) would otherwise
    send its next run without a tracking.uri into this run's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before


def configure_mlflow(uri: str) -> None:
    import mlflow

    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", BUFFER_SECONDS)
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE", SENDERS_PER_PROCESS)
    mlflow.set_tracking_uri(uri)


def check_reachable(uri: str) -> None:
    """Fail fast, before any run exists, when the store cannot be reached."""
    from mlflow import MlflowClient

    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except requests.RequestException as error:
            reason = str(error).splitlines()[0][:160]
            raise SpecError([Problem("tracking.uri", f"cannot reach the tracking server {uri}: {reason}")]) from None
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # noqa: BLE001 - any store error means the URI is unusable
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise SpecError([Problem("tracking.uri", f"cannot use the tracking store {uri}: {reason}")]) from None


def experiment_id_for(client, name: str) -> str:
    """The id of the MLflow experiment called `name`, created if missing; a deleted one is bad input.

    trainyard's experiments are tagged as model-development ones (EXPERIMENT_KIND_TAG), created so
    or tagged when a run is about to go into one that has no kind yet; a kind someone else set
    is kept.
    """
    found = client.get_experiment_by_name(name)
    if found is None:
        return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: MODEL_DEVELOPMENT})
    if found.lifecycle_stage == "deleted":
        raise SpecError([Problem("tracking.experiment", f"experiment {name!r} is deleted; restore it or choose another name")])
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
    return found.experiment_id


def git_tags(directory: Path) -> dict[str, str]:
    """Commit (and whether the tree was dirty) of the git repository holding the spec file."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"mlflow.source.git.commit": commit, "trainyard.git_dirty": str(dirty).lower()}


class TrackedRun:
    """An MLflow run that trainyard owns: created after validation, ended with the true status.

    `TrackedRun.start` creates a run; `TrackedRun.attach` continues one that exists (a resumed sweep's parent, a retried trial's child). Lightning's
    MLFlowLogger writes metrics into it, but never ends it (see `lightning_logger`).
    """

    def __init__(self, uri: str, run_id: str, experiment_id: str, client=None):
        from mlflow import MlflowClient

        configure_mlflow(uri)
        self.uri = uri
        self.client = client or MlflowClient(uri)
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.ended = False

    @classmethod
    def start(cls, uri: str, experiment: str, run_name: str, tags: dict[str, str],
              description: str = "") -> TrackedRun:
        """Create a run in `experiment` (created if missing)."""
        from mlflow import MlflowClient
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_RUN_NOTE

        configure_mlflow(uri)
        client = MlflowClient(uri)
        experiment_id = experiment_id_for(client, experiment)
        extra = {MLFLOW_RUN_NAME: run_name} | ({MLFLOW_RUN_NOTE: description} if description else {})
        # resolve_tags adds MLflow's context tags (user, source), as mlflow.start_run would.
        run = client.create_run(experiment_id, tags=resolve_tags(tags | extra), run_name=run_name)
        return cls(uri, run.info.run_id, experiment_id, client)

    @classmethod
    def attach(cls, uri: str, run_id: str) -> TrackedRun:
        """Continue an existing run: its status goes back to RUNNING until `end` says otherwise."""
        from mlflow import MlflowClient

        configure_mlflow(uri)
        client = MlflowClient(uri)
        info = client.get_run(run_id).info
        if info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        return cls(uri, run_id, info.experiment_id, client)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), 100):  # MLflow accepts 100 params per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """One batch of metrics, queued: MLflow writes it with others; `end` flushes the queue."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=items, synchronous=False)

    def write_metrics(self, items: Sequence[Metric], params: Mapping[str, Any] | None = None) -> None:
        """Write metric values now (not queued), in batches of MLflow's largest size (1,000 values,
        100 of them params at most); `params` go in the first batches."""
        from mlflow.entities import Param

        pending_params = [Param(key, str(value)) for key, value in (params or {}).items()]
        metrics = list(items)
        while pending_params or metrics:
            batch_params, pending_params = pending_params[:100], pending_params[100:]
            room = 1000 - len(batch_params)
            batch_metrics, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(self.run_id, metrics=batch_metrics, params=batch_params)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, value) for key, value in tags.items()])

    def flush(self) -> None:
        import mlflow

        mlflow.flush_async_logging()

    def end(self, status: str, error: BaseException | None = None) -> None:
        """Flush pending metrics and set the final status: FINISHED, FAILED or KILLED.

        A run whose metrics cannot be flushed is not FINISHED: it ends FAILED with the reason in
        error.txt, and the flush error is raised, so the command exits non-zero too.
        """
        if self.ended:
            return
        self.ended = True
        incomplete = None
        try:
            self.flush()
        except Exception as failure:  # noqa: BLE001 - any store error: the run is incomplete
            if status == "FINISHED":  # (a run already FAILED or KILLED keeps its own reason)
                incomplete = failure
                status, error = "FAILED", RuntimeError(f"the final metrics could not be written: "
                                                       f"{type(failure).__name__}: {failure}")
        self._record_error(status, error)
        self.client.set_terminated(self.run_id, status)
        if incomplete is not None:
            raise incomplete  # the run would have FINISHED: the command fails with it

    def _record_error(self, status: str, error: BaseException | None) -> None:
        if error is None or status != "FAILED":
            return
        message = f"{type(error).__name__}: {error}".strip()
        try:
            self.set_tags({"trainyard.error": message.splitlines()[0][:500]})
            self.log_text("".join(traceback.format_exception(error)), "error.txt")
        except Exception:  # noqa: BLE001 - the status below must still be written
            pass

    def log_step_image(self, key: str, image: Any, step: int) -> None:
        """An image in the step-indexed series `key` (MLflow's UI shows a step slider)."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    def log_step_text(self, key: str, text: str, step: int) -> None:
        from trainyard.media import text_artifact

        self.client.log_text(self.run_id, text, text_artifact(key, step))

    def set_run_tag(self, key: str, value: str) -> None:
        self.set_tags({key: value})

    def lightning_logger(self):
        """Lightning's MLFlowLogger, writing into this run asynchronously, never ending it."""
        return lightning_logger(self.uri, self.run_id)

    def ui_url(self) -> str | None:
        if self.uri.startswith(("http://", "https://")):
            from trainyard.ui import run_url

            return run_url(self.uri, self.experiment_id, self.run_id)
        return None


def metric_step(trainer) -> int:
    """The step Lightning records metrics at: training batches that stepped. Under manual
    optimization it differs from `trainer.global_step` (one per optimizer step), so whatever the
    core records beside Lightning's metrics uses this. Lightning keeps it on the fit loop without
    a public name; global_step is the fallback."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return int(getattr(loop, "_batches_that_stepped", trainer.global_step))


def lightning_logger(uri: str, run_id: str | None):
    """An MLFlowLogger for an existing run that leaves ending the run to trainyard.

    Its methods act on rank zero only, as Lightning's loggers do; the other processes of
    multi-device training hold one with `run_id=None`, which never creates a run.
    """
    from pytorch_lightning.loggers import MLFlowLogger
    from pytorch_lightning.utilities import rank_zero_only

    class RunOwnedMLFlowLogger(MLFlowLogger):
        # Lightning ends the run in finalize() after fit, as FINISHED (or FAILED on Ctrl-C),
        # before testing and model logging happen; trainyard ends it itself, truthfully.
        def finalize(self, status: str = "success") -> None:
            return None

        # Images, text and tags during training (trainyard.media); rank zero only, like log_metrics.
        @rank_zero_only
        def log_step_image(self, key: str, image: Any, step: int) -> None:
            self.experiment.log_image(self.run_id, image, key=key, step=step)

        @rank_zero_only
        def log_step_text(self, key: str, text: str, step: int) -> None:
            from trainyard.media import text_artifact

            self.experiment.log_text(self.run_id, text, text_artifact(key, step))

        @rank_zero_only
        def set_run_tag(self, key: str, value: str) -> None:
            self.experiment.set_tag(self.run_id, key, value)

    return RunOwnedMLFlowLogger(tracking_uri=uri, run_id=run_id, synchronous=False)
