"""Device settings this machine cannot satisfy are bad input at validate, saying what it has;
more CPU processes than cores (up to 4 per core) are a one-line warning; trainer.threads sets
torch's threads."""

from __future__ import annotations

import os

import pytest
import torch
from typer.testing import CliRunner

from helpers import EXPERIMENTS
from trainyard.cli import app

SPEC = str(EXPERIMENTS / "cnn" / "lenet5_digits.yaml")
CORES = len(os.sched_getaffinity(0))


def validate(*settings: str):
    return CliRunner().invoke(app, ["validate", SPEC, *[arg for setting in settings for arg in ("--set", setting)]])


def test_more_than_four_cpu_processes_per_core_is_bad_input():
    result = validate(f"trainer.devices={4 * CORES + 1}", "trainer.accelerator=cpu")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert (f"lenet5_digits.yaml: trainer.devices: {4 * CORES + 1} CPU processes asked for, more than 4 per core: "
            f"this machine has {torch.cuda.device_count()} GPU") in result.stderr


def test_more_cpu_processes_than_cores_is_a_warning():
    result = validate(f"trainer.devices={CORES + 1}", "trainer.accelerator=cpu")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == (f"lenet5_digits.yaml: warning: trainer.devices: {CORES + 1} CPU processes on "
                                     f"{CORES} core{'s' if CORES != 1 else ''} share them: fine for testing "
                                     "data-parallel code, slow for training")


def test_a_list_of_devices_on_cpu_is_bad_input():
    result = validate("trainer.devices=[0, 1]", "trainer.accelerator=cpu")
    assert result.exit_code == 2 and "trainer.devices: a list names GPUs" in result.stderr


@pytest.mark.parametrize("gpus,settings,message", [
    (0, ["trainer.accelerator=gpu"], "trainer.accelerator: gpu asked for, but this machine has 0 GPUs and"),
    (1, ["trainer.accelerator=gpu", "trainer.devices=2"], "trainer.devices: 2 GPUs asked for, but this machine has 1 GPU "),
    (2, ["trainer.devices=[1, 2]"], "trainer.devices: GPUs [1, 2] asked for, but this machine has 2 GPUs and"),
])
def test_gpus_this_machine_does_not_have_are_bad_input(monkeypatch, gpus, settings, message):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    result = validate(*settings)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr


def test_trainer_threads_sets_torchs_threads_when_the_model_is_built(monkeypatch):
    from trainyard.build import build
    from trainyard.validate import load_experiment

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)  # the test process keeps its own threads
    build(load_experiment(SPEC, ["trainer.threads=1"]))
    build(load_experiment(SPEC))  # null: torch's default stays
    assert calls == [1]
    result = validate("trainer.threads=0")
    assert result.exit_code == 2 and "trainer.threads: expected an integer >= 1 or null, got 0" in result.stderr


def test_a_run_gives_the_calling_process_its_threads_back():
    from trainyard.run import run_experiment
    from trainyard.validate import load_experiment

    before = torch.get_num_threads()
    run_experiment(load_experiment(SPEC, ["trainer.threads=1", "trainer.max_epochs=1", "trainer.progress_bar=false",
                                          "tracking.log_model=false"]), quiet=True)
    assert torch.get_num_threads() == before
