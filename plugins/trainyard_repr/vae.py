"""A variational autoencoder (Kingma & Welling 2014), and beta-VAE (Higgins et al. 2017).

    x (B, C, H, W) --encoder--> (mu, logvar) (B, latent) each
    z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)          the reparameterisation trick
    z --decoder--> p(x|z): Bernoulli logits, or a Gaussian mean with a learned std per pixel

The loss is the negative ELBO in nats per example, recon + beta_t * KL(q(z|x) || N(0, I)), where
beta_t rises linearly from 0 to `beta` over `kl_warmup_steps` training batches (KL warm-up,
Bowman et al. 2016). `<stage>/nelbo` is always the true bound (beta 1), so runs with other betas
stay comparable. The Bernoulli likelihood on grey levels in [0, 1] is the usual choice for these
images (as in the paper); the Gaussian one keeps its std at least 0.05, because a pixel that is
always 0 would otherwise let it shrink without limit and the bound grow without meaning.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from trainyard import Params
from trainyard_repr.codes import BASE_METRICS, CodeModel
from trainyard_repr.networks import MLPDecoder, MLPEncoder, MLPParams

METRICS = BASE_METRICS + tuple(f"{stage}/{name}" for stage in ("train", "val", "test")
                               for name in ("nelbo", "recon", "kl")) + ("train/beta",)
MIN_LOG_STD = math.log(0.05)


class VAEParams(MLPParams):
    code: int = Field(2, ge=1, description="Dimensions of the latent code z.")
    decoder: Literal["bernoulli", "gaussian"] = Field("bernoulli", description="The likelihood p(x|z).")
    beta: float = Field(1.0, ge=0, description="Weight of the KL term (beta-VAE; 1 is the ELBO).")
    kl_warmup_steps: int = Field(0, ge=0, description="Training batches over which beta rises from 0 (0: none).")
    probe_samples: int = Field(5000, ge=10, description="Training images the linear probe is fitted on, at most.")


class VAE(CodeModel):
    def __init__(self, params: VAEParams, input_shape: tuple[int, ...], class_names: tuple[str, ...], seed: int):
        super().__init__(input_shape, params.code, class_names, seed, params.probe_samples)
        self.params = params
        # The encoder's last layer gives mu and logvar side by side: (B, 2 * latent).
        self.encoder = MLPEncoder(params.model_copy(update={"code": 2 * params.code}), input_shape)
        self.decoder = MLPDecoder(params, input_shape)
        self.log_std = nn.Parameter(torch.zeros(input_shape)) if params.decoder == "gaussian" else None

    def forward(self, x):
        """(B, C, H, W) -> (decoder output (B, C, H, W), mu (B, latent), logvar (B, latent)), z sampled."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.decoder(z), mu, logvar

    def encode(self, x):
        return self.encoder(x).chunk(2, dim=1)[0]  # mu

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent) -> the mean image (B, C, H, W)."""
        out = self.decoder(z)
        return torch.sigmoid(out) if self.params.decoder == "bernoulli" else out

    def reconstruct(self, x):
        return self.decode(self.encode(x))

    def beta_now(self) -> float:
        warmup = self.params.kl_warmup_steps
        return self.params.beta * (min(1.0, self.global_step / warmup) if warmup else 1.0)

    def loss_terms(self, x, stage):
        out, mu, logvar = self(x)
        if self.params.decoder == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:  # -log N(x; out, std^2), per pixel
            log_std = self.log_std.clamp(min=MIN_LOG_STD)
            recon = 0.5 * ((x - out) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)
        recon = recon.flatten(1).sum(1).mean()  # nats per example
        kl = (0.5 * (mu ** 2 + logvar.exp() - 1 - logvar)).sum(1).mean()  # KL(N(mu, var) || N(0, I)), closed form
        beta = self.beta_now()
        terms = {"loss": recon + beta * kl, "nelbo": recon + kl, "recon": recon, "kl": kl}
        if stage == "train":
            terms["beta"] = torch.tensor(beta)
        return terms

    @torch.no_grad()
    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` images decoded from z ~ N(0, I): (count, C, H, W)."""
        z = torch.randn(count, self.params.code, generator=generator).to(self.device)
        return self.decode(z)

    def on_validation_epoch_end(self):
        super().on_validation_epoch_end()
        if not self.trainer.sanity_checking:
            from trainyard.media import log_image
            from trainyard_repr.plots import image_grid

            samples = self.sample(32, torch.Generator().manual_seed(self.seed)).cpu()  # the same z at every step
            log_image(self, "prior_samples", image_grid(samples, columns=8))
