"""The amortised-VI objectives and training loop."""

import torch

from elbokit.inference.amortized import ELBOObjective, IWAEObjective

from ..models.test_vae import ppca


def test_kl_warmup_ramps_beta_linearly():
    obj = ELBOObjective(beta=2.0, kl_warmup=4)
    assert [obj.kl_weight(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]
    assert ELBOObjective(beta=0.5).kl_weight(0) == 0.5


def test_beta_scales_only_the_kl_term():
    module, X, _ = ppca(perturb=0.2)
    losses = {}
    for beta in (0.0, 1.0, 3.0):
        torch.manual_seed(0)
        losses[beta], _ = ELBOObjective(beta=beta)(module, X)
    torch.manual_seed(0)
    rec, kl, _ = module.elbo_terms(X)
    torch.testing.assert_close(losses[0.0], -rec.mean())
    torch.testing.assert_close(losses[3.0] - losses[1.0], 2 * kl.mean())


def test_free_bits_floor_each_dimension():
    module, X, _ = ppca(perturb=0.2)
    torch.manual_seed(0)
    loss_free, _ = ELBOObjective(free_bits=5.0)(module, X)
    torch.manual_seed(0)
    rec, _, (loc, scale) = module.elbo_terms(X)
    per_dim = module.kl_per_dimension(loc, scale).mean(0)
    assert bool((per_dim < 5.0).all())  # so every dimension is floored at 5 nats
    torch.testing.assert_close(loss_free, -rec.mean() + 5.0 * per_dim.numel())


def test_iwae_objective_is_minus_the_bound():
    module, X, _ = ppca(perturb=0.2)
    torch.manual_seed(0)
    loss, bound = IWAEObjective(k=4)(module, X)
    torch.manual_seed(0)
    expected = module.iwae(X, 4)
    torch.testing.assert_close(loss, -expected.mean())
    assert bound.shape == () and bound.dtype == torch.float64 and not bound.requires_grad
    torch.testing.assert_close(bound, expected.detach().sum(dtype=torch.float64))
