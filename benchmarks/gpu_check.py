"""Does every family train on a GPU, how fast, and in how much memory? A prepared check, to run
whenever a machine with CUDA is at hand (docs/scale.md keeps its results).

For one small model of each family, on synthetic batches shaped like the family's data (no
dataset files), four cases:

    fp32        through Lightning    the family's own LightningModule in a Trainer
                through a raw loop   the same network, loss and optimizer in a plain PyTorch loop
    bf16-mixed  through Lightning    Trainer(precision="bf16-mixed")
                through a raw loop   torch.autocast(dtype=torch.bfloat16) around the forward pass

Each case builds a fresh model from the same seed and runs `--warmup` steps, then `--steps`
timed ones. Printed per case: the median time per step (from the end of one step to the end of
the next, so moving the batch to the device counts; torch.cuda.synchronize after every step),
the Lightning/raw ratio, and the peak memory (torch.cuda.max_memory_allocated, reset before
each case). The Trainer has no logger, checkpoints, progress bar, model summary or validation.
On CUDA it starts no case after `--budget` seconds (240), so that it ends within 5 minutes.

It needs only torch, pytorch-lightning and this checkout, which need not be installed (its
platform/ and plugins/ folders are put on the path); never MLflow, Ray or Optuna. A family whose
code imports a package that is missing (pydantic and pluggy for every family; scikit-learn,
scipy, matplotlib and kornia for cnn, repr and gan; gymnasium, scipy and matplotlib for rl) is
listed as skipped, with the import error, and the others run. A case that fails (a
CUDA path that breaks) is listed with its error, its traceback goes to stderr, and the exit
status is 1 (also when every family was skipped: nothing was checked). CUDA asked for but not
available: one line, exit status 2.

    python benchmarks/gpu_check.py [--device cuda|cpu] [--steps N] [--warmup N] [--json PATH]
        [--families cnn seq ...] [--precisions fp32 bf16-mixed] [--tiny] [--budget SECONDS]
    make gpu-check
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
import traceback
import types
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_lightning import Callback, LightningModule, Trainer, seed_everything
from pytorch_lightning import __version__ as lightning_version
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
# This checkout's code, installed or not (a GPU machine may have only torch and Lightning).
for folder in (ROOT / "platform", ROOT / "plugins"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

PRECISIONS = {"fp32": "32-true", "bf16-mixed": "bf16-mixed"}  # ours -> Lightning's name
LOOPS = ("raw", "lightning")
DISTINCT_BATCHES = 4  # synthetic batches made once per case and cycled through
LR = 1e-3


# --- what a family gives the check -------------------------------------------------------------


@dataclass
class Workload:
    """One family's model, ready to time: how to build it, its batches, and its plain-PyTorch step."""

    family: str
    model: str  # what is built, in the spec's terms
    batch: str  # what one batch is
    build: Callable[[], LightningModule]  # a fresh module (Lightning's optimizers attached), seeded by the caller
    make_batch: Callable[[torch.Generator], object]  # one CPU batch
    # The raw loop, given the module on its device and an autocast context: a function that runs
    # one training step on a batch already on the device.
    raw_step: Callable[[LightningModule, Callable], Callable[[object], None]]


def attach_adam(module: LightningModule, *parts: torch.nn.Module) -> LightningModule:
    """Give the module a configure_optimizers, as trainyard's core does (one Adam per part, in order)."""
    def configure_optimizers(self):
        optimizers = [torch.optim.Adam(part.parameters(), lr=LR) for part in parts or [self]]
        return optimizers[0] if len(optimizers) == 1 else optimizers

    module.configure_optimizers = types.MethodType(configure_optimizers, module)
    return module


def single_loss_step(loss_of: Callable[[object], torch.Tensor], module: LightningModule, autocast: Callable,
                     clip: float | None = None) -> Callable[[object], None]:
    """The plain loop's step for a module trained by one loss and one optimizer."""
    optimizer = module.configure_optimizers()

    def step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_of(batch)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()

    return step


# --- the families: one small model each, on batches shaped like its data ----------------------


def cnn(tiny: bool) -> Workload:
    from trainyard_cnn.classifier import ImageClassifier
    from trainyard_cnn.resnet import ResNet, ResNetParams

    shape, classes, rows = (3, 32, 32), 10, 8 if tiny else 128  # CIFAR-10's images
    params = ResNetParams(version="v1", stage_depths=(1, 1) if tiny else (2, 2, 2), base_width=4 if tiny else 16)

    def build():
        names = tuple(str(c) for c in range(classes))
        return attach_adam(ImageClassifier(ResNet(params, shape, classes), shape, names))

    def make_batch(g):
        return torch.rand(rows, *shape, generator=g), torch.randint(classes, (rows,), generator=g)

    def raw_step(module, autocast):
        return single_loss_step(lambda b: F.cross_entropy(module(b[0]), b[1]), module, autocast)

    layout = "x".join(map(str, params.stage_depths))
    return Workload("cnn", f"cnn.resnet v1, blocks {layout}, width {params.base_width}",
                    f"{rows} images {'x'.join(map(str, shape))}, {classes} classes", build, make_batch, raw_step)


def text_batches(rows: int, length: int, vocab: int) -> Callable[[torch.Generator], dict]:
    """Windows of a character stream, as text.corpus gives them: ids (B, T) and the next tokens."""
    def make_batch(g):
        stream = torch.randint(4, vocab, (rows, length + 1), generator=g)  # ids 0-3 are special tokens
        return {"ids": stream[:, :-1], "targets": stream[:, 1:]}

    return make_batch


def language_model_step(module, autocast):
    """One window of truncated BPTT as LanguageModel.training_step does it, with its default clip."""
    from trainyard_seq.language_model import _detached

    state = [None]  # what the last window left, carried into the next

    def loss_of(batch):
        loss, state[0] = module._loss(batch, _detached(state[0], batch["ids"].shape[0]))
        return loss

    return single_loss_step(loss_of, module, autocast, clip=module.params.clip)


VOCAB = 96  # a character vocabulary the size of printable ASCII


def seq(tiny: bool) -> Workload:
    from trainyard_seq.language_model import RNNLanguageModel, RNNLMParams

    rows, length = (4, 16) if tiny else (64, 128)
    params = RNNLMParams(cell="lstm", embedding=16 if tiny else 128, hidden=16 if tiny else 256, layers=2,
                         sample_length=0)
    tokens = [f"<{i}>" for i in range(VOCAB)]

    def build():
        return attach_adam(RNNLanguageModel(params, VOCAB, tokens, "char"))

    return Workload("seq", f"seq.rnn_lm lstm, {params.layers} layers of {params.hidden}",
                    f"{rows} windows of {length} characters (vocabulary {VOCAB})", build,
                    text_batches(rows, length, VOCAB), language_model_step)


def transformer(tiny: bool) -> Workload:
    from trainyard_transformer.decoder_lm import DecoderLM, DecoderLMParams

    rows, length = (4, 16) if tiny else (64, 128)
    params = DecoderLMParams(d_model=16 if tiny else 128, heads=2 if tiny else 4, layers=1 if tiny else 2,
                             sample_length=0)
    tokens = [f"<{i}>" for i in range(VOCAB)]

    def build():
        return attach_adam(DecoderLM(params, VOCAB, tokens, "char"))

    return Workload("transformer", f"transformer.decoder_lm d_model {params.d_model}, {params.heads} heads, "
                                   f"{params.layers} layers", f"{rows} windows of {length} characters "
                                   f"(vocabulary {VOCAB})", build, text_batches(rows, length, VOCAB),
                    language_model_step)


def repr_(tiny: bool) -> Workload:
    from trainyard_repr.vae import VAE, VAEParams

    shape, rows = (1, 28, 28), 8 if tiny else 128  # MNIST's images
    params = VAEParams(hidden=(32,) if tiny else (256, 128), code=8)

    def build():
        return attach_adam(VAE(params, shape, tuple(str(c) for c in range(10)), seed=0))

    def make_batch(g):
        return torch.rand(rows, *shape, generator=g), torch.randint(10, (rows,), generator=g)

    def raw_step(module, autocast):
        return single_loss_step(lambda b: module.loss_terms(b[0], "train")["loss"], module, autocast)

    return Workload("repr", f"repr.vae mlp {'-'.join(map(str, params.hidden))}, code {params.code}",
                    f"{rows} images {'x'.join(map(str, shape))}", build, make_batch, raw_step)


class NoEvaluation:
    """The check trains only: the GAN's sample measures (FID, modes) are never asked for."""

    modes = 10

    def prepare(self) -> None:
        pass


def gan(tiny: bool) -> Workload:
    from trainyard_gan import DCGANParams, losses, networks
    from trainyard_gan.gan import GAN
    from trainyard_gan.metrics import CollapseDetector

    shape, rows = (1, 28, 28), 8 if tiny else 64  # MNIST's images
    params = DCGANParams(channels=4 if tiny else 64, noise_dim=8 if tiny else 64, stages=2, eval_samples=100)

    def build():
        generator = networks.dcgan_generator(params.noise_dim, params.channels, params.stages, shape, 0)
        discriminator = networks.dcgan_discriminator(params.channels, params.stages, shape, 0)
        module = GAN(generator, discriminator, params, NoEvaluation(), CollapseDetector(10, params.collapse_drop),
                     shape, 0, seed=0)
        return attach_adam(module, module.generator, module.discriminator)  # the declared order

    def make_batch(g):
        return torch.rand(rows, *shape, generator=g), torch.randint(10, (rows,), generator=g)

    def raw_step(module, autocast):
        """GAN.training_step without Lightning: a discriminator step, then a generator step."""
        opt_g, opt_d = module.configure_optimizers()
        generator = module.generator

        def step(batch) -> None:
            real = module.to_model(batch[0])
            with autocast():
                with torch.no_grad():
                    fake = generator(module.noise(len(real)))
                d_loss = losses.discriminator_loss(params.loss, module.judge(real), module.judge(fake))
            d_loss.backward()
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
            module.discriminator.requires_grad_(False)  # as Lightning's toggle_optimizer does
            with autocast():
                g_loss = losses.generator_loss(params.loss, module.judge(generator(module.noise(len(real)))))
            g_loss.backward()
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)
            module.discriminator.requires_grad_(True)

        return step

    return Workload("gan", f"gan.dcgan channels {params.channels}, {params.stages} stages, noise {params.noise_dim}",
                    f"{rows} images {'x'.join(map(str, shape))}", build, make_batch, raw_step)


class Box:
    def __init__(self, size: int):
        self.shape = (size,)


class Discrete:
    def __init__(self, n: int):
        self.n, self.start = n, 0


class VectorEnv:
    """Stands in for CartPole-v1 (no Gymnasium needed): 4 floats observed, 2 actions, reward 1 a
    step, episodes of 200 steps. What the DQN reads of an environment, and nothing else."""

    observation_space, action_space = Box(4), Discrete(2)

    def __init__(self):
        self.rng, self.t = None, 0

    def reset(self, seed: int | None = None):
        import numpy as np

        if seed is not None or self.rng is None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        return self.rng.standard_normal(4).astype("float32"), {}

    def step(self, action: int):
        self.t += 1
        return self.rng.standard_normal(4).astype("float32"), 1.0, False, self.t >= 200, {}


def rl(tiny: bool) -> Workload:
    from trainyard_rl.dqn import DQN, DQNParams

    rows = 8 if tiny else 64
    params = DQNParams(hidden=(16,) if tiny else (128, 128), batch_size=rows, buffer_size=10_000,
                       warmup_steps=2 * rows, exploration_steps=1_000)

    def build():
        return attach_adam(DQN(params, VectorEnv(), VectorEnv(), seed=0))

    def make_batch(g):
        return 0  # DQN's training batches are only counted: it plays and samples its own

    def raw_step(module, autocast):
        """DQN.training_step without Lightning: one env step, one Bellman update, the target sync."""
        module.on_train_start()  # the random warm-up steps that fill the buffer

        def loss_of(_):
            module.play_step(module.epsilon)
            observations, actions, rewards, next_observations, terminated = module.replay.sample(rows, module.device)
            q = module.net(observations).gather(1, actions.unsqueeze(1)).squeeze(1)  # (B,)
            with torch.no_grad():
                best = module.net(next_observations).argmax(dim=1, keepdim=True)  # double DQN
                next_value = module.target_net(next_observations).gather(1, best).squeeze(1)
                target = rewards + params.gamma * (1.0 - terminated) * next_value
            return F.smooth_l1_loss(q, target)

        learn = single_loss_step(loss_of, module, autocast)

        def step(batch) -> None:
            learn(batch)
            module.updates += 1
            if module.updates % params.target_update_every == 0:
                module.update_target()

        return step

    return Workload("rl", f"rl.dqn mlp {'-'.join(map(str, params.hidden))}, double DQN",
                    f"{rows} transitions of a 4-float, 2-action environment (CartPole's shape)", build, make_batch,
                    raw_step)


FAMILIES: dict[str, Callable[[bool], Workload]] = {
    "cnn": cnn, "seq": seq, "transformer": transformer, "repr": repr_, "gan": gan, "rl": rl}


# --- timing ------------------------------------------------------------------------------------


class Batches(Dataset):
    """`count` batches, cycling through a few made once (on the CPU, as a data module's are)."""

    def __init__(self, make_batch, count: int):
        g = torch.Generator().manual_seed(0)
        self.made = [make_batch(g) for _ in range(DISTINCT_BATCHES)]
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int):
        return self.made[i % len(self.made)]


class StepClock(Callback):
    """The end of every training step (after the optimizer's), the device synchronised."""

    def __init__(self, sync: Callable[[], None]):
        self.sync, self.marks = sync, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.sync()
        self.marks.append(time.perf_counter())


def to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")  # as Lightning moves batches
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def run_lightning(workload: Workload, device: torch.device, precision: str, loader: DataLoader, sync) -> list[float]:
    module = workload.build()
    clock = StepClock(sync)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(accelerator=device.type, devices=1, precision=PRECISIONS[precision], max_epochs=1,
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                          callbacks=[clock], default_root_dir=workdir)
        trainer.fit(module, train_dataloaders=loader)
    return clock.marks


def run_raw(workload: Workload, device: torch.device, precision: str, loader: DataLoader, sync) -> list[float]:
    module = workload.build().to(device).train()
    bf16 = precision == "bf16-mixed"

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    step = workload.raw_step(module, autocast)
    marks = []
    for batch in loader:
        step(to_device(batch, device))
        sync()
        marks.append(time.perf_counter())
    return marks


def run_case(workload: Workload, loop: str, precision: str, device: torch.device, steps: int,
             warmup: int) -> dict:
    """{"ms_per_step", "peak_mib"} or {"error"}: one fresh model through one loop."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # warmup + steps intervals between step ends: one step more than that.
    loader = DataLoader(Batches(workload.make_batch, warmup + steps + 1), batch_size=None)
    if cuda:
        gc.collect()  # the last case's model and Trainer, if a reference cycle still holds them
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()  # not 0 if an earlier case left tensors behind
    seed_everything(0, verbose=False)
    try:
        marks = (run_lightning if loop == "lightning" else run_raw)(workload, device, precision, loader, sync)
    except Exception as error:  # a CUDA path that breaks is what this check is for: report it, go on
        print(f"\n{workload.family} {precision} {loop}: failed", file=sys.stderr)
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"}
    times = [b - a for a, b in zip(marks, marks[1:])][warmup:]
    if len(times) != steps:
        return {"error": f"{len(times)} steps timed, {steps} expected"}
    result = {"ms_per_step": statistics.median(times) * 1e3, "peak_mib": None}
    if cuda:
        result |= {"peak_mib": torch.cuda.max_memory_allocated() / 2**20, "start_mib": start / 2**20}
    return result


# --- report ------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict:
    facts = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device.type,
             "torch": torch.__version__, "lightning": lightning_version, "python": platform.python_version()}
    if device.type == "cuda":
        facts |= {"device_name": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                  "cudnn": torch.backends.cudnn.version(), "bf16_supported": torch.cuda.is_bf16_supported(),
                  "fp32_matmul_precision": torch.get_float32_matmul_precision()}
    else:
        facts |= {"device_name": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    return facts


def number(value: float | None, digits: int) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def print_report(facts: dict, families: dict, steps: int, warmup: int) -> None:
    print(f"\nGPU check, {facts['date']}")
    extra = (f", CUDA {facts['cuda']}, cuDNN {facts['cudnn']}, fp32 matmul precision {facts['fp32_matmul_precision']}"
             if facts["device"] == "cuda" else f", {facts['threads']} threads")
    print(f"device: {facts['device_name']} ({facts['device']}); torch {facts['torch']}, pytorch-lightning "
          f"{facts['lightning']}, Python {facts['python']}{extra}")
    print(f"{steps} timed steps per case after {warmup} warm-up steps; median time per step"
          f"{', synchronised' if facts['device'] == 'cuda' else ''}; a fresh model per case"
          f"{'' if facts['device'] == 'cuda' else '; peak memory is measured on CUDA only'}\n")
    for name, family in families.items():
        if family.get("skipped"):
            print(f"{name:<12} skipped: {family['skipped']}")
        else:
            print(f"{name:<12} {family['model']}; a batch: {family['batch']}")
    print(f"\n{'family':<12}{'precision':<12}{'raw ms/step':>12}{'Lightning ms/step':>19}{'Lightning/raw':>15}"
          f"{'raw peak MiB':>14}{'Lightning peak MiB':>20}")
    for name, family in families.items():
        if family.get("skipped"):
            print(f"{name:<12}{'skipped (see above)'}")
            continue
        for precision, case in family["cases"].items():
            if "skipped" in case:
                print(f"{name:<12}{precision:<12}skipped: {case['skipped']}")
                continue
            raw, lit = case["raw"], case["lightning"]
            row = f"{name:<12}{precision:<12}"
            row += f"{number(raw.get('ms_per_step'), 2):>12}{number(lit.get('ms_per_step'), 2):>19}"
            row += f"{number(case.get('ratio'), 2):>15}{number(raw.get('peak_mib'), 1):>14}"
            row += f"{number(lit.get('peak_mib'), 1):>20}"
            print(row)
            for loop in LOOPS:
                if "error" in case[loop]:
                    print(f"{'':<12}{'':<12}{loop} FAILED: {case[loop]['error']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--steps", type=int, help="timed steps per case (default: 100 on cuda, 3 on cpu)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 10 on cuda, 1 on cpu)")
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--tiny", action="store_true", help="shrink every model and batch (a quick run on a CPU)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to this JSON file")
    parser.add_argument("--budget", type=float, metavar="SECONDS",
                        help="start no case after this many seconds (default: 240 on cuda, none on cpu)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"gpu_check: --device cuda asked for, but CUDA is not available (torch {torch.__version__}); "
              "use --device cpu to try the check on the CPU", file=sys.stderr)
        return 2
    cuda = args.device == "cuda"
    steps = args.steps if args.steps is not None else (100 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    budget = args.budget if args.budget is not None else (240.0 if cuda else math.inf)
    if steps < 1 or warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")

    device = torch.device(args.device)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*has Tensor Cores.*")  # fp32 stays fp32: that is the case timed
    warnings.filterwarnings("ignore", message=".*no logger configured.*|.*`self.log`.*")
    warnings.filterwarnings("ignore", message=".*but have no `val_dataloader`.*")  # validation is off on purpose
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")  # Lightning's own
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    facts = environment(device)
    started = time.perf_counter()

    families: dict[str, dict] = {}
    failed = False
    for name in args.families:
        try:
            workload = FAMILIES[name](args.tiny)
        except ImportError as error:  # the family's code needs a package this machine lacks
            families[name] = {"skipped": f"cannot import its code: {error}"}
            continue
        family = families[name] = {"model": workload.model, "batch": workload.batch, "cases": {}}
        gc.freeze()  # what is loaded by now stays: each case's gc.collect then walks only its own objects
        for precision in args.precisions:
            if precision == "bf16-mixed" and cuda and not facts["bf16_supported"]:
                family["cases"][precision] = {"skipped": "this GPU does not support bfloat16"}
                continue
            if time.perf_counter() - started > budget:  # the check must end within 5 minutes
                family["cases"][precision] = {"skipped": f"the {budget:.0f} s budget was spent"}
                continue
            case = {loop: run_case(workload, loop, precision, device, steps, warmup) for loop in LOOPS}
            if all("ms_per_step" in case[loop] for loop in LOOPS):
                case["ratio"] = case["lightning"]["ms_per_step"] / case["raw"]["ms_per_step"]
            failed |= any("error" in case[loop] for loop in LOOPS)
            family["cases"][precision] = case
        print(f"{name}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    facts |= {"steps": steps, "warmup": warmup, "tiny": args.tiny, "seconds": time.perf_counter() - started}
    print_report(facts, families, steps, warmup)
    print(f"\n{facts['seconds']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps({**facts, "families": families}, indent=2) + "\n")
    if all(family.get("skipped") for family in families.values()):
        print("nothing was checked: every family was skipped", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
