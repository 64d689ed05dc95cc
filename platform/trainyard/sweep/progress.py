"""The driver's view of a running sweep: a Tune callback.

- On a terminal, one line per trial (status, sampled values, latest metric, best, epochs),
  refreshed in place; elsewhere (CI, a log file) one line per trial as it ends, then the table.
- A trial that Tune ends but that could not end its own MLflow child run (a scheduler stopped it,
  its process died, it failed for good) gets its status here, from the driver.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from trainyard.sweep.child_run import finish_for_trial
from trainyard.sweep.reporting import ENDED_KEY, EPOCH_KEY, FINAL_KEY, RUN_ID_KEY
from trainyard.sweep.space import TIME_ATTR, short_names, shown_values

STATUS_STYLE = {"PENDING": "dim", "RUNNING": "cyan", "PAUSED": "yellow", "TERMINATED": "green", "ERROR": "red"}
REFRESH_SECONDS = 0.25
# Statuses a trial's row keeps until one of Tune's trial hooks changes it (a retry starts it again).
SETTLED = ("TERMINATED", "STOPPED", "ERROR")


class SweepProgress(Callback):
    def __init__(self, console: Console, keys: list[str], metric: str, max_epochs: int | None,
                 tracking: dict[str, str]):
        self.console = console
        self.names = short_names(keys)
        self.metric = metric
        self.max_epochs = max_epochs
        self.tracking = tracking  # uri, experiment_id, parent_run_id
        self.rows: dict[str, dict[str, Any]] = {}
        self.live: Live | None = None
        self.last_refresh = 0.0
        # MLflow status writes happen on a thread of their own: Tune's loop, which calls these
        # hooks, starts the next trial only when they return.
        self.writer: ThreadPoolExecutor | None = None
        self.writes: list[Future] = []
        self.unfinished: list[str] = []  # trials neither TERMINATED nor ERROR when Tune stopped

    # Tune keeps the run configuration (with its callbacks) in the sweep folder: the terminal
    # and the live display stay out of it.
    def __getstate__(self) -> dict[str, Any]:
        runtime = ("console", "live", "writer", "writes")
        return {key: value for key, value in self.__dict__.items() if key not in runtime} | {
            "console": None, "live": None, "writer": None, "writes": []}

    # --- Tune's callback hooks ---------------------------------------------------------------

    def setup(self, **info) -> None:
        if self.console is None:  # restored from the sweep folder by --resume: this terminal
            self.console = Console(file=sys.__stdout__, highlight=False, soft_wrap=True)
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, auto_refresh=False, transient=False)
            self.live.start()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._row(trial)["status"] = "RUNNING"
        self._refresh(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        row = self._row(trial)
        row["status"] = "RUNNING"
        self._take(row, result)
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["status"] = "TERMINATED"
        # A trial that ran to its end closes its child run itself (this may run first: the
        # status is set either way); one that a scheduler stopped does not.
        final = bool((trial.last_result or {}).get(FINAL_KEY))
        # A trial's last report says it is final; a model trial that ends without one was stopped
        # by its scheduler, at whichever validation that was (mid-epoch included).
        stopped = not final and self.max_epochs is not None
        if not (final and trial.last_result.get(ENDED_KEY)):  # (one that says it ended its run needs no look)
            self._finish(trial, "FINISHED", stopped_early=stopped)
        if stopped:
            row["status"] = "STOPPED"
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        row = self._row(trial)
        row["status"] = "ERROR"
        self._finish(trial, "FAILED", error=_error_line(trial), values=row["config"])
        self._ended(trial)

    def on_step_end(self, iteration, trials, **info) -> None:
        for trial in trials:  # pending, paused, and (after --resume) already ended trials show up too
            known = self.rows.get(trial.trial_id)
            if known is not None and known.get("status") in SETTLED:
                continue  # Tune calls this many times a trial: a sweep's step stays O(trials still open)
            row = self._row(trial)
            if "status" not in row:
                self._take(row, trial.last_result or {})
            if "status" not in row or trial.status in ("PENDING", "PAUSED"):
                row["status"] = trial.status
        self._refresh()

    def on_experiment_end(self, trials, **info) -> None:
        self.unfinished = [trial.trial_id for trial in trials if trial.status not in ("TERMINATED", "ERROR")]
        for write in self.writes:  # every status is in MLflow before the summary reads them
            error = write.exception()
            if error is not None and self.console is not None:
                self.console.print(f"warning: could not set a trial's MLflow status: {error}", markup=False)
        self.writes = []
        if self.writer is not None:
            self.writer.shutdown()
            self.writer = None  # a resumed pass (the driver's, after lost trials) starts another
        if self.live is not None:
            self._refresh(force=True)
            self.live.stop()
        elif self.console is not None:
            self.console.print(self._table())

    # --- helpers -----------------------------------------------------------------------------

    def _row(self, trial) -> dict[str, Any]:
        row = self.rows.get(trial.trial_id)
        if row is None:
            row = self.rows[trial.trial_id] = {"config": shown_values(trial.config)}
        if "run_id" not in row:  # a trial's run does not change; Tune's last_result is not free
            run_id = (trial.last_result or {}).get(RUN_ID_KEY)
            if run_id:
                row["run_id"] = run_id
        return row

    def _take(self, row: dict[str, Any], result: dict[str, Any]) -> None:
        """The epoch, metric and best-so-far of a Tune result, into a trial's row."""
        epochs = result.get(EPOCH_KEY, result.get(TIME_ATTR))
        if epochs is not None:
            row["epochs"] = epochs
        for key in (self.metric, f"best/{self.metric}"):
            if isinstance(result.get(key), (int, float)):
                row[key] = result[key]

    def _finish(self, trial, status: str, **details) -> None:
        if self.writer is None:
            self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainyard-status")
        self.writes.append(self.writer.submit(
            finish_for_trial, self.tracking["uri"], self.rows[trial.trial_id].get("run_id"),
            self.tracking["experiment_id"], self.tracking["parent_run_id"], trial.trial_id, status, **details))

    def _ended(self, trial) -> None:
        if self.live is None and self.console is not None:
            self.console.print(self._line(trial.trial_id, self.rows[trial.trial_id]), markup=False)
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.live is not None and (force or now - self.last_refresh >= REFRESH_SECONDS):
            self.live.update(self._table(), refresh=True)
            self.last_refresh = now

    def _line(self, trial_id: str, row: dict[str, Any]) -> str:
        values = " ".join(f"{self.names.get(k, k)}={_show(v)}" for k, v in row["config"].items())
        metric = row.get(self.metric)
        shown = f"{self.metric} {_show(metric)}" if metric is not None else f"{self.metric} -"
        return f"{trial_id} {row.get('status', 'PENDING'):<10} {values}  {shown}  epochs {row.get('epochs') or 0}"

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("trial", "status", *self.names.values(), self.metric, "best", "epochs"):
            table.add_column(column)
        for trial_id, row in self.rows.items():
            status = row.get("status", "PENDING")
            cells = [Text(trial_id), Text(status, style=STATUS_STYLE.get(status, ""))]
            cells += [Text(_show(row["config"].get(key))) for key in self.names]
            cells += [Text(_show(row.get(self.metric))), Text(_show(row.get(f"best/{self.metric}"))),
                      Text(str(row.get("epochs") or 0))]
            table.add_row(*cells)
        return table


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _error_line(trial) -> str:
    """The last line of the trial's error (Tune keeps the traceback in the trial folder)."""
    try:
        with open(trial.error_file, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip()]
        return lines[-1] if lines else "the trial failed"
    except (OSError, TypeError):
        return "the trial failed"
