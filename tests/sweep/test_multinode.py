"""A real two-node Ray cluster on this machine: a head started with `ray start --head` and a
second node with `ray start --address` (each with its own temporary folder), an MLflow tracking
server on 127.0.0.1, and S3-compatible object storage (moto) for checkpoints. `trainyard sweep
--address` runs trials on both nodes and records every run in the server; the preflight stops a
sweep whose tracking store or checkpoint storage only this machine can reach."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Store, blobs_spec, run_sweep
from helpers import free_port, subprocess_env, wait_for_http
from servers import RAY, start_moto_s3, start_ray_node, wait_for_ray_nodes
from servers import start_process as _start
from servers import stop_process as _stop

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@dataclass
class TwoNodes:
    address: str
    dashboard: str  # the head's job server, for `ray job submit`
    tracking_uri: str
    storage: str
    env: dict[str, str]
    folder: Path


@pytest.fixture(scope="module")
def two_nodes(plugin_site):
    # Ray's socket paths must stay short: a folder directly under /tmp.
    folder = Path(tempfile.mkdtemp(prefix="ty-", dir="/tmp"))
    s3_port, mlflow_port, gcs_port = free_port(), free_port(), free_port()
    env = subprocess_env(plugin_site, plugins="example,cnn") | {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        # Token authentication, as a real cluster has it: every node and driver holds the token.
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    processes = []
    try:
        processes.append(start_moto_s3(s3_port, env, folder / "s3.log"))
        subprocess.run([sys.executable, "-c", "import boto3; boto3.client('s3').create_bucket(Bucket='sweeps')"],
                       env=env, check=True, timeout=60)
        processes.append(_start([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                                 "--port", str(mlflow_port), "--workers", "1",
                                 "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                                 "--artifacts-destination", str(folder / "artifacts")], env, folder / "mlflow.log"))
        wait_for_http(f"http://127.0.0.1:{mlflow_port}/health", timeout=120, process=processes[-1])
        address, dashboard_port = f"127.0.0.1:{gcs_port}", free_port()
        # Two nodes on one machine, each with its agents on ports of their own.
        processes.append(start_ray_node(folder / "head", env, head_port=gcs_port, dashboard_port=dashboard_port))
        wait_for_ray_nodes(address, env, 1, processes[-1:])
        processes.append(start_ray_node(folder / "node2", env, address=address))
        wait_for_ray_nodes(address, env, 2, processes[-2:])
        yield TwoNodes(address, f"http://127.0.0.1:{dashboard_port}", f"http://127.0.0.1:{mlflow_port}",
                       "s3://sweeps/trainyard", env, folder)
    finally:
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


SWEEP = """\
sweep:
  metric: val/acc
  mode: max
  max_concurrent: 2
  space:
    optimizer.lr: {grid: [0.3, 0.1, 0.05, 0.2]}
"""


def test_sweep_on_a_two_node_cluster_records_every_run_in_the_server(tmp_path, two_nodes):
    # Each node has one CPU and each trial takes one: two at a time means one on each node. The
    # trials last a few seconds, longer than a trial process takes to start: with short ones,
    # Tune hands every trial to the first process that is ready, on one node.
    spec = blobs_spec(tmp_path, SWEEP, epochs=3, model_params=", seconds_per_step: 0.15")
    result = run_sweep(spec, "--address", two_nodes.address, "--set", f"tracking.uri={two_nodes.tracking_uri}",
                       "--set", f"sweep.storage_path={two_nodes.storage}", env=two_nodes.env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store(two_nodes.tracking_uri)
    [parent] = store.parents()
    children = store.children(parent.info.run_id)
    assert len(children) == 4 and all(run.info.status == "FINISHED" for run in children)
    assert len({run.data.tags["trainyard.ray.node_id"] for run in children}) == 2
    for run in children:
        assert len(store.history(run.info.run_id, "val/acc")) == 3
        assert [a.path for a in store.client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    assert "metric_vs_params.png" in {a.path for a in store.client.list_artifacts(parent.info.run_id)}
    assert not (tmp_path / "mlflow.db").exists()
    assert f"open {two_nodes.tracking_uri}/#/experiments/" in result.stdout


def test_preflight_stops_a_multi_node_sweep_that_writes_to_this_machine(tmp_path, two_nodes):
    spec = blobs_spec(tmp_path, SWEEP)
    result = run_sweep(spec, "--address", two_nodes.address, env=two_nodes.env)
    assert result.returncode == 2, result.stdout + result.stderr
    store, sweeps = tmp_path / "mlflow.db", tmp_path / "sweeps"
    assert result.stderr.splitlines() == [
        f"blobs-sweep.yaml: tracking.uri: sqlite:///{store} is a file on this machine, but trials on the cluster's "
        "2 nodes write their runs: use an MLflow tracking server (tracking.uri: http://HOST:5000, see deploy/README.md)",
        f"blobs-sweep.yaml: sweep.storage_path: {sweeps} is a folder on this machine, but the cluster's 2 nodes read "
        "and write trial checkpoints: use shared storage (s3://bucket/path, gs://..., or a folder on an NFS mount)",
    ]
    assert not store.exists() and not sweeps.exists()  # nothing written before the stop


def test_sweep_runs_as_a_ray_job(tmp_path, two_nodes):
    """`ray job submit -- trainyard sweep ...`: the driver runs on the head, as a Ray job."""
    spec = blobs_spec(tmp_path, SWEEP.replace("[0.3, 0.1, 0.05, 0.2]", "[0.3, 0.1]"), name="job-sweep", epochs=2)
    trainyard = str(Path(sys.executable).with_name("trainyard"))
    result = subprocess.run(
        [RAY, "job", "submit", "--address", two_nodes.dashboard, "--entrypoint-num-cpus", "0", "--",
         trainyard, "sweep", str(spec), "--set", f"tracking.uri={two_nodes.tracking_uri}",
         "--set", f"sweep.storage_path={two_nodes.storage}"],
        env=two_nodes.env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "job-sweep-" in result.stdout and "2 trials: 2 finished" in result.stdout  # the job's output, streamed
    store = Store(two_nodes.tracking_uri)
    [parent] = [run for run in store.parents() if run.info.run_name.startswith("job-sweep-")]
    assert parent.info.status == "FINISHED" and len(store.children(parent.info.run_id)) == 2
