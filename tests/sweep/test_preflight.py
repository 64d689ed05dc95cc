"""What must hold before a sweep launches: shared storage on a cluster, room for a trial.

The real two-node case is in test_multinode.py; here every rule, on clusters described by hand.
"""

from __future__ import annotations

import pytest

from trainyard.sweep.cluster import Cluster, Node, artifact_problems, on_network_filesystem, preflight


def cluster(*addresses: str, cpus: float = 2, gpus: float = 0, local: bool = True) -> Cluster:
    return Cluster([Node(f"n{i}", address, cpus, gpus) for i, address in enumerate(addresses)], local)


def paths(problems) -> list[str]:
    return [problem.path for problem in problems]


def test_one_node_may_use_a_local_store_and_folder(tmp_path):
    problems, warnings = preflight(cluster("10.0.0.1"), f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path), 1, 1, 0)
    assert problems == [] and warnings == []


@pytest.mark.parametrize("uri", ["sqlite:////work/mlflow.db", "file:///work/mlruns", "/work/mlruns"])
def test_several_nodes_need_a_tracking_server(uri):
    problems, _ = preflight(cluster("10.0.0.1", "10.0.0.2"), uri, "s3://bucket/sweeps", 1, 1, 0)
    assert paths(problems) == ["tracking.uri"]
    assert problems[0].message.startswith(f"{uri} is a file on this machine, but trials on the cluster's 2 nodes")


def test_a_loopback_server_is_refused_only_when_nodes_are_on_other_machines():
    same_machine = cluster("192.0.2.2", "192.0.2.2")
    assert preflight(same_machine, "http://127.0.0.1:5000", "s3://b/s", 1, 1, 0)[0] == []
    problems, _ = preflight(cluster("10.0.0.1", "10.0.0.2"), "http://127.0.0.1:5000", "s3://b/s", 1, 1, 0)
    assert paths(problems) == ["tracking.uri"] and "loopback" in problems[0].message
    assert preflight(cluster("10.0.0.1", "10.0.0.2"), "http://mlflow.internal:5000", "gs://b/s", 1, 1, 0)[0] == []


def test_several_nodes_need_shared_checkpoint_storage(tmp_path):
    problems, _ = preflight(cluster("10.0.0.1", "10.0.0.2"), "http://mlflow:5000", str(tmp_path), 1, 1, 0)
    assert paths(problems) == ["sweep.storage_path"]
    assert "use shared storage (s3://bucket/path, gs://..., or a folder on an NFS mount)" in problems[0].message


def test_a_folder_on_a_network_filesystem_counts_as_shared(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/vda / ext4 rw 0 0\n"
                      "server:/export /mnt/shared nfs4 rw,relatime 0 0\n"
                      "tmpfs /mnt/shared/scratch tmpfs rw 0 0\n")
    assert on_network_filesystem("/mnt/shared/sweeps", str(mounts))
    assert on_network_filesystem("/mnt/shared", str(mounts))
    assert not on_network_filesystem("/mnt/shared/scratch/x", str(mounts))  # the deepest mount wins
    assert not on_network_filesystem("/mnt/sharedother", str(mounts))
    assert not on_network_filesystem("/home/me/sweeps", str(mounts))
    assert not on_network_filesystem("/x", str(tmp_path / "no-such-file"))


def test_a_server_that_keeps_artifacts_in_its_own_folder_is_refused_on_a_cluster():
    two = cluster("10.0.0.1", "10.0.0.2")
    assert paths(artifact_problems(two, "/srv/mlflow/artifacts/1")) == ["tracking.uri"]
    assert paths(artifact_problems(two, "file:///srv/mlflow/artifacts/1")) == ["tracking.uri"]
    assert artifact_problems(two, "mlflow-artifacts:/1") == []
    assert artifact_problems(two, "s3://bucket/mlflow/1") == []
    assert artifact_problems(cluster("10.0.0.1"), "/srv/mlflow/artifacts/1") == []


def test_a_trial_must_fit_on_a_local_instance():
    problems, _ = preflight(cluster("h", cpus=2), "sqlite:///x.db", "/tmp/s", 1, 4, 0)
    assert paths(problems) == ["sweep.resources.cpu"] and "no node has 4 CPUs" in problems[0].message
    problems, _ = preflight(cluster("h", cpus=2), "sqlite:///x.db", "/tmp/s", 3, 1, 0)
    assert paths(problems) == ["sweep.workers"]
    assert problems[0].message == "a trial needs 3 workers of 1 CPU, and the cluster has 2 CPUs"
    problems, _ = preflight(cluster("h", cpus=2), "sqlite:///x.db", "/tmp/s", 1, 1, 1)
    assert paths(problems) == ["sweep.resources.gpu"] and "no node has a GPU" in problems[0].message


def test_a_cluster_that_may_grow_only_gets_a_warning():
    problems, warnings = preflight(cluster("10.0.0.1", "10.0.0.2", cpus=1, local=False), "http://m:5000",
                                   "s3://b/s", 4, 1, 1)
    assert problems == []
    assert [w.split(":")[0] for w in warnings] == ["sweep.workers", "sweep.resources.gpu"]


def test_a_cluster_of_one_remote_node_needs_a_server_and_shared_storage_too(tmp_path):
    remote = Cluster([Node("n0", "10.0.0.7", 2, 0)], local=False, driver_address="10.0.0.1")
    problems, _ = preflight(remote, f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path), 1, 1, 0)
    assert paths(problems) == ["tracking.uri", "sweep.storage_path"]
    assert "trials on the cluster's node (another machine) write their runs" in problems[0].message
    assert artifact_problems(remote, str(tmp_path)) != []
    # The same node on this machine (a local Ray instance, or `ray start` here) may use both.
    here = Cluster([Node("n0", "10.0.0.1", 2, 0)], local=False, driver_address="10.0.0.1")
    assert preflight(here, f"sqlite:///{tmp_path}/mlflow.db", str(tmp_path), 1, 1, 0) == ([], [])
