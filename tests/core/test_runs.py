"""Runs read back with the MLflow client: params, metrics, artifacts, tags and a truthful status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import mlflow
import pytest
import torch
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from helpers import free_port, subprocess_env, trainyard_command, wait_for_http
from trainyard.cli import app
from trainyard.run import run_experiment
from trainyard.tracking import tracking_uri
from trainyard.validate import load_experiment

LENET = """\
name: lenet5-digits-test
seed: 3
model:
  name: cnn.lenet5
  params: {dropout: 0.1}
data:
  name: cnn.digits
  params: {batch_size: 64}
optimizer: {name: adam, lr: 0.003}
schedule: {name: cosine}
trainer:
  max_epochs: 2
  progress_bar: false
  checkpoint: {monitor: val/acc, mode: max}
tracking: {experiment: readback}
"""

MLP = """\
name: mlp-test
model:
  name: example.mlp
  params: {hidden: 8}
data:
  name: example.blobs
trainer:
  max_epochs: 2
  progress_bar: false
"""


def write(tmp_path, text: str, name: str = "spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def only_run(uri: str | None = None):
    client = MlflowClient(uri or tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [run.info for run in runs]
    return client, runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_run_is_recorded_completely(tmp_path):
    subprocess.run(["git", "init", "-q"], check=True)
    spec = write(tmp_path, LENET)
    subprocess.run(["git", "add", "spec.yaml"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "spec"], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    result = run_experiment(load_experiment(spec, ["optimizer.lr=0.004"]), quiet=True)
    client, run = only_run()
    assert run.info.run_id == result.run_id
    assert run.info.status == "FINISHED"

    params = run.data.params
    assert params["optimizer.lr"] == "0.004"
    assert params["model.params.dropout"] == "0.1"
    assert params["model.params.activation"] == "tanh"  # a default, resolved
    assert params["data.params.batch_size"] == "64"
    assert params["trainer.max_epochs"] == "2"

    metrics = run.data.metrics
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "train/lr", "best/val/acc"):
        assert key in metrics, key
    assert metrics["test/acc"] == pytest.approx(result.metrics["test/acc"])
    assert metrics["best/val/acc"] == max(m.value for m in client.get_metric_history(run.info.run_id, "val/acc"))
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2  # one value per epoch
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) >= 4

    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["trainyard.git_dirty"] == "false"
    assert tags["trainyard.version"] == "0.1.0"
    assert tags["trainyard.plugin.cnn.version"] == "0.1.0"
    assert tags["trainyard.model"] == "cnn.lenet5" and tags["trainyard.data"] == "cnn.digits"
    assert tags["trainyard.overrides"] == "optimizer.lr"
    assert tags["trainyard.model_format"] == "pt2"

    paths = artifact_paths(client, run.info.run_id)
    assert {path for path in paths if not path.startswith("images/")} == {
        "spec.yaml", "checkpoints/best.ckpt", "reports/confusion_matrix.png", "reports/misclassified.png"}
    # The misclassified validation images, a series with one image per validation (MLflow's
    # images/<key>+step+<step>+...png, which its UI's step slider walks through).
    series = sorted(int(path.split("+step+")[1].split("+")[0]) for path in paths
                    if path.startswith("images/misclassified+step+") and path.endswith(".png")
                    and "compressed" not in path)
    assert series == [step for step, _ in ((m.step, m.value) for m in
                                           client.get_metric_history(run.info.run_id, "val/acc"))]
    resolved = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/spec.yaml"))
    assert resolved["optimizer"]["lr"] == 0.004 and resolved["model"]["params"]["pool"] == "avg"

    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="checkpoints/best.ckpt",
                                                dst_path=str(tmp_path / "dl"))
    state = torch.load(local, weights_only=True, map_location="cpu")["state_dict"]
    assert any(key.startswith("net.features") for key in state)

    for plot in ("confusion_matrix", "misclassified"):
        png = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=f"reports/{plot}.png",
                                                  dst_path=str(tmp_path / "dl"))
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"

    [output] = run.outputs.model_outputs
    assert tags["trainyard.model_uri"] == f"models:/{output.model_id}"
    assert mlflow.get_logged_model(output.model_id).experiment_id == run.info.experiment_id
    loaded = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    images = torch.rand(5, 1, 8, 8)
    assert loaded(images).shape == (5, 10)


def test_metrics_are_logged_asynchronously_in_batches(use_plugins, tmp_path, monkeypatch):
    use_plugins("example")
    calls = []
    original = MlflowClient.log_batch

    def spy(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        # MLflow itself links a step's metrics to a logged model (Model.log), synchronously, when
        # they have reached the store by then: not trainyard's logging, and timing-dependent.
        caller = sys._getframe(1).f_code.co_filename
        if metrics and f"{os.sep}mlflow{os.sep}models{os.sep}" not in caller:
            calls.append((len(metrics), synchronous))
        return original(self, run_id, metrics=metrics, params=params, tags=tags, synchronous=synchronous)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    run_experiment(load_experiment(write(tmp_path, MLP), ["trainer.log_every_n_steps=1"]), quiet=True)
    assert calls, "no metrics were logged"
    assert all(synchronous is False for _, synchronous in calls)
    _, run = only_run()
    steps = {m.step for m in MlflowClient().get_metric_history(run.info.run_id, "train/loss")}
    assert len(steps) >= 15  # every step reached the store once the queue was flushed


def test_a_process_keeps_one_metric_request_open_against_a_slow_store(tmp_path, monkeypatch):
    """A store slower than the queue's one-second buffer gets the batches one after another, all
    of them, never several at once (MLflow's own pool would send up to 10 together)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from trainyard.tracking import TrackedRun

    monkeypatch.delenv("MLFLOW_ASYNC_LOGGING_THREADPOOL_SIZE", raising=False)
    lock, open_requests, most_open = threading.Lock(), [0], [0]
    original = SqlAlchemyStore.log_batch

    def slow(self, run_id, metrics, params, tags):
        with lock:
            open_requests[0] += 1
            most_open[0] = max(most_open[0], open_requests[0])
        try:
            time.sleep(1.5)
            return original(self, run_id, metrics, params, tags)
        finally:
            with lock:
                open_requests[0] -= 1

    monkeypatch.setattr(SqlAlchemyStore, "log_batch", slow)
    uri = f"sqlite:///{tmp_path / 'slow.db'}"  # a store of its own: its queue starts here
    run = TrackedRun.start(uri, "slow-store", "run", {})
    for step in range(6):  # batches at about 1 s and 2 s while the first takes 1.5 s
        run.log_metrics({"x": float(step)}, step)
        time.sleep(0.45)
    run.end("FINISHED")
    assert most_open[0] == 1
    history = MlflowClient(uri).get_metric_history(run.run_id, "x")
    assert sorted(m.step for m in history) == list(range(6))


def test_failing_run_is_marked_failed_with_the_error(use_plugins, tmp_path):
    use_plugins("example")
    spec = write(tmp_path, MLP.replace("hidden: 8", "hidden: 8, fail_at_step: 3"))
    result = CliRunner().invoke(app, ["run", "-q", str(spec)])
    assert result.exit_code == 1
    assert "mlp-test: FAILED: RuntimeError: failing on purpose at step 3" in result.stderr
    client, run = only_run()
    assert run.info.status == "FAILED"
    assert run.data.tags["trainyard.error"] == "RuntimeError: failing on purpose at step 3"
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/error.txt")
    assert "Traceback" in text and "training_step" in text


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_run_is_marked_killed(plugin_site, tmp_path, signum):
    spec = write(tmp_path, MLP.replace("hidden: 8", "hidden: 8, seconds_per_step: 0.05")
                 .replace("max_epochs: 2", "max_epochs: 1000"))
    process = subprocess.Popen([*trainyard_command(), "run", "-q", str(spec)], env=subprocess_env(plugin_site, "example"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = MlflowClient(tracking_uri())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until training has logged something
            time.sleep(0.5)
            if (tmp_path / "mlflow.db").exists():
                runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
                if runs and "train/loss" in runs[0].data.metrics:
                    break
        else:
            pytest.fail("training never started")
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signum, stderr
    assert f"interrupted (interrupted by {signal.Signals(signum).name})" in stderr
    _, run = only_run()
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None


def test_a_run_leaves_the_processs_tracking_uri_as_it_was(use_plugins, tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports $MLFLOW_TRACKING_URI: a notebook's next run without a
    tracking.uri must not land in the previous run's store."""
    use_plugins("example")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = write(tmp_path, """\
        name: bandit-test
        env: {name: example.bandit}
        algorithm: {name: example.greedy, params: {pulls: 10}}
        """)
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    assert run_experiment(load_experiment(spec, [f"tracking.uri={elsewhere}"]), quiet=True).tracking_uri == elsewhere
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert run_experiment(load_experiment(spec), quiet=True).tracking_uri == tracking_uri() != elsewhere


def test_algorithm_run(use_plugins, tmp_path):
    use_plugins("example")
    spec = write(tmp_path, """\
        name: bandit-test
        env: {name: example.bandit, params: {probabilities: [0.1, 0.9]}}
        algorithm: {name: example.greedy, params: {pulls: 300}}
        """)
    result = run_experiment(load_experiment(spec), quiet=True)
    client, run = only_run()
    assert run.info.status == "FINISHED"
    assert result.metrics["test/best_arm"] == 1.0
    assert run.data.metrics["test/mean_reward"] == pytest.approx(result.metrics["test/mean_reward"])
    assert len(client.get_metric_history(run.info.run_id, "train/mean_reward")) == 15
    assert run.data.params["env.params.probabilities"] == "[0.1, 0.9]"
    assert artifact_paths(client, run.info.run_id) == {"spec.yaml", "values.txt", "reports/example_report.txt"}


def test_unreachable_tracking_server_is_bad_input(use_plugins, tmp_path):
    use_plugins("example")
    spec = write(tmp_path, MLP + f"tracking: {{uri: 'http://127.0.0.1:{free_port()}'}}\n")
    result = CliRunner().invoke(app, ["run", str(spec)])
    assert result.exit_code == 2
    assert result.stderr.startswith("spec.yaml: tracking.uri: cannot reach the tracking server http://127.0.0.1:")


def test_environment_variable_sets_the_tracking_store(use_plugins, tmp_path, monkeypatch):
    use_plugins("example")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    run_experiment(load_experiment(write(tmp_path, MLP)), quiet=True)
    assert not (tmp_path / "mlflow.db").exists()
    _, run = only_run(f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_run_against_a_tracking_server(use_plugins, tmp_path):
    use_plugins("example")
    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", "sqlite:///server.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=server_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", process=server)
        spec = write(tmp_path, MLP + "  checkpoint: {monitor: val/acc, mode: max}\n" + f"tracking: {{uri: '{uri}'}}\n")
        result = run_experiment(load_experiment(spec), quiet=True)
        client, run = only_run(uri)
        assert run.info.status == "FINISHED"
        assert result.url == (f"{uri}/#/experiments/{result.experiment_id}/runs/{result.run_id}"
                              "?workflowType=machine_learning")
        assert run.data.metrics["test/acc"] == pytest.approx(result.metrics["test/acc"])
        assert {"spec.yaml", "checkpoints/best.ckpt"} <= artifact_paths(client, run.info.run_id)
        assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local default store
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_multi_device_training_records_one_run(plugin_site, tmp_path):
    """devices: 2 on CPU: Lightning starts a second process (DDP over gloo); only rank 0 records."""
    spec = write(tmp_path, MLP + "  checkpoint: {monitor: val/acc, mode: max}\nschedule: {name: cosine}\n")
    result = subprocess.run([*trainyard_command(), "run", "-q", str(spec), "--set", "trainer.devices=2",
                             "--set", "trainer.accelerator=cpu"], env=subprocess_env(plugin_site, "example"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("mlp-test: FINISHED") == 1
    client, run = only_run()
    assert run.info.status == "FINISHED"
    assert {"train/loss", "val/acc", "test/acc", "train/lr", "best/val/acc"} <= set(run.data.metrics)
    assert "checkpoints/best.ckpt" in artifact_paths(client, run.info.run_id)


def test_a_continued_run_files_its_model_under_its_own_experiment(tmp_path, monkeypatch):
    """`trainyard sweep --resume` logs the best model into a run it continues: the model goes to
    that run's experiment, not to $MLFLOW_EXPERIMENT_ID's (here one that does not exist)."""
    from mlflow.tracking import fluent

    from trainyard.record import log_pytorch_model
    from trainyard.tracking import TrackedRun

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    first = TrackedRun.start(uri, "continued", "run", {})
    first.end("KILLED")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "999")
    monkeypatch.setattr(fluent, "_active_experiment_id", None)  # a new process
    continued = TrackedRun.attach(uri, first.run_id)
    model = torch.nn.Linear(3, 2)
    model.example_input_array = torch.zeros(1, 3)
    log_pytorch_model(continued, model)
    continued.end("FINISHED")
    [output] = MlflowClient(uri).get_run(first.run_id).outputs.model_outputs
    assert mlflow.get_logged_model(output.model_id).experiment_id == first.experiment_id != "0"
