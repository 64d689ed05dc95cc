"""The GAN family's figures, each measured here in one run (docs/gan.md quotes them).

    speed    a training step under `trainyard run` against a plain PyTorch loop with the same
             networks, optimizers and batches (median time per step; target <= 1.1x): the MLP
             GAN on the ring, and DCGAN on the digits
    ring     experiments/gan/ring_nonsaturating.yaml over 5 seeds: VEEGAN's modes covered,
             high-quality share and KL (target for each seed: 8/8 modes, >= 90% high quality)
    grid     experiments/gan/grid25.yaml over the seeds (target: >= 24 of 25 modes, >= 80%)
    without_r1  the ring's spec without the R1 penalty (model.params.r1=0), over the seeds
    digits   experiments/gan/dcgan_digits.yaml and conditional_digits.yaml: FID on the cached
             LeNet-5's features, FID between the real validation and test images as the floor,
             the class shares the LeNet-5 sees (target: every class >= 5%), and the conditional
             GAN's accuracy on the classes asked for; each seed about 5 minutes for both specs

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gan.py [speed] [ring] [grid] [without_r1] [digits]
        [--seeds 0 1 2 3 4] [--repeats 3]

With no section, all run. Every run is recorded in a throwaway SQLite store; torch uses one
thread (small networks: a second thread only contends on this 2-core machine).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from pytorch_lightning import Callback, seed_everything

from trainyard.build import build
from trainyard.optim import build_optimizer
from trainyard.run import run_experiment
from trainyard.validate import load_experiment
from trainyard_gan import losses

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "gan"
QUIET = ["trainer.progress_bar=false", "tracking.log_model=false"]


def quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning_fabric", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


class Runner:
    def __init__(self, workdir: str):
        self.store = f"sqlite:///{Path(workdir) / 'bench_gan.db'}"

    def experiment(self, spec: str, *overrides: str):
        return load_experiment(EXPERIMENTS / f"{spec}.yaml", [*QUIET, f"tracking.uri={self.store}", *overrides])

    def __call__(self, spec: str, *overrides: str, callbacks=()) -> dict:
        """The run's test metrics, its seconds and its mode-collapse tag."""
        from mlflow import MlflowClient

        started = time.perf_counter()
        result = run_experiment(self.experiment(spec, *overrides), callbacks=callbacks, quiet=True)
        tags = MlflowClient(self.store).get_run(result.run_id).data.tags
        return result.metrics | {"seconds": time.perf_counter() - started,
                                 "collapse": tags.get("gan.mode_collapse", "")}


# --- speed -----------------------------------------------------------------------------------


class StepClock(Callback):
    """Time from one training batch's end to the next one's (data loading included), leaving
    out the intervals that hold a validation."""

    def __init__(self):
        self.last: float | None = None
        self.steps: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.steps.append(now - self.last)
        self.last = now

    def on_validation_start(self, trainer, module) -> None:
        self.last = None


def plain_steps(experiment, steps: int) -> list[float]:
    """The same GAN step in a hand-written loop: the networks built from the spec, its optimizers,
    the data module's batches, the losses, the EMA; no Lightning, no logging."""
    spec = experiment.spec
    seed_everything(spec.seed, verbose=False)
    built = build(experiment)
    model, data = built.model, built.data
    data.setup("fit")
    generator, discriminator, params = model.generator, model.discriminator, model.params
    opt_g = build_optimizer(spec.optimizer["generator"], generator.parameters())
    opt_d = build_optimizer(spec.optimizer["discriminator"], discriminator.parameters())
    marks, done = [time.perf_counter()], 0
    while done < steps:
        for batch in data.train_dataloader():
            real = model.to_model(batch[0])
            labels = batch[1] if model.classes else None
            z = torch.randn(real.shape[0], params.noise_dim)
            with torch.no_grad():
                fake = generator(z, labels)
            d_loss = losses.discriminator_loss(params.loss, model.judge(real, labels), model.judge(fake, labels))
            if params.loss == "wgan_gp":
                d_loss = d_loss + model.penalty * losses.gradient_penalty(discriminator, model.packed(real),
                                                                          model.packed(fake))
            if params.r1:
                d_loss = d_loss + params.r1 / 2 * losses.r1_penalty(discriminator, model.packed(real))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if (done + 1) % params.n_critic == 0:
                z = torch.randn(real.shape[0], params.noise_dim)
                g_loss = losses.generator_loss(params.loss, model.judge(generator(z, labels), labels))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()  # (also into the discriminator: cleared before its next step)
                opt_g.step()
                if model.ema is not None:
                    model.ema.update_parameters(generator)
            marks.append(time.perf_counter())
            done += 1
            if done == steps:
                break
    return [b - a for a, b in zip(marks, marks[1:])]


def compare(run: Runner, spec: str, steps: int, repeats: int, *overrides: str) -> float:
    settings = [f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                "trainer.checkpoint=null", *overrides]
    times = {"plain": [], "trainyard": []}
    for _ in range(repeats):  # interleaved, so that machine noise hits both alike
        times["plain"] += plain_steps(run.experiment(spec, *settings), steps)[10:]  # the first 10: warm-up
        clock = StepClock()
        run(spec, *settings, callbacks=[clock])
        times["trainyard"] += clock.steps[10:]
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, seconds in medians.items():
        print(f"{spec:22s} {name:9s} {seconds * 1e3:7.2f} ms/step (median of {len(times[name])} steps)")
    ratio = medians["trainyard"] / medians["plain"]
    print(f"{spec:22s} trainyard / plain loop: {ratio:.3f}x per step (target <= 1.1)", flush=True)
    return ratio


def speed(run: Runner, seeds: list[int], repeats: int) -> None:
    print("\n== time per training step: trainyard run against a plain loop ==")
    compare(run, "ring_nonsaturating", 400, repeats)
    compare(run, "dcgan_digits", 120, repeats)


# --- mode coverage on 2-D mixtures -------------------------------------------------------------


def coverage(run: Runner, spec: str, seeds: list[int], modes: int, least_modes: int, least_quality: float,
             *overrides: str) -> None:
    changed = f" with {', '.join(overrides)}" if overrides else ""
    print(f"\n== {spec}{changed}: VEEGAN's measures on the test noise (experiments/gan/{spec}.yaml) ==")
    print(f"{'seed':>4} {'modes':>6} {'high quality':>12} {'KL':>6} {'seconds':>8}  mode collapse")
    reached = 0
    rows = []
    for seed in seeds:
        m = run(spec, f"seed={seed}", *overrides)
        rows.append(m)
        ok = m["test/modes_covered"] >= least_modes and m["test/high_quality"] >= least_quality
        reached += ok
        print(f"{seed:>4} {m['test/modes_covered']:>4.0f}/{modes} {m['test/high_quality']:>12.1%} "
              f"{m['test/kl_modes']:>6.3f} {m['seconds']:>8.0f}  {m['collapse']}{'' if ok else '  (below target)'}",
              flush=True)
    print(f"median: {statistics.median(r['test/modes_covered'] for r in rows):.0f}/{modes} modes, "
          f"{statistics.median(r['test/high_quality'] for r in rows):.1%} high quality; "
          f"target (>= {least_modes} modes, >= {least_quality:.0%}) reached by {reached} of {len(seeds)} seeds")


def ring(run: Runner, seeds: list[int], repeats: int) -> None:
    coverage(run, "ring_nonsaturating", seeds, 8, 8, 0.90)


def grid(run: Runner, seeds: list[int], repeats: int) -> None:
    coverage(run, "grid25", seeds, 25, 24, 0.80)


def without_r1(run: Runner, seeds: list[int], repeats: int) -> None:
    """The ring's spec without its R1 penalty: what the penalty is for."""
    coverage(run, "ring_nonsaturating", seeds, 8, 8, 0.90, "model.params.r1=0")


# --- digits --------------------------------------------------------------------------------------


def real_fid(run: Runner) -> float:
    """FID between the digits' real validation and test images, on the cached LeNet-5's features:
    what a perfect generator would score, given how few images there are."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from trainyard_gan import features

    data = build(run.experiment("dcgan_digits")).data
    data.setup("fit")
    data.setup("test")
    classifier = features.cached(data)
    fid = FrechetInceptionDistance(feature=classifier)
    fid.update(data.splits["val"].tensors[0], real=True)
    fid.update(data.splits["test"].tensors[0], real=False)
    print(f"cached LeNet-5: test accuracy {classifier.accuracy:.3f}, {classifier.num_features} features")
    return float(fid.compute())


def digits(run: Runner, seeds: list[int], repeats: int) -> None:
    print("\n== digits: FID on a trainyard-trained LeNet-5's features ==")
    floor = real_fid(run)
    print(f"FID real validation vs real test images: {floor:.2f} (the floor at these sample sizes)")
    for spec in ("dcgan_digits", "conditional_digits"):
        for seed in seeds:
            m = run(spec, f"seed={seed}")
            extra = f", accuracy on the class asked for {m['test/cond_acc']:.1%}" if "test/cond_acc" in m else ""
            print(f"{spec} seed {seed}: test FID {m['test/fid']:.2f}, classes covered "
                  f"{m['test/class_coverage']:.0f}/10, smallest class share {m['test/min_class_share']:.1%} "
                  f"(target >= 5%), class entropy {m['test/class_entropy']:.3f} nats (max 2.303){extra}; "
                  f"{m['seconds']:.0f} s", flush=True)


SECTIONS = {"speed": speed, "ring": ring, "grid": grid, "without_r1": without_r1, "digits": digits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sections", nargs="*", metavar="section", help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of the speed comparison")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section {', '.join(sorted(unknown))}; sections: {', '.join(SECTIONS)}")
    quiet()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        run = Runner(tmp)
        for section in args.sections or SECTIONS:
            SECTIONS[section](run, args.seeds, args.repeats)


if __name__ == "__main__":
    main()
