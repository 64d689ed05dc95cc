"""One MLflow tracking server under the load of many trials: PostgreSQL behind it, S3 (moto's
server) for artifacts, everything on 127.0.0.1 (tests/servers.py starts and stops it).

    .venv/bin/python benchmarks/bench_tracking.py [--writers 64] [--seconds 30] [--workers 1,4]
        [--metrics 10] [--steps-per-second 20]          (make benchmark-tracking)

Each writer is a process, as a trial is: it creates its run with trainyard's `TrackedRun.start`
and logs `--metrics` values a step at `--steps-per-second` steps a second through
`TrackedRun.log_metrics`, the path a trial's metrics take: MLflow's asynchronous queue, which
(trainyard's BUFFER_SECONDS = 1) sends whatever arrived in the last second as one `log-batch`
request (up to 1000 values each). Processes rather than threads: each writer then has its own
interpreter, HTTP connections and async queue, as trials do, and 64 client threads in one
interpreter would measure the GIL of the load generator as much as the server. They are forked
from this process after it imported MLflow and trainyard, so none pays the import.

Every `log-batch` request is timed where MLflow sends it (RestStore.log_batch), with MLflow's
HTTP retries off (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0), so that a request the server failed is
counted as an error instead of being retried out of sight.

For each server worker count in `--workers`, a fresh stack is started, then one writer alone for
`--seconds`/3 (the baseline), then `--writers` writers together for `--seconds`. Printed per
phase: the offered and delivered metric values a second (median over the phase's one-second
intervals, and the mean), requests a second, errors (must be 0), p50 and p99 latency of a
log-batch request, values per request, and how long the final flush took (the backlog the
server had not absorbed); then the ratios of the many-writer phase to the baseline.

This machine has 2 cores and the writers, PostgreSQL, moto and the MLflow server share them:
what the server holds here is a floor for a server with cores of its own (docs/scale.md).
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import platform
import queue
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for folder in (ROOT / "tests", ROOT / "platform"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import mlflow  # noqa: E402  (imported before forking the writers)
from mlflow.store.tracking.rest_store import RestStore  # noqa: E402

from servers import postgres_unavailable, tracking_server  # noqa: E402
from trainyard.tracking import BUFFER_SECONDS, TrackedRun  # noqa: E402

EXPERIMENT = "bench-tracking"
SETUP_LIMIT = 30  # seconds the writers may take to create their runs
FLUSH_LIMIT = 10  # seconds a writer may take to flush its queue after its phase


@dataclass
class Request:
    start: float  # time.time()
    end: float
    values: int
    ok: bool


# The requests of this process (a writer's: forked, it starts with this list emptied).
RECORDS: list[Request] = []


def _timed_log_batch(records: list[Request]):
    """RestStore.log_batch, recording each request. Installed before any store exists: a store's
    async queue holds on to the method it had when it was made (and stores are cached by URI)."""
    original = RestStore.log_batch

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        start = time.time()
        try:
            result = original(self, run_id, metrics=metrics, params=params, tags=tags)
        except BaseException:
            records.append(Request(start, time.time(), len(metrics), False))
            raise
        records.append(Request(start, time.time(), len(metrics), True))
        return result

    return log_batch


def writer(index: int, uri: str, seconds: float, metrics: int, rate: float, barrier, results) -> None:
    """One trial's worth of metric logging; puts (requests, errors, flush seconds, t0, values logged) on `results`."""
    records = RECORDS
    records.clear()
    sys.stdout = open(os.devnull, "w")  # MLflow prints a link to each run it ends
    errors, flush, t0, step = [], 0.0, time.time(), 0
    try:
        run = TrackedRun.start(uri, EXPERIMENT, f"writer-{index}", {"bench.writer": str(index)})
        barrier.wait(timeout=SETUP_LIMIT)
        t0 = time.time()
        step, keys = 0, [f"train/m{k}" for k in range(metrics)]
        while time.time() < t0 + seconds:
            run.log_metrics({key: step * 0.001 + k for k, key in enumerate(keys)}, step)
            step += 1
            time.sleep(max(0.0, t0 + step / rate - time.time()))
        flush_start = time.time()
        run.end("FINISHED")
        flush = time.time() - flush_start
    except Exception as error:  # noqa: BLE001 - every failure is counted and reported
        errors.append(f"{type(error).__name__}: {str(error)[:200]}")
        barrier.abort()  # the others stop waiting for this writer (a no-op once they are past it)
    results.put((index, [tuple(vars(r).values()) for r in records], errors, flush, t0, step * metrics))


def phase(uri: str, writers: int, seconds: float, metrics: int, rate: float) -> dict:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(writers), context.Queue()
    processes = [context.Process(target=writer, args=(i, uri, seconds, metrics, rate, barrier, results))
                 for i in range(writers)]
    began = time.time()
    try:
        for process in processes:
            process.start()
        return _collect(processes, results, writers, seconds, metrics, rate) | {"setup": time.time() - began}
    finally:
        for process in processes:  # on any exit, a writer left is killed
            if process.is_alive():
                process.kill()
                process.join()


def _collect(processes, results, writers: int, seconds: float, metrics: int, rate: float) -> dict:
    # Run creation (before the barrier), the phase, and a final flush of at most FLUSH_LIMIT: a
    # writer still flushing after that is killed, and counted as an error.
    deadline, collected = time.monotonic() + SETUP_LIMIT + seconds + FLUSH_LIMIT, []
    try:
        while len(collected) < writers:
            collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    except queue.Empty:
        pass
    for process in processes:
        process.join(timeout=max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
    if not collected:
        raise RuntimeError("no writer finished")
    missing = writers - len(collected)
    requests = [Request(*r) for _, records, *_ in collected for r in records]
    errors = ([e for _, _, errs, *_ in collected for e in errs] + ["log-batch failed"] * sum(not r.ok for r in requests)
              + [f"still flushing {FLUSH_LIMIT} s after the phase: killed"] * missing)
    t0 = min(t for *_, t, _ in collected)
    # Delivered: metric values in requests that completed inside the window, per one-second interval.
    per_second = [0] * int(seconds)
    for r in requests:
        if r.ok and 0 <= r.end - t0 < int(seconds):
            per_second[int(r.end - t0)] += r.values
    inside = [r for r in requests if t0 <= r.end < t0 + seconds]
    latencies = sorted((r.end - r.start) * 1000 for r in requests)
    return {
        "writers": writers,
        "offered": writers * metrics * rate,
        "delivered_median": statistics.median(per_second[1:] or per_second),  # the first second fills the buffer
        "delivered_mean": sum(per_second) / len(per_second),
        "requests_per_s": len(inside) / seconds,
        "errors": errors,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "values_per_request": statistics.median([r.values for r in requests]) if requests else 0,
        "flush_max": max(f for *_, f, _, _ in collected) if not missing else float("inf"),
        "logged": sum(logged for *_, logged in collected),
        "requests": len(requests),
    }


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}x" if b and b == b and a == a else "n/a"


def show(name: str, p: dict) -> None:
    print(f"  {name:<12} {p['writers']:>3} writers  offered {p['offered']:>8,.0f}/s  "
          f"delivered {p['delivered_median']:>8,.0f}/s median ({p['delivered_mean']:,.0f} mean)  "
          f"{p['requests_per_s']:6.1f} req/s  errors {len(p['errors'])}  "
          f"log-batch p50 {p['p50']:6.1f} ms  p99 {p['p99']:7.1f} ms  "
          f"{p['values_per_request']:.0f} values/req  final flush {p['flush_max']:.1f} s  (phase {p['setup']:.0f} s)")
    for error in sorted(set(p["errors"]))[:5]:
        print(f"      error: {error}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30, help="the many-writer phase; the baseline is a third")
    parser.add_argument("--workers", default="4", help="server worker counts, comma-separated: 1,4 compares them")
    parser.add_argument("--metrics", type=int, default=10, help="metric keys a writer logs each step")
    parser.add_argument("--steps-per-second", type=float, default=20, help="steps a writer logs each second")
    args = parser.parse_args()
    # Stopped (timeout, kill): unwind, so that the servers and writers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = postgres_unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # a failed request is an error, not a retry
    RestStore.log_batch = _timed_log_batch(RECORDS)
    print(f"bench_tracking  {datetime.date.today()}  {platform.node()}  {os.cpu_count()} cores  "
          f"load average {os.getloadavg()[0]:.1f}  MLflow {mlflow.__version__}  "
          f"async buffering {BUFFER_SECONDS} s  writers are processes")
    print(f"  each writer: {args.metrics} metrics x {args.steps_per_second:g} steps/s = "
          f"{args.metrics * args.steps_per_second:,.0f} values/s, through TrackedRun.log_metrics")
    failed = False
    summary = []
    for workers in [int(w) for w in args.workers.split(",")]:
        with tempfile.TemporaryDirectory(prefix="bench-tracking-") as folder:
            started = time.monotonic()
            with tracking_server(Path(folder), workers=workers) as server:
                [(version,)] = server.postgres.query("SHOW server_version")
                print(f"server: {workers} worker(s), PostgreSQL {version}, artifacts {server.artifacts}, "
                      f"up in {time.monotonic() - started:.1f} s")
                mlflow.MlflowClient(server.uri).create_experiment(EXPERIMENT)
                one = phase(server.uri, 1, max(5.0, args.seconds / 3), args.metrics, args.steps_per_second)
                show("baseline", one)
                many = phase(server.uri, args.writers, args.seconds, args.metrics, args.steps_per_second)
                show("under load", many)
                [(stored,)] = server.postgres.query("SELECT count(*) FROM metrics")
                print(f"  {args.writers}x/1x: delivered {ratio(many['delivered_median'], one['delivered_median'])} "
                      f"(ideal {args.writers}x)  p50 {ratio(many['p50'], one['p50'])}  p99 {ratio(many['p99'], one['p99'])}; "
                      f"{stored:,} metric rows in PostgreSQL of {one['logged'] + many['logged']:,} logged")
                failed |= bool(one["errors"] or many["errors"]) or stored != one["logged"] + many["logged"]
                summary.append((workers, many))
    if len(summary) > 1:
        print("server workers side by side (under load):")
        for workers, p in summary:
            print(f"  {workers} worker(s): delivered {p['delivered_median']:,.0f}/s  p50 {p['p50']:.1f} ms  "
                  f"p99 {p['p99']:.1f} ms  errors {len(p['errors'])}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
