"""What a Lightning trial tells Tune and MLflow, validation by validation (callbacks and a logger).

At each validation the trial reports its metrics to Tune, so that ASHA and PBT can compare
trials and stop or perturb them. Every `checkpoint_every` validations that report carries a checkpoint (the
full training state, plus the files of Lightning's best-checkpoint callback), and the metrics
held since the previous checkpoint are written to the trial's MLflow child run first
(see `child_run`). The report and checkpoint frequencies are set apart on purpose: reporting
costs a message to the driver, checkpointing costs a copy to storage.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from pytorch_lightning import Callback, Trainer
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.loggers import Logger

from trainyard.spec import OptimizerSpec
from trainyard.sweep.child_run import ChildRun
from trainyard.sweep.space import STEP_KEY
from trainyard.tracking import metric_step

STATE_FILE = "state.ckpt"  # the full training state, for trainer.fit(ckpt_path=...)
BEST_FOLDER = "checkpoints"  # the files of Lightning's ModelCheckpoint, under their own names
RUN_ID_KEY = "trainyard_run_id"  # travels in Tune results so the driver can find the child run
EPOCH_KEY = "trainyard_epoch"
FINAL_KEY = "trainyard_final"  # the trial's last report, sent after testing: it ended on its own
ENDED_KEY = "trainyard_run_ended"  # sent with the last report by a trial that ended its child run before it

# report(metrics, checkpoint_dir or None): tune.report in a trial actor, ray.train.report in a
# Ray Train worker.
Report = Callable[[dict, "Path | None"], None]


class TrialLogger(Logger):
    """Lightning's metrics into the child run's buffer (rank 0); other ranks hold one with no run."""

    def __init__(self, child: ChildRun | None):
        super().__init__()
        self.child = child

    @property
    def name(self) -> str:
        return "trainyard-trial"

    @property
    def version(self) -> str:
        return self.child.run_id if self.child else ""

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the trial's resolved spec is logged as params when the child run is opened

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.child is not None:
            self.child.buffer(metrics, step or 0)

    def log_step_image(self, key: str, image, step: int) -> None:
        if self.child is not None:
            self.child.tracked.log_step_image(key, image, step)

    def log_step_text(self, key: str, text: str, step: int) -> None:
        if self.child is not None:
            self.child.tracked.log_step_text(key, text, step)

    def set_run_tag(self, key: str, value: str) -> None:
        if self.child is not None:
            self.child.tracked.set_run_tag(key, value)


class TrialProgress(Checkpoint):
    """A Tune report at every validation, periodic checkpoints, and MLflow commits tied to them.

    A `Checkpoint` callback, so that Lightning calls it with the other checkpointing callbacks,
    after the metrics are final; the trial puts it after ModelCheckpoint, whose files of the
    validation it must find. Validation happens once per epoch, or every
    `trainer.val_check_interval` batches: a language model that trains for one long epoch is
    reported on (and can be stopped or perturbed by ASHA and PBT) in the middle of it.
    """

    def __init__(self, report: Report, metric: str, mode: str, checkpoint_every: int, staging: Path,
                 child: ChildRun | None = None):
        self.report = report
        self.metric, self.mode = metric, mode
        self.checkpoint_every = checkpoint_every
        self.staging = staging
        self.child = child  # rank 0's child run (set once it is open); None on other ranks
        self.best: float | None = None
        self.validations = 0
        self.pending: Path | None | bool = False  # a report is due: its checkpoint folder, or None
        self.measured: dict[str, float] = {}  # the metrics at the validation the report is about
        self.epochs, self.batches, self.step = 0.0, 0, 0
        self.save_at_epoch_end = False

    def on_validation_end(self, trainer: Trainer, module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self.validations += 1
        self.measured = _numbers(trainer)
        self.epochs, self.batches = _epochs(trainer), _batches(trainer)
        self.step = metric_step(trainer)  # where Lightning logged this validation's metrics
        value = self.measured.get(self.metric)
        if value is not None and not math.isnan(value):
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = value if better else self.best
        self.pending = None
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            # At an epoch's end, ModelCheckpoint and EarlyStopping act in on_train_epoch_end, after
            # this: the checkpoint waits for them, so that a restored trial finds their state.
            self.save_at_epoch_end = True
        else:
            self._checkpoint_if_due(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module) -> None:
        if self.save_at_epoch_end:
            self.save_at_epoch_end = False
            self._checkpoint_if_due(trainer)

    def _checkpoint_if_due(self, trainer: Trainer) -> None:
        # The last validation is not checkpointed: the trial ends with it, and a trial that fails
        # while testing is retried from the checkpoint before.
        if self.validations % self.checkpoint_every == 0 and not _ending(trainer):
            self.pending = self._save(trainer, self.validations)

    def on_train_start(self, trainer: Trainer, module) -> None:
        if self.child is not None:  # after a restore: PBT's values, from the step they apply
            numeric = {f"pbt/{key}": float(value) for key, value in self.child.mutated.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)}
            if numeric:
                # The first step of the run's history trained with them: steps the run holds
                # already keep what was logged there before the restore.
                held = max(self.child.watermark.values(), default=-1)
                self.child.buffer(numeric, max(metric_step(trainer), held + 1))

    def on_train_batch_start(self, trainer: Trainer, module, batch, batch_idx: int) -> None:
        self.flush(trainer)

    def on_fit_end(self, trainer: Trainer, module) -> None:
        # The last epoch's training metrics, before testing replaces Lightning's callback metrics.
        self.measured |= _numbers(trainer)

    def state_dict(self) -> dict:
        # A restored trial goes on from here (saved after on_validation_end, so this validation counts).
        return {"best": self.best, "validations": self.validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best", self.best)
        self.validations = state_dict.get("validations", self.validations)

    def flush(self, trainer: Trainer, final: bool = False) -> None:
        """Commit (with a checkpoint) and report what the last validation produced.

        Sent when the next training batch starts, not at validation end: at an epoch's end,
        Lightning logs the epoch's aggregated training metrics after validation, and they belong
        in the same report and MLflow commit. The trial calls it once more after training and
        testing (`final`), also when training stopped between validations: that report says the
        trial is done, so no scheduler acts on it (PBT would exploit a finished trial)."""
        if self.pending is False and not (final and self.measured):
            return
        checkpoint, self.pending = (self.pending or None), False
        metrics = self.measured | ({} if final else _numbers(trainer))
        if self.best is not None:
            metrics[f"best/{self.metric}"] = self.best
            if self.child is not None:
                self.child.buffer({f"best/{self.metric}": self.best}, self.step)
        if self.child is not None:
            metrics[RUN_ID_KEY] = self.child.run_id
        # Tune's own count of reports is not the trial's after a PBT exploit: these are.
        metrics |= {EPOCH_KEY: self.epochs, STEP_KEY: self.batches}
        if final:
            metrics |= {"done": True, FINAL_KEY: True}
        if checkpoint is not None and self.child is not None:
            self.child.commit()
        try:
            self.report(metrics, checkpoint)
        finally:
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)

    def _save(self, trainer: Trainer, validation: int) -> Path:
        folder = self.staging / f"validation{validation:05d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        trainer.save_checkpoint(folder / STATE_FILE, weights_only=False)  # every rank calls it; rank 0 writes
        best = model_checkpoint(trainer)
        if trainer.is_global_zero and best is not None and best.dirpath and Path(best.dirpath).is_dir():
            (folder / BEST_FOLDER).mkdir()
            for path in Path(best.dirpath).glob("*.ckpt"):
                _link_or_copy(path, folder / BEST_FOLDER / path.name)
        return folder


def _numbers(trainer: Trainer) -> dict[str, float]:
    return {key: float(value) for key, value in trainer.callback_metrics.items()
            if value.numel() == 1 and not key.startswith("test/")}


def _epochs(trainer: Trainer) -> float:
    """Epochs trained so far, a fraction in the middle of one (a validation every N batches)."""
    per_epoch = trainer.num_training_batches
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    if not isinstance(per_epoch, int) or per_epoch <= 0 or done >= per_epoch:
        return float(trainer.current_epoch + 1)
    return round(trainer.current_epoch + done / per_epoch, 2)


def _batches(trainer: Trainer) -> int:
    """Steps so far as trainer.max_steps counts them: optimizer steps under automatic
    optimization, training batches under manual optimization (see trainyard.optim.BatchBudget)."""
    if trainer.lightning_module.automatic_optimization:
        return int(trainer.global_step)
    return int(trainer.fit_loop.epoch_loop.total_batch_idx + 1)


def _ending(trainer: Trainer) -> bool:
    """Whether training stops after this validation (so it needs no checkpoint to go on from)."""
    loop = trainer.fit_loop
    last_batch = loop.epoch_loop.batch_progress.is_last_batch
    if trainer.should_stop:
        return True
    if last_batch and trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs:
        return True
    return trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps


def model_checkpoint(trainer: Trainer) -> ModelCheckpoint | None:
    """Lightning's best-checkpoint callback, if the spec keeps one."""
    return next((c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None)


def restore_files(checkpoint_dir: Path, state: Path, best_dir: Path | None) -> None:
    """Put a reported checkpoint's files back where the trainer expects them."""
    shutil.copy2(checkpoint_dir / STATE_FILE, state)
    if best_dir is not None and (checkpoint_dir / BEST_FOLDER).is_dir():
        best_dir.mkdir(parents=True, exist_ok=True)
        for path in (checkpoint_dir / BEST_FOLDER).iterdir():
            shutil.copy2(path, best_dir / path.name)


class ApplyOptimizerSettings(Callback):
    """After a restore, the optimizers take the trial's current settings, not the checkpoint's.

    A PBT trial that continues from another trial's checkpoint has mutated hyperparameters:
    the checkpoint holds the other trial's learning rates. Each learning rate is rescaled (with
    the schedule's base rates, so a schedule keeps its shape); the other options are set. Named
    optimizers are matched by the declared order the core built them in.
    """

    def __init__(self, optimizer: OptimizerSpec | dict[str, OptimizerSpec], names: tuple[str, ...] = ()):
        # `names`: the model's declared order, which is the trainer's; the spec's may differ.
        sections = [optimizer[name] for name in names] if names else [optimizer]
        self.settings = [section.torch_kwargs() for section in sections]

    def on_train_start(self, trainer: Trainer, module) -> None:
        for optimizer, settings in zip(trainer.optimizers, self.settings):
            self._apply(optimizer, settings)
        for config in trainer.lr_scheduler_configs:
            for scheduler in [config.scheduler, *getattr(config.scheduler, "_schedulers", [])]:
                if hasattr(scheduler, "base_lrs"):
                    scheduler.base_lrs = [group.get("initial_lr", group["lr"])
                                          for group in scheduler.optimizer.param_groups]

    @staticmethod
    def _apply(optimizer, settings: dict) -> None:
        lr = settings["lr"]
        for group in optimizer.param_groups:
            ratio = lr / group.get("initial_lr", group["lr"])
            for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                if key in group:
                    group[key] *= ratio
            for key, value in settings.items():
                if key != "lr" and key in group:
                    group[key] = value


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the same bytes, no copy, while both live on one filesystem
    except OSError:
        shutil.copy2(source, target)
