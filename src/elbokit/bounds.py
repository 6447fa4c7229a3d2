"""Evidence lower bounds and the decomposition log p(x) = ELBO(q) + KL(q || p(z | x)).

For any distribution q(z) over the latent variable,

    ELBO(q) = E_q[log p(x, z)] - E_q[log q(z)] = E_q[log p(x, z)] + H[q],

and log p(x) - ELBO(q) = KL(q(z) || p(z | x)) >= 0, with equality exactly
when q is the posterior.  This module computes each term:

* for a **discrete latent** (mixtures), from the table log p(x, z=k), exactly
  (:func:`elbo_discrete`, :func:`decompose_discrete`);
* for a model with **global latents** theta as well (the variational mixture),
  ELBO = E_q[log p(x, z | theta)] + H[q(z)] - KL(q(theta) || p(theta)), in
  parts (:class:`VariationalBound`, :func:`variational_bound`);
* for a **continuous latent**, by Monte Carlo with draws from q
  (:func:`elbo_monte_carlo`), and the importance-weighted bound of Burda et
  al. (2016), IWAE_k = E[log (1/k) sum_i p(x, z_i) / q(z_i)], which rises
  towards log p(x) as k grows (:func:`iwae_bound`, also the importance-sampled
  estimate of log p(x)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import Categorical, Distribution

from elbokit.kl import kl_divergence


@dataclass(frozen=True)
class BoundDecomposition:
    """The three terms of log p(x) = ELBO(q) + KL(q || p(z | x)), per sample.

    Attributes
    ----------
    log_marginal : Tensor, shape (n,)
        log p(x).
    elbo : Tensor, shape (n,)
        ELBO(q).
    kl : Tensor, shape (n,)
        KL(q(z) || p(z | x)).
    """

    log_marginal: torch.Tensor
    elbo: torch.Tensor
    kl: torch.Tensor

    @property
    def gap(self) -> torch.Tensor:
        """log p(x) - ELBO(q): equals ``kl`` up to rounding."""
        return self.log_marginal - self.elbo


def _as_probs(q, n_components: int) -> torch.Tensor:
    probs = q.probs if isinstance(q, Categorical) else torch.as_tensor(q)
    if probs.shape[-1] != n_components:
        raise ValueError(
            f"q has {probs.shape[-1]} categories but the model has {n_components} components."
        )
    return probs


def elbo_discrete(log_joint: torch.Tensor, q) -> torch.Tensor:
    """ELBO(q) = sum_k q_k (log p(x, z=k) - log q_k), exactly.

    Parameters
    ----------
    log_joint : Tensor, shape (n, K)
        log p(x_n, z=k).
    q : Categorical or Tensor of shape (n, K)
        q(z = k) per sample (rows sum to 1); 0 log 0 counts as 0.

    Returns
    -------
    Tensor, shape (n,)
    """
    probs = _as_probs(q, log_joint.shape[-1]).to(log_joint)
    log_q = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    terms = torch.where(probs > 0, probs * (log_joint - log_q), torch.zeros_like(probs))
    return terms.sum(-1)


def posterior_discrete(log_joint: torch.Tensor) -> Categorical:
    """p(z | x) = p(x, z) / p(x), as a batch of categoricals (batch shape (n,))."""
    return Categorical(logits=log_joint)


def decompose_discrete(log_joint: torch.Tensor, q=None) -> BoundDecomposition:
    """log p(x), ELBO(q) and KL(q || p(z | x)) for a discrete latent.

    Parameters
    ----------
    log_joint : Tensor, shape (n, K)
    q : Categorical or Tensor of shape (n, K), optional
        Defaults to the exact posterior (then the KL is 0 and ELBO = log p(x)).
    """
    posterior = posterior_discrete(log_joint)
    q = posterior if q is None else q
    q_dist = q if isinstance(q, Categorical) else Categorical(probs=torch.as_tensor(q).to(log_joint))
    return BoundDecomposition(
        log_marginal=torch.logsumexp(log_joint, -1),
        elbo=elbo_discrete(log_joint, q_dist),
        kl=kl_divergence(q_dist, posterior),
    )


@dataclass(frozen=True)
class VariationalBound:
    """The ELBO of a model with local z and global theta, in parts (totals over the data).

    ELBO(q) = E_q[log p(x, z | theta)] + H[q(z)] - sum_j KL(q(theta_j) || p(theta_j)).

    Attributes
    ----------
    expected_log_joint : Tensor, scalar
        sum_n E_q[log p(x_n, z_n | theta)] (the expectation over q(z) and q(theta)).
    entropy : Tensor, scalar
        sum_n H[q(z_n)].
    kl : dict of str to Tensor
        KL(q(theta_j) || p(theta_j)) of each global factor (empty for a model
        without global latents).
    n_samples : Tensor, scalar
        The (weighted) number of samples the totals run over.
    """

    expected_log_joint: torch.Tensor
    entropy: torch.Tensor
    kl: dict
    n_samples: torch.Tensor

    @property
    def elbo(self) -> torch.Tensor:
        return self.expected_log_joint + self.entropy - sum(self.kl.values())

    @property
    def per_sample(self) -> torch.Tensor:
        """The ELBO per sample (the unit of ``lower_bounds_``)."""
        return self.elbo / self.n_samples


def variational_bound(log_joint: torch.Tensor, q=None, kl: dict | None = None,
                      weight: torch.Tensor | None = None) -> VariationalBound:
    """:class:`VariationalBound` from the expected log joint of a discrete local latent.

    Parameters
    ----------
    log_joint : Tensor, shape (n, K)
        E_q(theta)[log p(x_n, z_n = k | theta)].
    q : Tensor of shape (n, K) or Categorical, optional
        q(z_n = k); defaults to its optimum softmax(log_joint), where
        ELBO_n = logsumexp_k log_joint[n] (the KL of :func:`decompose_discrete` is 0).
    kl : dict of str to Tensor, optional
        The global factors' KL terms.
    weight : Tensor of shape (n,), optional
        Sample weights.
    """
    log_joint = log_joint.to(torch.float64)
    probs = torch.softmax(log_joint, -1) if q is None else _as_probs(q, log_joint.shape[-1]).to(log_joint)
    log_q = torch.where(probs > 0, probs.log(), torch.zeros_like(probs))
    joint = torch.where(probs > 0, probs * log_joint, torch.zeros_like(probs)).sum(-1)
    entropy = -(probs * log_q).sum(-1)
    w = torch.ones_like(joint) if weight is None else weight.to(joint)
    return VariationalBound(joint @ w, entropy @ w, dict(kl or {}), w.sum())


def _log_weights(log_joint_fn: Callable, q: Distribution, n_samples: int,
                 z: torch.Tensor | None = None) -> torch.Tensor:
    """log p(x, z_s) - log q(z_s) for z_s ~ q (or the given z), shape (n_samples, *batch)."""
    if z is None:
        z = q.rsample((n_samples,)) if q.has_rsample else q.sample((n_samples,))
    return log_joint_fn(z) - q.log_prob(z)


def elbo_monte_carlo(log_joint_fn: Callable, q: Distribution, n_samples: int = 1) -> torch.Tensor:
    """Monte Carlo ELBO: mean over z ~ q of log p(x, z) - log q(z).

    Parameters
    ----------
    log_joint_fn : callable
        ``log_joint_fn(z)`` with z of shape (S, *batch, *event) returns
        log p(x, z) of shape (S, *batch).
    q : Distribution
        Reparameterised draws are used when available, so the estimate is
        differentiable in q's parameters.
    n_samples : int
        Draws S.

    Returns
    -------
    Tensor of q's batch shape
        An unbiased estimate of the ELBO.
    """
    return _log_weights(log_joint_fn, q, n_samples).mean(0)


def iwae_bound(log_joint_fn: Callable, q: Distribution, n_samples: int,
               z: torch.Tensor | None = None) -> torch.Tensor:
    """Importance-weighted bound log (1/k) sum_i p(x, z_i) / q(z_i), z_i ~ q.

    With k = 1 it is the ELBO estimate; it never falls below the ELBO in
    expectation and tends to log p(x) as k grows, so with a large k it is
    the importance-sampled estimate of log p(x) (a stochastic lower bound).

    ``z``, optional, shape (n_samples, *batch, *event): draws from q made by
    the caller (e.g. reparameterised from given noise); drawn here if None.

    Returns
    -------
    Tensor of q's batch shape
    """
    log_w = _log_weights(log_joint_fn, q, n_samples, z)
    return torch.logsumexp(log_w, 0) - math.log(n_samples)
