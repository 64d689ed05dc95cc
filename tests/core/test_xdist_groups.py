"""`make test` runs the tests that start Ray on one worker (--dist loadgroup): a grouped test's id
carries its group, which is what pytest-xdist schedules by (tests/conftest.py)."""

from __future__ import annotations

import os

import pytest


@pytest.mark.xdist_group("ray")
def test_a_grouped_test_is_scheduled_by_its_group(request):
    if os.environ.get("PYTEST_XDIST_WORKER") is None or not request.config.getvalue("loadgroup"):
        pytest.skip("only under pytest-xdist with --dist loadgroup (make test)")
    assert request.node.nodeid.endswith("::test_a_grouped_test_is_scheduled_by_its_group@ray")
