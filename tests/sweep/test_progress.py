"""The driver's progress callback (trainyard/sweep/progress.py), with made-up trials, without Ray."""

from __future__ import annotations

from trainyard.sweep.progress import SweepProgress
from trainyard.sweep.reporting import ENDED_KEY, FINAL_KEY, RUN_ID_KEY


class FakeTrial:
    """What the callback reads of Tune's Trial; counts reads of last_result, which Tune computes."""

    def __init__(self, trial_id: str, status: str = "PENDING"):
        self.trial_id, self.status, self.config = trial_id, status, {"optimizer.lr": 0.1}
        self.result: dict = {}
        self.result_reads = 0

    @property
    def last_result(self) -> dict:
        self.result_reads += 1
        return self.result


def test_each_step_visits_only_the_trials_still_open():
    progress = SweepProgress(None, ["optimizer.lr"], "val/acc", None, {})
    ended, waiting = FakeTrial("t0", "RUNNING"), FakeTrial("t1")
    progress.on_trial_start(0, [ended, waiting], ended)
    ended.result = {RUN_ID_KEY: "run-0", FINAL_KEY: True, ENDED_KEY: True, "val/acc": 0.9}
    progress.on_trial_result(0, [ended, waiting], ended, ended.result)
    ended.status = "TERMINATED"
    progress.on_trial_complete(0, [ended, waiting], ended)
    assert progress.rows["t0"]["status"] == "TERMINATED" and progress.rows["t0"]["run_id"] == "run-0"

    reads = ended.result_reads
    for step in range(100):  # Tune calls this many times a trial
        progress.on_step_end(step, [ended, waiting])
    assert ended.result_reads == reads  # an ended trial is not looked at again
    assert progress.rows["t1"]["status"] == "PENDING"
    waiting.status = "PAUSED"
    progress.on_step_end(100, [ended, waiting])
    assert progress.rows["t1"]["status"] == "PAUSED"  # an open one still follows Tune
