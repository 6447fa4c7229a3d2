"""The variational autoencoder: math only (networks, likelihoods, priors, bounds).

The joint is p_theta(x, z) = p_theta(x | z) p(z) with a neural decoder; the
approximate posterior q_phi(z | x) = N(mu_phi(x), diag sigma_phi(x)^2) comes
from an encoder (amortised inference).  Per sample,

    ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))          (Kingma & Welling, 2014)
    IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)]       (Burda et al., 2016)

with ELBO <= IWAE_k <= log p(x), IWAE_k rising to log p(x) as k grows; with a
large k it is the importance-sampled estimate of log p(x).  The KL term is
analytic for the N(0, I) prior (torch's registry, through ``elbokit.kl``) and a
Monte Carlo estimate for the learned mixture-of-Gaussians prior.

The data are checked once by the estimator, so the distributions here skip
torch's per-call argument validation (a measurable cost in the training loop).

Likelihoods p(x | z):

* ``bernoulli``: binary data (or grey levels binarised dynamically);
* ``continuous_bernoulli``: grey levels in [0, 1] (Loaiza-Ganem & Cunningham,
  2019), the properly normalised density for non-binarised images;
* ``gaussian``: real-valued data, mean from the decoder, a learned
  per-feature variance;
* ``categorical``: integer codes 0..C-1 per feature.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import (
    Bernoulli,
    Categorical,
    ContinuousBernoulli,
    Independent,
    MixtureSameFamily,
    Normal,
)

from elbokit.bounds import iwae_bound
from elbokit.kl import kl_divergence

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "categorical")
PRIORS = ("normal", "mog")


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvEncoderNet(nn.Module):
    """A small convolutional trunk for (channels, height, width) images -> features."""

    def __init__(self, image_shape, out_features: int):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
        )
        self.flat = 64 * (h // 4) * (w // 4)
        self.head = nn.Linear(self.flat, out_features)

    def forward(self, x):
        x = x.reshape(-1, *self.image_shape)
        return self.head(self.conv(x).flatten(1))


class ConvDecoderNet(nn.Module):
    """Mirror of :class:`ConvEncoderNet`: latent -> (channels*height*width) outputs."""

    def __init__(self, image_shape, latent_dim: int, out_channels: int):
        super().__init__()
        c, h, w = image_shape
        self.h4, self.w4 = h // 4, w // 4
        self.head = nn.Sequential(nn.Linear(latent_dim, 64 * self.h4 * self.w4), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z):
        lead = z.shape[:-1]
        y = self.deconv(self.head(z.reshape(-1, z.shape[-1])).reshape(-1, 64, self.h4, self.w4))
        return y.reshape(*lead, -1)


class GaussianEncoder(nn.Module):
    """q_phi(z | x) = N(loc(x), diag scale(x)^2), from any network giving 2 * latent outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x) -> Independent:
        loc, pre_scale = self.net(x).chunk(2, dim=-1)
        scale = nn.functional.softplus(pre_scale) + 1e-5
        return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


class Decoder(nn.Module):
    """p_theta(x | z) for one of :data:`LIKELIHOODS`.

    Parameters
    ----------
    net : nn.Module
        Maps z (..., latent) to the likelihood's parameters: (..., D) logits or
        means, or (..., D * n_categories) logits for ``categorical``.
    likelihood : str
    n_features : int
    n_categories : int, optional
        For ``categorical``.
    """

    def __init__(self, net: nn.Module, likelihood: str, n_features: int, n_categories=None):
        super().__init__()
        self.net = net
        self.likelihood = likelihood
        self.n_features = n_features
        self.n_categories = n_categories
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(n_features))

    def forward(self, z):
        out = self.net(z)
        lik = self.likelihood
        if lik == "bernoulli":
            return Independent(Bernoulli(logits=out, validate_args=False), 1, validate_args=False)
        if lik == "continuous_bernoulli":
            return Independent(ContinuousBernoulli(logits=out, validate_args=False), 1,
                               validate_args=False)
        if lik == "gaussian":
            return Independent(Normal(out, self.log_scale.exp().expand_as(out), validate_args=False), 1,
                               validate_args=False)
        logits = out.reshape(*out.shape[:-1], self.n_features, self.n_categories)
        return Independent(Categorical(logits=logits, validate_args=False), 1, validate_args=False)

    def mean(self, z):
        """E[x | z], shape (..., D)."""
        dist = self(z)
        if self.likelihood == "categorical":
            return dist.base_dist.probs.argmax(-1).to(z.dtype)
        return dist.mean


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))

    def forward(self) -> Independent:
        return Independent(Normal(self.loc, torch.ones_like(self.loc), validate_args=False), 1,
                           validate_args=False)


class MixturePrior(nn.Module):
    """A learned mixture of Gaussians p(z) = sum_k pi_k N(mu_k, diag s_k^2).

    KL(q || p) has no closed form here; :func:`elbokit.kl.kl_divergence` falls
    back to a (reparameterised) Monte Carlo estimate.
    """

    def __init__(self, latent_dim: int, n_components: int, generator=None):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.loc = nn.Parameter(torch.randn(n_components, latent_dim, generator=generator))
        self.pre_scale = nn.Parameter(torch.zeros(n_components, latent_dim))

    def forward(self) -> MixtureSameFamily:
        scale = nn.functional.softplus(self.pre_scale) + 1e-3
        return MixtureSameFamily(Categorical(logits=self.logits),
                                 Independent(Normal(self.loc, scale), 1))


class VAEModule(nn.Module):
    """Encoder, decoder and prior, with the bounds computed from them."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior

    @property
    def latent_dim(self) -> int:
        """Number of latent dimensions L."""
        return int(self.prior.loc.shape[-1])

    def forward(self, x, bound: str = "elbo", k: int = 1, noise=None):
        """The training quantities, through ``forward`` so that DistributedDataParallel
        sees the call: ``elbo_terms(x, noise)`` for "elbo", ``iwae(x, k, noise)`` for "iwae"."""
        if bound == "iwae":
            return self.iwae(x, k, noise=noise)
        return self.elbo_terms(x, noise=noise)

    def log_joint(self, x, z):
        """log p(x | z) + log p(z); z of shape (..., n, latent)."""
        return self.decoder(z).log_prob(x) + self.prior().log_prob(z)

    def elbo_terms(self, x, *, noise=None):
        """One-sample reconstruction term and the KL term, per sample.

        Parameters
        ----------
        x : Tensor (n, D)
        noise : Tensor (n, L) or (n, 1, L), optional
            Standard normal draws for the reparameterisation
            z = loc(x) + scale(x) * noise; drawn here when not given (the
            training loop passes them, so that every sample's draw is the
            same however the batch is split across processes).

        Returns
        -------
        reconstruction : Tensor (n,)
            log p(x | z) with z ~ q(z | x) reparameterised.
        kl : Tensor (n,)
            KL(q(z | x) || p(z)): analytic for the N(0, I) prior; for the
            learned mixture prior the one-sample estimate log q(z|x) - log p(z)
            at the same z (unbiased, so reconstruction - kl is an unbiased ELBO).
        q : Independent
            The posterior approximation.
        """
        q = self.encoder(x)
        z = q.rsample() if noise is None else _reparameterise(q, noise.reshape(q.base_dist.loc.shape))
        reconstruction = self.decoder(z).log_prob(x)
        prior = self.prior()
        if isinstance(self.prior, StandardNormalPrior):
            kl = kl_divergence(q, prior)
        else:
            kl = q.log_prob(z) - prior.log_prob(z)
        return reconstruction, kl, q

    def kl_per_dimension(self, q):
        """KL per latent dimension, (n, latent): only for the N(0, I) prior (free bits)."""
        base = q.base_dist
        return kl_divergence(base, Normal(torch.zeros_like(base.loc), torch.ones_like(base.scale)))

    def iwae(self, x, k: int, noise=None):
        """Importance-weighted bound with k samples per data point, shape (n,).

        All k draws for all n points are one batched computation. ``noise``,
        optional, shape (n, k, L): the standard normal draws (see :meth:`elbo_terms`).
        """
        q = self.encoder(x)
        z = None if noise is None else _reparameterise(q, noise.transpose(0, 1))
        return iwae_bound(lambda z: self.log_joint(x, z), q, k, z=z)


def _reparameterise(q: Independent, noise: torch.Tensor) -> torch.Tensor:
    """z = loc + scale * noise for q = N(loc, diag scale^2); noise (..., n, L)."""
    base = q.base_dist
    return base.loc + base.scale * noise
