"""ProdLDA (Srivastava & Sutton, 2017): a topic model trained by amortised VI.

Per document, with word counts w (a bag of V words):

    z ~ N(mu0, diag sigma0^2)                    the prior on the topic logits
    theta = softmax(z)                           topic proportions (K topics)
    each word ~ Categorical(softmax(BN(beta^T theta)))

* The Dirichlet(alpha) prior of LDA has no reparameterisation; ProdLDA
  replaces it by its **Laplace approximation in the softmax basis** (MacKay
  1998): mu0_k = log alpha_k - mean_j log alpha_j, sigma0_k^2 = (1 / alpha_k)
  (1 - 2 / K) + (1 / K^2) sum_j 1 / alpha_j -- a diagonal Gaussian, so the KL
  term of the ELBO is analytic.
* The decoder is a **product of experts**: the unnormalised topics beta (K, V)
  are mixed in log space (word logits beta^T theta) rather than as a mixture
  of word distributions (LDA's theta^T softmax(beta)), which gives sharper
  topics.
* **Batch normalisation** (with a learned shift, no learned scale, as the
  paper's code) of the encoder's outputs and of the word logits, and dropout
  on the encoder's last layer and on theta, as in the paper: they keep the topics from collapsing onto
  a few early in training. At inference (evaluation mode) batch
  normalisation uses its running statistics, so a document's result does
  not depend on the other documents of its batch.

The encoder q(z | w) = N(loc(w), diag scale(w)^2) is an MLP with softplus
units over the raw counts. The module is a :class:`~elbokit.models.vae.VAEModule`,
so the ELBO, the importance-sampled bound and the training loop are the VAE's.
The word likelihood is that of the words in order, sum_v w_v log p_v (no
multinomial coefficient), as LDA's bound.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical

from elbokit.models.vae import DiagonalNormalPrior, VAEModule


def laplace_prior(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(loc, scale) of the Laplace approximation of Dirichlet(alpha) in the softmax basis."""
    alpha = torch.as_tensor(alpha, dtype=torch.float64)
    K = alpha.shape[0]
    log_a = alpha.log()
    loc = log_a - log_a.mean()
    var = (1.0 / alpha) * (1.0 - 2.0 / K) + (1.0 / alpha).sum() / K**2
    return loc, var.sqrt()


class CenteredBatchNorm(nn.BatchNorm1d):
    """Batch normalisation with a learned shift and no learned scale (TensorFlow's
    ``batch_norm(center=True, scale=False)``, which the paper's code uses): the shift keeps,
    e.g., each word's base rate, which normalisation alone would remove."""

    def __init__(self, n: int):
        super().__init__(n, affine=False)
        self.shift = nn.Parameter(torch.zeros(n))

    def forward(self, x):
        return super().forward(x) + self.shift


class ProdLDAEncoder(nn.Module):
    """q(z | w): counts -> softplus MLP -> dropout -> batch-normalised loc and log-variance."""

    def __init__(self, n_words: int, n_topics: int, hidden_sizes=(100, 100), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_words
        for h in hidden_sizes:
            layers += [nn.Linear(width, h), nn.Softplus()]
            width = h
        self.trunk = nn.Sequential(*layers, nn.Dropout(dropout))
        self.loc = nn.Linear(width, n_topics)
        self.log_var = nn.Linear(width, n_topics)
        self.loc_bn = CenteredBatchNorm(n_topics)
        self.log_var_bn = CenteredBatchNorm(n_topics)

    def params(self, counts) -> tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of q(z | w), each (n, K)."""
        h = self.trunk(counts)
        loc = self.loc_bn(self.loc(h))
        scale = torch.exp(0.5 * self.log_var_bn(self.log_var(h)))
        return loc, scale


class ProdLDADecoderNet(nn.Module):
    """z (..., K) -> word logits (..., V): softmax, dropout, beta^T theta, batch norm."""

    def __init__(self, n_topics: int, n_words: int, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.beta = nn.Linear(n_topics, n_words, bias=False)
        self.bn = CenteredBatchNorm(n_words)

    def forward(self, z):
        lead = z.shape[:-1]
        theta = self.dropout(torch.softmax(z.reshape(-1, z.shape[-1]), -1))
        return self.bn(self.beta(theta)).reshape(*lead, -1)


class BagOfWords(nn.Module):
    """p(w | z): the words of a document, each drawn from softmax(logits)."""

    likelihood = "words"

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def distribution(self, out) -> Categorical:
        """The word distribution of each document (batch shape ``out.shape[:-1]``)."""
        return Categorical(logits=out, validate_args=False)

    def log_prob(self, out, counts) -> torch.Tensor:
        """sum_v w_v log p_v per document, (..., n)."""
        return (counts * out.log_softmax(-1)).sum(-1)


def build_prodlda(n_words: int, n_topics: int, *, hidden_sizes=(100, 100), dropout: float = 0.2,
                  alpha=1.0) -> VAEModule:
    """A ProdLDA module: encoder, product-of-experts decoder, Laplace-approximated prior."""
    alpha = torch.full((n_topics,), float(alpha)) if isinstance(alpha, (int, float)) \
        else torch.as_tensor(alpha)
    loc, scale = laplace_prior(alpha)
    prior = DiagonalNormalPrior(loc.float(), scale.float())
    return VAEModule(ProdLDAEncoder(n_words, n_topics, hidden_sizes, dropout),
                     BagOfWords(ProdLDADecoderNet(n_topics, n_words, dropout)), prior)


def word_log_probs(module: VAEModule, counts: torch.Tensor) -> torch.Tensor:
    """log p(word | document) under the posterior mean of z given ``counts``, (n, V).

    The point estimate of document completion (evaluation mode: no dropout,
    batch normalisation with its running statistics).
    """
    loc, _ = module.encode(counts)
    return module.decode(loc).log_softmax(-1)

