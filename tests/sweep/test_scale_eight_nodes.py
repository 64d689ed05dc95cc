"""Scale: a Ray cluster of 8 nodes on this machine, a PostgreSQL-backed tracking server, 200
trials, and two nodes killed midway.

- The cluster: `ray start`, a head and 7 nodes, each with one logical CPU and a custom resource
  naming it (`node0` ... `node7`), all sharing this machine's cores.
- The store: an MLflow server on a real PostgreSQL 16 (the pgserver wheel), artifacts and trial
  checkpoints in S3 (moto's server): tests/servers.py.
- The sweep: 200 trials of the example plugin's MLP (3 epochs of 10 steps, a checkpoint at every
  validation), ASHA stopping the poorer ones, two retries per trial.
- Midway, the raylets of two nodes that are running trials are killed with SIGKILL. Their trials
  are retried from their last checkpoints on the surviving nodes.

At the end every trial has exactly one child run, FINISHED (ASHA's stopped ones tagged so), with
a metric history that has no gap and no repeated step across its retry; the parent names the
best trial, computed here again from the children. The test prints trials per minute, the
tracking server's requests per second (from its access log) and the p50/p99 latency of a
log call made to it during the sweep.

Not in `make test` (it takes about ten minutes on 2 cores): `make test-scale`, which .ci/run runs
after `make test`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Store, blobs_spec, kill_session, start_sweep, wait_until
from helpers import free_port, subprocess_env
from servers import process_tree, ray_nodes, start_ray_node, stop_process, tracking_server, wait_for_ray_nodes

pytestmark = [pytest.mark.scale, pytest.mark.slow, pytest.mark.timeout(3600)]

NODES, TRIALS, EPOCHS = 8, 200, 3
STEPS_PER_EPOCH = 10  # the blobs spec: 300 samples in batches of 30
SWEEP = f"""\
sweep:
  metric: val/loss
  mode: min
  num_samples: {TRIALS}
  max_failures: 2
  scheduler: {{name: asha, grace_period: 1, reduction_factor: 2}}
  space:
    optimizer.lr: {{loguniform: [0.01, 0.5]}}
"""


@dataclass
class EightNodes:
    address: str
    tracking_uri: str
    access_log: Path
    storage: str
    env: dict[str, str]
    nodes: dict[str, object]  # node0 ... node7 -> its `ray start` process


@pytest.fixture(scope="module")
def eight_nodes(plugin_site):
    # Ray's socket paths must stay short: a folder directly under /tmp.
    folder = Path(tempfile.mkdtemp(prefix="ty8-", dir="/tmp"))
    try:
        with tracking_server(folder / "tracking", workers=2, bucket="sweeps", fsync=False) as server:
            # Token authentication (Ray's default for `ray start`): every node and driver holds the token.
            env = subprocess_env(plugin_site, plugins="example") | server.s3.env | {
                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
            address, nodes = f"127.0.0.1:{(port := free_port())}", {}
            try:
                nodes["node0"] = start_ray_node(folder / "node0", env, head_port=port, resources={"node0": 1})
                wait_for_ray_nodes(address, env, 1, list(nodes.values()))
                for index in range(1, NODES):
                    name = f"node{index}"
                    nodes[name] = start_ray_node(folder / name, env, address=address, resources={name: 1})
                wait_for_ray_nodes(address, env, NODES, list(nodes.values()))
                yield EightNodes(address, server.uri, server.log, "s3://sweeps/checkpoints", env, nodes)
            finally:
                for process in reversed(nodes.values()):
                    stop_process(process, timeout=10)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class LogCallLatency(threading.Thread):
    """A client that logs a batch of metrics into a run of its own twice a second while the sweep
    runs, as a trial's reports do: the latency a trial's logging sees."""

    def __init__(self, uri: str):
        super().__init__(daemon=True)
        from mlflow import MlflowClient

        self.client = MlflowClient(uri)
        experiment = self.client.create_experiment("latency-probe")
        self.run_id = self.client.create_run(experiment).info.run_id
        self.seconds: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        from mlflow.entities import Metric

        step = 0
        while not self.stopped.wait(0.5):
            metrics = [Metric(f"probe/{i}", float(step), int(time.time() * 1000), step) for i in range(10)]
            started = time.perf_counter()
            self.client.log_batch(self.run_id, metrics=metrics)
            self.seconds.append(time.perf_counter() - started)
            step += 1


def requests_in(access_log: Path, since: int) -> int:
    """HTTP requests the tracking server answered, from its access log (past byte `since`)."""
    with open(access_log, "rb") as log:
        log.seek(since)
        return len(re.findall(rb'"(?:GET|POST|PUT|PATCH|DELETE) /', log.read()))


def kill_raylet(node) -> int:
    """SIGKILL the raylet of a `ray start` node; its pid."""
    for pid in process_tree(node.pid):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name == "raylet":
            os.kill(pid, signal.SIGKILL)
            return pid
    raise AssertionError(f"no raylet under {node.pid}")


def test_two_hundred_trials_on_eight_nodes_survive_two_nodes_killed(tmp_path, eight_nodes):
    spec = blobs_spec(tmp_path, SWEEP, name="scale-sweep", epochs=EPOCHS, model_params=", seconds_per_step: 0.03")
    store = Store(eight_nodes.tracking_uri)
    names = {node["NodeID"]: next(key for key in node["Resources"] if key in eight_nodes.nodes)
             for node in ray_nodes(eight_nodes.address, eight_nodes.env)}
    probe = LogCallLatency(eight_nodes.tracking_uri)
    log_start = eight_nodes.access_log.stat().st_size
    started = time.monotonic()
    process = start_sweep(spec, "--address", eight_nodes.address, "--set", f"tracking.uri={eight_nodes.tracking_uri}",
                          "--set", f"sweep.storage_path={eight_nodes.storage}", env=eight_nodes.env)
    probe.start()
    try:
        # Midway: two nodes (not the head) each running a trial that has checkpointed.
        def victims():
            if len(store.children()) < TRIALS // 2:
                return None
            busy = {names[run.data.tags["trainyard.ray.node_id"]] for run in store.children()
                    if run.info.status == "RUNNING" and store.history(run.info.run_id, "val/loss")}
            busy.discard("node0")
            return sorted(busy)[:2] if len(busy) >= 2 else None

        killed = wait_until(victims, timeout=1200, what="half the trials, two nodes running checkpointed trials",
                            process=process, interval=1)
        for name in killed:
            kill_raylet(eight_nodes.nodes[name])
        out, err = process.communicate(timeout=1800)
    finally:
        probe.stopped.set()
        kill_session(process)
    seconds = time.monotonic() - started
    requests = requests_in(eight_nodes.access_log, log_start)
    latencies = sorted(probe.seconds)
    p50, p99 = statistics.median(latencies), latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(f"\n{TRIALS} trials on {NODES} nodes, {len(killed)} killed midway ({', '.join(killed)}), in {seconds:.0f} s: "
          f"{TRIALS / seconds * 60:.1f} trials/min; tracking server {requests / seconds:.1f} requests/s; "
          f"log_batch latency during the sweep p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms ({len(latencies)} calls)")
    assert process.returncode == 0, out[-3000:] + err[-3000:]

    [parent] = [run for run in store.parents() if run.info.run_name.startswith("scale-sweep-")]
    children = store.children(parent.info.run_id)
    trial_ids = [run.data.tags["trainyard.trial_id"] for run in children]
    summary = out[out.rfind("trial       status"):] if "trial       status" in out else out[-3000:]
    assert len(children) == TRIALS and len(set(trial_ids)) == TRIALS, summary[-6000:] + err[-3000:]  # none lost or twice
    assert all(run.info.status == "FINISHED" for run in children)
    stopped = [run for run in children if run.data.tags.get("trainyard.trial.stopped_early") == "true"]
    retried = [run for run in children if run.data.tags["trainyard.trial.attempt"] != "1"]
    # The kill hit trials (which ones is a race: one may end its last epoch as its node dies),
    # and each retried trial ended on a surviving node.
    assert retried and all(names[run.data.tags["trainyard.ray.node_id"]] not in killed for run in retried)
    epoch_ends = [STEPS_PER_EPOCH * epoch + STEPS_PER_EPOCH - 1 for epoch in range(EPOCHS)]
    best_scores = {}
    for run in children:
        # Each validation once, in order, from the first epoch (a stopped trial: a prefix).
        validations = store.history(run.info.run_id, "val/loss")
        assert [step for step, _ in validations] == epoch_ends[:len(validations)], run.data.tags["trainyard.trial_id"]
        assert len(validations) == EPOCHS or run in stopped
        losses = [step for step, _ in store.history(run.info.run_id, "train/loss")]
        assert losses == sorted(set(losses))
        best_scores[run.info.run_id] = min(value for _, value in validations)
    assert parent.data.tags["trainyard.best_run_id"] == min(best_scores, key=best_scores.get)
    counts = parent.data.metrics
    assert counts["sweep/finished"] + counts["sweep/stopped_early"] == TRIALS and counts["sweep/failed"] == 0
    print(f"{len(retried)} trials retried on surviving nodes, {len(stopped)} stopped early by ASHA, "
          f"{TRIALS - len(stopped)} ran all {EPOCHS} epochs")
