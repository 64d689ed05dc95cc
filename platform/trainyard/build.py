"""Phase 1 of every run: from a validated experiment to components and a Trainer, ready to train.

    Experiment --build()--> data module (+ its facts) --> model (sized by the facts),
                            optimizers bound from the spec, init_from, freeze
               --build()--> environment --> algorithm
               --make_trainer()--> a Lightning Trainer for the spec's trainer section

`trainyard run`, each sweep trial and each data-parallel worker go through these functions,
then `trainyard.train` and `trainyard.record`. Everything here may reject the input with
SpecError, and runs before any MLflow run exists: bad input leaves nothing in the store.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from trainyard.components import OWN, BuildContext
from trainyard.datacache import DataCache
from trainyard.errors import Problem, SpecError
from trainyard.tracking import tracking_uri
from trainyard.validate import Experiment


@dataclass
class Built:
    """The components of an experiment, built and ready to train."""

    model: Any = None
    data: Any = None
    env: Any = None
    algorithm: Any = None
    facts: Mapping[str, Any] = field(default_factory=dict)  # what the data module told the model
    notes: list[str] = field(default_factory=list)

    @property
    def manual_optimization(self) -> bool:
        return self.model is not None and not self.model.automatic_optimization


def build(experiment: Experiment, workdir: Path | None = None, store: str | None = None) -> Built:
    """Seed, set torch's threads, then build the experiment's components. Bad params or shapes
    raise SpecError. `store` is the tracking URI the run is recorded in (default: the spec's,
    resolved)."""
    import torch
    from pytorch_lightning import seed_everything

    spec = experiment.spec
    store = store or tracking_uri(spec.tracking.uri)
    seed_everything(spec.seed, workers=True, verbose=False)
    if spec.trainer.threads is not None:
        # Process-wide, as torch has it. A small model's operations are too short to split: a
        # second thread only waits, and on a busy machine waits long for its core (on 2 cores
        # with the other one busy, word2vec and the 2-D GANs ran 4-10x slower with 2 threads).
        torch.set_num_threads(spec.trainer.threads)
    built = Built()
    if (resolved := experiment.components.get("data")) is not None:
        cache = DataCache(resolved.registered.name, resolved.params.model_dump(mode="json"), spec.seed)
        built.data = _build_checked("data", resolved, BuildContext(seed=spec.seed, cache=cache))
        built.facts = _facts(experiment, built.data)
    if (resolved := experiment.components.get("env")) is not None:
        built.env = _build_checked("env", resolved, BuildContext(seed=spec.seed))
    env_section = experiment.components.get("env")
    make_env = partial(env_section.build, BuildContext(seed=spec.seed)) if env_section is not None else None
    ctx = BuildContext(seed=spec.seed, data=built.data, env=built.env, make_env=make_env, facts=built.facts,
                       tracking_uri=store)
    if (resolved := experiment.components.get("algorithm")) is not None:
        built.algorithm = _build_checked("algorithm", resolved, ctx)
    if (resolved := experiment.components.get("model")) is not None:
        built.model = _build_checked("model", resolved, ctx)
        _prepare_model(experiment, built, workdir)
    return built


def _build_checked(section: str, resolved, ctx: BuildContext) -> Any:
    try:
        return resolved.build(ctx)
    except SpecError:
        raise  # a component that knows which field is wrong (e.g. env.name) says so itself
    except (ValueError, TypeError, OSError) as error:
        # Components reject configurations they cannot build (a feature map that shrinks to
        # nothing, a model that needs image data, a corpus that is not there) with ValueError:
        # that is bad input.
        raise SpecError([Problem(f"{section}.params", _first_line(error))]) from None


def _facts(experiment: Experiment, data) -> Mapping[str, Any]:
    """The data module's facts for the model (a vocabulary's size, ...), checked against the
    facts the model declares it reads."""
    facts: Mapping[str, Any] = {}
    if hasattr(data, "facts"):
        try:
            facts = data.facts()
        except (ValueError, TypeError, OSError) as error:
            raise SpecError([Problem("data.params", _first_line(error))]) from None
    model, section = experiment.components.get("model"), experiment.components["data"]
    if model is not None:
        missing = [name for name in model.registered.component.facts if name not in facts]
        if missing:
            given = ", ".join(facts) or "none"
            raise SpecError([Problem("data.name", f"{model.registered.name} reads the data facts {', '.join(missing)}, "
                                                  f"which {section.registered.name} does not give (it gives: {given})")])
    return dict(facts)


def _prepare_model(experiment: Experiment, built: Built, workdir: Path | None) -> None:
    from trainyard import optim, transfer

    spec = experiment.spec
    model = experiment.components["model"]
    if spec.model.init_from:
        source, layers = spec.model.init_from, spec.model.init_layers
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            path = transfer.fetch_checkpoint(source, tracking_uri(spec.tracking.uri), Path(tmp))
            report = (transfer.load_mapped_weights(built.model, path, source, layers) if layers
                      else transfer.load_weights(built.model, path, source))
            built.notes.append(report.summary())
    if spec.model.freeze:
        transfer.freeze(built.model, spec.model.freeze)
        built.notes.append(f"froze {', '.join(spec.model.freeze)}")
    declared = model.registered.component.optimizers
    try:
        optim.attach_optimizers(built.model, spec.optimizer, spec.schedule, max(1, spec.trainer.epoch_limit), declared,
                                max_steps=spec.trainer.max_steps)
    except optim.NothingToTrain as error:
        raise SpecError([Problem("model.freeze", _first_line(error))]) from None
    except ValueError as error:
        raise SpecError([Problem("model.name", f"{model.registered.name}: {_first_line(error)}")]) from None
    sparse = optim.sparse_gradient_parameters(built.model)
    if sparse and spec.trainer.gradient_clip_val is not None:
        raise SpecError([Problem("trainer.gradient_clip_val", f"{model.registered.name}: {next(iter(sparse.values()))} "
                                                              "gets sparse gradients, which torch cannot clip")])
    _check_manual_optimization(experiment, built)


def _check_manual_optimization(experiment: Experiment, built: Built) -> None:
    """What the Trainer can and cannot do for this module, said before any run exists (Lightning
    itself would raise these only once fit starts)."""
    name = experiment.components["model"].registered.name
    declared = experiment.components["model"].registered.component
    trainer = experiment.spec.trainer
    problems = []
    if not built.manual_optimization:
        if len(declared.optimizer_names) > 1:
            problems.append(Problem("model.name", f"{name} declares {len(declared.optimizer_names)} optimizers but "
                                                  "uses automatic optimization; Lightning steps several optimizers "
                                                  "only under manual optimization"))
    else:
        if trainer.accumulate_grad_batches != 1:
            problems.append(Problem("trainer.accumulate_grad_batches", f"{name} uses manual optimization, for which "
                                                                      "Lightning cannot accumulate gradients: use 1"))
        if trainer.gradient_clip_val is not None and declared.optimizers == OWN:
            problems.append(Problem("trainer.gradient_clip_val", f"{name} builds and steps its own optimizers under "
                                                                 "manual optimization, so trainyard cannot clip for "
                                                                 "it: clip in its training_step (self.clip_gradients)"))
    if problems:
        raise SpecError(problems)


def make_trainer(experiment: Experiment, checkpoint_dir: Path, callbacks: Sequence[Any] = (),
                 quiet: bool = False, options: Mapping[str, Any] | None = None, built: Built | None = None):
    """A Lightning Trainer for the spec's trainer section (no logger yet: the run does not exist).

    `options` are Trainer arguments that win over the spec's (a sweep trial's strategy and
    devices under Ray Train); its strategy may be a DDPStrategy class, which is made with the
    DistributedDataParallel arguments the module needs. `built` tells whether the module uses
    manual optimization: then clipping, schedules and max_steps are the core's callbacks (see
    trainyard.optim), and data-parallel training finds unused parameters (below)."""
    from pytorch_lightning import Trainer
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.strategies import DDPStrategy
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from trainyard import optim

    quiet_lightning_chatter()
    spec = experiment.spec
    t = spec.trainer
    manual = built is not None and built.manual_optimization
    all_callbacks = list(callbacks)
    if t.checkpoint is not None:
        all_callbacks.append(ModelCheckpoint(
            dirpath=checkpoint_dir, filename="step{step:07d}" if not t.validates_per_epoch else "epoch{epoch:03d}",
            auto_insert_metric_name=False, monitor=t.checkpoint.monitor, mode=t.checkpoint.mode,
            save_top_k=t.checkpoint.save_top_k, save_last=t.checkpoint.save_last))
    if t.early_stopping is not None:
        e = t.early_stopping
        all_callbacks.append(EarlyStopping(monitor=e.monitor, mode=e.mode, patience=e.patience, min_delta=e.min_delta,
                                           stopping_threshold=e.stopping_threshold))
    schedules = spec.schedule.values() if isinstance(spec.schedule, dict) else [spec.schedule]
    if experiment.optimizers != OWN and any(s.name != "none" or s.warmup_epochs or s.warmup_steps for s in schedules):
        all_callbacks.append(optim.LearningRates(logging_interval="epoch"))
    if manual:
        if experiment.optimizers != OWN:  # a module with its own optimizers steps their schedules itself
            all_callbacks.append(optim.ManualSchedules())
        if t.gradient_clip_val is not None:
            all_callbacks.append(optim.ClipGradients(t.gradient_clip_val, t.gradient_clip_algorithm))
        if t.max_steps is not None:
            all_callbacks.append(optim.BatchBudget(t.max_steps))
    validate_by_batches = isinstance(t.val_check_interval, int) and not isinstance(t.val_check_interval, bool)
    arguments = dict(
        max_epochs=t.epoch_limit, max_steps=-1 if manual or t.max_steps is None else t.max_steps,
        precision=t.precision, accelerator=t.accelerator, devices=t.devices,
        gradient_clip_val=None if manual else t.gradient_clip_val, gradient_clip_algorithm=t.gradient_clip_algorithm,
        accumulate_grad_batches=t.accumulate_grad_batches,
        # Every N batches counted across epochs, so that N may exceed one epoch's batches.
        val_check_interval=t.val_check_interval, check_val_every_n_epoch=None if validate_by_batches else 1,
        # None (Lightning's default) rather than 1.0: Lightning announces explicit full limits.
        limit_train_batches=None if t.limit_train_batches == 1.0 else t.limit_train_batches,
        limit_val_batches=None if t.limit_val_batches == 1.0 else t.limit_val_batches,
        limit_test_batches=None if t.limit_test_batches == 1.0 else t.limit_test_batches,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic, enable_progress_bar=t.progress_bar and not quiet,
        enable_model_summary=not quiet, enable_checkpointing=t.checkpoint is not None,
        callbacks=all_callbacks, logger=False, default_root_dir=checkpoint_dir.parent)
    # A module under manual optimization chooses which parameters each backward pass reaches (a
    # GAN's discriminator step leaves the generator's without gradients, and the other way
    # round). DistributedDataParallel must be told, or it waits for the missing gradients and
    # fails (Lightning #20328); it then walks the graph once per backward to find them.
    ddp_arguments = {"find_unused_parameters": True} if manual else {}
    options = dict(options or {})
    if isinstance(options.get("strategy"), type) and issubclass(options["strategy"], DDPStrategy):
        options["strategy"] = options["strategy"](**ddp_arguments)
    try:
        trainer = Trainer(**arguments | options)
        if ddp_arguments and "strategy" not in options and type(trainer.strategy) is DDPStrategy:
            # Lightning chose DDP for several devices: the same strategy, with those arguments.
            trainer = Trainer(**arguments | options | {"strategy": DDPStrategy(**ddp_arguments)})
        return trainer
    except (MisconfigurationException, ValueError, RuntimeError) as error:
        # e.g. accelerator: gpu on a machine without one
        raise SpecError([Problem("trainer", _first_line(error))]) from None


def quiet_lightning_chatter() -> None:
    # Single-process CPU data loading from memory is deliberate; Lightning's advice to add
    # workers is noise here, as is a deprecation inside Lightning itself. Real problems still warn.
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
    # Lightning's info lines (available devices, tips, checkpoint restores) repeat what the
    # run summary says; its progress bar and model summary stay unless quiet.
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
