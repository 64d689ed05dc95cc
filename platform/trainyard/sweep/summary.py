"""The end of a sweep, written to its parent run: the best trial, a table of all trials, a plot.

The table is read back from the child runs in MLflow, not from Tune's memory, so that a resumed
sweep's summary covers the trials that ended before the driver was restarted.

On the parent run:
- params `best.<swept key>`: the best trial's sampled values;
- metrics `best_trial/<metric>`: the best trial's final metrics (its test metrics included),
  and `sweep/trials`, `sweep/finished`, `sweep/stopped_early`, `sweep/failed`;
- tags `trainyard.best_run_id`, `trainyard.best_trial_id`;
- artifacts `trials.csv` and `trials.json` (one row per trial, MLflow's table format) and
  `metric_vs_params.png` (the sweep's metric against each swept value).

A sweep across models also gets, per model, metrics `best_of/<model>/<metric>` and a table
`best_per_model.json`: the best trial of each model side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainyard.spec import Domain, SweepSpec
from trainyard.sweep.child_run import STOPPED_TAG, TRIAL_ID_TAG
from trainyard.sweep.space import short_names
from trainyard.tracking import TrackedRun


@dataclass
class TrialRow:
    trial_id: str
    run_id: str
    status: str  # FINISHED, STOPPED (by the scheduler), FAILED, KILLED, RUNNING
    values: dict[str, Any]  # swept key -> value, as logged
    score: float | None  # the sweep metric: its best epoch (or the final value of an algorithm)
    metrics: dict[str, float]  # the child run's latest metrics


@dataclass
class Summary:
    rows: list[TrialRow]
    best: TrialRow | None

    def count(self, status: str) -> int:
        return sum(row.status == status for row in self.rows)


def collect(parent: TrackedRun, sweep: SweepSpec) -> Summary:
    """Every child run of the parent, as a row, and the best of them."""
    runs = []
    token = None
    while True:
        page = parent.client.search_runs([parent.experiment_id], max_results=1000, page_token=token,
                                         filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
        runs += list(page)
        token = page.token
        if not token:
            break
    rows = []
    for run in runs:
        metrics = dict(run.data.metrics)
        score = metrics.get(f"best/{sweep.metric}", metrics.get(sweep.metric))
        status = run.info.status
        if status == "FINISHED" and run.data.tags.get(STOPPED_TAG) == "true":
            status = "STOPPED"
        rows.append(TrialRow(run.data.tags.get(TRIAL_ID_TAG, run.info.run_name), run.info.run_id, status,
                             {key: run.data.params.get(key) for key in sweep.searched_keys()}, score, metrics))
    rows.sort(key=lambda row: row.trial_id)
    scored = [row for row in rows if row.status in ("FINISHED", "STOPPED") and is_finite(row.score)]
    best = (max if sweep.mode == "max" else min)(scored, key=lambda row: row.score) if scored else None
    return Summary(rows, best)


def record(parent: TrackedRun, sweep: SweepSpec, summary: Summary, directory: Path) -> None:
    """Write the summary into the parent run (see the module docstring)."""
    import pandas as pd

    counts = {"sweep/trials": len(summary.rows), "sweep/finished": summary.count("FINISHED"),
              "sweep/stopped_early": summary.count("STOPPED"), "sweep/failed": summary.count("FAILED")}
    parent.log_metrics(counts, step=0)
    if summary.best is not None:
        best = summary.best
        _log_params_once(parent, {f"best.{key}": value for key, value in best.values.items()})
        parent.log_metrics({f"best_trial/{key}": value for key, value in best.metrics.items() if key != "epoch"},
                           step=0)
        parent.set_tags({"trainyard.best_run_id": best.run_id, "trainyard.best_trial_id": best.trial_id})
    if sweep.branches:
        _record_best_per_model(parent, sweep, summary)
    names = short_names(sweep.searched_keys())
    table = pd.DataFrame([
        {"trial": row.trial_id, "status": row.status, **{names[k]: v for k, v in row.values.items()},
         sweep.metric: row.score, **{k: v for k, v in sorted(row.metrics.items()) if k.startswith("test/")},
         "run_id": row.run_id}
        for row in summary.rows])
    directory.mkdir(parents=True, exist_ok=True)
    table.to_csv(directory / "trials.csv", index=False)
    parent.client.log_table(parent.run_id, table, "trials.json")
    plot_metric_against_values(sweep, summary, directory / "metric_vs_params.png")
    parent.log_artifact(directory / "trials.csv")
    parent.log_artifact(directory / "metric_vs_params.png")


def _record_best_per_model(parent: TrackedRun, sweep: SweepSpec, summary: Summary) -> None:
    import pandas as pd

    rows = []
    for model in sweep.branches:
        scored = [row for row in summary.rows if row.values.get("model.name") == model
                  and row.status in ("FINISHED", "STOPPED") and is_finite(row.score)]
        if not scored:
            continue
        best = (max if sweep.mode == "max" else min)(scored, key=lambda row: row.score)
        parent.log_metrics({f"best_of/{model}/{sweep.metric}": best.score}, step=0)
        searched = {key: value for key, value in best.values.items() if key != "model.name" and value is not None}
        rows.append({"model": model, sweep.metric: best.score, "trials": len(scored), "trial": best.trial_id,
                     "values": ", ".join(f"{key}={value}" for key, value in searched.items()),
                     **{k: v for k, v in sorted(best.metrics.items()) if k.startswith("test/")}, "run_id": best.run_id})
    if rows:
        parent.client.log_table(parent.run_id, pd.DataFrame(rows), "best_per_model.json")


def searched_domain(sweep: SweepSpec, key: str) -> Domain:
    """The domain a searched key was drawn from (model.name: the branches' models)."""
    if key == "model.name":
        return Domain.model_validate({"choice": list(sweep.branches)})
    if key in sweep.space:
        return sweep.space[key]
    return next(sweep.branch_space(name)[key] for name in sweep.branches if key in sweep.branch_space(name))


def plot_metric_against_values(sweep: SweepSpec, summary: Summary, path: Path) -> None:
    """One panel per swept key: each trial's score against its value; the best trial starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sweep.searched_keys()
    names = short_names(keys)
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    colours = {"FINISHED": "tab:blue", "STOPPED": "tab:orange"}
    for axis, key in zip(axes[0], keys):
        domain = searched_domain(sweep, key)
        categorical = domain.kind in ("choice", "grid")
        labels = [str(v) for v in domain.args] if categorical else []
        for status, colour in colours.items():
            points = [(row.values[key], row.score) for row in summary.rows
                      if row.status == status and is_finite(row.score) and row.values[key] is not None]
            if points:
                xs = [labels.index(x) if categorical and x in labels else float(x) for x, _ in points]
                axis.scatter(xs, [y for _, y in points], c=colour, s=24, alpha=0.8,
                             label="stopped early" if status == "STOPPED" else "finished")
        if summary.best is not None and summary.best.values[key] is not None:
            x = summary.best.values[key]
            x = labels.index(x) if categorical and x in labels else float(x)
            axis.scatter([x], [summary.best.score], marker="*", s=200, c="gold", edgecolors="black", zorder=3,
                         label="best")
        if categorical:
            axis.set_xticks(range(len(labels)), labels, rotation=30 if max(map(len, labels), default=0) > 6 else 0)
        elif "log" in domain.kind:
            axis.set_xscale("log")
        axis.set_xlabel(names[key])
        axis.set_ylabel(sweep.metric)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(f"{sweep.metric} ({'higher' if sweep.mode == 'max' else 'lower'} is better) against each swept value")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _log_params_once(parent: TrackedRun, params: dict[str, Any]) -> None:
    """Params cannot change in MLflow: a resumed sweep whose earlier session logged a different
    best keeps the new one in tags."""
    from mlflow.exceptions import MlflowException

    try:
        parent.log_params(params)
    except MlflowException:
        parent.set_tags({f"trainyard.{key}": str(value)[:500] for key, value in params.items()})


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
