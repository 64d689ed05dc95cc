"""`trainyard runs` and `trainyard show` over a store written directly with the MLflow client:
a finished run, a failed run and a sweep (a parent with two trials), beside an older experiment."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from typer.testing import CliRunner

from helpers import free_port
from trainyard.cli import app

HOUR_MS = 3_600_000


def write_run(client, experiment_id, name, start, seconds, status="FINISHED", params=None, metrics=None,
              tags=None, parent=None):
    """A run as trainyard leaves it; metrics as {key: [(step, value), ...]}."""
    tags = dict(tags or {}) | ({"mlflow.parentRunId": parent} if parent else {})
    run = client.create_run(experiment_id, start_time=start, run_name=name, tags=tags)
    run_id = run.info.run_id
    client.log_batch(run_id, params=[Param(key, str(value)) for key, value in (params or {}).items()],
                     metrics=[Metric(key, value, start, step) for key, points in (metrics or {}).items()
                              for step, value in points])
    client.set_terminated(run_id, status, end_time=start + int(seconds * 1000))
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    older = client.create_experiment("older", artifact_location=str(folder / "artifacts-older"))
    write_run(client, older, "old", now - 5 * HOUR_MS, 3)
    digits = client.create_experiment("cnn-digits", artifact_location=str(folder / "artifacts"))
    spec = {"trainer.checkpoint.monitor": "val/acc", "trainer.checkpoint.mode": "max",
            "trainer.early_stopping.monitor": "val/loss", "trainer.early_stopping.mode": "min", "optimizer.lr": 0.003}
    lenet = write_run(client, digits, "lenet5-digits", now - 3 * HOUR_MS, 81.5, params=spec, metrics={
        "val/acc": [(9, 0.5), (19, 0.9), (29, 0.8)], "val/loss": [(9, 1.0), (19, 0.4), (29, 0.5)],
        "train/loss": [(5, 2.0), (15, 0.3), (25, 0.6)], "train/lr": [(5, 0.003), (25, 0.001)],
        "best/val/acc": [(29, 0.9)], "test/acc": [(29, 0.88)]})
    client.log_text(lenet, "name: lenet5-digits\n", "spec.yaml")
    client.log_text(lenet, "a confusion matrix\n", "reports/confusion_matrix.txt")
    failed = write_run(client, digits, "broken", now - 2 * HOUR_MS, 2.0, status="FAILED", params=spec,
                       tags={"trainyard.error": "RuntimeError: the loss is nan"})
    parent = write_run(client, digits, "lenet5-sweep", now - HOUR_MS, 400, tags={"trainyard.kind": "sweep"},
                       params={"sweep.metric": "val/acc", "sweep.mode": "max"},
                       metrics={"best_trial/best/val/acc": [(0, 0.95)], "best_trial/test/acc": [(0, 0.93)],
                                "sweep/trials": [(0, 2)]})
    trials = [write_run(client, digits, f"trial-{trial}", now - HOUR_MS + index * 1000, 100 - 60 * index,
                        parent=parent, tags={"trainyard.kind": "trial", "trainyard.trial_id": trial,
                                             "trainyard.sweep.values": f"optimizer.lr={lr}, model.params.channels=[16, 32]",
                                             **stopped},
                        params={"optimizer.lr": lr, "model.params.channels": [16, 32]}, metrics=metrics)
              for index, (trial, lr, stopped, metrics) in enumerate([
                  ("a_00000", 0.3, {}, {"val/acc": [(9, 0.9), (19, 0.95)], "best/val/acc": [(9, 0.9), (19, 0.95)],
                                        "test/acc": [(19, 0.93)]}),
                  ("a_00001", 1e-6, {"trainyard.trial.stopped_early": "true"},
                   {"val/acc": [(9, 0.1)], "best/val/acc": [(9, 0.1)]})])]
    return {"uri": uri, "path": folder / "mlflow.db", "folder": folder, "lenet": lenet, "failed": failed,
            "parent": parent, "trials": trials, "experiment_id": digits}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_runs_lists_the_latest_experiment_with_key_metrics_and_children(store):
    result = invoke("runs", "--uri", store["uri"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"experiment cnn-digits (id {store['experiment_id']}) in {store['uri']}: 3 runs"
    assert lines[1].split() == ["run", "id", "name", "status", "duration", "children", "val/acc", "test/acc"]
    assert lines[2].split() == [store["parent"], "lenet5-sweep", "FINISHED", "6", "min", "40", "s", "2", "0.95", "0.93"]
    assert lines[3].split() == [store["failed"], "broken", "FAILED", "2.0", "s", "-", "-"]
    assert lines[4].split() == [store["lenet"], "lenet5-digits", "FINISHED", "1", "min", "22", "s", "0.9", "0.88"]

    listing = json.loads(invoke("runs", "--uri", store["uri"], "--json").stdout)
    assert listing["experiment"]["name"] == "cnn-digits" and listing["metrics"] == ["val/acc", "test/acc"]
    rows = {row["name"]: row for row in listing["runs"]}
    assert set(rows) == {"lenet5-sweep", "broken", "lenet5-digits"}  # trials only under --sweep
    assert rows["lenet5-sweep"]["children"] == 2 and rows["lenet5-digits"]["children"] == 0
    assert rows["lenet5-digits"]["metrics"] == {"val/acc": 0.9, "test/acc": 0.88}  # val/acc: its best, not its last
    assert rows["lenet5-digits"]["duration_s"] == 81.5 and rows["broken"]["status"] == "FAILED"

    older = json.loads(invoke("runs", "--uri", store["uri"], "--experiment", "older", "--json").stdout)
    assert [row["name"] for row in older["runs"]] == ["old"]


def test_runs_of_a_sweep_lists_its_trials(store):
    listing = json.loads(invoke("runs", "--uri", store["uri"], "--sweep", store["parent"], "--json").stdout)
    assert listing["sweep"] | {"run_id": None} == {"run_id": None, "name": "lenet5-sweep", "status": "FINISHED",
                                                    "metric": "val/acc", "mode": "max"}
    assert [(row["trial"], row["status"], row["values"], row["metrics"]) for row in listing["runs"]] == [
        ("a_00000", "FINISHED", {"optimizer.lr": "0.3", "model.params.channels": "[16, 32]"},
         {"val/acc": 0.95, "test/acc": 0.93}),
        ("a_00001", "STOPPED", {"optimizer.lr": "1e-06", "model.params.channels": "[16, 32]"}, {"val/acc": 0.1})]
    text = invoke("runs", "--uri", store["uri"], "--sweep", store["parent"]).stdout
    assert text.splitlines()[0].startswith("sweep lenet5-sweep (FINISHED, run ")
    assert "2 trials, val/acc (max)" in text.splitlines()[0]
    assert text.splitlines()[3].split()[:8] == [store["trials"][1], "a_00001", "STOPPED", "40.0", "s",
                                                "lr=1e-06", "channels=[16,", "32]"]


def test_show_gives_params_last_and_best_metrics_by_the_spec_modes_artifacts_and_the_ui_url(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])  # the store `trainyard ui` would serve
    run = json.loads(invoke("show", store["lenet"], "--json").stdout)
    assert run["params"]["optimizer.lr"] == "0.003" and run["status"] == "FINISHED"
    metrics = run["metrics"]
    assert metrics["val/acc"] == {"last": 0.8, "mode": "max", "best": 0.9, "best_step": 19}
    assert metrics["val/loss"] == {"last": 0.5, "mode": "min", "best": 0.4, "best_step": 19}
    assert metrics["train/loss"]["best"] == 0.3  # the same quantity as val/loss: it falls too
    assert metrics["train/lr"] == {"last": 0.001, "mode": None, "best": None, "best_step": None}
    assert [item["path"] for item in run["artifacts"]] == ["reports/confusion_matrix.txt", "spec.yaml"]
    assert run["url"] == (f"http://127.0.0.1:5000/#/experiments/{store['experiment_id']}/runs/{store['lenet']}"
                          "?workflowType=machine_learning")

    text = invoke("show", store["lenet"]).stdout
    assert text.startswith(f"lenet5-digits: FINISHED in 1 min 22 s   run {store['lenet']}\n")
    assert "val/acc 0.8 0.9 (max) 19".split() in [line.split() for line in text.splitlines()]
    assert "reports/confusion_matrix.txt 19 B".split() in [line.split() for line in text.splitlines()]
    assert text.rstrip().endswith(f"open: trainyard ui --uri {store['uri']}   then {run['url']}")

    # A trial's direction comes from its sweep's metric and mode, params of the parent run.
    trial = json.loads(invoke("show", store["trials"][0], "--json").stdout)
    assert trial["metrics"]["val/acc"]["best"] == 0.95 and trial["parent_run_id"] == store["parent"]
    failed = invoke("show", store["failed"]).stdout
    assert "error: RuntimeError: the loss is nan" in failed


def store_state(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("args, message", [
    (["show", "0123456789abcdef0123456789abcdef"], "trainyard show: no run '0123456789abcdef0123456789abcdef' in sqlite:"),
    (["show", "not-a-run"], "trainyard show: no run 'not-a-run' in sqlite:"),
    (["runs", "--experiment", "cnn-digit"], "trainyard runs: no experiment 'cnn-digit' in sqlite:"),
    (["runs", "--sweep", "{lenet}"], "is not a sweep's parent run: it has no child runs"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(store, args, message):
    before = store_state(store["folder"])
    result = invoke(*[arg.format(**store) for arg in args], "--uri", store["uri"])
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert store_state(store["folder"]) == before
    if args[1] == "cnn-digit":
        assert result.stderr.rstrip().endswith("(did you mean 'cnn-digits'?)")


@pytest.mark.parametrize("command", [["runs"], ["show", "0123456789abcdef0123456789abcdef"]])
def test_a_missing_or_unreachable_store_is_bad_input_found_fast_and_never_created(tmp_path, command):
    missing = tmp_path / "nothing-here" / "mlflow.db"
    result = invoke(*command, "--uri", f"sqlite:///{missing}")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert f"no tracking store at {missing}" in result.stderr
    result = invoke(*command)  # the default store, ./mlflow.db, is missing too
    assert result.exit_code == 2 and "no tracking store at" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was created

    started = time.monotonic()
    result = invoke(*command, "--uri", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert "cannot reach the tracking server http://127.0.0.1:" in result.stderr
    assert time.monotonic() - started < 15
