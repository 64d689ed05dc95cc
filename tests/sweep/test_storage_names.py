"""Sweep folders: two sweeps of one spec started in the same second get folders of their own."""

from __future__ import annotations

from trainyard.sweep.driver import sweep_name


def test_sweeps_started_in_the_same_second_get_different_folders():
    names = [sweep_name("lenet5-digits-sweep") for _ in range(50)]
    assert len(set(names)) == len(names)
    assert names == sorted(names)  # still in the order they started: --resume takes the newest
    suffix = names[0].removeprefix("lenet5-digits-sweep-")
    assert suffix.replace("-", "").isdigit() and suffix.count("-") == 2  # <date>-<time>-<microseconds>
