"""The core contract v2, through the three test plugins that stand in for the coming families:
named optimizers under manual optimization (gan2d), a model sized by its data's vocabulary
(toklm), a tuple output with sampling (tinyvae). Sweeps over them are in tests/sweep."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from pydantic import Field
from pytorch_lightning import Callback, LightningModule
from pytorch_lightning.loggers import CSVLogger
from typer.testing import CliRunner

from contract_specs import write_spec
from trainyard import OWN, Example, Params, hookimpl, model
from trainyard.build import build, make_trainer
from trainyard.cli import app
from trainyard.conformance import check_plugin
from trainyard.errors import SpecError
from trainyard.registry import Registered, get_registry
from trainyard.run import run_experiment
from trainyard.tracking import TrackedRun
from trainyard.train import fit_and_test
from trainyard.validate import load_experiment, validate_experiment

PLUGINS = ("gan2d", "toklm", "tinyvae")
FAMILY = {"gan2d": "gan", "toklm": "lm", "tinyvae": "vae"}


@pytest.fixture
def contract(use_contract_plugins):
    use_contract_plugins(*PLUGINS)


def store(folder: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# --- the kit and plain runs ------------------------------------------------------------------


@pytest.mark.parametrize("plugin", PLUGINS)
def test_each_contract_plugin_passes_the_kit(contract, plugin):
    assert [str(failure) for failure in check_plugin(plugin)] == []


@pytest.mark.slow
@pytest.mark.parametrize("plugin", PLUGINS)
def test_each_contract_plugin_runs_and_records_its_reports(contract, tmp_path, plugin):
    result = run_experiment(load_experiment(write_spec(tmp_path, FAMILY[plugin])), quiet=True)
    client = store(tmp_path)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    files = artifacts(client, result.run_id)
    assert "checkpoints/best.ckpt" in files and any(path.startswith("reports/") for path in files)
    assert run.data.tags["trainyard.model_format"]


@pytest.mark.slow
def test_named_optimizers_take_their_sections_and_set_overrides(contract, tmp_path):
    spec = write_spec(tmp_path, "gan", epochs=1)
    result = run_experiment(load_experiment(spec, ["optimizer.generator.lr=0.0005", "trainer.log_every_n_steps=1"]),
                            quiet=True)
    client = store(tmp_path)
    # The rates the optimizers hold, read back from them by the module (not from the spec).
    generator = [value for _, value in history(client, result.run_id, "train/lr_generator")]
    discriminator = [value for _, value in history(client, result.run_id, "train/lr_discriminator")]
    assert generator and generator == pytest.approx([5e-4] * len(generator))
    assert discriminator and discriminator == pytest.approx([2e-3] * len(discriminator))
    params = client.get_run(result.run_id).data.params
    assert params["optimizer.generator.lr"] == "0.0005" and params["optimizer.discriminator.betas"] == "[0.5, 0.999]"


@pytest.mark.slow
def test_images_and_text_during_training_are_step_indexed_series_and_tags_are_set(contract, tmp_path):
    gan = run_experiment(load_experiment(write_spec(tmp_path, "gan", epochs=2)), quiet=True)
    lm = run_experiment(load_experiment(write_spec(tmp_path, "lm", epochs=2)), quiet=True)
    client = store(tmp_path)
    images = [path for path in artifacts(client, gan.run_id, "images") if path.endswith(".png")]
    # MLflow's step-indexed images: images/<key>+step+<step>+... (its UI's step slider reads these).
    assert sorted(int(path.split("+step+")[1].split("+")[0]) for path in images) == [3, 7]
    assert client.get_run(gan.run_id).data.tags["fixture.validated_at"] == "1"  # trainyard.media.set_tag, last set
    assert [path for path in artifacts(client, lm.run_id, "samples")] == [
        f"samples/samples/step_{step:08d}.txt" for step, _ in history(client, lm.run_id, "val/loss")]


# --- manual optimization: steps, clipping, checkpoints ----------------------------------------


def built_gan(tmp_path: Path, *overrides: str):
    experiment = load_experiment(write_spec(tmp_path, "gan", epochs=3), list(overrides))
    built = build(experiment, tmp_path)
    return experiment, built


def test_data_parallel_strategies_find_unused_parameters_under_manual_optimization(contract, tmp_path):
    """A sweep's Ray Train workers hand make_trainer a DDPStrategy class; it is made with
    find_unused_parameters for a module under manual optimization only (a GAN's discriminator
    step leaves the generator without gradients). `trainer.devices: 2` is checked end to end in
    tests/plugins/gan (DDP fails there without it). Lightning keeps the arguments it passes to
    DistributedDataParallel in a private attribute, read here."""
    from pytorch_lightning.strategies import DDPStrategy

    experiment, built = built_gan(tmp_path)
    assert built.manual_optimization
    trainer = make_trainer(experiment, tmp_path / "ckpt", quiet=True, built=built, options={"strategy": DDPStrategy})
    assert type(trainer.strategy) is DDPStrategy and trainer.strategy._ddp_kwargs == {"find_unused_parameters": True}
    vae = load_experiment(write_spec(tmp_path, "vae", epochs=1))
    built = build(vae, tmp_path)
    assert not built.manual_optimization
    trainer = make_trainer(vae, tmp_path / "ckpt", quiet=True, built=built, options={"strategy": DDPStrategy})
    assert trainer.strategy._ddp_kwargs == {}


def test_max_steps_counts_batches_under_manual_optimization(contract, tmp_path):
    """Lightning counts a global step per optimizer step (two per batch here); trainyard's
    max_steps counts training batches for such a module, whatever its optimizer steps."""
    experiment, built = built_gan(tmp_path, "trainer.max_steps=7", "trainer.checkpoint=null")
    assert experiment.spec.trainer.epoch_limit == 3  # max_epochs given: both bound the run
    trainer = make_trainer(experiment, tmp_path / "ckpt", quiet=True, built=built)
    fit_and_test(built, trainer)
    assert trainer.fit_loop.epoch_loop.total_batch_idx + 1 == 7
    assert trainer.global_step == 14


def test_max_steps_alone_lifts_the_epoch_limit(contract, tmp_path):
    experiment = load_experiment(write_spec(tmp_path, "vae"), ["trainer.max_steps=20"])
    assert experiment.spec.trainer.epoch_limit == 2  # the template gives max_epochs
    data = experiment.data
    data["trainer"].pop("max_epochs")
    steps_only = validate_experiment(data)
    assert steps_only.spec.trainer.epoch_limit == -1
    # The recorded spec says so, and runs the same way again.
    recorded = steps_only.resolved()
    assert "max_epochs" not in recorded["trainer"]
    assert validate_experiment({k: v for k, v in recorded.items() if k != "sweep"}).spec.trainer.epoch_limit == -1


def test_gradient_clipping_reaches_every_optimizer_step_of_a_manual_module(contract, tmp_path, monkeypatch):
    calls = []
    original = LightningModule.clip_gradients

    def spy(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        calls.append((gradient_clip_val, gradient_clip_algorithm))
        return original(self, optimizer, gradient_clip_val, gradient_clip_algorithm)

    monkeypatch.setattr(LightningModule, "clip_gradients", spy)
    experiment, built = built_gan(tmp_path, "trainer.gradient_clip_val=0.5", "trainer.max_steps=3",
                                  "trainer.checkpoint=null")
    trainer = make_trainer(experiment, tmp_path / "ckpt", quiet=True, built=built)
    assert trainer.gradient_clip_val is None  # Lightning's Trainer refuses it under manual optimization
    fit_and_test(built, trainer)
    assert calls == [(0.5, "norm")] * 6  # 3 batches, a discriminator and a generator step each


def test_bf16_precision_and_clipping_under_manual_optimization(contract, tmp_path):
    experiment, built = built_gan(tmp_path, "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0",
                                  "trainer.gradient_clip_algorithm=value", "trainer.max_steps=4")
    trainer = make_trainer(experiment, tmp_path / "ckpt", quiet=True, built=built)
    trained = fit_and_test(built, trainer)
    assert trainer.fit_loop.epoch_loop.total_batch_idx + 1 == 4
    assert all(torch.isfinite(torch.tensor(value)) for value in trained.metrics.values())


def test_plugins_show_says_what_a_model_declares(contract):
    shown = cli("plugins", "show", "gan2d.gan")
    assert "optimizers: generator (generator), discriminator (discriminator)" in shown.output
    assert "reads from its data: vocab_size, pad_id" in cli("plugins", "show", "toklm.lm").output
    described = json.loads(cli("plugins", "show", "toklm.lm", "--json").output)
    assert {"vocab_size", "pad_id"} <= set(described["facts"]) and described["optimizers"] is None


def test_a_plateau_schedule_under_manual_optimization_steps_on_its_metric(contract, tmp_path):
    """Lightning leaves a manual module's schedules to it (and drops plateau's monitor from the
    config); the core steps them, once per finished epoch, with the watched metric."""
    experiment, built = built_gan(tmp_path, "schedule.name=plateau", "schedule.monitor=val/mode_distance",
                                  "schedule.mode=min", "trainer.checkpoint=null")
    trainer = make_trainer(experiment, tmp_path / "ckpt", quiet=True, built=built)
    trainer.loggers = [CSVLogger(tmp_path)]  # the learning-rate monitor needs one
    fit_and_test(built, trainer)
    schedulers = [config.scheduler for config in trainer.lr_scheduler_configs]
    assert len(schedulers) == 2  # one section schedules both optimizers
    assert all(scheduler.last_epoch == 2 for scheduler in schedulers)  # after epochs 1 and 2 of 3
    assert all(scheduler.best < float("inf") for scheduler in schedulers)


def test_pbt_settings_follow_the_declared_order_not_the_specs(contract, tmp_path):
    from trainyard.spec import OptimizerSpec
    from trainyard.sweep.reporting import ApplyOptimizerSettings

    written = {"discriminator": OptimizerSpec(lr=0.1), "generator": OptimizerSpec(lr=0.2)}
    callback = ApplyOptimizerSettings(written, names=("generator", "discriminator"))
    assert [settings["lr"] for settings in callback.settings] == [0.2, 0.1]


def test_all_frozen_parts_of_a_named_optimizer_are_bad_input(contract, tmp_path):
    line = one_problem(cli("run", str(write_spec(tmp_path, "gan")), "--set", "model.freeze=[generator]"))
    assert "model.freeze: optimizer 'generator' trains no parameter" in line
    assert not (tmp_path / "mlflow.db").exists()


class RecordOptimizerStates(Callback):
    def on_train_start(self, trainer, module):
        self.states = copy.deepcopy([optimizer.state_dict() for optimizer in trainer.optimizers])


@pytest.mark.parametrize("family", ["gan", "lm", "vae"])
def test_a_checkpoint_resumes_every_optimizer_and_its_state(contract, tmp_path, family):
    experiment = load_experiment(write_spec(tmp_path, family, epochs=1), ["trainer.checkpoint.save_last=true"])
    built = build(experiment, tmp_path)
    trainer = make_trainer(experiment, tmp_path / "first", quiet=True, built=built)
    fit_and_test(built, trainer)
    saved = torch.load(tmp_path / "first" / "last.ckpt", weights_only=False)
    assert len(saved["optimizer_states"]) == (2 if family == "gan" else 1)

    resumed = load_experiment(write_spec(tmp_path, family, epochs=2))
    built = build(resumed, tmp_path)
    probe = RecordOptimizerStates()
    trainer = make_trainer(resumed, tmp_path / "second", [probe], quiet=True, built=built)
    fit_and_test(built, trainer, ckpt_path=tmp_path / "first" / "last.ckpt")
    for restored, expected in zip(probe.states, saved["optimizer_states"], strict=True):
        assert restored["param_groups"] == expected["param_groups"]
        for index, state in expected["state"].items():
            for key, value in state.items():
                assert torch.equal(restored["state"][index][key], value), (family, index, key)


# --- bad input: exit 2, one line, nothing written ---------------------------------------------


def cli(*args: str):
    return CliRunner().invoke(app, list(args))


def one_problem(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_missing_optimizer_name_is_bad_input(contract, tmp_path, command):
    spec = write_spec(tmp_path, "gan")
    spec.write_text(spec.read_text().replace("  discriminator: {name: adam, lr: 2.0e-3, betas: [0.5, 0.999]}\n", ""))
    line = one_problem(cli(command, str(spec)))
    assert "optimizer.discriminator: missing: gan2d.gan trains with generator, discriminator" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_an_extra_optimizer_name_is_bad_input(contract, tmp_path):
    line = one_problem(cli("run", str(write_spec(tmp_path, "gan")), "--set", "optimizer.critic.lr=0.1"))
    assert "optimizer.critic: unknown optimizer 'critic'; gan2d.gan trains with generator, discriminator" in line
    assert "(set with --set)" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_one_section_for_named_optimizers_or_named_for_one_is_bad_input(contract, tmp_path):
    gan = write_spec(tmp_path, "gan")
    gan.write_text(gan.read_text().split("optimizer:")[0] + "optimizer: {name: adam}\n"
                   + "trainer:" + gan.read_text().split("trainer:")[1])
    assert "optimizer: gan2d.gan trains with the optimizers generator, discriminator" in one_problem(
        cli("validate", str(gan)))
    vae = write_spec(tmp_path, "vae")
    line = one_problem(cli("validate", str(vae), "--set", "schedule.generator.name=cosine"))
    assert "schedule: tinyvae.vae trains with one optimizer" in line


def test_no_optimizer_section_gives_each_named_optimizer_the_defaults(contract, tmp_path):
    gan = write_spec(tmp_path, "gan")
    text = gan.read_text()
    gan.write_text(text.split("optimizer:")[0] + "trainer:" + text.split("trainer:")[1])
    experiment = load_experiment(gan)
    assert set(experiment.spec.optimizer) == {"generator", "discriminator"}
    assert experiment.flat_params()["optimizer.generator.lr"] == 0.001
    changed = load_experiment(gan, ["optimizer.generator.lr=0.01"]).flat_params()
    assert (changed["optimizer.generator.lr"], changed["optimizer.discriminator.lr"]) == (0.01, 0.001)


class OwnParams(Params):
    width: int = Field(4, ge=1, description="Hidden units.")


class OwnOptimizers(LightningModule):
    """A GAN-shaped module that builds and steps its own optimizers, under manual optimization."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.net = torch.nn.Linear(2, 2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@model(OwnParams, optimizers=OWN, example=Example())
def own(params, ctx):
    """Builds its own optimizers."""
    return OwnOptimizers()


class OwnPlugin:
    @hookimpl
    def register_models(self):
        return [own]


@pytest.fixture
def own_model(contract):
    """A registry with gan2d's data and a model declared optimizers='own' (plugin name 'mine')."""
    registry = get_registry()
    registry.components["model"]["mine.own"] = Registered("mine", own)
    return registry


@pytest.mark.parametrize("setting", [["optimizer.lr=0.1"], ["schedule.name=cosine"]])
def test_optimizer_keys_on_a_module_that_builds_its_own_are_bad_input(own_model, tmp_path, setting):
    spec = tmp_path / "own.yaml"
    spec.write_text("name: own\ndata: {name: gan2d.ring}\nmodel: {name: mine.own}\n")
    assert load_experiment(spec).flat_params().keys().isdisjoint({"optimizer.lr", "optimizer.name"})
    line = one_problem(cli("run", str(spec), "--set", *setting))
    assert "builds its own optimizers (declared optimizers='own'), so these settings would be ignored" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_a_sweep_over_optimizer_keys_of_a_module_that_builds_its_own_is_bad_input(own_model, tmp_path):
    spec = tmp_path / "own.yaml"
    spec.write_text("name: own\ndata: {name: gan2d.ring}\nmodel: {name: mine.own}\n"
                    "sweep: {metric: val/loss, mode: min, space: {optimizer.lr: {choice: [0.1, 0.2]}}}\n")
    assert "sweep.space.optimizer.lr" in one_problem(cli("validate", str(spec)))


def test_gradient_clipping_that_cannot_be_applied_is_bad_input(own_model, tmp_path):
    spec = tmp_path / "own.yaml"
    spec.write_text("name: own\ndata: {name: gan2d.ring}\nmodel: {name: mine.own}\n")
    line = one_problem(cli("run", str(spec), "--set", "trainer.gradient_clip_val=1.0"))
    assert "trainer.gradient_clip_val: mine.own builds and steps its own optimizers under manual optimization" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_gradient_accumulation_under_manual_optimization_is_bad_input(contract, tmp_path):
    line = one_problem(cli("run", str(write_spec(tmp_path, "gan")), "--set", "trainer.accumulate_grad_batches=2"))
    assert "trainer.accumulate_grad_batches: gan2d.gan uses manual optimization" in line
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("setting, field", [
    ("trainer.limit_test_batches=1.5", "limit_test_batches is a fraction"),
    ("trainer.val_check_interval=2.5", "val_check_interval is a fraction"),
    ("trainer.max_steps=0", "trainer.max_steps: expected an integer >= 1"),
])
def test_step_settings_are_checked(contract, tmp_path, setting, field):
    assert field in one_problem(cli("validate", str(write_spec(tmp_path, "vae")), "--set", setting))


def test_a_sweep_whose_asha_horizon_cannot_be_known_must_give_max_t(contract, tmp_path):
    spec = write_spec(tmp_path, "lm", extra="""\
        sweep: {metric: val/loss, mode: min, scheduler: {name: asha}, space: {optimizer.lr: {choice: [0.01, 0.001]}}}
        """)
    line = one_problem(cli("validate", str(spec), "--set", "trainer.val_check_interval=0.5"))
    assert "sweep.scheduler.max_t: give the longest a trial may run, in validations" in line
    assert cli("validate", str(spec), "--set", "trainer.val_check_interval=0.5",
               "--set", "sweep.scheduler.max_t=4").exit_code == 0


# --- models sized by their data ---------------------------------------------------------------


def test_a_model_is_sized_by_its_data_and_the_vocabulary_is_cached(contract, tmp_path):
    spec = write_spec(tmp_path, "lm")
    built = build(load_experiment(spec))
    vocabulary = built.facts["vocab_size"]
    assert any(module.weight.shape[0] == vocabulary for module in built.model.modules()
               if isinstance(module, torch.nn.Embedding))
    [entry] = list((tmp_path / ".trainyard-cache").rglob("vocab.json"))
    written = entry.stat().st_mtime_ns
    assert build(load_experiment(spec)).facts["vocab_size"] == vocabulary
    assert entry.stat().st_mtime_ns == written  # read back, not computed again
    assert len(json.loads(entry.read_text())) == vocabulary
    # Another corpus, or another seed (another split), is another entry.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus.read_text() + "an entirely new line of words\n")
    build(load_experiment(spec))
    build(load_experiment(spec, ["seed=1"]))
    assert len(list((tmp_path / ".trainyard-cache").rglob("vocab.json"))) == 3


def test_a_model_that_reads_a_fact_its_data_does_not_give_is_bad_input(contract, tmp_path):
    spec = tmp_path / "mixed.yaml"
    spec.write_text("name: mixed\ndata: {name: gan2d.ring}\nmodel: {name: toklm.lm}\n")
    line = one_problem(cli("validate", str(spec)))
    assert "data.name: toklm.lm reads the data facts vocab_size, pad_id" in line and "gan2d.ring" in line


def test_a_missing_corpus_is_bad_input(contract, tmp_path):
    spec = write_spec(tmp_path, "lm")
    (tmp_path / "corpus.txt").unlink()
    assert "data.params" in one_problem(cli("validate", str(spec)))


# --- reports and a truthful status ------------------------------------------------------------


class ClaimsEverything:
    """A plugin whose report hook would claim any model, as duck typing did."""

    @hookimpl
    def make_run_reports(self, report):
        path = report.directory / "claimed.txt"
        path.write_text("not mine\n")
        return [path]


@pytest.mark.slow
def test_reports_come_from_the_plugin_that_built_the_model_only(contract, tmp_path):
    get_registry().manager.register(ClaimsEverything(), name="claims")
    result = run_experiment(load_experiment(write_spec(tmp_path, "vae", epochs=1)), quiet=True)
    files = artifacts(store(tmp_path), result.run_id, "reports")
    assert files == ["reports/tinyvae_reconstructions.png"]


@pytest.mark.slow
def test_a_failed_final_flush_fails_the_run_and_the_command(contract, tmp_path, monkeypatch):
    def broken(self):  # the final flush of queued metrics, at the run's end
        raise ConnectionError("the tracking store went away")

    monkeypatch.setattr(TrackedRun, "flush", broken)
    result = cli("run", str(write_spec(tmp_path, "vae", epochs=1)), "-q")
    assert result.exit_code == 1
    client = store(tmp_path)
    [run] = client.search_runs([client.get_experiment_by_name("contract").experiment_id])
    assert run.info.status == "FAILED"
    assert "the final metrics could not be written: ConnectionError" in run.data.tags["trainyard.error"]
    assert "error.txt" in artifacts(client, run.info.run_id)


def test_a_spec_error_raised_before_the_run_leaves_no_store(contract, tmp_path):
    with pytest.raises(SpecError):
        run_experiment(load_experiment(write_spec(tmp_path, "gan"), ["trainer.accumulate_grad_batches=2"]))
    assert not (tmp_path / "mlflow.db").exists()
