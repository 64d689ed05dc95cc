"""The representation-learning family's figures, each measured here in one run (docs/repr.md
quotes them). Every figure is taken over several seeds and train/test splits (`--seeds`: each
seed is also the data's split_seed), and summarised by its median.

    pca          repr.autoencoder against PCA with the same code size (2, 4 and 8): test
                 reconstruction error, squared and summed per image, and linear-probe accuracy
    sparse       the KL-sparse autoencoder: mean code activation against its target rho
    vae          the VAE's negative ELBO in nats per image on the digits, and on Fashion-MNIST's
                 IDX files when they are present (Debian: apt-get install dataset-fashion-mnist)
    pretraining  a classifier on 20 labels per class, started from an autoencoder's encoder
                 against the same classifier trained from scratch: test accuracy

    .venv/bin/python benchmarks/bench_repr.py [pca] [sparse] [vae] [pretraining] [--seeds 0 1 2]

With no section, all run (`make benchmark-repr`, about 20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from bench_seq import quiet  # the same silenced loggers as the other benchmarks
from trainyard.run import run_experiment
from trainyard.validate import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments" / "repr"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


class Runner:
    def __init__(self, workdir: str):
        self.store = f"sqlite:///{Path(workdir) / 'bench_repr.db'}"

    def __call__(self, spec: str, seed: int, *overrides: str) -> dict[str, float]:
        settings = ["trainer.progress_bar=false", "tracking.log_model=false", f"tracking.uri={self.store}",
                    f"seed={seed}", f"data.params.split_seed={seed}", *overrides]
        result = run_experiment(load_experiment(EXPERIMENTS / f"{spec}.yaml", settings), quiet=True)
        self.last_run_id = result.run_id
        return result.metrics


def pca(run: Runner, seeds: list[int]) -> None:
    print("\n== autoencoder against PCA on the digits (experiments/repr/autoencoder_digits.yaml) ==")
    print(f"{'code':>4} {'seed':>4} {'AE mse':>8} {'PCA mse':>8} {'ratio':>6} {'AE probe':>8} {'PCA probe':>9}")
    for code in (2, 4, 8):
        ratios = []
        for seed in seeds:
            m = run("autoencoder_digits", seed, f"model.params.code={code}")
            ratios.append(m["test/mse"] / m["test/pca_mse"])
            print(f"{code:>4} {seed:>4} {m['test/mse']:>8.3f} {m['test/pca_mse']:>8.3f} {ratios[-1]:>6.2f} "
                  f"{m['test/probe_acc']:>8.3f} {m['test/pca_probe_acc']:>9.3f}", flush=True)
        print(f"code {code}: median AE/PCA error ratio {statistics.median(ratios):.2f} "
              f"(below 1 in {sum(r < 1 for r in ratios)} of {len(ratios)})")


def sparse(run: Runner, seeds: list[int]) -> None:
    print("\n== KL-sparse autoencoder, rho = 0.05 (experiments/repr/sparse_autoencoder_digits.yaml) ==")
    errors = []
    for seed in seeds:
        m = run("sparse_autoencoder_digits", seed)
        errors.append(abs(m["test/mean_activation"] - 0.05) / 0.05)
        print(f"seed {seed}: mean activation {m['test/mean_activation']:.4f} (relative error {errors[-1]:.1%}), "
              f"active per input {m['test/active_fraction']:.3f}, mse {m['test/mse']:.3f}", flush=True)
    print(f"median relative error {statistics.median(errors):.1%} (target: within 10%; max {max(errors):.1%})")


def vae(run: Runner, seeds: list[int]) -> None:
    print("\n== VAE, negative ELBO in nats per image (experiments/repr/vae_digits.yaml) ==")
    datasets = [("digits, 2-D code", [])]
    if (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        datasets.append(("Fashion-MNIST, 16-D code, 10 epochs", [
            "data.name=cnn.mnist", f"data.params.root={FASHION_MNIST}", "data.params.variant=fashion_mnist",
            "data.params.batch_size=128", "model.params.code=16", "model.params.hidden=[512, 256]",
            "trainer.max_epochs=10", "model.params.kl_warmup_steps=2000"]))
    else:
        print(f"(no Fashion-MNIST files in {FASHION_MNIST}: apt-get install dataset-fashion-mnist to measure them)")
    for name, overrides in datasets:
        bounds = []
        for seed in seeds if name.startswith("digits") else seeds[:1]:  # Fashion-MNIST: minutes per epoch
            m = run("vae_digits", seed, *overrides)
            bounds.append(m["test/nelbo"])
            print(f"{name}, seed {seed}: -ELBO {m['test/nelbo']:.2f} nats = reconstruction {m['test/recon']:.2f} "
                  f"+ KL {m['test/kl']:.2f}", flush=True)
        print(f"{name}: median -ELBO {statistics.median(bounds):.2f} nats per image")


def pretraining(run: Runner, seeds: list[int]) -> None:
    print("\n== 20 labels per class: pre-trained encoder against scratch "
          "(experiments/repr/pretrain_autoencoder_digits.yaml, classifier_few_labels.yaml) ==")
    gains = []
    for seed in seeds:
        run("pretrain_autoencoder_digits", seed)
        pretrained = run.last_run_id
        scratch = run("classifier_few_labels", seed)["test/acc"]
        tuned = run("classifier_few_labels", seed, f"model.init_from={pretrained}")["test/acc"]
        gains.append(tuned - scratch)
        print(f"seed {seed}: scratch {scratch:.3f}, pre-trained {tuned:.3f} ({gains[-1]:+.3f})", flush=True)
    print(f"median gain {statistics.median(gains):+.3f} (better in {sum(g > 0 for g in gains)} of {len(gains)})")


SECTIONS = {"pca": pca, "sparse": sparse, "vae": vae, "pretraining": pretraining}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sections", nargs="*", metavar="section", help=f"any of {', '.join(SECTIONS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (and data split seeds)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small models: 1 is fastest)")
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the runs are recorded")
    args = parser.parse_args()
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    quiet()
    torch.set_num_threads(args.threads)
    run = Runner(args.workdir)
    for name in args.sections or SECTIONS:
        SECTIONS[name](run, args.seeds)


if __name__ == "__main__":
    main()
