"""`trainyard ui` without a browser: which experiment it opens, what it prints, the server it
starts and its environment, the page defaults, and the experiment-kind tag of trainyard's
experiments. tests/core/test_ui_browser.py checks the pages themselves in chromium."""

from __future__ import annotations

import json

from mlflow import MlflowClient
from typer.testing import CliRunner

from trainyard import cli
from trainyard.cli import app
from trainyard.tracking import EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT, experiment_id_for
from trainyard.ui import ASSISTANT_OPENED_KEY, TELEMETRY_NOTICE_KEY, WORKFLOW_KEY


def store_with_two_experiments(folder) -> tuple[str, str, str]:
    """sqlite:///mlflow.db in `folder`: 'older' has a run started after the one in 'newer'."""
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    older = client.create_experiment("older", artifact_location=str(folder / "artifacts-older"))
    newer = client.create_experiment("newer", artifact_location=str(folder / "artifacts-newer"))
    client.create_run(newer, start_time=1_000)
    client.create_run(older, start_time=2_000)
    return f"sqlite:///{folder / 'mlflow.db'}", older, newer


def start(monkeypatch, *args: str):
    """`trainyard ui ARGS` up to the point where it would exec the server: (result, [(command, env)])."""
    started = []
    monkeypatch.setattr(cli.os, "execve", lambda path, command, env: started.append((command, env)))
    return CliRunner().invoke(app, ["ui", *args]), started


def test_ui_opens_the_experiment_with_the_latest_run_in_the_training_layout(tmp_path, monkeypatch):
    store, older, newer = store_with_two_experiments(tmp_path)
    result, [(command, env)] = start(monkeypatch)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert result.stdout.splitlines() == [
        f"MLflow UI for {store} on http://127.0.0.1:5000  (Ctrl-C stops it)",
        f"  runs of older: http://127.0.0.1:5000/#/experiments/{older}/runs?workflowType=machine_learning"]
    assert command[command.index("--app-name") + 1] == "trainyard"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true" and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"

    result, [(command, _)] = start(monkeypatch, "--experiment", "newer", "--port", "5123")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"  runs of newer: http://127.0.0.1:5123/#/experiments/{newer}/runs?workflowType=machine_learning")
    assert command[command.index("--port") + 1] == "5123"


def test_an_unknown_or_deleted_experiment_is_bad_input(tmp_path, monkeypatch):
    store, older, _ = store_with_two_experiments(tmp_path)
    result, started = start(monkeypatch, "--experiment", "nope")
    assert result.exit_code == 2 and started == [] and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"trainyard ui: {store}: no experiment named 'nope'; there are: Default, newer, older"]
    result, started = start(monkeypatch, "--experiment", "olde")
    assert result.exit_code == 2 and started == []
    assert result.stderr.splitlines() == [f"trainyard ui: {store}: no experiment named 'olde' (did you mean 'older'?)"]

    MlflowClient(store).delete_experiment(older)
    result, started = start(monkeypatch, "--experiment", "older")
    assert result.exit_code == 2 and started == []
    assert result.stderr.splitlines() == [
        f"trainyard ui: {store}: experiment 'older' is deleted; restore it with `mlflow experiments restore`"]


def test_a_store_without_runs_opens_the_experiments_list(tmp_path, monkeypatch):
    result, started = start(monkeypatch, "--host", "::1", "--port", "5001")
    assert result.exit_code == 0 and result.stderr == "" and len(started) == 1
    assert result.stdout.splitlines()[-1] == "  no runs yet: http://[::1]:5001/#/experiments?workflowType=machine_learning"
    assert not (tmp_path / "mlflow.db").exists()  # the server creates it; `trainyard ui` writes nothing

    result, started = start(monkeypatch, "--experiment", "cnn-digits")
    assert result.exit_code == 2 and started == []
    assert result.stderr.splitlines() == [f"trainyard ui: sqlite:///{tmp_path / 'mlflow.db'}: no experiment named "
                                          "'cnn-digits': the store does not exist yet"]

    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").create_experiment("empty")
    result, started = start(monkeypatch)
    assert result.exit_code == 0 and len(started) == 1
    assert result.stdout.splitlines()[-1] == "  no runs yet: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"


def test_telemetry_and_the_job_runner_stay_as_the_environment_says(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")
    result, [(_, env)] = start(monkeypatch)
    assert result.exit_code == 0
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "false" and env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_the_index_page_stores_the_defaults_a_browser_lacks(monkeypatch):
    """What `mlflow server --app-name trainyard` serves as its page: MLflow's, with the defaults
    script first in <head> (chromium runs it in test_ui_browser)."""
    from mlflow.server import app as flask_app

    from trainyard.ui import create_app

    monkeypatch.setitem(flask_app.view_functions, "serve", flask_app.view_functions["serve"])
    monkeypatch.delenv("_MLFLOW_SGI_NAME", raising=False)
    assert create_app() is flask_app
    page = flask_app.test_client().get("/").get_data(as_text=True)
    assert page.startswith('<!doctype html><html lang="en"><head><script>/* trainyard ui: first-visit defaults')
    assert "static-files/static/js/main." in page  # MLflow's own application follows
    defaults = json.loads(page.split("})(", 1)[1].split(");</script>", 1)[0])
    assert defaults == {WORKFLOW_KEY: '"machine_learning"', ASSISTANT_OPENED_KEY: "true", TELEMETRY_NOTICE_KEY: "true"}
    assert "if(localStorage.getItem(k)===null)" in page  # a choice the browser holds is kept


def test_trainyards_experiments_are_model_development_ones(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    created = experiment_id_for(client, "created")
    client.create_experiment("untagged")
    client.create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    untagged, genai = experiment_id_for(client, "untagged"), experiment_id_for(client, "genai")
    assert client.get_experiment(created).tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT == "custom_model_development"
    assert client.get_experiment(untagged).tags[EXPERIMENT_KIND_TAG] == MODEL_DEVELOPMENT
    assert client.get_experiment(genai).tags[EXPERIMENT_KIND_TAG] == "genai_development"  # someone else's choice
