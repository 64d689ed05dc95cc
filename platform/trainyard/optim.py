"""The spec's optimizer and schedule sections, turned into Lightning's `configure_optimizers`.

Models stay free of optimiser choices, so a sweep can search `optimizer.lr` (or
`optimizer.generator.lr`) for any model. Like LightningCLI, the core binds `configure_optimizers`
onto the module, as the model's declaration says: one optimizer over every trainable parameter,
one per declared name over a submodule each (a GAN's generator and discriminator), or none when
the module is declared with optimizers="own". For modules under manual optimization, the
callbacks below do what Lightning's Trainer only does under automatic optimization: step the
schedules, clip gradients, and stop at trainer.max_steps counted in batches.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor

from trainyard.components import OWN, Optimizers
from trainyard.spec import OptimizerSpec, ScheduleSpec

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "rmsprop": torch.optim.RMSprop}


class NothingToTrain(ValueError):
    """An optimizer would train no parameter: model.freeze froze all it would train."""


def sparse_gradient_parameters(module: torch.nn.Module) -> dict[int, str]:
    """The parameters that get sparse gradients (nn.Embedding(sparse=True) and EmbeddingBag's):
    id -> name. Only plain SGD without weight decay, and no gradient clipping, can take them."""
    return {id(parameter): f"{name}.weight" if name else "weight" for name, child in module.named_modules()
            if isinstance(child, (torch.nn.Embedding, torch.nn.EmbeddingBag)) and child.sparse
            for parameter in (child.weight,)}


def check_sparse_gradients(spec: OptimizerSpec, parameters, sparse: dict[int, str], name: str | None = None) -> None:
    """Refuse, before training, an optimizer that would fail at its first step on sparse gradients."""
    touched = [sparse[id(p)] for p in parameters if id(p) in sparse and p.requires_grad]
    if touched and (spec.name != "sgd" or spec.weight_decay):
        section = f"optimizer.{name}" if name else "optimizer"
        raise ValueError(f"{touched[0]} gets sparse gradients, which only {section}.name sgd without weight_decay "
                         f"can apply (torch has no sparse {spec.name}{' with weight decay' if spec.weight_decay else ''})")


def build_optimizer(spec: OptimizerSpec, parameters, name: str | None = None) -> torch.optim.Optimizer:
    """The optimiser over the parameters that are not frozen."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        whose = f"optimizer {name!r} trains no parameter: every one it would train is frozen" if name else \
            "every parameter is frozen"
        raise ValueError(f"{whose}: nothing to train (check model.freeze)")
    return OPTIMIZERS[spec.name](trainable, **spec.torch_kwargs())


def build_scheduler(spec: ScheduleSpec, optimizer: torch.optim.Optimizer, max_epochs: int,
                    total_steps: int, lr: float, per_step: bool = False) -> dict[str, Any] | None:
    """A Lightning lr_scheduler config for the spec's schedule, or None for a constant rate.
    `per_step`: the run is bounded by max_steps, so cosine anneals over `total_steps` steps."""
    from torch.optim import lr_scheduler as sched

    main_epochs = max(1, max_epochs - spec.warmup_epochs)
    interval, monitor = "epoch", None
    if spec.warmup_steps:
        return {"scheduler": sched.LambdaLR(optimizer, _step_warmup(spec, total_steps, lr)), "interval": "step",
                "name": "train/lr"}
    match spec.name:
        case "none":
            scheduler = None
        case "step":
            scheduler = sched.StepLR(optimizer, step_size=spec.step_size or 10, gamma=spec.gamma or 0.1)
        case "multistep":
            scheduler = sched.MultiStepLR(optimizer, milestones=spec.milestones or [main_epochs // 2],
                                          gamma=spec.gamma or 0.1)
        case "exponential":
            scheduler = sched.ExponentialLR(optimizer, gamma=spec.gamma or 0.95)
        case "cosine" if per_step:
            scheduler = sched.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=spec.eta_min or 0.0)
            interval = "step"
        case "cosine":
            scheduler = sched.CosineAnnealingLR(optimizer, T_max=main_epochs, eta_min=spec.eta_min or 0.0)
        case "linear":  # per step, as word2vec's rate falls word by word
            scheduler = sched.LinearLR(optimizer, start_factor=1.0, end_factor=(spec.eta_min or 0.0) / lr,
                                       total_iters=max(1, total_steps))
            interval = "step"
        case "onecycle":
            scheduler = sched.OneCycleLR(optimizer, max_lr=spec.max_lr or 10 * lr, total_steps=total_steps)
            interval = "step"
        case "plateau":
            scheduler = sched.ReduceLROnPlateau(optimizer, mode=spec.mode or "min", factor=spec.factor or 0.1,
                                                patience=spec.patience if spec.patience is not None else 10)
            monitor = spec.monitor or "val/loss"
            scheduler.trainyard_monitor = monitor  # for ManualSchedules: Lightning drops it under manual optimization
    if spec.warmup_epochs:
        warmup = sched.LinearLR(optimizer, start_factor=0.1, total_iters=spec.warmup_epochs)
        if scheduler is None:
            scheduler = warmup
        elif monitor is None:
            scheduler = sched.SequentialLR(optimizer, [warmup, scheduler], milestones=[spec.warmup_epochs])
        else:
            raise ValueError("warmup_epochs cannot be combined with the plateau schedule")
    if scheduler is None:
        return None
    config = {"scheduler": scheduler, "interval": interval, "name": "train/lr"}
    return config | ({"monitor": monitor} if monitor else {})


def _step_warmup(spec: ScheduleSpec, total_steps: int, lr: float):
    """The factor of lr at optimizer step s (from 0): a linear rise over warmup_steps w, then
    constant (none), a cosine or a straight line to eta_min over the remaining steps (cosine,
    linear), or the inverse square
    root of the step (inverse_sqrt: Vaswani et al.'s schedule, with lr its peak at step w).
    A LambdaLR because torch has no inverse-square-root schedule, and one formula keeps the
    four alike."""
    w = spec.warmup_steps
    floor = (spec.eta_min or 0.0) / lr

    def factor(step: int) -> float:
        s = step + 1
        if s <= w:
            return s / w
        if spec.name == "inverse_sqrt":
            return math.sqrt(w / s)
        progress = min(1.0, (s - w) / max(1, total_steps - w))
        if spec.name == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if spec.name == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return 1.0

    return factor


def attach_optimizers(module: LightningModule, optimizer: OptimizerSpec | Mapping[str, OptimizerSpec],
                      schedule: ScheduleSpec | Mapping[str, ScheduleSpec], max_epochs: int,
                      declared: Optimizers = None, max_steps: int | None = None) -> bool:
    """Give `module` a configure_optimizers built from the spec, as its declaration says
    (see trainyard.components.Optimizers); False when the module builds its own.

    With named optimizers, Lightning receives one {"optimizer", "lr_scheduler"} entry per name,
    in the declared order: `self.optimizers()` and `self.lr_schedulers()` follow that order.
    `max_steps`: trainer.max_steps, when it bounds the run: cosine then anneals over steps, no
    more of them than that (training batches under manual optimization, see BatchBudget).
    """
    defines_own = type(module).configure_optimizers is not LightningModule.configure_optimizers
    if declared == OWN:
        if not defines_own:
            raise ValueError(f"{type(module).__name__} is declared with optimizers='own' but defines no "
                             "configure_optimizers")
        return False
    if defines_own:
        raise ValueError(f"{type(module).__name__} defines configure_optimizers: declare the model with "
                         "optimizers='own' (the spec's optimizer section would be ignored otherwise)")
    names = list(declared) if isinstance(declared, Mapping) else []
    for name in names:
        try:
            part = module.get_submodule(declared[name])
        except AttributeError:
            raise ValueError(f"optimizer {name!r} trains the submodule {declared[name]!r}, which "
                             f"{type(module).__name__} does not have") from None
        if not any(p.requires_grad for p in part.parameters()):
            raise NothingToTrain(f"optimizer {name!r} trains no parameter: every one of {declared[name] or 'the model'} "
                             "is frozen (check model.freeze)")
    if not names and not any(p.requires_grad for p in module.parameters()):
        raise NothingToTrain("every parameter is frozen: nothing to train (check model.freeze)")
    sparse = sparse_gradient_parameters(module)
    for name in names or [None]:
        section, part = (optimizer[name], module.get_submodule(declared[name])) if name else (optimizer, module)
        check_sparse_gradients(section, part.parameters(), sparse, name)

    def configure_optimizers(self: LightningModule):
        total_steps = int(min(self.trainer.estimated_stepping_batches, max_steps or float("inf")))
        step_schedules = max_steps is not None
        if not names:
            opt = build_optimizer(optimizer, self.parameters())
            scheduler = build_scheduler(schedule, opt, max_epochs, total_steps, optimizer.lr, step_schedules)
            return {"optimizer": opt, "lr_scheduler": scheduler} if scheduler else opt
        configured = []
        for name in names:
            spec, plan = optimizer[name], _schedule_of(schedule, name)
            opt = build_optimizer(spec, self.get_submodule(declared[name]).parameters(), name)
            scheduler = build_scheduler(plan, opt, max_epochs, total_steps, spec.lr, step_schedules) if plan else None
            if scheduler is not None:
                scheduler["name"] = f"train/lr/{name}"
            configured.append({"optimizer": opt} | ({"lr_scheduler": scheduler} if scheduler else {}))
        return configured

    module.configure_optimizers = types.MethodType(configure_optimizers, module)
    return True


def _schedule_of(schedule: ScheduleSpec | Mapping[str, ScheduleSpec], name: str) -> ScheduleSpec | None:
    """One section applies to every optimizer; a mapping names the optimizers it schedules."""
    return schedule.get(name) if isinstance(schedule, Mapping) else schedule


class BatchBudget(Callback):
    """trainer.max_steps for a module under manual optimization, counted in training batches.

    Lightning counts a global step per optimizer step, so a GAN with two optimizers would stop
    at half the batches, and one with n_critic discriminator steps at a fraction that depends on
    it. trainyard defines max_steps as training batches for such modules and stops here; the
    validation Lightning runs when a run is asked to stop still happens.
    """

    def __init__(self, max_batches: int):
        self.max_batches = max_batches
        self.batches = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.batches += 1
        if self.batches >= self.max_batches:
            trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"batches": self.batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches = state_dict.get("batches", self.batches)


class ManualSchedules(Callback):
    """Step the spec's schedules of a module under manual optimization, as Lightning steps them
    under automatic optimization (it leaves them to the module otherwise, and drops the plateau
    schedule's monitor from its config): per-step schedules after each batch; the others once
    per finished epoch, at the next epoch's start, when the epoch's metrics are aggregated, as
    Lightning does; plateau with its monitored metric, which must exist, as Lightning requires.
    The epochs stepped are kept with the checkpoint, so a restored run steps each epoch once."""

    def __init__(self):
        self.epochs_stepped = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self._step(trainer, "step")

    def on_train_epoch_start(self, trainer, module) -> None:
        if self.epochs_stepped < trainer.current_epoch:
            self._step(trainer, "epoch")
            self.epochs_stepped = trainer.current_epoch

    def state_dict(self) -> dict:
        return {"epochs_stepped": self.epochs_stepped}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epochs_stepped = state_dict.get("epochs_stepped", self.epochs_stepped)

    @staticmethod
    def _step(trainer, interval: str) -> None:
        from pytorch_lightning.utilities.exceptions import MisconfigurationException
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        for config in trainer.lr_scheduler_configs:
            if config.interval != interval:
                continue
            if isinstance(config.scheduler, ReduceLROnPlateau):
                monitor = config.scheduler.trainyard_monitor
                value = trainer.callback_metrics.get(monitor)
                if value is None:
                    available = ", ".join(sorted(trainer.callback_metrics)) or "none"
                    raise MisconfigurationException(f"the plateau schedule watches {monitor!r}, which was not logged "
                                                    f"in this epoch (available: {available})")
                config.scheduler.step(float(value))
            else:
                config.scheduler.step()


class ClipGradients(Callback):
    """The spec's gradient clipping for a module under manual optimization: Lightning's Trainer
    refuses gradient_clip_val then. Each optimizer step of the module (through `self.optimizers()`)
    passes here after its gradients are computed and unscaled, before the step."""

    def __init__(self, value: float, algorithm: str):
        self.value, self.algorithm = value, algorithm

    def on_before_optimizer_step(self, trainer, module, optimizer) -> None:
        if not module.automatic_optimization:
            module.clip_gradients(optimizer, gradient_clip_val=self.value, gradient_clip_algorithm=self.algorithm)


class LearningRates(LearningRateMonitor):
    """Lightning's LearningRateMonitor (train/lr), which also lets a trainer without a logger
    train: make_trainer's trainers get their logger from the run, and one used alone (a test, a
    benchmark) has none. It then records nothing, where Lightning's refuses to start."""

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer, *args, **kwargs) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
