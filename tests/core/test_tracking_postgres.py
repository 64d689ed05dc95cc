"""The tracking stack of a cluster, on this machine: an MLflow server backed by a real PostgreSQL
(the pgserver wheel's binaries), artifacts in S3 (moto's server), started and stopped by
tests/servers.py, which benchmarks/bench_tracking.py loads too."""

from __future__ import annotations

import os

import pytest

from servers import alive, postgres_unavailable, process_tree, tracking_server
from trainyard.tracking import TrackedRun

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres_available():
    # The test extra (make test) installs the scale extra: a missing PostgreSQL is a broken set-up.
    reason = postgres_unavailable()
    assert reason is None, reason


@pytest.fixture
def restore_mlflow(monkeypatch):
    """TrackedRun points MLflow's process-wide state at the server; put it back afterwards."""
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)


def test_a_run_logged_through_trainyard_lands_in_postgres_and_s3_and_teardown_leaves_no_process(
        tmp_path, postgres_available, restore_mlflow):
    with tracking_server(tmp_path / "server", workers=1, fsync=False) as server:
        tree = set().union(*(process_tree(process.pid) for process in server.processes))
        run = TrackedRun.start(server.uri, "postgres", "pg-run", {"trainyard.model": "example.mlp"})
        for step in range(3):  # the trials' path: queued, sent in batches by MLflow's async queue
            run.log_metrics({"train/loss": 1.0 / (step + 1), "train/acc": step / 4}, step)
        run.log_text("hello", "notes.txt")
        run.end("FINISHED")

        # Read back from the database itself, not through MLflow: it is PostgreSQL, and it holds the run.
        [(version,)] = server.postgres.query("SHOW server_version")
        assert version.startswith("16.")
        assert server.postgres.query("SELECT step, value FROM metrics WHERE run_uuid = %s AND key = %s ORDER BY step",
                                     run.run_id, "train/loss") == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
        assert server.postgres.query("SELECT name, status FROM runs WHERE run_uuid = %s", run.run_id) \
            == [("pg-run", "FINISHED")]
        # The artifact went through the server (--artifacts-destination) into the bucket.
        keys = [item["Key"] for item in server.s3.client().list_objects_v2(Bucket="mlflow")["Contents"]]
        assert keys == [f"mlflow/{run.experiment_id}/{run.run_id}/artifacts/notes.txt"]
    # PostgreSQL and its backends, moto, the MLflow server and its workers: all gone.
    assert len(tree) >= 4 and not alive(tree)
