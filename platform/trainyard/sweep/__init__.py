"""Hyper-parameter sweeps on Ray Tune (and Ray Train for data-parallel trials), in MLflow.

    driver.py     trainyard sweep: Ray, preflight, the parent run, Tune, the summary
    cluster.py    joining Ray; what must hold before launching (shared storage, room for a trial)
    space.py      the spec's sweep section as Tune's search space, searcher and scheduler
    trial.py      what runs in a trial: the Tune function, the Ray Train worker loop
    reporting.py  per-epoch reports to Tune, checkpoints, and their MLflow commits (Lightning callbacks)
    child_run.py  a trial's MLflow child run: found by trial id, continued after retries
    progress.py   the driver's Tune callback: one line per trial, status of runs trials could not end
    summary.py    the best trial, the table of trials and the plot, into the parent run
    report.py     the reports on the parent: parallel coordinates, learning curves, top trials

Ray is imported only here (and only when a sweep runs): `trainyard run` does not pay for it.
"""

from trainyard.sweep.driver import SweepOptions, SweepResult, run_sweep

__all__ = ["SweepOptions", "SweepResult", "run_sweep"]
