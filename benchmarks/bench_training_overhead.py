"""How much does trainyard add to training? The same small CNN on the same data, three ways.

    raw        a plain PyTorch loop (train + validation each epoch)
    bare       pytorch-lightning with no logger and no checkpointing: Lightning's own cost
    lightning  a plain pytorch-lightning script: the same LightningModule and data module,
               Trainer defaults (CSV logger, a checkpoint every epoch), progress bar off
    trainyard  `trainyard run` in-process: MLflow tracking (SQLite, asynchronous), the
               best-checkpoint callback, the spec's optimizer

Time per epoch is measured the same way for all three (the time between the starts of
consecutive training epochs: training, validation, logging and checkpointing included) and the
first epoch is dropped as warm-up. Variants are interleaved across repeats so machine noise
hits them alike. Medians and ratios are printed; the target is trainyard/lightning <= 1.05.

    .venv/bin/python benchmarks/bench_training_overhead.py [--epochs 15] [--repeats 5]
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import warnings
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, Trainer, seed_everything

from trainyard.run import run_experiment
from trainyard.validate import load_experiment
from trainyard_cnn.classifier import ImageClassifier
from trainyard_cnn.data import Digits, DigitsParams
from trainyard_cnn.lenet import LeNet5, LeNet5Params

BATCH_SIZE = 32
LR = 0.003

SPEC = """\
name: bench-lenet5
seed: 0
model: {name: cnn.lenet5}
data: {name: cnn.digits, params: {batch_size: %d}}
optimizer: {name: adam, lr: %g}
trainer:
  max_epochs: %d
  progress_bar: false
  checkpoint: {monitor: val/acc, mode: max}
tracking: {uri: "sqlite:///%s"}
"""


class EpochClock(Callback):
    """Time between the starts of consecutive training epochs, and to the end of training."""

    def __init__(self):
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer, pl_module):
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        self.end = time.perf_counter()

    def epochs(self) -> list[float]:
        marks = [*self.starts, self.end]
        return [b - a for a, b in zip(marks, marks[1:])]


def make_data() -> Digits:
    data = Digits(DigitsParams(batch_size=BATCH_SIZE))
    data.setup()
    return data


def make_module(data: Digits) -> ImageClassifier:
    net = LeNet5(LeNet5Params(), data.input_shape, len(data.class_names))
    module = ImageClassifier(net, data.input_shape, data.class_names)
    module.configure_optimizers = lambda: torch.optim.Adam(module.parameters(), lr=LR)
    return module


def raw(epochs: int, workdir: Path) -> list[float]:
    seed_everything(0, verbose=False)
    data = make_data()
    net = LeNet5(LeNet5Params(), data.input_shape, len(data.class_names))
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    train, val = data.train_dataloader(), data.val_dataloader()
    marks = []
    for _ in range(epochs):
        marks.append(time.perf_counter())
        net.train()
        for x, y in train:
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val:
                correct += int((net(x).argmax(1) == y).sum())
    marks.append(time.perf_counter())
    return [b - a for a, b in zip(marks, marks[1:])]


def lightning(epochs: int, workdir: Path, **settings) -> list[float]:
    seed_everything(0, verbose=False)
    data = make_data()
    clock = EpochClock()
    trainer = Trainer(max_epochs=epochs, callbacks=[clock], default_root_dir=workdir, enable_progress_bar=False,
                      enable_model_summary=False, log_every_n_steps=10, **settings)
    trainer.fit(make_module(data), datamodule=data)
    return clock.epochs()


def bare(epochs: int, workdir: Path) -> list[float]:
    return lightning(epochs, workdir, logger=False, enable_checkpointing=False)


def trainyard(epochs: int, workdir: Path) -> list[float]:
    spec = workdir / "spec.yaml"
    spec.write_text(SPEC % (BATCH_SIZE, LR, epochs, workdir / "mlflow.db"))
    clock = EpochClock()
    result = run_experiment(load_experiment(spec), callbacks=[clock], quiet=True)
    trainyard.fixed_costs.append(result.seconds - (clock.end - clock.starts[0]))
    return clock.epochs()


trainyard.fixed_costs = []  # seconds per run outside the epochs: run set-up, test, model and plot logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the same for all; a 2-core machine is noisy with more
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    variants = {"raw": raw, "bare": bare, "lightning": lightning, "trainyard": trainyard}
    per_epoch: dict[str, list[float]] = {name: [] for name in variants}
    paired: list[float] = []  # per repeat: trainyard's median epoch / lightning's, run side by side
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
            this_repeat = {}
            for name in order:
                workdir = Path(tmp) / f"{name}-{repeat}"
                workdir.mkdir()
                gc.collect()  # start each variant from a clean heap: no collection debt from the last
                this_repeat[name] = variants[name](args.epochs, workdir)[1:]  # drop the warm-up epoch
                per_epoch[name] += this_repeat[name]
            paired.append(statistics.median(this_repeat["trainyard"]) / statistics.median(this_repeat["lightning"]))

    medians = {name: statistics.median(times) for name, times in per_epoch.items()}
    steps = len(make_data().train_dataloader())
    print(textwrap.dedent(f"""\
        LeNet-5 on the digits: {steps} training steps of batch {BATCH_SIZE} per epoch, {args.epochs} epochs,
        {args.repeats} repeats, variants interleaved; medians of {len(per_epoch['raw'])} epochs each (warm-up dropped)
        """))
    print(f"{'variant':<11}{'ms/epoch':>10}{'ms/step':>9}{'vs raw':>8}{'vs lightning':>14}")
    for name, median in medians.items():
        print(f"{name:<11}{median * 1e3:>10.1f}{median / steps * 1e3:>9.2f}{median / medians['raw']:>8.2f}"
              f"{median / medians['lightning']:>14.3f}")
    ratio = medians["trainyard"] / medians["lightning"]
    print(f"\ntrainyard / lightning per epoch: {ratio:.3f} (target <= 1.05: {'met' if ratio <= 1.05 else 'NOT met'})")
    print(f"  the same ratio repeat by repeat: median {statistics.median(paired):.3f}, "
          f"range {min(paired):.3f} to {max(paired):.3f} (the spread is this machine's noise)")
    print(f"trainyard / bare Lightning per epoch: {medians['trainyard'] / medians['bare']:.3f} "
          "(the cost of tracking and best-checkpointing)")
    fixed = statistics.median(trainyard.fixed_costs)
    print(f"trainyard fixed cost per run (MLflow run set-up, test, checkpoint, model and plot logging): "
          f"median {fixed:.2f} s")


if __name__ == "__main__":
    main()
