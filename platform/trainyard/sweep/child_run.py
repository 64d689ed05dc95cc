"""A trial's MLflow child run: found by trial id, continued after a retry, written exactly once.

Every trial records one run nested under the sweep's parent run (the tag `mlflow.parentRunId`),
in the parent's experiment. The trial's rank-0 process writes it, wherever Ray placed it.

Metric history must stay continuous when a trial is retried from a checkpoint (its worker died,
the driver was killed and the sweep resumed, or PBT made it continue from another trial's
checkpoint). Two rules give that:
- metrics are held in the trial and written when a checkpoint is taken, just before the
  checkpoint is reported, so what MLflow holds never runs far ahead of what a retry restores;
- a run that is continued never writes a step it already holds: the highest step per metric
  (its watermark) is read when the run is reattached, and anything at or below it is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from trainyard.tracking import TrackedRun

TRIAL_ID_TAG = "trainyard.trial_id"
ATTEMPT_TAG = "trainyard.trial.attempt"
STOPPED_TAG = "trainyard.trial.stopped_early"
LOOK_UP = object()  # ChildRun.open's default: find the trial's run in the store


def find_child(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The child run of `trial_id` under the parent, or None."""
    found = client.search_runs(
        [experiment_id], max_results=1,
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'")
    return found[0] if found else None


class ChildRun:
    """The child run of one trial, with the metric buffer described in the module docstring."""

    def __init__(self, tracked: TrackedRun, watermark: dict[str, int], mutated: dict[str, Any] | None = None,
                 params: Mapping[str, Any] | None = None):
        self.tracked = tracked
        self.watermark = watermark
        self.mutated = mutated or {}  # spec values PBT changed since the run's params were logged
        self.pending: list = []
        self.pending_params = dict(params or {})  # written with the first metrics (see open)

    @property
    def run_id(self) -> str:
        return self.tracked.run_id

    @classmethod
    def open(cls, uri: str, experiment_id: str, parent_run_id: str, trial_id: str, run_name: str,
             params: Mapping[str, Any], tags: dict[str, str], existing=LOOK_UP,
             params_with_metrics: bool = False) -> ChildRun:
        """Continue the trial's child run if it exists (a retry), else create it. `existing` is what
        the caller found when it looked the run up already (one query per trial counts, for short
        trials): the run, or None. `params_with_metrics`: a new run's params are written in the
        same request as its first metrics, one write fewer per trial (an algorithm trial, which
        commits once; its sampled values are in its tags from the start)."""
        from mlflow import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        client = MlflowClient(uri)
        if existing is LOOK_UP:
            existing = find_child(client, experiment_id, parent_run_id, trial_id)
        if existing is None:
            # The parent holds the provenance tags (user, source, commit); the child copies them.
            run = client.create_run(experiment_id, run_name=run_name, tags=tags | {
                TRIAL_ID_TAG: trial_id, ATTEMPT_TAG: "1", MLFLOW_PARENT_RUN_ID: parent_run_id,
                MLFLOW_RUN_NAME: run_name})
            tracked = TrackedRun(uri, run.info.run_id, experiment_id, client)
            if params_with_metrics:
                return cls(tracked, {}, params=params)
            tracked.log_params(dict(params))
            return cls(tracked, {})
        tracked = TrackedRun.attach(uri, existing.info.run_id)
        attempt = int(existing.data.tags.get(ATTEMPT_TAG, "1")) + 1
        tracked.set_tags({key: value for key, value in tags.items() if key.startswith("trainyard.ray.")}
                         | {ATTEMPT_TAG: str(attempt)})
        watermark = {key: max(m.step for m in client.get_metric_history(tracked.run_id, key))
                     for key in existing.data.metrics}
        logged = existing.data.params
        missing = {key: value for key, value in params.items() if key not in logged}
        if missing:  # a run the driver recorded for a trial that failed before it could open one
            tracked.log_params(missing)
        changed = {key: value for key, value in params.items() if key in logged and logged[key] != str(value)}
        if changed:
            # Params are immutable in MLflow: PBT's mutations are kept as a tag, and (by the
            # trial, from the step where they take effect) as pbt/<key> metrics.
            tracked.set_tags({"trainyard.pbt.config": ", ".join(f"{k}={v}" for k, v in changed.items())[:500]})
        return cls(tracked, watermark, changed)

    def buffer(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(key, float(value), now, step) for key, value in metrics.items()]

    def commit(self) -> None:
        """Write the held metrics, minus steps the run already holds (and params still held)."""
        items = [m for m in self.pending if m.step > self.watermark.get(m.key, -1)]
        self.pending = []
        if self.pending_params:
            params, self.pending_params = self.pending_params, {}
            self.tracked.write_metrics(items, params)
        elif items:
            self.tracked.write_metrics(items)

    def end(self, status: str, error: BaseException | None = None) -> None:
        self.commit()
        self.tracked.end(status, error)


def finish_for_trial(uri: str, run_id: str | None, experiment_id: str, parent_run_id: str, trial_id: str,
                     status: str, stopped_early: bool = False, error: str | None = None,
                     values: Mapping[str, Any] | None = None) -> None:
    """Called by the driver when Tune ends a trial: a child run still RUNNING gets the status its
    trial could not set itself (stopped by the scheduler, or its process died). A trial that
    failed before its process opened a child run (its node was lost as it started) gets one
    here, FAILED, with its sampled `values` as params: no trial is missing from the parent."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    client = MlflowClient(uri)
    run = client.get_run(run_id) if run_id else find_child(client, experiment_id, parent_run_id, trial_id)
    tags = {}
    if stopped_early:
        tags[STOPPED_TAG] = "true"
    if error is not None:
        tags["trainyard.error"] = error.strip().splitlines()[0][:500] if error.strip() else "the trial failed"
    if run is None:
        if status != "FAILED":
            return
        run = client.create_run(experiment_id, run_name=f"trial-{trial_id}", tags=tags | {
            TRIAL_ID_TAG: trial_id, ATTEMPT_TAG: "1", MLFLOW_PARENT_RUN_ID: parent_run_id, "trainyard.kind": "trial"})
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in (values or {}).items()])
    elif run.info.status != "RUNNING":
        return
    else:
        # A run whose params were to go with its metrics (params_with_metrics) and whose process
        # died first still gets its sampled values.
        params = [Param(k, str(v)) for k, v in (values or {}).items()] if not run.data.params else []
        if tags or params:
            client.log_batch(run.info.run_id, params=params, tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run.info.run_id, status)
