"""The command line: validate, run's summary, ui."""

from __future__ import annotations

import subprocess
import time

import pytest
import requests
from typer.testing import CliRunner

from helpers import free_port, subprocess_env, trainyard_command, wait_for_http
from trainyard import cli
from trainyard.cli import app

SPEC = """\
name: cli-test
model: {name: cnn.lenet5}
data: {name: cnn.digits}
trainer: {max_epochs: 1, progress_bar: false}
"""


def test_validate_builds_the_model_and_reports_its_size(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    result = CliRunner().invoke(app, ["validate", "spec.yaml", "--set", "model.params.hidden=[32]"])
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("spec.yaml: OK: model cnn.lenet5 (") and line.endswith("parameters), data cnn.digits")
    assert not (tmp_path / "mlflow.db").exists()


def test_run_prints_a_compact_summary(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    result = CliRunner().invoke(app, ["run", "-q", "spec.yaml"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()[-4:]
    assert lines[0].startswith("cli-test: FINISHED in ")
    assert "test/acc" in lines[1] and "test/loss" in lines[1]
    assert lines[2].startswith("  run ") and lines[2].endswith(f"in sqlite:///{tmp_path / 'mlflow.db'}")
    assert lines[3].startswith("  open: trainyard ui   then http://127.0.0.1:5000/#/experiments/")
    assert lines[3].endswith("?workflowType=machine_learning")  # the model-training layout, not GenAI's


def test_ui_binds_loopback_by_default_and_warns_otherwise(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(cli.os, "execve", lambda path, args, env: started.append(args))
    result = CliRunner().invoke(app, ["ui"])
    assert result.exit_code == 0 and result.stderr == ""
    assert started[-1][started[-1].index("--host") + 1] == "127.0.0.1"
    assert started[-1][started[-1].index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"

    result = CliRunner().invoke(app, ["ui", "--host", "0.0.0.0"])
    assert result.stderr.startswith("warning: binding the MLflow UI to 0.0.0.0 exposes every run")
    assert started[-1][started[-1].index("--host") + 1] == "0.0.0.0"


def test_ui_for_a_tracking_server_points_at_the_experiments_runs_there(monkeypatch):
    import types

    from trainyard import ui

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["ui", "--experiment", "digits"])  # no such host
    assert result.exit_code == 2 and time.monotonic() - started < 30
    assert result.stderr.startswith("trainyard ui: cannot use the tracking store http://mlflow.internal:5000: ")
    assert len(result.stderr.strip().splitlines()) == 1
    asked = []
    monkeypatch.setattr(ui, "pick_experiment", lambda store, name: asked.append((store, name)) or types.SimpleNamespace(
        experiment_id="7", name=name))
    result = CliRunner().invoke(app, ["ui", "--experiment", "digits"])
    assert result.exit_code == 0 and asked == [("http://mlflow.internal:5000", "digits")]
    assert result.stdout.strip() == ("runs are on a tracking server: open http://mlflow.internal:5000/#/experiments/7/"
                                     "runs?workflowType=machine_learning in a browser")


@pytest.mark.slow
def test_ui_serves_the_runs_of_the_default_store(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    assert CliRunner().invoke(app, ["run", "-q", "spec.yaml"]).exit_code == 0
    port = free_port()
    server = subprocess.Popen([*trainyard_command(), "ui", "--port", str(port)], env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health", process=server)
        found = requests.post(f"{base}/ajax-api/2.0/mlflow/runs/search", json={"experiment_ids": ["1"]}, timeout=10)
        [run] = found.json()["runs"]
        assert run["info"]["run_name"] == "cli-test" and run["info"]["status"] == "FINISHED"
    finally:
        server.terminate()
        server.wait(timeout=30)
