"""The sweep's reports, on its parent run, made once the summary (summary.py) is recorded:

- `parallel_coordinates.png`: one line per trial that reported the metric, across the searched
  values (log axes for log domains, categories for choice and grid) to the metric; coloured by
  the metric, the best trial drawn thickest;
- `learning_curves.png`: every trial's sweep metric against the step, overlaid; an x where the
  scheduler stopped a trial, dotted where a trial failed; in a sweep across models
  (`sweep.branches`) one colour per model with a legend, else coloured by the trial's score;
- `top_trials.json`: the best trials (at most TOP_TRIALS), ranked, as an MLflow table (the UI
  shows it as a table; `mlflow.load_table` reads it back).

The metric against each searched value, one panel per key, is summary.py's `metric_vs_params.png`.

The reports are views of results the summary has already recorded: one that cannot be made is
a warning line, never a failed sweep.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trainyard.spec import Domain, SweepSpec
from trainyard.sweep.space import short_names
from trainyard.sweep.summary import Summary, TrialRow, is_finite, searched_domain
from trainyard.tracking import TrackedRun

TOP_TRIALS = 10
SCORED = ("FINISHED", "STOPPED")  # the statuses whose score counts, as in summary.collect
ENDED_BADLY = ("FAILED", "KILLED")


def record(parent: TrackedRun, sweep: SweepSpec, summary: Summary, directory: Path) -> str | None:
    """Make the reports and log them to the parent run; a warning line if that failed."""
    try:
        histories = {row.run_id: [(m.step, m.value) for m in parent.client.get_metric_history(row.run_id, sweep.metric)]
                     for row in summary.rows}
        for path in write_figures(sweep, summary, histories, directory):
            parent.log_artifact(path)
        table = top_trials(sweep, summary)
        if table is not None:
            parent.client.log_table(parent.run_id, table, "top_trials.json")
    except Exception as error:  # noqa: BLE001 - the results are recorded already; the reports only show them
        return f"the sweep's reports are incomplete: {type(error).__name__}: {error}"
    return None


def write_figures(sweep: SweepSpec, summary: Summary, histories: dict[str, list[tuple[int, float]]],
                  directory: Path) -> list[Path]:
    """The figures the trials' results allow (none when no trial reported the metric)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in (("parallel_coordinates.png", parallel_coordinates(sweep, summary)),
                         ("learning_curves.png", learning_curves(sweep, summary, histories))):
        if figure is not None:
            figure.savefig(directory / name, dpi=110)
            written.append(directory / name)
    return written


def top_trials(sweep: SweepSpec, summary: Summary, count: int = TOP_TRIALS):
    """The best `count` trials, best first, as a DataFrame; None when no trial has a score."""
    import pandas as pd

    ranked = sorted(_scored(summary), key=lambda row: row.score, reverse=sweep.mode == "max")[:count]
    if not ranked:
        return None
    names = short_names(sweep.searched_keys())
    return pd.DataFrame([
        {"rank": rank, "trial": row.trial_id, "status": row.status, sweep.metric: row.score,
         **{names[key]: value for key, value in row.values.items()},
         **{key: value for key, value in sorted(row.metrics.items()) if key.startswith("test/")}, "run_id": row.run_id}
        for rank, row in enumerate(ranked, start=1)])


class ValueAxis:
    """One searched key as a vertical axis from 0 to 1: its domain's range (in log10 for a log
    domain), or its categories evenly spaced."""

    def __init__(self, key: str, domain: Domain, seen: list[Any]):
        self.key = key
        self.categorical = domain.kind in ("choice", "grid")
        if self.categorical:
            # Values come back as logged params (text); a value the domain does not list still gets a place.
            self.categories = list(dict.fromkeys([str(value) for value in domain.args]
                                                 + [str(value) for value in seen if value is not None]))
        else:
            self.log = "log" in domain.kind
            self.low, self.high = (self._scale(float(bound)) for bound in domain.args[:2])

    def _scale(self, value: float) -> float:
        return math.log10(value) if self.log and value > 0 else value

    def position(self, value: Any) -> float:
        """Where `value` sits on the axis; NaN (a gap in the line) for a key the trial lacks (another branch's)."""
        if value is None:
            return math.nan
        if self.categorical:
            spaces = len(self.categories) - 1
            return self.categories.index(str(value)) / spaces if spaces else 0.5
        try:
            scaled = self._scale(float(value))
        except ValueError:
            return math.nan
        return min(1.0, max(0.0, (scaled - self.low) / (self.high - self.low)))

    def ticks(self) -> list[tuple[float, str]]:
        if self.categorical:
            return [(self.position(category), category) for category in self.categories]
        shown = (lambda scaled: f"{10 ** scaled:.3g}") if self.log else (lambda value: f"{value:.3g}")
        return [(0.0, shown(self.low)), (1.0, shown(self.high))]


def parallel_coordinates(sweep: SweepSpec, summary: Summary):
    """A matplotlib Figure, or None when no trial has a score."""
    from matplotlib.figure import Figure

    scored = _scored(summary)
    if not scored:
        return None
    keys = sweep.searched_keys()
    names = short_names(keys)
    axes = [ValueAxis(key, searched_domain(sweep, key), [row.values.get(key) for row in summary.rows]) for key in keys]
    colours, norm = _score_colours(sweep, scored)
    # A Figure of its own, not pyplot's: no global state, no GUI backend on the driver.
    figure = Figure(figsize=(max(5.0, 1.7 * (len(axes) + 1)), 4.2))
    plot = figure.subplots()
    # Worst first, so that the best lines are drawn over the others.
    for row in sorted(scored, key=lambda row: row.score, reverse=sweep.mode == "min"):
        ys = [axis.position(row.values.get(axis.key)) for axis in axes] + [_unit(norm, row.score)]
        best = summary.best is not None and row.run_id == summary.best.run_id
        plot.plot(range(len(ys)), ys, color=colours.to_rgba(row.score), lw=2.8 if best else 1.2, alpha=0.9,
                  marker="o", ms=3, zorder=3 if best else 2)
    for index, axis in enumerate(axes):
        plot.axvline(index, color="0.6", lw=0.8, zorder=1)
        for y, label in axis.ticks():
            plot.text(index + 0.04, y, label, fontsize=7, va="center", color="0.25")
    metric_axis = len(axes)
    plot.axvline(metric_axis, color="0.6", lw=0.8, zorder=1)
    for y, value in ((0.0, norm.vmin), (1.0, norm.vmax)):
        plot.text(metric_axis + 0.04, y, f"{value:.4g}", fontsize=7, va="center", color="0.25")
    plot.set_xticks(range(len(axes) + 1), [names[key] for key in keys] + [sweep.metric])
    plot.set_yticks([])
    plot.set_xlim(-0.2, metric_axis + 0.5)
    plot.set_ylim(-0.08, 1.08)
    for side in ("top", "right", "left"):
        plot.spines[side].set_visible(False)
    figure.colorbar(colours, ax=plot, label=sweep.metric)
    plot.set_title(f"{_count(len(scored), 'trial')}: searched values and {sweep.metric} "
                   f"({'higher' if sweep.mode == 'max' else 'lower'} is better)", fontsize=10)
    figure.tight_layout()
    return figure


def learning_curves(sweep: SweepSpec, summary: Summary, histories: dict[str, list[tuple[int, float]]]):
    """A matplotlib Figure, or None when no trial reported the metric; `histories` maps a trial's
    run id to its (step, value) points."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    curves = {row.run_id: sorted(histories.get(row.run_id) or []) for row in summary.rows}
    if not any(curves.values()):
        return None
    figure = Figure(figsize=(7.5, 4.4))
    plot = figure.subplots()
    by_model = {model: f"C{index % 10}" for index, model in enumerate(sweep.branches or {})}
    scored = _scored(summary)
    colours = _score_colours(sweep, scored)[0] if scored and not by_model else None
    scored_ids = {row.run_id for row in scored}
    stopped = failed = False
    for row in summary.rows:
        points = curves[row.run_id]
        if not points:
            continue
        steps, values = zip(*points)
        if by_model:
            colour = by_model.get(str(row.values.get("model.name")), "0.5")
        else:
            colour = colours.to_rgba(row.score) if colours is not None and row.run_id in scored_ids else "0.5"
        best = summary.best is not None and row.run_id == summary.best.run_id
        plot.plot(steps, values, color=colour, ls=":" if row.status in ENDED_BADLY else "-", lw=2.4 if best else 1.1,
                  alpha=0.85, marker="o" if len(points) == 1 else None, ms=4, zorder=3 if best else 2)
        if row.status == "STOPPED":
            plot.plot([steps[-1]], [values[-1]], marker="x", color=colour, ms=8, mew=2, ls="none", zorder=4)
        stopped |= row.status == "STOPPED"
        failed |= row.status in ENDED_BADLY
    handles = [Line2D([], [], color=colour, lw=2, label=model) for model, colour in by_model.items()]
    if summary.best is not None:
        handles.append(Line2D([], [], color="0.2", lw=2.4, label=f"best: trial {summary.best.trial_id}"))
    if stopped:
        handles.append(Line2D([], [], color="0.2", marker="x", mew=2, ls="none", label="stopped early by the scheduler"))
    if failed:
        handles.append(Line2D([], [], color="0.2", ls=":", label="failed or killed"))
    if handles:
        plot.legend(handles=handles, fontsize=8)
    if colours is not None:
        figure.colorbar(colours, ax=plot, label=f"trial's {sweep.metric}")
    plot.set_xlabel("step")
    plot.set_ylabel(sweep.metric)
    plot.grid(alpha=0.3)
    plot.set_title(f"{sweep.metric} of each trial ({'higher' if sweep.mode == 'max' else 'lower'} is better)",
                   fontsize=10)
    figure.tight_layout()
    return figure


def _scored(summary: Summary) -> list[TrialRow]:
    return [row for row in summary.rows if row.status in SCORED and is_finite(row.score)]


def _score_colours(sweep: SweepSpec, scored: list[TrialRow]):
    """A colour per score, the best trials bright whichever the mode; and its range."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    scores = [row.score for row in scored]
    low, high = min(scores), max(scores)
    if low == high:  # one trial, or all alike: a range around it keeps the colour scale defined
        low, high = low - 0.5, high + 0.5
    norm = Normalize(low, high)
    return ScalarMappable(norm=norm, cmap="viridis" if sweep.mode == "max" else "viridis_r"), norm


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _unit(norm, value: float) -> float:
    return (value - norm.vmin) / (norm.vmax - norm.vmin)
