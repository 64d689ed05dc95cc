"""The spec's optimizer and schedule sections, turned into Lightning's `configure_optimizers`.

Models stay free of optimiser choices, so a sweep can search `optimizer.lr` for any model. Like
LightningCLI, the core binds `configure_optimizers` onto a module that does not define its own;
a module that does (a GAN with two optimisers, say) keeps it and can call `build_optimizer`.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from pytorch_lightning import LightningModule

from trainyard.spec import OptimizerSpec, ScheduleSpec

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
              "rmsprop": torch.optim.RMSprop}


def build_optimizer(spec: OptimizerSpec, parameters) -> torch.optim.Optimizer:
    """The optimiser over the parameters that are not frozen."""
    trainable = [p for p in parameters if p.requires_grad]
    if not trainable:
        raise ValueError("every parameter is frozen: nothing to train (check model.freeze)")
    return OPTIMIZERS[spec.name](trainable, **spec.torch_kwargs())


def build_scheduler(spec: ScheduleSpec, optimizer: torch.optim.Optimizer, max_epochs: int,
                    total_steps: int, lr: float) -> dict[str, Any] | None:
    """A Lightning lr_scheduler config for the spec's schedule, or None for a constant rate."""
    from torch.optim import lr_scheduler as sched

    main_epochs = max(1, max_epochs - spec.warmup_epochs)
    interval, monitor = "epoch", None
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
        case "cosine":
            scheduler = sched.CosineAnnealingLR(optimizer, T_max=main_epochs, eta_min=spec.eta_min or 0.0)
        case "onecycle":
            scheduler = sched.OneCycleLR(optimizer, max_lr=spec.max_lr or 10 * lr, total_steps=total_steps)
            interval = "step"
        case "plateau":
            scheduler = sched.ReduceLROnPlateau(optimizer, mode=spec.mode or "min", factor=spec.factor or 0.1,
                                                patience=spec.patience if spec.patience is not None else 10)
            monitor = spec.monitor or "val/loss"
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


def attach_optimizers(module: LightningModule, optimizer: OptimizerSpec, schedule: ScheduleSpec,
                      max_epochs: int) -> bool:
    """Give `module` a configure_optimizers built from the spec; False if it has its own."""
    if type(module).configure_optimizers is not LightningModule.configure_optimizers:
        return False

    def configure_optimizers(self: LightningModule):
        opt = build_optimizer(optimizer, self.parameters())
        scheduler = build_scheduler(schedule, opt, max_epochs, int(self.trainer.estimated_stepping_batches),
                                    optimizer.lr)
        return {"optimizer": opt, "lr_scheduler": scheduler} if scheduler else opt

    module.configure_optimizers = types.MethodType(configure_optimizers, module)
    return True
