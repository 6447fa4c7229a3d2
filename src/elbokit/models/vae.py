"""The variational autoencoder: math only (networks, likelihoods, priors, bounds).

The joint is p_theta(x, z | c) = p_theta(x | z, c) p(z) with a neural decoder; the
approximate posterior q_phi(z | x, c) = N(mu_phi(x, c), diag sigma_phi(x, c)^2)
comes from an encoder (amortised inference).  ``c`` are optional covariates
(one-hot labels or any real columns: the conditional VAE of Sohn et al. 2015),
given to both networks; without them it is the plain VAE.  Per sample,

    ELBO = E_q[log p(x | z)] - KL(q(z | x) || p(z))          (Kingma & Welling, 2014)
    IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)]       (Burda et al., 2016)

with ELBO <= IWAE_k <= log p(x), IWAE_k rising to log p(x) as k grows; with a
large k it is the importance-sampled estimate of log p(x).

Priors p(z):

* ``normal``: N(0, I); the KL term is analytic (its closed form is the one in
  torch's registry, written out here on the encoder's tensors);
* ``mog``: a learned mixture of diagonal Gaussians;
* ``vamp``: the VampPrior (Tomczak & Welling, 2018), p(z) = (1/K) sum_k
  q_phi(z | u_k), the mixture of the encoder's posteriors at K learned
  pseudo-inputs u_k (in data space).
For the two mixtures KL(q || p) has no closed form: the ELBO uses the
single-draw estimate log q(z | x) - log p(z) at the same reparameterised z as
the reconstruction term, an unbiased estimate of the KL (so the ELBO estimate
is unbiased too).

Likelihoods p(x | z):

* ``bernoulli``: binary data (or grey levels binarised dynamically);
* ``continuous_bernoulli``: grey levels in [0, 1] (Loaiza-Ganem & Cunningham,
  2019), the properly normalised density for non-binarised images;
* ``gaussian``: real-valued data, mean from the decoder, a learned
  per-feature variance;
* ``categorical``: integer codes 0..C-1 per feature.

The training loop calls the bounds many thousands of times, so the bounds
work on the networks' raw outputs (location and scale tensors, logits) with
a few fused operations; ``torch.distributions`` objects are built only for
the public API (``posterior``, ``prior_distribution``, sampling).  The data
are checked once by the estimator, so those skip torch's argument checks.

Gradients of the IWAE bound: with ``dreg=True`` the encoder gets the doubly
reparameterised estimator of Tucker et al. (2019),
sum_i w~_i^2 d log w_i / d z_i  d z_i / d phi (w~ the normalised importance
weights, log q's direct dependence on phi dropped), unbiased for the same
gradient with a lower variance; the decoder and prior keep the usual
sum_i w~_i d log w_i / d theta.
"""

from __future__ import annotations

import math

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

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "categorical")
PRIORS = ("normal", "mog", "vamp")
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ConvEncoderNet(nn.Module):
    """A small convolutional trunk for (channels, height, width) images -> features.

    The input rows are the flattened image, then ``n_covariates`` covariate
    columns, which join the convolutional features before the last layer.
    """

    def __init__(self, image_shape, out_features: int, n_covariates: int = 0):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = tuple(image_shape)
        self.n_pixels = c * h * w
        self.conv = nn.Sequential(
            nn.Conv2d(c, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.ReLU(),
        )
        self.flat = 64 * (h // 4) * (w // 4)
        self.head = nn.Linear(self.flat + n_covariates, out_features)

    def forward(self, inputs):
        lead = inputs.shape[:-1]
        x, c = inputs[..., :self.n_pixels], inputs[..., self.n_pixels:]
        h = self.conv(x.reshape(-1, *self.image_shape)).flatten(1)
        if c.shape[-1]:
            h = torch.cat([h, c.reshape(-1, c.shape[-1])], -1)
        return self.head(h).reshape(*lead, -1)


class ConvDecoderNet(nn.Module):
    """Mirror of :class:`ConvEncoderNet`: (latent + covariates) -> (channels*height*width) outputs."""

    def __init__(self, image_shape, in_features: int, out_channels: int):
        super().__init__()
        c, h, w = image_shape
        self.h4, self.w4 = h // 4, w // 4
        self.head = nn.Sequential(nn.Linear(in_features, 64 * self.h4 * self.w4), nn.ReLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z):
        lead = z.shape[:-1]
        y = self.deconv(self.head(z.reshape(-1, z.shape[-1])).reshape(-1, 64, self.h4, self.w4))
        return y.reshape(*lead, -1)


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """N(loc, diag scale^2) as a distribution with event shape (L,)."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


def diagonal_normal_log_prob(z, loc, scale) -> torch.Tensor:
    """log N(z; loc, diag scale^2), summed over the last dimension."""
    return (-0.5 * ((z - loc) / scale).square() - scale.log()).sum(-1) - z.shape[-1] * _HALF_LOG_2PI


class GaussianEncoder(nn.Module):
    """q_phi(z | x) = N(loc(x), diag scale(x)^2), from any network giving 2 * latent outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def params(self, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale), each (..., L): the networks' outputs, scale = softplus + 1e-5."""
        loc, pre_scale = self.net(inputs).chunk(2, dim=-1)
        return loc, nn.functional.softplus(pre_scale) + 1e-5

    def forward(self, inputs) -> Independent:
        return diagonal_normal(*self.params(inputs))


class Decoder(nn.Module):
    """p_theta(x | z) for one of :data:`LIKELIHOODS`.

    Parameters
    ----------
    net : nn.Module
        Maps z (..., latent [+ covariates]) to the likelihood's parameters:
        (..., D) logits or means, or (..., D * n_categories) logits for
        ``categorical``.
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

    def distribution(self, out):
        """p(x | z) from the network's output ``out``."""
        lik = self.likelihood
        if lik == "bernoulli":
            base = Bernoulli(logits=out, validate_args=False)
        elif lik == "continuous_bernoulli":
            base = ContinuousBernoulli(logits=out, validate_args=False)
        elif lik == "gaussian":
            base = Normal(out, self.log_scale.exp().expand_as(out), validate_args=False)
        else:
            logits = out.reshape(*out.shape[:-1], self.n_features, self.n_categories)
            base = Categorical(logits=logits, validate_args=False)
        return Independent(base, 1, validate_args=False)

    def forward(self, z):
        return self.distribution(self.net(z))

    def log_prob(self, out, x) -> torch.Tensor:
        """log p(x | z) summed over features, from the network's output ``out`` (..., n, *).

        ``x`` (n, D) broadcasts against the leading (sample) dimensions of ``out``.
        """
        lik = self.likelihood
        if lik == "bernoulli":
            target = x.expand_as(out)
            return -nn.functional.binary_cross_entropy_with_logits(
                out, target, reduction="none").sum(-1)
        if lik == "gaussian":
            log_scale = self.log_scale
            return (-0.5 * ((x - out) * torch.exp(-log_scale)).square() - log_scale).sum(-1) \
                - self.n_features * _HALF_LOG_2PI
        if lik == "categorical":
            logits = out.reshape(*out.shape[:-1], self.n_features, self.n_categories)
            codes = x.to(torch.int64).expand(logits.shape[:-1]).unsqueeze(-1)
            return logits.log_softmax(-1).gather(-1, codes).squeeze(-1).sum(-1)
        return self.distribution(out).log_prob(x)

    def mean(self, z):
        """E[x | z], shape (..., D)."""
        dist = self(z)
        if self.likelihood == "categorical":
            return dist.base_dist.probs.argmax(-1).to(z.dtype)
        return dist.mean


def mixture_log_prob(z, log_weights, loc, scale) -> torch.Tensor:
    """log sum_k w_k N(z; loc_k, diag scale_k^2), shape z.shape[:-1].

    Parameters
    ----------
    z : Tensor (..., L)
    log_weights : Tensor (K,), normalised
    loc, scale : Tensor (K, L)

    The quadratic forms of all (z, component) pairs are one matrix product,
    sum_j z_j^2 / s_kj^2 - 2 z_j m_kj / s_kj^2 + m_kj^2 / s_kj^2, computed in
    float64 so that the expansion loses nothing when a scale is small.
    """
    lead = z.shape[:-1]
    flat = z.reshape(-1, z.shape[-1]).to(torch.float64)
    loc64, scale64 = loc.to(torch.float64), scale.to(torch.float64)
    precision = scale64.pow(-2)
    quad = (flat.square() @ precision.T - 2.0 * flat @ (loc64 * precision).T
            + (loc64.square() * precision).sum(-1))
    log_norm = scale64.log().sum(-1) + z.shape[-1] * _HALF_LOG_2PI
    log_comp = -0.5 * quad - log_norm + log_weights.to(torch.float64)
    return torch.logsumexp(log_comp, -1).reshape(lead).to(z.dtype)


class StandardNormalPrior(nn.Module):
    """p(z) = N(0, I)."""

    analytic = True  # KL(q || p) in closed form

    def __init__(self, latent_dim: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(latent_dim))

    @property
    def latent_dim(self) -> int:
        return int(self.loc.shape[-1])

    def distribution(self, encoder=None) -> Independent:
        return diagonal_normal(self.loc, torch.ones_like(self.loc))

    def log_prob(self, z, encoder=None) -> torch.Tensor:
        return -0.5 * z.square().sum(-1) - z.shape[-1] * _HALF_LOG_2PI

    def kl(self, loc, scale) -> torch.Tensor:
        """KL(N(loc, diag scale^2) || N(0, I)) per latent dimension, (..., L)."""
        return 0.5 * (loc.square() + scale.square() - 1.0) - scale.log()


class DiagonalNormalPrior(StandardNormalPrior):
    """p(z) = N(loc, diag scale^2), fixed (e.g. the Laplace approximation of a Dirichlet)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        nn.Module.__init__(self)
        self.register_buffer("loc", torch.as_tensor(loc))
        self.register_buffer("scale", torch.as_tensor(scale))

    def distribution(self, encoder=None) -> Independent:
        return diagonal_normal(self.loc, self.scale)

    def log_prob(self, z, encoder=None) -> torch.Tensor:
        return diagonal_normal_log_prob(z, self.loc, self.scale)

    def kl(self, loc, scale) -> torch.Tensor:
        """KL(N(loc, diag scale^2) || p) per latent dimension, (..., L)."""
        return (torch.log(self.scale / scale)
                + (scale.square() + (loc - self.loc).square()) / (2 * self.scale.square()) - 0.5)


class _GaussianMixturePrior(nn.Module):
    """A prior that is a mixture of diagonal Gaussians: its components, log-density, sampler."""

    analytic = False

    def components(self, encoder=None):
        """(log_weights (K,), loc (K, L), scale (K, L))."""
        raise NotImplementedError

    def log_prob(self, z, encoder=None) -> torch.Tensor:
        return mixture_log_prob(z, *self.components(encoder))

    def distribution(self, encoder=None) -> MixtureSameFamily:
        log_w, loc, scale = self.components(encoder)
        return MixtureSameFamily(Categorical(logits=log_w, validate_args=False),
                                 diagonal_normal(loc, scale), validate_args=False)


class MixturePrior(_GaussianMixturePrior):
    """A learned mixture of Gaussians p(z) = sum_k pi_k N(mu_k, diag s_k^2)."""

    def __init__(self, latent_dim: int, n_components: int, generator=None):
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_components))
        self.loc = nn.Parameter(torch.randn(n_components, latent_dim, generator=generator))
        self.pre_scale = nn.Parameter(torch.zeros(n_components, latent_dim))

    @property
    def latent_dim(self) -> int:
        return int(self.loc.shape[-1])

    def components(self, encoder=None):
        scale = nn.functional.softplus(self.pre_scale) + 1e-3
        return self.logits.log_softmax(-1), self.loc, scale


class VampPrior(_GaussianMixturePrior):
    """The VampPrior: p(z) = (1/K) sum_k q_phi(z | u_k), K learned pseudo-inputs u_k.

    The pseudo-inputs live in the encoder's input space (``n_inputs`` columns)
    and are trained with the rest; the prior changes with the encoder, which
    it is given at each use (so that the encoder's weights are stored once).
    They start at zero and are usually set to training rows by the
    estimator (``init_pseudo_inputs``), as Tomczak & Welling's data
    initialisation.
    """

    def __init__(self, latent_dim: int, n_components: int, n_inputs: int):
        super().__init__()
        self._latent_dim = int(latent_dim)
        self.pseudo_inputs = nn.Parameter(torch.zeros(n_components, n_inputs))

    @property
    def latent_dim(self) -> int:
        return self._latent_dim

    def components(self, encoder=None):
        if encoder is None:
            raise ValueError("the VampPrior is defined by the encoder: pass it.")
        loc, scale = encoder.params(self.pseudo_inputs)
        K = self.pseudo_inputs.shape[0]
        log_w = torch.full((K,), -math.log(K), dtype=loc.dtype, device=loc.device)
        return log_w, loc, scale

    @torch.no_grad()
    def init_pseudo_inputs(self, rows: torch.Tensor) -> None:
        """Set the pseudo-inputs to ``rows`` (K, n_inputs), e.g. random training rows."""
        self.pseudo_inputs.copy_(rows)


class VAEModule(nn.Module):
    """Encoder, decoder and prior, with the bounds computed from them.

    Parameters
    ----------
    encoder : GaussianEncoder
        Takes x (with the covariates appended as columns, if any).
    decoder : Decoder
        Takes z (with the covariates appended, if any).
    prior : StandardNormalPrior, MixturePrior or VampPrior
    n_covariates : int
        Columns of c (0: no covariates).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, prior: nn.Module,
                 n_covariates: int = 0):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior
        self.n_covariates = int(n_covariates)

    @property
    def latent_dim(self) -> int:
        """Number of latent dimensions L."""
        return self.prior.latent_dim

    # ------------------------------------------------------------ pieces
    def encode(self, x, c=None) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | x, c)'s (loc, scale), each (n, L)."""
        return self.encoder.params(x if c is None else torch.cat([x, c], -1))

    def posterior(self, x, c=None) -> Independent:
        """q(z | x, c) as a distribution."""
        return diagonal_normal(*self.encode(x, c))

    def decode(self, z, c=None) -> torch.Tensor:
        """The decoder's raw output at z (..., n, L), covariates c (n, C) broadcast."""
        if c is not None:
            z = torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], -1)
        return self.decoder.net(z)

    def likelihood(self, z, c=None):
        """p(x | z, c) as a distribution."""
        return self.decoder.distribution(self.decode(z, c))

    def mean(self, z, c=None) -> torch.Tensor:
        """E[x | z, c]."""
        dist = self.likelihood(z, c)
        if self.decoder.likelihood == "categorical":
            return dist.base_dist.probs.argmax(-1).to(z.dtype)
        return dist.mean

    def prior_log_prob(self, z) -> torch.Tensor:
        """log p(z), z (..., L)."""
        return self.prior.log_prob(z, self.encoder)

    def prior_distribution(self):
        """p(z) as a distribution (for sampling)."""
        return self.prior.distribution(self.encoder)

    # ------------------------------------------------------------ bounds
    def forward(self, x, bound: str = "elbo", k: int = 1, noise=None, c=None, dreg=False):
        """The training quantities, through ``forward`` so that DistributedDataParallel
        sees the call: ``elbo_terms`` for "elbo", ``iwae`` for "iwae"."""
        if bound == "iwae":
            return self.iwae(x, k, noise=noise, c=c, dreg=dreg)
        return self.elbo_terms(x, noise=noise, c=c)

    def log_joint(self, x, z, c=None):
        """log p(x | z, c) + log p(z); z of shape (..., n, latent)."""
        return self.decoder.log_prob(self.decode(z, c), x) + self.prior_log_prob(z)

    def elbo_terms(self, x, *, noise=None, c=None):
        """One-sample reconstruction term and the KL term, per sample.

        Parameters
        ----------
        x : Tensor (n, D)
        noise : Tensor (n, L) or (n, 1, L), optional
            Standard normal draws for the reparameterisation
            z = loc(x) + scale(x) * noise; drawn here when not given (the
            training loop passes them, so that every sample's draw is the
            same however the batch is split across processes).
        c : Tensor (n, C), optional
            Covariates.

        Returns
        -------
        reconstruction : Tensor (n,)
            log p(x | z) with z ~ q(z | x) reparameterised.
        kl : Tensor (n,)
            KL(q(z | x) || p(z)): analytic for the N(0, I) prior; for the
            mixture priors the one-draw estimate log q(z|x) - log p(z) at the
            same z (unbiased, so reconstruction - kl is an unbiased ELBO).
        posterior : tuple (loc, scale), each (n, L)
        """
        loc, scale = self.encode(x, c)
        eps = torch.randn_like(loc) if noise is None else noise.reshape(loc.shape)
        z = loc + scale * eps
        reconstruction = self.decoder.log_prob(self.decode(z, c), x)
        if self.prior.analytic:
            kl = self.prior.kl(loc, scale).sum(-1)
        else:  # log q(z | x) at z = loc + scale * eps is -eps^2 / 2 - log scale - log(2 pi) / 2
            log_q = (-0.5 * eps.square() - scale.log()).sum(-1) - eps.shape[-1] * _HALF_LOG_2PI
            kl = log_q - self.prior_log_prob(z)
        return reconstruction, kl, (loc, scale)

    def kl_per_dimension(self, loc, scale, z=None) -> torch.Tensor:
        """KL between q's and p's marginals on each latent dimension, (n, L).

        For N(0, I) the exact per-dimension terms of the KL (they sum to it).
        For a mixture prior (which does not factorise) the one-draw estimate,
        at ``z`` (n, L), of KL(q_j || p_j) with p_j the prior's marginal on
        dimension j (a one-dimensional mixture): a collapse diagnostic, whose
        sum is not the joint KL.
        """
        if self.prior.analytic:
            return self.prior.kl(loc, scale)
        log_w, mix_loc, mix_scale = self.prior.components(self.encoder)
        log_q = -0.5 * ((z - loc) / scale).square() - scale.log() - _HALF_LOG_2PI
        comp = (-0.5 * ((z[..., None, :] - mix_loc) / mix_scale).square() - mix_scale.log()
                - _HALF_LOG_2PI)  # (n, K, L)
        log_p = torch.logsumexp(comp + log_w[:, None], -2)
        return log_q - log_p

    def iwae(self, x, k: int, noise=None, c=None, dreg: bool = False):
        """Importance-weighted bound with k samples per data point, shape (n,).

        All k draws for all n points are one batched computation. ``noise``,
        optional, shape (n, k, L): the standard normal draws (see
        :meth:`elbo_terms`). ``dreg``: when gradients are recorded, the
        encoder's gradient is the doubly reparameterised one (module
        docstring); the value is the same.
        """
        loc, scale = self.encode(x, c)
        eps = (torch.randn(k, *loc.shape, dtype=loc.dtype, device=loc.device) if noise is None
               else noise.transpose(0, 1))
        z = loc + scale * eps
        dreg = dreg and z.requires_grad
        if dreg:  # log q with its parameters held fixed: only the path through z remains
            log_q = diagonal_normal_log_prob(z, loc.detach(), scale.detach())
        else:
            log_q = (-0.5 * eps.square() - scale.log()).sum(-1) - eps.shape[-1] * _HALF_LOG_2PI
        log_w = self.log_joint(x, z, c) - log_q
        if dreg:  # d/dz gets w~ from the logsumexp; the hook makes it w~^2
            weights = torch.softmax(log_w.detach(), 0).unsqueeze(-1)
            z.register_hook(lambda grad: grad * weights)
        return torch.logsumexp(log_w, 0) - math.log(k)
