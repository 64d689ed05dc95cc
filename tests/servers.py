"""Throwaway servers on 127.0.0.1 for tests and benchmarks: processes started in sessions of
their own and stopped by process group, S3-compatible object storage (moto's server), a
PostgreSQL server, an MLflow tracking server over both, and Ray nodes (`ray start`).

    from servers import tracking_server
    with tracking_server(folder, workers=4) as server:
        ...  # server.uri = http://127.0.0.1:PORT, backed by PostgreSQL, artifacts in S3

PostgreSQL comes from the `pgserver` wheel (the `scale` extra), which ships PostgreSQL 16's
binaries inside the package: `make test` needs nothing from apt. Only its binaries are used
(initdb, postgres): the server here listens on TCP on a free loopback port, keeps its data in a
temporary folder deleted afterwards, and runs as this test's child. PostgreSQL refuses to run as
root, so under root it runs as `nobody`.

Nothing here is a mock: the database is a real PostgreSQL, the object store speaks S3 over HTTP.
benchmarks/bench_tracking.py puts tests/ on its path to import this module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from helpers import free_port, wait_for_http

# The credentials moto accepts (any), and the region MLflow's S3 client needs.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}
# PostgreSQL's server refuses root; this account exists on every Debian system.
UNPRIVILEGED = ("nobody", "nogroup")


def start_process(command: list[str], env: dict[str, str], log: Path, **options) -> subprocess.Popen:
    """`command` in a session of its own, so that stopping it stops every process it started."""
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, **options)


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group (`sig`, then SIGKILL after `timeout`), reap the leader, and kill
    whatever it had started that is still alive, inside the group or not."""
    tree = process_tree(process.pid)
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group, the leader included
    except ProcessLookupError:
        pass
    process.wait(timeout=timeout)
    for pid in alive(tree):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _processes() -> dict[int, tuple[int, int]]:
    """Every live process: pid -> (parent pid, process group), read from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if state != "Z":
                found[int(entry.name)] = (int(ppid), int(pgrp))
    return found


def process_tree(pid: int) -> set[int]:
    """`pid`, the processes of its group, and all their descendants that are alive. (PostgreSQL's
    backends leave the postmaster's group, so the group alone is not enough.)"""
    table = _processes()
    found = {p for p, (_, pgrp) in table.items() if pgrp == pid} | ({pid} if pid in table else set())
    while True:
        more = {p for p, (ppid, _) in table.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def alive(pids: set[int]) -> set[int]:
    return pids & set(_processes())


# ---------------------------------------------------------------- object storage (moto's server)

@dataclass
class S3:
    endpoint: str
    process: subprocess.Popen

    @property
    def env(self) -> dict[str, str]:
        """What a client (boto3, MLflow, Ray's pyarrow) needs to use this store."""
        return S3_CREDENTIALS | {"AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def start_moto_s3(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """moto's server on 127.0.0.1:`port`, answering once this returns."""
    process = start_process([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env, log)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/moto-api/", timeout=60, process=process)
    except BaseException:
        stop_process(process)
        raise
    return process


@contextmanager
def moto_s3(folder: Path, buckets: tuple[str, ...] = ()) -> Iterator[S3]:
    port = free_port()
    process = start_moto_s3(port, dict(os.environ) | S3_CREDENTIALS, folder / "s3.log")
    try:
        s3 = S3(f"http://127.0.0.1:{port}", process)
        for bucket in buckets:
            s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        stop_process(process)


# ---------------------------------------------------------------- PostgreSQL

def postgres_bindir() -> Path | None:
    """The folder of initdb and postgres in the `pgserver` wheel, found without importing it
    (its import sets up locks and at-exit handlers this module does not use)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "pginstall" / "bin"
    return folder if (folder / "postgres").is_file() else None


def postgres_unavailable() -> str | None:
    """Why a PostgreSQL server cannot be started here, or None when it can."""
    if postgres_bindir() is None:
        return "PostgreSQL is not installed: pip install -c constraints.txt -e '.[scale]' (the pgserver wheel)"
    if importlib.util.find_spec("psycopg") is None:
        return "the PostgreSQL driver is not installed: pip install -c constraints.txt -e '.[scale]' (psycopg)"
    return None


@dataclass
class Postgres:
    uri: str  # postgresql://postgres@127.0.0.1:PORT/DATABASE, as MLflow's --backend-store-uri takes it
    port: int
    data: Path
    process: subprocess.Popen

    def connect(self):
        import psycopg

        return psycopg.connect(self.uri)

    def query(self, sql: str, *args) -> list[tuple]:
        with self.connect() as connection:
            return connection.execute(sql, args).fetchall()


@contextmanager
def postgres(folder: Path, database: str = "mlflow", fsync: bool = True, max_connections: int = 200) -> Iterator[Postgres]:
    """A fresh PostgreSQL server on a free loopback port, with an empty `database`; stopped (fast
    shutdown, then SIGKILL) and its data deleted afterwards. Its log is `folder`/postgres.log.

    fsync=False trades durability for speed (a test's throwaway data); a benchmark keeps it on.
    """
    import psycopg

    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError(postgres_unavailable())
    # The data folder must be reachable by the server's user: directly under the system's temp
    # folder, not under pytest's (which is private to root).
    data = Path(tempfile.mkdtemp(prefix="trainyard-pg-"))
    options: dict = {}
    if os.geteuid() == 0:
        import pwd

        account = pwd.getpwnam(UNPRIVILEGED[0])
        os.chown(data, account.pw_uid, account.pw_gid)
        options = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    log = folder / "postgres.log"
    process = None
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust",
                        "--encoding=UTF8", "--locale=C", "--no-sync"],
                       stdout=subprocess.DEVNULL, stderr=open(log, "ab"), check=True, timeout=120, **options)
        port = free_port()
        process = start_process(
            [str(bindir / "postgres"), "-D", str(data / "db"), "-h", "127.0.0.1", "-p", str(port),
             "-c", "unix_socket_directories=", "-c", f"fsync={'on' if fsync else 'off'}",
             "-c", f"max_connections={max_connections}"],
            dict(os.environ), log, **options)
        deadline = time.monotonic() + 60
        while True:
            try:
                # autocommit: CREATE DATABASE cannot run in a transaction
                with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                     autocommit=True) as connection:
                    connection.execute(f'CREATE DATABASE "{database}"')
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield Postgres(f"postgresql://postgres@127.0.0.1:{port}/{database}", port, data, process)
    finally:
        if process is not None:
            stop_process(process, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(data, ignore_errors=True)


# ---------------------------------------------------------------- MLflow's tracking server

@dataclass
class TrackingServer:
    uri: str  # http://127.0.0.1:PORT
    workers: int
    postgres: Postgres
    s3: S3
    artifacts: str  # s3://BUCKET/mlflow
    process: subprocess.Popen
    log: Path
    processes: list[subprocess.Popen] = field(default_factory=list)  # every leader, for teardown checks

    @property
    def client_env(self) -> dict[str, str]:
        """What a client process needs: the tracking URI, and S3 access (for checkpoints, or
        for artifacts when the server does not proxy them)."""
        return self.s3.env | {"MLFLOW_TRACKING_URI": self.uri}


@contextmanager
def tracking_server(folder: Path, workers: int = 1, bucket: str = "mlflow", fsync: bool = True,
                    serve_artifacts: bool = True, timeout: float = 120) -> Iterator[TrackingServer]:
    """PostgreSQL, moto's S3 and `mlflow server --backend-store-uri postgresql://...` with
    `workers` worker processes, healthy once this yields; all of it stopped afterwards.

    serve_artifacts=True: clients send artifacts through the server (`--artifacts-destination`);
    False: the server only records where they are (`--default-artifact-root s3://...`) and
    clients write to the object store themselves.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        database = stack.enter_context(postgres(folder, fsync=fsync))
        s3 = stack.enter_context(moto_s3(folder, buckets=(bucket,)))
        port, artifacts = free_port(), f"s3://{bucket}/mlflow"
        storage = (["--artifacts-destination", artifacts] if serve_artifacts
                   else ["--no-serve-artifacts", "--default-artifact-root", artifacts])
        env = dict(os.environ) | s3.env
        env.pop("MLFLOW_TRACKING_URI", None)
        log = folder / "mlflow.log"
        process = start_process([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", str(workers), "--backend-store-uri", database.uri, *storage],
                                env, log)
        stack.callback(stop_process, process, timeout=10)  # requests still in flight are not waited for long
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", timeout=timeout, process=process)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"the MLflow server did not start ({error}):\n{log.read_text()[-3000:]}") from None
        yield TrackingServer(f"http://127.0.0.1:{port}", workers, database, s3, artifacts, process, log,
                             [database.process, s3.process, process])


# ---------------------------------------------------------------- Ray nodes

RAY = str(Path(sys.executable).with_name("ray"))


def start_ray_node(folder: Path, env: dict[str, str], head_port: int | None = None, address: str | None = None,
                   cpus: float = 1, resources: dict[str, float] | None = None,
                   dashboard_port: int | None = None) -> subprocess.Popen:
    """`ray start --block`: a head on `head_port`, or a node joining `address`, with `cpus`
    logical CPUs, in a temporary folder of its own (`folder`, directly under /tmp: Ray's socket
    paths must stay short) and with its own agent ports, so that several nodes share one machine.
    Its log is `folder`.log. Stopping the process stops the node."""
    ports = ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
             "--metrics-export-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
    where = ["--head", "--port", str(head_port)] if head_port is not None else ["--address", str(address)]
    if dashboard_port is not None:
        where += ["--dashboard-port", str(dashboard_port)]
    elif head_port is not None:
        where += ["--include-dashboard", "false"]
    if resources:
        where += ["--resources", json.dumps(resources)]
    return start_process([RAY, "start", *where, "--num-cpus", f"{cpus:g}", "--temp-dir", str(folder), *ports,
                          "--disable-usage-stats", "--block"], env, folder.with_suffix(".log"))


def ray_nodes(address: str, env: dict[str, str]) -> list[dict]:
    """The cluster's live nodes, as `ray.nodes()` lists them, asked from a process of its own
    ([] while the cluster does not answer). The answer is the line after a marker: Ray may
    print its own lines to stdout while a node joins."""
    probe = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); "
             "print('\\nNODES ' + json.dumps([n for n in ray.nodes() if n['Alive']]))" % address)
    try:
        found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return []
    answers = [line for line in found.stdout.splitlines() if line.startswith("NODES ")]
    return json.loads(answers[-1].removeprefix("NODES ")) if found.returncode == 0 and answers else []


def ray_node_log(process: subprocess.Popen, lines: int = 40) -> str:
    """The last lines of a `ray start` node's own log and of its raylet's (start_ray_node's
    folders), for an error message."""
    folder = Path(process.args[process.args.index("--temp-dir") + 1])
    logs = [folder.with_suffix(".log"), *sorted(folder.glob("session_latest/logs/raylet.*"))]
    tails = []
    for log in logs:
        try:
            tails.append(f"--- {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        except OSError:
            continue
    return "\n".join(tails)


def wait_for_ray_nodes(address: str, env: dict[str, str], count: int, processes: list[subprocess.Popen],
                       timeout: float = 180) -> None:
    """Until `count` nodes are alive; fails early, with its log, when a node's process has exited."""
    deadline = time.monotonic() + timeout
    while len(ray_nodes(address, env)) < count:
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"a Ray node exited ({process.returncode}): {' '.join(process.args[:4])}\n"
                                   + ray_node_log(process))
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} Ray nodes at {address} after {timeout:.0f} s")
        time.sleep(1)
