"""What a Lightning trial tells Tune and MLflow, epoch by epoch (Lightning callbacks and a logger).

Each epoch the trial reports its metrics to Tune, so that ASHA and PBT can compare trials and
stop or perturb them. Every `checkpoint_every` epochs that report carries a checkpoint (the
full training state, plus the files of Lightning's best-checkpoint callback), and the metrics
held since the previous checkpoint are written to the trial's MLflow child run first
(see `child_run`). The report and checkpoint frequencies are set apart on purpose: reporting
costs a message to the driver, checkpointing costs a copy to storage.

Why the report is sent at the next epoch's start rather than at `on_train_epoch_end`:
Lightning logs the epoch's aggregated training metrics after the epoch-end callbacks have
run, and those belong in the same MLflow commit as the epoch they describe.
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

STATE_FILE = "state.ckpt"  # the full training state, for trainer.fit(ckpt_path=...)
BEST_FOLDER = "checkpoints"  # the files of Lightning's ModelCheckpoint, under their own names
RUN_ID_KEY = "trainyard_run_id"  # travels in Tune results so the driver can find the child run
EPOCH_KEY = "trainyard_epoch"
FINAL_KEY = "trainyard_final"  # the trial's last report, sent after testing: it ended on its own

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


class TrialProgress(Checkpoint):
    """Per-epoch Tune reports, periodic checkpoints, and MLflow commits tied to those checkpoints.

    A `Checkpoint` callback, so that Lightning calls it with the other checkpointing callbacks,
    after the metrics are final; the trial puts it after ModelCheckpoint, whose files of the
    epoch it must find.
    """

    def __init__(self, report: Report, metric: str, mode: str, checkpoint_every: int, staging: Path,
                 child: ChildRun | None = None):
        self.report = report
        self.metric, self.mode = metric, mode
        self.checkpoint_every = checkpoint_every
        self.staging = staging
        self.child = child  # rank 0's child run (set once it is open); None on other ranks
        self.best: float | None = None
        self.pending: tuple[dict, Path | None] | None = None

    def on_train_epoch_end(self, trainer: Trainer, module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items() if value.numel() == 1}
        value = metrics.get(self.metric)
        if value is not None and not math.isnan(value):
            better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
            self.best = value if better else self.best
        if self.best is not None:
            metrics[f"best/{self.metric}"] = self.best
            if self.child is not None:
                self.child.buffer({f"best/{self.metric}": self.best}, trainer.global_step)
        if self.child is not None:
            metrics[RUN_ID_KEY] = self.child.run_id
        epoch = trainer.current_epoch + 1
        metrics[EPOCH_KEY] = epoch  # Tune's own count of reports is not the epoch after a PBT exploit
        # The last epoch is not checkpointed: the trial ends with it, and a trial that fails while
        # testing is retried from the checkpoint before.
        due = epoch % self.checkpoint_every == 0 and epoch < (trainer.max_epochs or 0)
        self.pending = (metrics, self._save(trainer, epoch) if due else None)

    def on_train_start(self, trainer: Trainer, module) -> None:
        if self.child is not None:  # after a restore: PBT's values, from the step they apply
            numeric = {f"pbt/{key}": float(value) for key, value in self.child.mutated.items()
                       if isinstance(value, (int, float)) and not isinstance(value, bool)}
            if numeric:
                self.child.buffer(numeric, trainer.global_step)

    def on_train_epoch_start(self, trainer: Trainer, module) -> None:
        self.flush()

    def state_dict(self) -> dict:
        return {"best": self.best}  # a restored trial goes on from its best-so-far

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best", self.best)

    def flush(self, final: bool = False) -> None:
        """Commit (with a checkpoint) and report what the last epoch produced. The trial calls
        it once more after training and testing (`final`), for the last epoch: that report says
        the trial is done, so no scheduler acts on it (PBT would exploit a finished trial)."""
        if self.pending is None:
            return
        metrics, checkpoint = self.pending
        self.pending = None
        if final:
            metrics |= {"done": True, FINAL_KEY: True}
        if checkpoint is not None and self.child is not None:
            self.child.commit()
        try:
            self.report(metrics, checkpoint)
        finally:
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)

    def _save(self, trainer: Trainer, epoch: int) -> Path:
        folder = self.staging / f"epoch{epoch:04d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        trainer.save_checkpoint(folder / STATE_FILE, weights_only=False)  # every rank calls it; rank 0 writes
        best = model_checkpoint(trainer)
        if trainer.is_global_zero and best is not None and best.dirpath and Path(best.dirpath).is_dir():
            (folder / BEST_FOLDER).mkdir()
            for path in Path(best.dirpath).glob("*.ckpt"):
                _link_or_copy(path, folder / BEST_FOLDER / path.name)
        return folder


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
    """After a restore, the optimizer takes the trial's current settings, not the checkpoint's.

    A PBT trial that continues from another trial's checkpoint has mutated hyperparameters:
    the checkpoint holds the other trial's learning rate. The learning rate is rescaled (with
    the schedule's base rates, so a schedule keeps its shape); the other options are set.
    """

    def __init__(self, optimizer: OptimizerSpec):
        self.settings = optimizer.torch_kwargs()

    def on_train_start(self, trainer: Trainer, module) -> None:
        lr = self.settings["lr"]
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                ratio = lr / group.get("initial_lr", group["lr"])
                for key in ("lr", "initial_lr", "max_lr", "min_lr"):
                    if key in group:
                        group[key] *= ratio
                for key, value in self.settings.items():
                    if key != "lr" and key in group:
                        group[key] = value
        for config in trainer.lr_scheduler_configs:
            for scheduler in [config.scheduler, *getattr(config.scheduler, "_schedulers", [])]:
                if hasattr(scheduler, "base_lrs"):
                    scheduler.base_lrs = [group.get("initial_lr", group["lr"])
                                          for group in scheduler.optimizer.param_groups]


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # the same bytes, no copy, while both live on one filesystem
    except OSError:
        shutil.copy2(source, target)
