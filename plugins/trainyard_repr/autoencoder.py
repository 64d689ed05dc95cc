"""Autoencoders: an encoder to a bottleneck code, a decoder back to the image.

    x (B, C, H, W) --corrupt (denoising, training only)--> encoder --> code (B, code)
      --> decoder --> sigmoid --> x_hat (B, C, H, W);   loss = |x_hat - x|^2 summed per image
                                                              + a sparsity penalty on the code

- Bottleneck: `code` units. With `undercomplete: true` (the default) a code at least as large
  as the input is refused: such an autoencoder can learn the identity.
- Sparse (`sparsity.penalty`): `l1`, lambda * |code|_1 on a ReLU code; or `kl`, beta *
  sum_j KL(rho || rho_hat_j) on a sigmoid code, where rho_hat_j is unit j's mean activation over
  the batch (Ng, "Sparse autoencoder", CS294A notes). Logged: the mean activation, and the
  fraction of units active per input (above 0.5 for a sigmoid code, above 0 for a ReLU code).
- Denoising (`noise.kind`, Vincent et al. 2008): the encoder sees a corrupted image and the
  loss compares with the clean one. Gaussian noise (std `level`), masking (each pixel set to 0
  with probability `level`) or salt-and-pepper (each pixel set to 0 or 1 with probability
  `level`). Evaluation reconstructs clean images; `test/denoised_mse` is the error of the
  outputs for corrupted test images, `test/corrupted_mse` that of the corrupted images themselves.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from trainyard import Params
from trainyard_repr.codes import BASE_METRICS, CodeModel, squared_error

SPARSE_METRICS = tuple(f"{stage}/{name}" for stage in ("train", "val", "test")
                       for name in ("penalty", "mean_activation", "active_fraction"))
METRICS = BASE_METRICS + SPARSE_METRICS + ("test/denoised_mse", "test/corrupted_mse")


class SparsityParams(Params):
    penalty: Literal["none", "l1", "kl"] = Field("none", description="none, l1 on a ReLU code, or kl to rho on a sigmoid code.")
    weight: float = Field(1.0, ge=0, description="The penalty's weight: lambda for l1, beta for kl.")
    target: float = Field(0.05, gt=0, lt=1, description="rho: the mean activation each code unit should have (kl).")


class NoiseParams(Params):
    kind: Literal["none", "gaussian", "masking", "salt_and_pepper"] = Field(
        "none", description="Corruption of training inputs (a denoising autoencoder), or none.")
    level: float = Field(0.3, ge=0, le=1, description="Gaussian std, or the probability a pixel is masked or flipped.")


class AutoencoderOptions(Params):
    """What every autoencoder takes besides its network's shape."""

    undercomplete: bool = Field(True, description="Refuse a code at least as large as the input.")
    sparsity: SparsityParams = Field(default_factory=SparsityParams, description="Sparse autoencoder penalty.")
    noise: NoiseParams = Field(default_factory=NoiseParams, description="Denoising autoencoder corruption.")
    probe_samples: int = Field(5000, ge=10, description="Training images the linear probe is fitted on, at most.")


def corrupt(x: torch.Tensor, noise: NoiseParams) -> torch.Tensor:
    if noise.kind == "gaussian":
        return x + noise.level * torch.randn_like(x)
    if noise.kind == "masking":
        return x * (torch.rand_like(x) >= noise.level)
    if noise.kind == "salt_and_pepper":
        flip = torch.rand_like(x) < noise.level
        return torch.where(flip, (torch.rand_like(x) < 0.5).to(x.dtype), x)
    return x


def check_code_size(options: AutoencoderOptions, code: int, input_shape: tuple[int, ...]) -> None:
    inputs = math.prod(input_shape)
    if options.undercomplete and code >= inputs:
        raise ValueError(f"a code of {code} units is not a bottleneck for inputs of {inputs} values "
                         f"({'x'.join(map(str, input_shape))}); make it smaller or set undercomplete: false")


class Autoencoder(CodeModel):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, options: AutoencoderOptions,
                 input_shape: tuple[int, ...], code: int, class_names: tuple[str, ...], seed: int):
        super().__init__(input_shape, code, class_names, seed, options.probe_samples)
        self.encoder, self.decoder, self.options = encoder, decoder, options

    @staticmethod
    def code_activation(options: AutoencoderOptions) -> str | None:
        """The code's non-linearity: ReLU for l1 (exact zeros), sigmoid for kl (rho_hat in (0, 1)),
        none for a plain bottleneck (PCA's subspace is then within reach)."""
        return {"l1": "relu", "kl": "sigmoid"}.get(options.sparsity.penalty)

    def forward(self, x):
        return torch.sigmoid(self.decoder(self.encoder(x)))  # (B, C, H, W) -> code -> (B, C, H, W) in [0, 1]

    def encode(self, x):
        return self.encoder(x)

    def reconstruct(self, x):
        return self(x)

    def loss_terms(self, x, stage):
        inputs = corrupt(x, self.options.noise) if stage == "train" else x
        code = self.encoder(inputs)  # (B, code)
        loss = squared_error(torch.sigmoid(self.decoder(code)), x)
        # Evaluation sees clean inputs: the loss is then the reconstruction error itself.
        terms = {"loss": loss} if stage == "train" else {"loss": loss, "mse": loss}
        sparsity = self.options.sparsity
        if sparsity.penalty != "none":
            penalty = self._penalty(code)
            terms["loss"] = loss + sparsity.weight * penalty
            active = code > (0.5 if sparsity.penalty == "kl" else 0.0)
            terms |= {"penalty": penalty, "mean_activation": code.mean(),
                      "active_fraction": active.float().mean()}
        if stage == "test" and self.options.noise.kind != "none":
            corrupted = corrupt(x, self.options.noise)
            terms["denoised_mse"] = squared_error(self(corrupted), x)
            terms["corrupted_mse"] = squared_error(corrupted, x)  # what a denoiser must beat
        return terms

    def _penalty(self, code: torch.Tensor) -> torch.Tensor:
        if self.options.sparsity.penalty == "l1":
            return code.abs().sum(1).mean()
        rho = self.options.sparsity.target
        rho_hat = code.mean(0).clamp(1e-6, 1 - 1e-6)  # (code,): each unit's mean activation over the batch
        return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()
