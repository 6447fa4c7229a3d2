"""VAE math: the bounds against a linear-Gaussian model whose log p(x) is closed form.

With a linear decoder p(x|z) = N(W z + b, s^2 I) and prior N(0, I) (probabilistic
PCA), p(x) = N(b, W W^T + s^2 I).  With orthogonal columns of W the exact
posterior N(M^-1 W^T (x - b), s^2 M^-1), M = W^T W + s^2 I, is diagonal, so a
linear encoder can represent it.
"""

import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal

from elbokit.kl import kl
from elbokit.models.vae import (Decoder, GaussianEncoder, MixturePrior, StandardNormalPrior,
                                VAEModule)

D, L, S = 5, 2, 0.5
F64 = torch.float64


class LinearEncoderNet(nn.Module):
    def __init__(self, A, c, scale):
        super().__init__()
        self.A, self.c = A, c
        self.pre = torch.log(torch.expm1(scale - 1e-5))  # inverse softplus

    def forward(self, x):
        return torch.cat([x @ self.A.T + self.c, self.pre.expand(x.shape[0], -1)], -1)


def ppca(perturb=0.0, scales=(2.0, 1.0), n=64):
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=F64))
    W = Q * torch.tensor(scales, dtype=F64)
    b = torch.randn(D, generator=g, dtype=F64)
    dec_net = nn.Linear(L, D).double()
    with torch.no_grad():
        dec_net.weight.copy_(W)
        dec_net.bias.copy_(b)
    decoder = Decoder(dec_net, "gaussian", D).double()
    with torch.no_grad():
        decoder.log_scale.fill_(math.log(S))
    M = W.T @ W + S**2 * torch.eye(L, dtype=F64)
    A = torch.linalg.solve(M, W.T)
    scale = torch.sqrt(S**2 / torch.diagonal(M))
    # perturb: a shifted, wider q (a proposal importance sampling can correct)
    encoder = GaussianEncoder(LinearEncoderNet(A, -A @ b + perturb, scale * (1 + 2 * perturb)))
    module = VAEModule(encoder, decoder, StandardNormalPrior(L).double())
    marginal = MultivariateNormal(b, W @ W.T + S**2 * torch.eye(D, dtype=F64))
    X = marginal.sample((n,))
    log_px = marginal.log_prob(X)
    return module, X, log_px


def test_exact_posterior_makes_the_importance_estimate_exact():
    """With q = p(z|x) every importance weight is p(x): zero variance, any k."""
    module, X, log_px = ppca()
    torch.manual_seed(0)
    for k in (1, 7):
        torch.testing.assert_close(module.iwae(X, k), log_px, rtol=0, atol=1e-8)
    # the ELBO with the analytic KL is log p(x) in expectation (KL(q || posterior) = 0)
    elbo = torch.stack([(lambda r: r[0] - r[1])(module.elbo_terms(X)) for _ in range(400)]).mean(0)
    torch.testing.assert_close(elbo.mean(), log_px.mean(), rtol=0, atol=0.02)


def test_importance_sampling_rises_to_log_px_with_more_samples():
    module, X, log_px = ppca(perturb=0.3)
    torch.manual_seed(1)
    means = [torch.stack([module.iwae(X, k) for _ in range(20)]).mean() for k in (1, 10, 1000)]
    truth = log_px.mean()
    assert means[0] < means[1] < means[2] <= truth + 1e-3
    assert float(truth - means[2]) < 0.02
    elbo = torch.stack([(lambda r: r[0] - r[1])(module.elbo_terms(X)) for _ in range(50)]).mean()
    assert float(elbo) <= float(means[1])  # IWAE_k >= ELBO


def test_gradients_flow_through_the_reparameterised_sample():
    module, X, _ = ppca(perturb=0.2)
    enc_param = torch.nn.Parameter(module.encoder.net.A.clone())
    module.encoder.net.A = enc_param
    rec, kl_term, _ = module.elbo_terms(X)
    (rec - kl_term).mean().backward()
    assert enc_param.grad is not None and bool(torch.isfinite(enc_param.grad).all())
    assert float(enc_param.grad.abs().sum()) > 0
    assert module.decoder.net.weight.grad is not None


def test_mixture_prior_uses_the_monte_carlo_kl():
    prior = MixturePrior(L, 3, torch.Generator().manual_seed(0)).double()
    module, X, _ = ppca()
    module.prior = prior
    q = module.encoder(X)
    assert kl(q, prior.distribution()).method == "monte_carlo"
    rec, kl_term, _ = module.elbo_terms(X)
    assert bool(torch.isfinite(kl_term).all())


def _encoder_gradients(module, X, k, dreg, draws, seed):
    """One encoder gradient of the mean IWAE_k bound per draw of the noise, (draws, n_params)."""
    net = module.encoder.net
    params = [net.A, net.c, net.pre]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(draws):
        noise = torch.randn(X.shape[0], k, L, generator=g, dtype=F64)
        bound = module.iwae(X, k, noise=noise, dreg=dreg).mean()
        out.append(torch.cat([t.flatten() for t in torch.autograd.grad(bound, params)]))
    return torch.stack(out)


def test_dreg_is_unbiased_with_a_lower_variance():
    """DReG (Tucker et al. 2019) against the plain reparameterised IWAE gradient, same draws."""
    module, X, _ = ppca(perturb=0.3)
    net = module.encoder.net
    net.A, net.c, net.pre = (nn.Parameter(t.clone()) for t in (net.A, net.c, net.pre))
    X, k, draws = X[:8], 10, 1000
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 1,000 tiny gradients: two threads spin-wait on busy cores
    try:
        _check_dreg(module, net, X, k, draws)
    finally:
        torch.set_num_threads(threads)


def _check_dreg(module, net, X, k, draws):
    plain = _encoder_gradients(module, X, k, False, draws, seed=7)
    dreg = _encoder_gradients(module, X, k, True, draws, seed=7)
    diff = dreg - plain  # paired: the same noise in both
    z = diff.mean(0) / (diff.std(0) / math.sqrt(draws))
    assert float(z.abs().max()) < 4.0, z  # unbiased: E[dreg] = E[plain] = grad IWAE_k
    # and the estimate is not trivially shared: the difference is a real random variable
    assert float(diff.std(0).min()) > 0
    assert float(dreg.var(0).sum()) < 0.5 * float(plain.var(0).sum())
    # the value of the bound is the same either way
    noise = torch.randn(X.shape[0], k, L, generator=torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(module.iwae(X, k, noise=noise, dreg=True),
                               module.iwae(X, k, noise=noise))
