"""Runs from the terminal: `trainyard runs` lists an experiment's runs (or a sweep's trials) and
`trainyard show` one run, read from the store that `trainyard ui` serves.

    --uri / $MLFLOW_TRACKING_URI / sqlite:///mlflow.db --open_store--> MlflowClient (reads only)
      --> list_runs / describe_run: plain dicts (what --json prints) --> print_runs / print_run

Nothing here writes to the store. A store that does not exist is bad input, found before MLflow
is asked (MLflow would create an SQLite file, or a folder, on first touch); so are an unreachable
server, an unknown experiment and an unknown run: `BrowseError`, one line, exit status 2.

Key metrics, the columns of `trainyard runs`: the metrics a run's spec names (its sweep's
`sweep.metric`, its `trainer.checkpoint.monitor`), at their best value when the run recorded one
(`best/<metric>`), then its `test/` metrics. A sweep's parent run shows its best trial's.

A metric's direction (whether its best is its min or its max) is what the spec says of it: the
`mode` beside `sweep.metric`, `trainer.checkpoint.monitor`, `trainer.early_stopping.monitor` and a
plateau schedule's `monitor`, all logged as params. The same quantity on another split shares it
(`val/loss` says `min`, so `train/loss` and `test/loss` fall too), and so do `best/<metric>` and a
sweep's `best_trial/<metric>`. A metric no spec value names has no best, only its last value.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

from rich.console import Console
from rich.table import Table
from rich.text import Text

from trainyard.errors import SpecError, did_you_mean
from trainyard.sweep.child_run import STOPPED_TAG, TRIAL_ID_TAG
from trainyard.sweep.space import short_names
from trainyard.tracking import DEFAULT_TRACKING_URI, check_reachable, resolve_uri, tracking_uri
from trainyard.ui import pick_experiment

UI_ADDRESS = "http://127.0.0.1:5000"  # where `trainyard ui` serves by default
MAX_METRIC_COLUMNS = 6  # in the table; --json has every key metric
# MLflow retries a failing HTTP request 7 times with exponential backoff and waits 120 s for
# each answer: minutes before a person at a terminal hears that the server is down. These apply
# unless the environment sets them.
QUICK_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
PARENT_TAG = "mlflow.parentRunId"
SWEEP_VALUES_TAG = "trainyard.sweep.values"  # a trial's "key=value, key=value" (sweep/trial.py)
VALUE_KEY = re.compile(r"(?:^|, )([A-Za-z_][\w.]*)=")  # the dotted keys in that tag
SPLITS = ("train/", "val/", "test/")
SAME_DIRECTION = ("best_trial/", "best/")  # prefixes of metrics that share their metric's direction
STATUS_STYLE = {"FINISHED": "green", "FAILED": "red", "KILLED": "yellow", "RUNNING": "cyan", "STOPPED": "yellow"}


class BrowseError(Exception):
    """Bad input to `trainyard runs` or `trainyard show`: one line, exit status 2."""


@dataclass
class Store:
    client: Any  # MlflowClient
    uri: str


@contextmanager
def open_store(uri: str | None) -> Iterator[Store]:
    """The tracking store `trainyard ui` would serve, checked to exist and answer."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    store = tracking_uri(uri)
    with quick_http():
        _check_exists(store)
        try:
            check_reachable(store)
        except SpecError as error:
            raise BrowseError(error.problems[0].message) from None
        try:
            yield Store(MlflowClient(store), store)
        except MlflowException as error:
            raise BrowseError(f"cannot read {store}: {_first_line(error)}") from None


@contextmanager
def quick_http() -> Iterator[None]:
    """MLflow's HTTP requests give up within about 10 s (QUICK_HTTP), unless the environment says
    otherwise; restored afterwards, so that the caller's process keeps its own settings."""
    quick = {key: value for key, value in QUICK_HTTP.items() if key not in os.environ}
    with mock.patch.dict(os.environ, quick):
        yield


def _check_exists(uri: str) -> None:
    """A local store must exist already, as an MLflow store: reading must not create one."""
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:///")
        if ":memory:" in uri or not path:
            return
        if not Path(path).is_file():
            raise BrowseError(f"no tracking store at {path}: nothing was tracked there (--uri or "
                              "$MLFLOW_TRACKING_URI names another)")
        try:  # read-only: even a file that is not a database stays as it is
            with sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True) as db:
                found = db.execute("select 1 from sqlite_master where type = 'table' and name = 'runs'").fetchone()
        except sqlite3.Error as error:
            raise BrowseError(f"{path} is not an MLflow tracking store: {error}") from None
        if found is None:
            raise BrowseError(f"{path} is not an MLflow tracking store (it has no runs table)")
    elif uri.startswith("file:") or "://" not in uri:
        path = Path(uri.removeprefix("file://"))
        if not path.is_dir():
            raise BrowseError(f"no tracking store at {path}: nothing was tracked there")


# --- trainyard runs --------------------------------------------------------------------------


def list_runs(store: Store, experiment: str | None = None, sweep: str | None = None) -> dict[str, Any]:
    """An experiment's top-level runs (newest first), or a sweep's trials, with their key metrics."""
    if experiment and sweep:
        raise BrowseError("give --experiment or --sweep, not both (a sweep's trials are in its own experiment)")
    if sweep:
        return _list_trials(store, sweep)
    # The default is the experiment `trainyard ui` opens: the one with the most recently started run.
    found = _experiment(store, experiment) if experiment else pick_experiment(store.uri, None)
    if found is None:
        return {"store": store.uri, "experiment": None, "sweep": None, "metrics": [], "runs": []}
    runs = _all_pages(lambda token: store.client.search_runs(
        [found.experiment_id], max_results=1000, order_by=["attributes.start_time DESC"], page_token=token))
    children = Counter(run.data.tags.get(PARENT_TAG) for run in runs)
    rows = [_row(run, named_metrics(run.data.params)) | {"children": children.get(run.info.run_id, 0)}
            for run in runs if PARENT_TAG not in run.data.tags]
    return {"store": store.uri, "experiment": {"id": found.experiment_id, "name": found.name}, "sweep": None,
            "metrics": _columns(rows), "runs": rows}


def _list_trials(store: Store, parent_id: str) -> dict[str, Any]:
    parent = get_run(store, parent_id)
    trials = _all_pages(lambda token: store.client.search_runs(
        [parent.info.experiment_id], max_results=1000, page_token=token,
        filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"))
    if not trials and parent.data.tags.get("trainyard.kind") != "sweep":
        raise BrowseError(f"run {parent_id} is not a sweep's parent run: it has no child runs")
    params = parent.data.params
    sweep_metric = [params["sweep.metric"]] if "sweep.metric" in params else []
    rows = [_row(run, sweep_metric + named_metrics(run.data.params)) | {
                "trial": run.data.tags.get(TRIAL_ID_TAG), "values": trial_values(run)}
            for run in trials]
    rows.sort(key=lambda row: (row["trial"] is None, row["trial"] or "", row["name"] or ""))
    experiment = store.client.get_experiment(parent.info.experiment_id)
    return {"store": store.uri, "experiment": {"id": experiment.experiment_id, "name": experiment.name},
            "sweep": {"run_id": parent.info.run_id, "name": parent.info.run_name, "status": parent.info.status,
                      "metric": params.get("sweep.metric"), "mode": params.get("sweep.mode")},
            "metrics": _columns(rows), "runs": rows}


def trial_values(run) -> dict[str, str]:
    """A trial's searched values, as its params hold them: the keys its SWEEP_VALUES_TAG names."""
    keys = VALUE_KEY.findall(run.data.tags.get(SWEEP_VALUES_TAG, ""))
    return {key: run.data.params[key] for key in keys if key in run.data.params}


def named_metrics(params: Mapping[str, str]) -> list[str]:
    """The metrics a run's spec names as its aim: the sweep's metric, the checkpoint's monitor."""
    return [params[key] for key in ("sweep.metric", "trainer.checkpoint.monitor") if params.get(key)]


def _row(run, named: list[str]) -> dict[str, Any]:
    info, metrics = run.info, run.data.metrics
    # A sweep's parent holds its best trial's metrics under best_trial/.
    prefix = "best_trial/" if run.data.tags.get("trainyard.kind") == "sweep" else ""
    key_metrics = {}
    for name in dict.fromkeys(named):
        value = metrics.get(f"{prefix}best/{name}", metrics.get(f"{prefix}{name}"))
        if value is not None:
            key_metrics[name] = value
    key_metrics |= {key.removeprefix(prefix): value for key, value in sorted(metrics.items())
                    if key.startswith(f"{prefix}test/")}
    status = "STOPPED" if info.status == "FINISHED" and run.data.tags.get(STOPPED_TAG) == "true" else info.status
    return {"run_id": info.run_id, "name": info.run_name, "status": status, "start_time": _iso(info.start_time),
            "duration_s": _duration(info), "metrics": key_metrics}


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """The key metrics any row has: the named ones in order of appearance, then test/ sorted."""
    seen = list(dict.fromkeys(key for row in rows for key in row["metrics"]))
    tests = sorted(key for key in seen if key.startswith("test/"))
    return [key for key in seen if not key.startswith("test/")] + tests


def print_runs(listing: dict[str, Any], console: Console) -> None:
    if listing["experiment"] is None:
        console.print(f"no runs in {listing['store']}", markup=False)
        return
    experiment, sweep, rows = listing["experiment"], listing["sweep"], listing["runs"]
    where = f"experiment {experiment['name']} (id {experiment['id']}) in {listing['store']}"
    if sweep:
        aim = f", {sweep['metric']} ({sweep['mode']})" if sweep["metric"] else ""
        console.print(f"sweep {sweep['name']} ({sweep['status']}, run {sweep['run_id']}), {where}: "
                      f"{_count(len(rows), 'trial')}{aim}", markup=False)
    else:
        console.print(f"{where}: {_count(len(rows), 'run')}", markup=False)
    if not rows:
        return
    metrics = listing["metrics"][:MAX_METRIC_COLUMNS]
    names = short_names(list(dict.fromkeys(key for row in rows for key in row.get("values", {}))))
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("run id", no_wrap=True)
    table.add_column("trial" if sweep else "name")
    for column in ("status", "duration"):
        table.add_column(column, no_wrap=True)
    if sweep:
        table.add_column("values")
    else:
        table.add_column("children", justify="right")
    for metric in metrics:
        table.add_column(metric, justify="right", no_wrap=True)
    for row in rows:
        cells = [Text(row["run_id"]), Text((row["trial"] if sweep else None) or row["name"] or ""),
                 Text(row["status"], style=STATUS_STYLE.get(row["status"], "")), Text(_show_seconds(row["duration_s"]))]
        if sweep:
            cells.append(Text(" ".join(f"{names[key]}={_show_value(value)}" for key, value in row["values"].items())))
        else:
            cells.append(Text(str(row["children"] or "")))
        cells += [Text(_show_number(row["metrics"].get(metric))) for metric in metrics]
        table.add_row(*cells)
    _print_table(console, table)
    hidden = listing["metrics"][MAX_METRIC_COLUMNS:]
    if hidden:
        console.print(f"(also in --json: {', '.join(hidden)})", markup=False)
    hint = "one run: trainyard show RUN_ID" + ("" if sweep else "   a sweep's trials: trainyard runs --sweep RUN_ID")
    console.print(hint, style="dim", markup=False)


# --- trainyard show --------------------------------------------------------------------------


def describe_run(store: Store, run_id: str) -> dict[str, Any]:
    """One run: params, metrics (last, and best where the spec gives a direction), artifacts, URL."""
    from mlflow.exceptions import MlflowException

    run = get_run(store, run_id)
    info, data = run.info, run.data
    parent_id = data.tags.get(PARENT_TAG)
    params = dict(data.params)
    if parent_id:  # a trial: its sweep's metric and mode are the parent's params
        try:
            params = {**store.client.get_run(parent_id).data.params, **params}
        except MlflowException:  # a parent deleted since: the trial's own spec still says much
            pass
    directions = metric_directions(params)
    metrics = {}
    for key, last in sorted(data.metrics.items()):
        mode = direction(key, directions)
        entry = {"last": last, "mode": mode, "best": None, "best_step": None}
        if mode is not None:
            history = [m for m in store.client.get_metric_history(info.run_id, key) if math.isfinite(m.value)]
            if history:
                best = (max if mode == "max" else min)(history, key=lambda m: m.value)
                entry |= {"best": best.value, "best_step": best.step}
        metrics[key] = entry
    children = len(_all_pages(lambda token: store.client.search_runs(
        [info.experiment_id], max_results=1000, page_token=token,
        filter_string=f"tags.`{PARENT_TAG}` = '{info.run_id}'")))
    artifacts, artifact_error = [], None
    try:
        artifacts = list_artifacts(store.client, info.run_id)
    except Exception as error:  # noqa: BLE001 - an artifact store out of reach: the rest is still worth showing
        artifact_error = _first_line(error)
    experiment = store.client.get_experiment(info.experiment_id)
    return {"store": store.uri, "run_id": info.run_id, "name": info.run_name, "status": info.status,
            "stopped_early": data.tags.get(STOPPED_TAG) == "true",
            "experiment": {"id": info.experiment_id, "name": experiment.name},
            "start_time": _iso(info.start_time), "end_time": _iso(info.end_time), "duration_s": _duration(info),
            "parent_run_id": parent_id, "children": children, "error": data.tags.get("trainyard.error"),
            "params": dict(sorted(data.params.items())), "metrics": metrics, "tags": dict(sorted(data.tags.items())),
            "artifacts": artifacts, "artifacts_error": artifact_error,
            "url": ui_url(store.uri, info.experiment_id, info.run_id)}


def metric_directions(params: Mapping[str, str]) -> dict[str, str]:
    """metric -> "min" or "max", from the spec values that name a metric and its mode (see the
    module docstring); the first that names a metric decides it."""
    directions: dict[str, str] = {}
    for key, metric in params.items():
        if key == "sweep.metric":
            mode = params.get("sweep.mode")
        elif key.endswith(".monitor"):
            mode = params.get(key.removesuffix(".monitor") + ".mode")
        else:
            continue
        if mode in ("min", "max"):
            directions.setdefault(metric, mode)
    return directions


def direction(metric: str, directions: Mapping[str, str]) -> str | None:
    """Whether `metric` is best at its min or its max, if the spec says it (see metric_directions)."""
    name = metric
    while name.startswith(SAME_DIRECTION):
        name = name.split("/", 1)[1]
    if name in directions:
        return directions[name]
    if name.startswith(SPLITS):
        quantity = name.split("/", 1)[1]
        for named, mode in directions.items():
            if named.startswith(SPLITS) and named.split("/", 1)[1] == quantity:
                return mode
    return None


def list_artifacts(client, run_id: str, path: str | None = None) -> list[dict[str, Any]]:
    """Every artifact file of a run, folders walked."""
    found = []
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found += list_artifacts(client, run_id, item.path)
        else:
            found.append({"path": item.path, "size": item.file_size})
    return found


def ui_url(store: str, experiment_id: str, run_id: str) -> str:
    """The run's page in MLflow's UI: on the tracking server, or where `trainyard ui` serves."""
    from trainyard.ui import run_url

    return run_url(store if store.startswith(("http://", "https://")) else UI_ADDRESS, experiment_id, run_id)


def print_run(run: dict[str, Any], console: Console) -> None:
    status = "FINISHED (stopped early by the scheduler)" if run["stopped_early"] else run["status"]
    duration = f" in {_show_seconds(run['duration_s'])}" if run["duration_s"] is not None else ""
    console.print(Text.assemble((f"{run['name']}", "bold"), ": ", (status, STATUS_STYLE.get(run["status"], "")),
                                duration, f"   run {run['run_id']}"))
    lines = [f"experiment {run['experiment']['name']} (id {run['experiment']['id']}), started "
             f"{_local_time(run['start_time'])}"]
    if run["parent_run_id"]:
        lines.append(f"a trial of the sweep run {run['parent_run_id']}")
    if run["children"]:
        lines.append(f"{_count(run['children'], 'child run')}: trainyard runs --sweep {run['run_id']}")
    if run["error"]:
        lines.append(f"error: {run['error']}")
    if run["tags"].get("trainyard.model_uri"):
        lines.append(f"model: {run['tags']['trainyard.model_uri']} ({run['tags'].get('trainyard.model_format', '')})")
    for line in lines:
        console.print(f"  {line}", markup=False)

    console.print(f"\n[bold]params[/bold] ({len(run['params'])})")
    table = _plain_table("param", "value")
    for key, value in run["params"].items():
        table.add_row(Text(key), Text(value))
    if run["params"]:
        _print_table(console, table)

    console.print(f"\n[bold]metrics[/bold] ({len(run['metrics'])})")
    table = _plain_table("metric", "last", "best", "at step")
    for key, metric in run["metrics"].items():
        best = f"{_show_number(metric['best'])} ({metric['mode']})" if metric["best"] is not None else ""
        step = str(metric["best_step"]) if metric["best_step"] is not None else ""
        table.add_row(Text(key), Text(_show_number(metric["last"])), Text(best), Text(step))
    for index in (1, 2, 3):
        table.columns[index].justify = "right"
    if run["metrics"]:
        _print_table(console, table)

    console.print(f"\n[bold]artifacts[/bold] ({len(run['artifacts'])})")
    if run["artifacts_error"]:
        console.print(f"  cannot list them: {run['artifacts_error']}", markup=False)
    table = _plain_table("path", "size")
    table.columns[1].justify = "right"
    for artifact in run["artifacts"]:
        table.add_row(Text(artifact["path"]), Text(_show_size(artifact["size"])))
    if run["artifacts"]:
        _print_table(console, table)

    if run["store"].startswith(("http://", "https://")):
        console.print(f"\nopen {run['url']}", markup=False)
    else:
        hint = "" if run["store"] == resolve_uri(DEFAULT_TRACKING_URI) else f" --uri {run['store']}"
        console.print(f"\nopen: trainyard ui{hint}   then {run['url']}", markup=False)


# --- shared ----------------------------------------------------------------------------------


def get_run(store: Store, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return store.client.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise BrowseError(f"no run {run_id!r} in {store.uri}") from None
        raise


def _experiment(store: Store, name: str):
    found = store.client.get_experiment_by_name(name)
    if found is None or found.lifecycle_stage == "deleted":
        names = [each.name for each in _all_pages(lambda token: store.client.search_experiments(page_token=token))]
        raise BrowseError(f"no experiment {name!r} in {store.uri}{did_you_mean(name, names)}")
    return found


def _all_pages(fetch: Callable[[str | None], Any]) -> list:
    items, token = [], None
    while True:
        page = fetch(token)
        items += list(page)
        token = page.token
        if not token:
            return items


def _print_table(console: Console, table: Table) -> None:
    # Into a pipe or a file, rich would fit the table into 80 columns, squeezing and wrapping
    # its cells: there the table gets the width it needs.
    if console.is_terminal:
        console.print(table)
        return
    wide = Console(file=io.StringIO(), width=100_000, color_system=None)
    wide.print(table)
    console.out("\n".join(line.rstrip() for line in wide.file.getvalue().splitlines()), highlight=False)


def _plain_table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def _duration(info) -> float | None:
    if info.start_time is None:
        return None
    end = info.end_time if info.end_time else (time.time() * 1000 if info.status == "RUNNING" else None)
    return None if end is None else max(0.0, (end - info.start_time) / 1000)


def _iso(millis: int | None) -> str | None:
    return None if millis is None else datetime.fromtimestamp(millis / 1000, tz=timezone.utc).isoformat(
        timespec="seconds")


def _local_time(iso: str | None) -> str:
    return "-" if iso is None else datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _show_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _show_number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _show_value(value: str) -> str:
    """A logged param value, a float to 4 significant digits (as the sweep's own display shows it)."""
    try:
        return f"{float(value):.4g}" if any(mark in value for mark in ".eE") else value
    except ValueError:
        return value


def _show_size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def to_json(value: Any) -> str:
    """--json output. JSON has no NaN or infinity (a diverged run's loss): null there; the
    tables show nan."""
    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(each) for key, each in item.items()}
        if isinstance(item, list):
            return [finite(each) for each in item]
        return item

    return json.dumps(finite(value), indent=2)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
