"""The sweep's reports (trainyard/sweep/report.py) from made-up trials, without Ray: the shapes a
real sweep can end in (one trial, every trial failed, categorical and log domains, branches)."""

from __future__ import annotations

import pytest

from trainyard.spec import SweepSpec
from trainyard.sweep import report
from trainyard.sweep.summary import Summary, TrialRow

SPACE = SweepSpec.model_validate({"metric": "val/acc", "mode": "max", "space": {
    "optimizer.lr": {"loguniform": [1.0e-4, 1.0e-1]},
    "model.params.channels": {"choice": [[16, 32], [32, 64]]},
    "model.params.activation": {"grid": ["relu", "tanh"]}}})
# (trial, status, lr, channels, activation, best val/acc, its history)
TRIALS = [("t0", "FINISHED", "0.001", "[16, 32]", "relu", 0.9, [(9, 0.5), (19, 0.9), (29, 0.85)]),
          ("t1", "STOPPED", "0.05", "[32, 64]", "tanh", 0.4, [(9, 0.4)]),
          ("t2", "FAILED", "0.0002", "[16, 32]", "tanh", None, [(9, 0.1), (19, 0.2)]),
          ("t3", "FINISHED", "0.01", "[32, 64]", "relu", 0.8, [(9, 0.6), (19, 0.8)])]


def trials(picked=TRIALS):
    rows = [TrialRow(trial, f"run-{trial}", status, {"optimizer.lr": lr, "model.params.channels": channels,
                                                     "model.params.activation": activation},
                     score, {"test/acc": score - 0.05} if score else {})
            for trial, status, lr, channels, activation, score, _ in picked]
    scored = [row for row in rows if row.score is not None]
    return Summary(rows, max(scored, key=lambda row: row.score) if scored else None), \
        {f"run-{trial}": history for trial, *_, history in picked}


def test_reports_show_every_trial_mark_the_stopped_ones_and_rank_the_best(tmp_path):
    summary, histories = trials()
    written = report.write_figures(SPACE, summary, histories, tmp_path)
    assert [path.name for path in written] == ["parallel_coordinates.png", "learning_curves.png"]
    assert all(path.stat().st_size > 10_000 for path in written)

    curves = report.learning_curves(SPACE, summary, histories).axes[0]
    assert len([line for line in curves.lines if line.get_marker() != "x"]) == 4  # every trial that reported
    [stopped] = [line for line in curves.lines if line.get_marker() == "x"]
    assert (list(stopped.get_xdata()), list(stopped.get_ydata())) == ([9], [0.4])
    assert [line.get_linestyle() for line in curves.lines if list(line.get_ydata()) == [0.1, 0.2]] == [":"]

    lines = report.parallel_coordinates(SPACE, summary).axes[0].lines
    # One line per scored trial, across lr (log10 of its range), channels and activation (categories), val/acc.
    by_score = {round(line.get_ydata()[-1], 6): list(line.get_ydata()) for line in lines if len(line.get_ydata()) == 4}
    assert by_score[1.0] == pytest.approx([1 / 3, 0.0, 0.0, 1.0])  # t0: lr 1e-3 (of 1e-4..1e-1), [16, 32], relu; the best

    table = report.top_trials(SPACE, summary)
    assert list(table["trial"]) == ["t0", "t3", "t1"] and list(table["rank"]) == [1, 2, 3]
    assert list(table.columns) == ["rank", "trial", "status", "val/acc", "lr", "channels", "activation",
                                   "test/acc", "run_id"]


@pytest.mark.parametrize("picked", [TRIALS[:1], TRIALS[1:2]], ids=["one finished trial", "one stopped trial"])
def test_reports_of_a_single_trial(tmp_path, picked):
    summary, histories = trials(picked)
    assert len(report.write_figures(SPACE, summary, histories, tmp_path)) == 2
    assert len(report.top_trials(SPACE, summary)) == 1


def test_a_sweep_where_every_trial_failed_gets_its_curves_and_no_ranking(tmp_path):
    summary, histories = trials([TRIALS[2]])
    assert [path.name for path in report.write_figures(SPACE, summary, histories, tmp_path)] == ["learning_curves.png"]
    assert report.top_trials(SPACE, summary) is None
    summary, _ = trials([TRIALS[2]])
    assert report.write_figures(SPACE, summary, {}, tmp_path / "no-history") == []


def test_a_sweep_across_models_colours_the_curves_by_model():
    sweep = SweepSpec.model_validate({"metric": "val/loss", "mode": "min", "space": {},
                                      "branches": {"seq.seq2seq": {"model.params.hidden": {"grid": [16, 32]}},
                                                   "transformer.encoder_decoder": {"model.params.d_model": {"grid": [16]}}}})
    rows = [TrialRow(trial, f"run-{trial}", "FINISHED", {"model.name": model, "model.params.hidden": hidden,
                                                         "model.params.d_model": d_model}, score, {})
            for trial, model, hidden, d_model, score in [("a", "seq.seq2seq", "16", None, 1.0),
                                                         ("b", "seq.seq2seq", "32", None, 1.5),
                                                         ("c", "transformer.encoder_decoder", None, "16", 2.0)]]
    histories = {row.run_id: [(1, row.score + 1), (2, row.score)] for row in rows}
    curves = report.learning_curves(sweep, Summary(rows, rows[0]), histories).axes[0]
    colours = {line.get_ydata()[-1]: line.get_color() for line in curves.lines}
    assert colours[1.0] == colours[1.5] != colours[2.0]
    legend = [text.get_text() for text in curves.get_legend().get_texts()]
    assert legend[:2] == ["seq.seq2seq", "transformer.encoder_decoder"]
    # Another branch's key is a gap in that trial's line, not a crash.
    assert report.parallel_coordinates(sweep, Summary(rows, rows[0])) is not None


def test_a_report_that_cannot_be_made_is_a_warning_not_a_failed_sweep(tmp_path):
    class Unreachable:
        def get_metric_history(self, run_id, key):
            raise ConnectionError("the tracking server went away")

    parent = type("Parent", (), {"client": Unreachable(), "run_id": "parent"})()
    summary, _ = trials()
    warning = report.record(parent, SPACE, summary, tmp_path)
    assert warning == "the sweep's reports are incomplete: ConnectionError: the tracking server went away"
