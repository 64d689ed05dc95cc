"""Sweeps over the contract test plugins (gan2d, toklm, tinyvae): a report to Tune at every
validation (ASHA stops a language model in the middle of its epoch), PBT on a named optimizer's
learning rate, and whose reports and model a sweep records."""

from __future__ import annotations

import pytest

from conftest import run_sweep, sqlite_store
from contract_specs import write_spec
from helpers import subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]


@pytest.fixture
def contract_env(contract_site, tmp_path):
    env = subprocess_env(contract_site, plugins="gan2d,toklm,tinyvae")
    env["TRAINYARD_CACHE_DIR"] = str(tmp_path / ".trainyard-cache")
    return env


def artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_asha_stops_a_language_model_in_the_middle_of_its_epoch(tmp_path, contract_env):
    """One long epoch, a validation every 3 batches: ASHA compares trials at each validation and
    stops the poor ones long before the epoch ends. Only the best trial records its reports."""
    spec = write_spec(tmp_path, "lm", name="lm-asha", experiment="sweeps", extra="""\
        sweep:
          metric: val/loss
          mode: min
          max_concurrent: 2
          resources: {cpu: 0.5}
          scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
          space:
            # Grid order, two at a time: the good rates reach each rung first.
            optimizer.lr: {grid: [0.02, 0.02, 1.0e-6, 2.0e-6]}
        """)
    result = run_sweep(spec, "--set", "trainer.max_steps=12", "--set", "trainer.val_check_interval=3",
                       "--set", "data.params.batch_size=4", env=contract_env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = sqlite_store(tmp_path)
    [parent] = store.parents()
    children = store.children(parent.info.run_id)
    assert len(children) == 4
    stopped = [run for run in children if run.data.tags.get("trainyard.trial.stopped_early") == "true"]
    assert stopped, result.stdout
    for run in stopped:
        validations = store.history(run.info.run_id, "val/loss")
        # Stopped after fewer than the 4 validations of 12 steps, all inside epoch 0.
        assert len(validations) < 4 and run.data.metrics["epoch"] == 0, (validations, run.data.metrics)
    finished = [run for run in children if run not in stopped]
    assert [step for step, _ in store.history(finished[0].info.run_id, "val/loss")] == [2, 5, 8, 11]
    best = parent.data.tags["trainyard.best_run_id"]
    for run in children:
        files = artifacts(store.client, run.info.run_id)
        reports = [path for path in files if path.startswith("reports/")]
        assert bool(reports) == (run.info.run_id == best), (run.info.run_name, files)
    assert parent.data.tags["trainyard.sweep.best_model"] == f"reports and model in run {best}"
    assert store.client.get_run(best).data.tags["trainyard.model_format"]


def test_pbt_mutates_a_named_optimizers_learning_rate_and_the_optimizer_takes_it(tmp_path, contract_env):
    spec = write_spec(tmp_path, "gan", name="gan-pbt", epochs=6, experiment="sweeps", extra="""\
        sweep:
          metric: val/mode_distance
          mode: min
          num_samples: 4
          max_concurrent: 4
          reports: none
          resources: {cpu: 0.5}
          scheduler: {name: pbt, perturbation_interval: 1, quantile_fraction: 0.5, synch: true}
          space:
            optimizer.generator.lr: {uniform: [1.0e-4, 1.0e-2]}
        """)
    result = run_sweep(spec, "--set", "trainer.log_every_n_steps=1", env=contract_env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = sqlite_store(tmp_path)
    [parent] = store.parents()
    checked = 0
    for run in store.children(parent.info.run_id):
        assert not any(path.startswith("reports/") for path in artifacts(store.client, run.info.run_id))
        # pbt/optimizer.generator.lr: the trial's own rate, from the first step of its history
        # trained after it took another trial's checkpoint; train/lr_generator: the rate the
        # generator's optimizer holds at each batch, up to the next exploit.
        mutations = store.history(run.info.run_id, "pbt/optimizer.generator.lr")
        rates = store.history(run.info.run_id, "train/lr_generator")
        for (step, lr), later in zip(mutations, mutations[1:] + [(10**9, None)]):
            applied = [value for s, value in rates if step <= s < later[0]]
            assert applied == pytest.approx([lr] * len(applied)), (step, lr, rates)
            checked += bool(applied)
        discriminator = [value for _, value in store.history(run.info.run_id, "train/lr_discriminator")]
        assert discriminator == pytest.approx([2e-3] * len(discriminator))  # never searched, never changed
    assert checked >= 1, f"no trial trained on after a PBT exploit: nothing was tested\n{result.stdout}"


def test_a_vae_sweep_can_record_every_trials_reports(tmp_path, contract_env):
    spec = write_spec(tmp_path, "vae", name="vae-all", epochs=1, experiment="sweeps", extra="""\
        sweep:
          metric: val/loss
          mode: min
          reports: all
          resources: {cpu: 1}
          space:
            model.params.latent: {grid: [2, 4]}
        """)
    result = run_sweep(spec, env=contract_env)
    assert result.returncode == 0, result.stdout + result.stderr
    store = sqlite_store(tmp_path)
    [parent] = store.parents()
    children = store.children(parent.info.run_id)
    assert len(children) == 2
    for run in children:
        assert "reports/tinyvae_reconstructions.png" in artifacts(store.client, run.info.run_id)
        assert run.data.tags["trainyard.model_format"]
    assert "trainyard.sweep.best_model" not in parent.data.tags
