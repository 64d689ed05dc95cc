"""The GAN: a generator against a discriminator (Goodfellow et al. 2014), in the structure of
Lightning's GAN template (manual optimization, one toggled optimizer at a time).

    z ~ N(0, I) (B, noise_dim) --generator--> fake (B, *sample)      real (B, *sample) from the data
    discriminator: real -> scores (B, 1), fake -> scores (B, 1)      losses.py turns them into losses

Each training batch: one discriminator step on (real, fake); on every `n_critic`-th batch, one
generator step after it; then the generator's exponential moving average (`ema`) follows it.
The core builds the two optimizers from the spec's `optimizer.generator` and
`optimizer.discriminator` and hands them over in that order; it also clips gradients at each
step, steps the schedules and counts `trainer.max_steps` in batches (contract v2).

Images live in [0, 1] in the data and in every output of this module (forward, samples,
reports); the networks see them in [-1, 1], the range of the generator's tanh, as in DCGAN.
Validation and test measure samples from fixed noise (evaluation.py), drawn from the EMA
generator when there is one.
"""

from __future__ import annotations

import numpy as np
import torch
from pytorch_lightning import LightningModule
from torch.nn.utils import get_total_norm, parameters_to_vector
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from trainyard.media import log_image, set_tag
from trainyard.tracking import metric_step
from trainyard_gan import losses
from trainyard_gan.metrics import CollapseDetector
from trainyard_gan.networks import Discriminator, Generator

HISTORY_POINTS = 500  # generated points kept at each validation for the animation of training
COLLAPSE_TAG = "gan.mode_collapse"


class GAN(LightningModule):
    def __init__(self, generator: Generator, discriminator: Discriminator, params, evaluation,
                 collapse: CollapseDetector, sample_shape: tuple[int, ...], classes: int, seed: int):
        super().__init__()
        self.automatic_optimization = False  # two optimizers: this module steps them
        self.generator, self.discriminator = generator, discriminator
        self.params, self.evaluation, self.collapse, self.seed = params, evaluation, collapse, seed
        self.sample_shape, self.classes = tuple(sample_shape), classes
        self.images = len(sample_shape) == 3
        self.penalty = params.gradient_penalty or 10.0  # lambda, Gulrajani et al.'s 10 by default
        # The generator's weights averaged over its steps: w_ema <- d w_ema + (1 - d) w.
        self.ema = None
        if params.ema is not None:
            self.ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(params.ema), use_buffers=True)
            self.ema.requires_grad_(False)  # a copy that no optimizer (and no DDP reducer) touches
        # Fixed noise for validation and test (a different draw for each), and for a conditional
        # GAN the class asked of each sample: every class equally often. Not in the state_dict:
        # a fresh build from the same seed draws the same.
        noise = torch.Generator().manual_seed(seed)
        for stage in ("val", "test"):
            self.register_buffer(f"{stage}_noise", torch.randn(params.eval_samples, params.noise_dim, generator=noise),
                                 persistent=False)  # (eval_samples, noise_dim)
        labels = torch.arange(params.eval_samples) % classes if classes else torch.zeros(0, dtype=torch.long)
        self.register_buffer("eval_labels", labels, persistent=False)  # (eval_samples,)
        z = torch.randn(2, params.noise_dim, generator=noise)  # Lightning's sample input, MLflow's signature
        self.example_input_array = (z, torch.arange(2) % classes) if classes else z
        self.history: list[tuple[int, np.ndarray]] = []  # (step, points): the animation's frames
        self.validations = 0

    # --- sampling ------------------------------------------------------------------------------

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Samples in data space: z (B, noise_dim) -> points (B, 2) or images (B, C, H, W) in [0, 1]."""
        generator = self.ema.module if self.ema is not None else self.generator
        return self.to_data(generator(z, labels))

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1 if self.images else x  # images [0, 1] -> [-1, 1]

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2 if self.images else x

    @torch.no_grad()
    def generate(self, stage: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The stage's fixed noise through the evaluation generator: samples in data space, and
        the classes asked for (None unless conditional)."""
        labels = self.eval_labels if self.classes else None
        noise = getattr(self, f"{stage}_noise").split(1000)
        asked = labels.split(1000) if labels is not None else [None] * len(noise)
        was_training = self.training
        self.eval()  # batch norm's running statistics
        samples = torch.cat([self(z, y) for z, y in zip(noise, asked)])
        self.train(was_training)
        return samples, labels

    # --- training ------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # (Under data-parallel training the core tells DistributedDataParallel that a step leaves
        # the other network's parameters without gradients: trainyard.build.make_trainer.)
        self.evaluation.prepare()

    def on_train_start(self) -> None:
        if self.trainer.world_size > 1:
            # Every process was seeded alike: without this each would draw the same noise, and
            # the averaged generator gradient would be that of one noise batch.
            torch.manual_seed(torch.initial_seed() + self.global_rank)

    def training_step(self, batch, batch_idx: int) -> None:
        real, labels = self._unpack(batch)  # (B, *sample) in model space, (B,) or None
        opt_g, opt_d = self.optimizers()  # the declared order
        batches = metric_step(self.trainer)  # training batches before this one, across epochs
        log = (batches + 1) % self.trainer.log_every_n_steps == 0  # Lightning records only these

        with self.toggled_optimizer(opt_d):  # the generator's parameters get no gradient
            with torch.no_grad():
                fake = self.generator(self.noise(len(real)), labels)  # (B, *sample)
            d_loss, logged = self._discriminator_loss(real, fake, labels, log)
            self.manual_backward(d_loss)
            if log:
                logged["d_grad_norm"] = gradient_norm(self.discriminator)
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)

        if (batches + 1) % self.params.n_critic == 0:
            with self.toggled_optimizer(opt_g):
                scores = self.judge(self.generator(self.noise(len(real)), labels), labels)
                g_loss = losses.generator_loss(self.params.loss, scores)
                self.manual_backward(g_loss)
                if log:
                    logged |= {"g_loss": g_loss.detach(), "g_grad_norm": gradient_norm(self.generator)}
                opt_g.step()
                opt_g.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update_parameters(self.generator)
        if log:
            self.log_dict({f"train/{name}": value for name, value in logged.items()})

    def _discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None,
                            log: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of the discriminator's step, and what to log of it when `log`."""
        condition = [] if labels is None else [labels]
        d_real, d_fake = self.judge(real, labels), self.judge(fake, labels)  # (B, 1) each
        loss = losses.discriminator_loss(self.params.loss, d_real, d_fake)
        logged = {}
        if self.params.loss == "wgan_gp":
            # On what the critic judges: with packing, the Lipschitz constraint is on packs.
            penalty = losses.gradient_penalty(self.discriminator, self.packed(real), self.packed(fake), *condition)
            loss = loss + self.penalty * penalty
            logged["gradient_penalty"] = penalty.detach()
        if self.params.r1:
            r1 = losses.r1_penalty(self.discriminator, self.packed(real), *condition)
            loss = loss + self.params.r1 / 2 * r1
            logged["r1_penalty"] = r1.detach()
        if log:
            acc_real, acc_fake = losses.accuracy(self.params.loss, d_real.detach(), d_fake.detach())
            logged |= {"d_loss": loss.detach(), "d_acc_real": acc_real, "d_acc_fake": acc_fake}
        return loss, logged

    def noise(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.params.noise_dim, device=self.device)  # z: (count, noise_dim)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """PacGAN's packing (Lin et al. 2018): m samples side by side, judged as one,
        (B, *sample) -> (B // m, m * sample[0], *sample[1:]); the last B mod m samples sit out."""
        m = self.params.pack
        if m == 1:
            return x
        x = x[: x.shape[0] - x.shape[0] % m]
        return x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])

    def judge(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The discriminator's scores: (B, 1), or one per pack (B // m, 1)."""
        return self.discriminator(self.packed(x), labels)

    def _unpack(self, batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = batch[0]
        labels = batch[1] if self.classes and len(batch) > 1 else None
        return self.to_model(x), labels

    def on_train_epoch_end(self) -> None:
        if self.trainer.world_size > 1:
            # Data-parallel replicas must stay equal: the largest difference of any weight
            # between any process and the first.
            for name, network in (("generator", self.generator), ("discriminator", self.discriminator)):
                weights = parameters_to_vector(network.parameters()).detach()  # (n,)
                first = self.trainer.strategy.broadcast(weights.cpu(), src=0).to(weights.device)
                self.log(f"train/replica_gap/{name}", (weights - first).abs().max(), sync_dist=True, reduce_fx="max")

    # --- validation and test -------------------------------------------------------------------

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test")

    def _evaluation_step(self, batch, stage: str) -> None:
        """The discriminator on held-out real samples and on as many generated ones; real images
        feed FID's reference statistics."""
        if self.trainer.sanity_checking:
            return
        real, labels = self._unpack(batch)
        self.evaluation.add_real(stage, self.to_data(real))
        fake = self.generator(self.noise(len(real)), labels)
        acc_real, acc_fake = losses.accuracy(self.params.loss, self.judge(real, labels), self.judge(fake, labels))
        self.log_dict({f"{stage}/d_acc_real": acc_real, f"{stage}/d_acc_fake": acc_fake}, sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        step = metric_step(self.trainer)
        samples, labels = self._measure("val", step)
        if not self.images:
            self.history.append((step, samples[:HISTORY_POINTS].cpu().numpy()))
        if self.validations % self.params.sample_every == 0:
            log_image(self, "samples", self.evaluation.picture(samples, labels, step))
        self.validations += 1

    def on_test_epoch_end(self) -> None:
        self._measure("test", metric_step(self.trainer))

    def _measure(self, stage: str, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        samples, labels = self.generate(stage)
        found = self.evaluation.measure(stage, samples, labels)
        if stage == "val":
            seen_before = self.collapse.first
            found["mode_collapse"] = float(self.collapse.update(int(found[self.evaluation.coverage]), step))
            if self.collapse.first is not None and seen_before is None:  # detected now, for the first time
                set_tag(self, COLLAPSE_TAG, self.collapse.first)
        # The same on every process of data-parallel training (the same weights, the same noise):
        # synchronising them changes no value and tells Lightning so.
        self.log_dict({f"{stage}/{name}": float(value) for name, value in found.items()}, sync_dist=True)
        return samples, labels

    def on_fit_end(self) -> None:
        if self.collapse.first is None:
            set_tag(self, COLLAPSE_TAG, "none")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["gan_collapse"] = self.collapse.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.collapse.load_state_dict(checkpoint.get("gan_collapse", {}))


def gradient_norm(network: torch.nn.Module) -> torch.Tensor:
    """The 2-norm of all of a network's gradients together (before any clipping)."""
    return get_total_norm([p.grad for p in network.parameters() if p.grad is not None])
