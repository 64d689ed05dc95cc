"""Joining Ray, and the checks that must pass before a sweep launches anything on it.

Without an address (and without RAY_ADDRESS, which `ray job submit` sets) a local Ray instance
starts inside this process's session; with one, the sweep joins that cluster. Then, before any
trial exists:
- on a cluster of more than one node, everything trials write must be reachable from every
  node: the tracking store (not a SQLite file or a local folder: a tracking server), the
  tracking server's artifact store, and the checkpoint storage (not a folder on this machine:
  object storage, or a folder on a network filesystem);
- the cluster must have room for one trial (its workers' CPUs and GPUs).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from trainyard.errors import Problem, SpecError

# Filesystems whose folders every node of a cluster can mount (/proc/mounts fstype).
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "ceph", "glusterfs", "beegfs",
                       "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.juicefs", "fuse.mountpoint-s3", "efs")
LOOPBACK = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class Cluster:
    nodes: list[Node]
    local: bool  # a Ray instance started by this command, not a cluster it joined
    driver_address: str | None = None  # this machine's address as Ray sees it (None: unknown)

    @property
    def other_machines(self) -> bool:
        """Whether some node is another machine than this one: nodes at several addresses, or
        one node at an address that is not this machine's (joined with --address)."""
        addresses = {node.address for node in self.nodes}
        return len(addresses) > 1 or (self.driver_address is not None and bool(addresses - {self.driver_address}))

    @property
    def elsewhere(self) -> bool:
        """Whether trials write from more than this one process tree: several nodes (even on one
        machine, their files are not each other's), or a node on another machine."""
        return len(self.nodes) > 1 or self.other_machines

    @property
    def cpus(self) -> float:
        return sum(node.cpus for node in self.nodes)

    @property
    def gpus(self) -> float:
        return sum(node.gpus for node in self.nodes)


def connect(address: str | None, env_vars: dict[str, str]) -> Cluster:
    """Start a local Ray instance (no address) or join a cluster. Raises SpecError if unreachable."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    # Trials run in the driver's working folder (relative data paths in a spec keep working),
    # and load the same plugins as the driver.
    runtime_env = {"env_vars": {"RAY_CHDIR_TO_TRIAL_DIR": "0"} | env_vars}
    options = dict(log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env)
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, ValueError, RuntimeError) as error:
        where = address or "a local Ray instance"
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise SpecError([Problem("--address" if address else "", f"cannot start or join {where}: {reason}")]) from None
    nodes = [Node(n["NodeID"], n["NodeManagerAddress"], n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0))
             for n in ray.nodes() if n.get("Alive")]
    return Cluster(nodes, local=not address, driver_address=ray.util.get_node_ip_address())


def preflight(cluster: Cluster, tracking_uri: str, storage_path: str, workers: int, cpu: float,
              gpu: float) -> tuple[list[Problem], list[str]]:
    """Problems that stop the sweep before it launches, and warnings worth a line."""
    problems: list[Problem] = []
    warnings: list[str] = []
    if cluster.elsewhere:
        problems += _shared_by_every_node(cluster, tracking_uri, storage_path)
    need = f"{workers} worker{'s' if workers > 1 else ''} of {cpu:g} CPU" + (f" and {gpu:g} GPU" if gpu else "")
    short = []
    if max((node.cpus for node in cluster.nodes), default=0) < cpu:
        short.append(("sweep.resources.cpu", f"a trial needs {need}, and no node has {cpu:g} CPUs"))
    elif cluster.cpus < workers * cpu:
        short.append(("sweep.workers", f"a trial needs {need}, and the cluster has {cluster.cpus:g} CPUs"))
    if gpu and max((node.gpus for node in cluster.nodes), default=0) < gpu:
        short.append(("sweep.resources.gpu", f"a trial needs {need}, and "
                                             f"{'no node has a GPU' if not cluster.gpus else 'no node has enough'}"))
    for path, message in short:
        # A cluster may grow (an autoscaler adds nodes on demand): only a local instance is final.
        if cluster.local:
            problems.append(Problem(path, message))
        else:
            warnings.append(f"{path}: {message} now; trials wait until the cluster grows")
    return problems, warnings


def artifact_problems(cluster: Cluster, artifact_location: str) -> list[Problem]:
    """On a multi-node cluster, the experiment's artifacts must not go to a folder on one machine
    (a tracking server started without artifact serving gives clients its local path)."""
    if cluster.elsewhere and urlparse(artifact_location).scheme in ("", "file"):
        return [Problem("tracking.uri", f"the tracking server stores artifacts in {artifact_location}, a folder "
                                        "other nodes cannot write: serve artifacts through the server "
                                        "(mlflow server --artifacts-destination ...) or use an s3:// artifact root")]
    return []


def _shared_by_every_node(cluster: Cluster, tracking_uri: str, storage_path: str) -> list[Problem]:
    count = len(cluster.nodes)
    nodes = f"cluster's {count} nodes" if count > 1 else "cluster's node (another machine)"
    problems = []
    parsed = urlparse(tracking_uri)
    if parsed.scheme in ("", "file", "sqlite"):
        problems.append(Problem("tracking.uri", f"{tracking_uri} is a file on this machine, but trials on the "
                                                f"{nodes} write their runs: use an MLflow tracking "
                                                "server (tracking.uri: http://HOST:5000, see deploy/README.md)"))
    elif parsed.hostname in LOOPBACK and cluster.other_machines:
        problems.append(Problem("tracking.uri", f"{tracking_uri} is this machine's loopback address, which the "
                                                "cluster's other machines cannot reach: use an address they can"))
    if is_local_folder(storage_path) and not on_network_filesystem(storage_path):
        problems.append(Problem("sweep.storage_path", f"{storage_path} is a folder on this machine, but the "
                                                      f"{nodes} read and write trial checkpoints: "
                                                      "use shared storage (s3://bucket/path, gs://..., or a "
                                                      "folder on an NFS mount)"))
    return problems


def is_local_folder(storage_path: str) -> bool:
    return urlparse(storage_path).scheme in ("", "file")


def on_network_filesystem(path: str, mounts: str = "/proc/mounts") -> bool:
    """Whether `path` lies on a filesystem that other machines mount too (NFS, Lustre, ...)."""
    target = os.path.realpath(urlparse(path).path if path.startswith("file:") else path)
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return False
    best, fstype = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, fields[2]
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("nfs")
