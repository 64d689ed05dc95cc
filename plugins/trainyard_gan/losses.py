"""The four GAN objectives, each as the discriminator's loss and the generator's loss.

The discriminator (a critic, for Wasserstein) gives one score per sample: a logit D(x) for the
first three, an unbounded critic value for wgan_gp. `real` and `fake` are the scores (B, 1) of
real and generated samples; softplus(-x) = -log sigmoid(x) and softplus(x) = -log(1 - sigmoid(x)).

    minimax          Goodfellow et al. 2014, the game as written: D maximises
                     log D(x) + log(1 - D(G(z))); G minimises log(1 - D(G(z))), whose gradient
                     vanishes exactly when D confidently rejects G's samples, early in training.
    non_saturating   Goodfellow et al. 2014, section 3: G maximises log D(G(z)) instead: the same
                     fixed point, strong gradients when G is losing.
    hinge            Lim & Ye 2017, Miyato et al. 2018: D minimises relu(1 - D(x)) + relu(1 + D(G(z)));
                     G maximises D(G(z)).
    wgan_gp          Arjovsky et al. 2017 with Gulrajani et al. 2017's gradient penalty: the critic
                     estimates the Wasserstein-1 distance E D(x) - E D(G(z)) over 1-Lipschitz
                     functions, the Lipschitz constraint kept by penalising
                     lambda * (|grad D(x_hat)| - 1)^2 at points x_hat between real and fake.

With any of them the discriminator may also pay Mescheder et al. 2018's R1 penalty,
(gamma / 2) E |grad D(x)|^2 on real samples (`r1_penalty`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Loss = Literal["minimax", "non_saturating", "hinge", "wgan_gp"]


def discriminator_loss(loss: Loss, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if loss in ("minimax", "non_saturating"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()  # wgan_gp, before its penalty


def generator_loss(loss: Loss, fake: torch.Tensor) -> torch.Tensor:
    if loss == "minimax":
        return -F.softplus(fake).mean()  # log(1 - D(G(z))), minimised
    if loss == "non_saturating":
        return F.softplus(-fake).mean()  # -log D(G(z))
    return -fake.mean()  # hinge and wgan_gp


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *condition) -> torch.Tensor:
    """Gulrajani et al.'s penalty E (|grad_x D(x_hat)|_2 - 1)^2, x_hat = e x + (1 - e) G(z),
    e ~ U[0, 1] per sample. The gradient is taken with create_graph, so that the penalty's own
    gradient reaches the critic's weights."""
    e = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)  # (B, 1, ...)
    between = (e * real + (1 - e) * fake).requires_grad_(True)
    scores = critic(between, *condition)  # (B, 1)
    (grad,) = torch.autograd.grad(scores.sum(), between, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(discriminator, real: torch.Tensor, *condition) -> torch.Tensor:
    """Mescheder et al. 2018's R1 regulariser E |grad_x D(x)|^2 on real samples only (the caller
    weighs it by gamma / 2): it flattens the discriminator around the data, which keeps the
    generator's game from circling and dropping modes. Any loss may use it."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real, *condition).sum(), real, create_graph=True)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def accuracy(loss: Loss, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's accuracy on real and on generated samples. A logit says 'real' above
    0 (probability 1/2); a Wasserstein critic's scores have no fixed offset, so its threshold is
    halfway between the batch's mean scores."""
    threshold = (real.mean() + fake.mean()) / 2 if loss == "wgan_gp" else 0.0
    return (real > threshold).float().mean(), (fake <= threshold).float().mean()
