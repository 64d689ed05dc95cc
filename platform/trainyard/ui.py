"""`trainyard ui`: MLflow's UI over trainyard's store, opened on an experiment's training runs.

    --uri / $MLFLOW_TRACKING_URI / sqlite:///mlflow.db
      --> the experiment: --experiment NAME, else the one with the most recently started run
      --> prints its runs' URL: http://HOST:PORT/#/experiments/<id>/runs?workflowType=machine_learning
      --> execs `mlflow server --app-name trainyard` (MLflow's own server and UI; `create_app`
          below only adds the page defaults), bound to 127.0.0.1 unless --host says otherwise

Nothing here writes to the store (the server creates an SQLite file that does not exist yet, as
`mlflow server` always does). What trainyard settles in MLflow 3.17's UI, and why:

- Telemetry: off. `import trainyard` sets MLFLOW_DISABLE_TELEMETRY=true unless the variable is
  already set (MLflow also honours DO_NOT_TRACK=true), because trainyard runs offline and on
  clusters; the server then tells the page not to send UI events either, and the page's notice
  that "MLflow collects usage data" (on its home page) starts dismissed, since it would not be
  true. MLFLOW_DISABLE_TELEMETRY=false turns both back on.
- Model training, not GenAI: MLflow 3.17 draws an experiment's pages for one of two workflows,
  "GenAI apps & agents" (traces, judges, prompts) or "Machine learning" (runs, models), from a
  toggle it keeps in the browser's local storage (`mlflow.workflowType_v1`, "genai" when unset),
  which the page's `workflowType` query parameter overrides. The URL printed carries
  `workflowType=machine_learning`, and the page stores "machine_learning" in a browser that has
  no choice stored yet; a choice made with the toggle is kept, as MLflow keeps it. trainyard's
  experiments are also tagged `mlflow.experimentKind=custom_model_development` when a run is
  written into them (tracking.experiment_id_for); MLflow 3.17's UI takes the layout from the
  toggle, not from that tag, so `trainyard ui` does not tag the experiments it opens.
- The MLflow Assistant: it answers through an LLM provider that trainyard does not configure,
  and MLflow opens its panel (a quarter of the screen) by itself on a browser's first visit to a
  local server. The page marks that first opening as done (`mlflow.assistant.fab.
  autoOpenedOnFirstLoad_v1`), so the panel stays closed; its button is still there for whoever
  sets a provider up.

The defaults are written only where the browser holds no value for the key, by a script put in
front of MLflow's own in the page's <head>; everything else is MLflow's. The server also starts
without MLflow's job runner (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false unless set): it runs the
GenAI features' jobs (judges, scorers, trace roll-ups), and its seven processes doubled the
server's start-up time.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from typing import Any

APP_NAME = "trainyard"  # the `mlflow.app` entry point (pyproject.toml) that `mlflow server --app-name` runs
WORKFLOW_PARAM = "workflowType"
MODEL_TRAINING = "machine_learning"
# The server's environment where it does not say otherwise: no telemetry, no job runner (above).
SERVER_ENVIRONMENT = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")

# MLflow 3.17's local-storage keys ({key}_v{version}, values JSON): the workflow toggle, whether
# the assistant panel has opened by itself yet, whether the telemetry notice was dismissed.
WORKFLOW_KEY = "mlflow.workflowType_v1"
ASSISTANT_OPENED_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
TELEMETRY_NOTICE_KEY = "mlflow.telemetry.info.alert.dismissed_v1"


class UiError(Exception):
    """Bad input to `trainyard ui`: one line, exit status 2."""


def sqlite_file_missing(store: str) -> bool:
    """An SQLite store whose file does not exist yet: nothing to look up (and the server creates it)."""
    prefix = "sqlite:///"
    return store.startswith(prefix) and ":memory:" not in store and not os.path.exists(store[len(prefix):])


def pick_experiment(store: str, name: str | None):
    """The experiment called `name`, else the one with the most recently started run, else
    None (a store without runs). An unknown or deleted name is a UiError."""
    if sqlite_file_missing(store):
        if name is not None:
            raise UiError(f"no experiment named {name!r}: the store does not exist yet")
        return None
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(store)
    if name is not None:
        found = client.get_experiment_by_name(name)
        if found is None:
            names = sorted(e.name for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50000))
            close = difflib.get_close_matches(name, names, n=1)
            if close:
                raise UiError(f"no experiment named {name!r} (did you mean {close[0]!r}?)")
            listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            raise UiError(f"no experiment named {name!r}" + (f"; there are: {listed}" if names else ""))
        if found.lifecycle_stage == "deleted":
            raise UiError(f"experiment {name!r} is deleted; restore it with `mlflow experiments restore`")
        return found
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=50000)]
    latest = None
    for start in range(0, len(ids), 100):  # search_runs takes at most 100 experiments at a time
        runs = client.search_runs(ids[start:start + 100], order_by=["attributes.start_time DESC"], max_results=1)
        if runs and (latest is None or runs[0].info.start_time > latest.info.start_time):
            latest = runs[0]
    return None if latest is None else client.get_experiment(latest.info.experiment_id)


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page on the UI at `base` (http://host:port), in the model-training layout."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{WORKFLOW_PARAM}={MODEL_TRAINING}"


def runs_url(host: str, port: int, experiment_id: str | None) -> str:
    """The page of an experiment's runs in the model-training layout (the experiments list without one)."""
    return runs_page(base_url(host, port), experiment_id)


def runs_page(base: str, experiment_id: str | None) -> str:
    """runs_url on the UI at `base` (http://host:port, or a tracking server's address)."""
    page = f"experiments/{experiment_id}/runs" if experiment_id is not None else "experiments"
    return f"{base.rstrip('/')}/#/{page}?{WORKFLOW_PARAM}={MODEL_TRAINING}"


def server_command(store: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--host", host,
            "--port", str(port), "--workers", "1", "--app-name", APP_NAME]


def server_environment() -> dict[str, str]:
    """This process's environment, with SERVER_ENVIRONMENT's values where it has none."""
    return SERVER_ENVIRONMENT | dict(os.environ)


def page_defaults(telemetry_disabled: bool) -> dict[str, Any]:
    defaults: dict[str, Any] = {WORKFLOW_KEY: MODEL_TRAINING, ASSISTANT_OPENED_KEY: True}
    if telemetry_disabled:
        defaults[TELEMETRY_NOTICE_KEY] = True
    return defaults


def defaults_script(defaults: dict[str, Any]) -> str:
    """A <script> that stores each default the browser holds no value for (as MLflow would: JSON)."""
    pairs = json.dumps({key: json.dumps(value) for key, value in defaults.items()})
    return ("<script>/* trainyard ui: first-visit defaults (trainyard/ui.py) */"
            f"(function(d){{try{{for(var k in d){{if(localStorage.getItem(k)===null)localStorage.setItem(k,d[k]);}}}}"
            f"catch(e){{}}}})({pairs});</script>")


def create_app():
    """MLflow's server app (what `mlflow server` runs) with the page defaults in its index page.

    Called by `mlflow server --app-name trainyard` in the server process: the `mlflow.app` entry
    point, a factory, as MLflow's own `basic-auth` app is."""
    from flask import Response
    from mlflow.environment_variables import _MLFLOW_SGI_NAME
    from mlflow.server import app as flask_app
    from mlflow.telemetry.utils import is_telemetry_disabled

    index = os.path.join(flask_app.static_folder, "index.html")
    mlflow_serve = flask_app.view_functions["serve"]

    def serve():
        if not os.path.exists(index):
            return mlflow_serve()
        with open(index, encoding="utf-8") as file:
            page = file.read()
        page = page.replace("<head>", "<head>" + defaults_script(page_defaults(is_telemetry_disabled())), 1)
        return Response(page, mimetype="text/html", headers={"Cache-Control": "no-cache"})

    flask_app.view_functions["serve"] = serve
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import app

        return app
    return flask_app
