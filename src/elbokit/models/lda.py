"""Latent Dirichlet allocation (LDA): math only.

The generative model, for K topics over a vocabulary of V words::

    beta_k  ~ Dirichlet(eta)               k = 1..K      topic-word distributions
    theta_d ~ Dirichlet(alpha)             per document  topic mixture
    z_dn    ~ Categorical(theta_d)         per word      topic assignment
    w_dn    ~ Categorical(beta_{z_dn})

Mean-field variational family (Blei, Ng & Jordan 2003; Hoffman, Blei &
Bach 2010)::

    q(beta_k) = Dirichlet(lambda_k),  q(theta_d) = Dirichlet(gamma_d),
    q(z_dn) = Categorical(phi_dn)

Names: literature symbol -> elbokit name

=========  =================================  ======================
symbol     meaning                            name here / estimator
=========  =================================  ======================
alpha      document-topic prior (K,)          ``alpha`` / ``alpha_``
eta        topic-word prior (V,)              ``eta`` / ``eta_``
lambda     q(beta) concentration (K, V)       ``concentration`` / ``components_``
gamma      q(theta) concentration (n, K)      local state ``gamma``
phi        q(z) responsibilities              never stored: one row per non-zero,
                                              proportional to exp(E log theta) exp(E log beta)
=========  =================================  ======================

Every local (per-document) computation runs over the non-zeros of a batch
of documents at once: with ``B[i] = exp(E[log beta])[:, w_i]`` gathered once
per batch, one local iteration is O(nnz K) tensor work.  phi is never
materialised: its normaliser ``norm_i = sum_k exp(E log theta_dk) B[i, k]``
is all the gamma update, the statistics and the bound need, since
``log norm_i = logsumexp_k(E log theta_dk + E log beta_kw)`` is the per-word
term of the bound at the optimal phi.  Compute is in the estimator's dtype
(float32 by default); the statistics and the bound accumulate in float64.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from elbokit.data.text import DocBatch, SparseCounts
from elbokit.inference.sampling import dirichlet
from elbokit.inference.vi import LocalResult


def dirichlet_expectation(concentration: torch.Tensor) -> torch.Tensor:
    """E[log x] under Dirichlet(concentration) along the last axis: psi(c) - psi(sum c)."""
    return torch.digamma(concentration) - torch.digamma(concentration.sum(-1, keepdim=True))


@dataclass
class LDAParams:
    """Global variational parameters (float64, on the compute device).

    Attributes
    ----------
    concentration : Tensor, shape (K, V)
        lambda: q(beta_k) = Dirichlet(concentration[k]).
    alpha : Tensor, shape (K,)
    eta : Tensor, shape (V,)
    """

    concentration: torch.Tensor
    alpha: torch.Tensor
    eta: torch.Tensor
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def exp_elog_beta(self, dtype) -> torch.Tensor:
        """exp(E[log beta]), shape (K, V), computed in ``dtype`` and cached per dtype."""
        if dtype not in self._cache:
            lam = self.concentration.to(dtype)
            self._cache[dtype] = torch.exp(dirichlet_expectation(lam))
        return self._cache[dtype]

    def exp_elog_beta_t(self, dtype) -> torch.Tensor:
        """The same transposed and contiguous, shape (V, K), for row gathers by word."""
        key = ("t", dtype)
        if key not in self._cache:
            self._cache[key] = self.exp_elog_beta(dtype).t().contiguous()
        return self._cache[key]


@dataclass
class LDADraw:
    """One state of the blocked Gibbs sampler's globals.

    Attributes
    ----------
    topic_word : Tensor, shape (K, V)
        beta, drawn (rows sum to 1), float64.
    alpha, eta : Tensor, shapes (K,), (V,)
    """

    topic_word: torch.Tensor
    alpha: torch.Tensor
    eta: torch.Tensor


def initial_gamma(n_docs: int, doc_lengths: torch.Tensor, alpha: torch.Tensor, dtype):
    """Blei et al.'s deterministic start: gamma_dk = alpha_k + N_d / K, shape (n_docs, K)."""
    K = alpha.shape[0]
    return (alpha.to(dtype)[None, :] + (doc_lengths.to(dtype) / K)[:, None]).contiguous()


def _row_dots(et, doc, B):
    """sum_k et[doc_i, k] B[i, k] for every non-zero i, shape (nnz,)."""
    return torch.linalg.vecdot(et.index_select(0, doc), B)


def local_update(doc, count, n_docs, B, alpha, gamma, *, max_iter: int, tol: float):
    """Coordinate ascent on q(theta_d), q(z_d) for a batch of documents.

    Parameters
    ----------
    doc : LongTensor, shape (nnz,)
        Document (row in the batch) of each non-zero.
    count : Tensor, shape (nnz,)
    n_docs : int
    B : Tensor, shape (nnz, K)
        exp(E[log beta_k, w]) for the word of each non-zero.
    alpha : Tensor, shape (K,)
    gamma : Tensor, shape (n_docs, K)
        Starting point; updated in place.
    max_iter : int
        Most iterations.
    tol : float
        A document stops when its mean absolute change of gamma is below
        ``tol``; the loop stops when every document has.

    Returns
    -------
    gamma : Tensor, shape (n_docs, K)
    exp_elog_theta : Tensor, shape (n_docs, K)
        exp(E[log theta]) at ``gamma``.
    norm : Tensor, shape (nnz,)
        phi's normaliser at the returned gamma (consistent with it).
    n_iter : int
    """
    eps = torch.finfo(B.dtype).eps
    alpha = alpha.to(B.dtype)
    etheta = torch.exp(dirichlet_expectation(gamma))
    rows = None  # None: every document still active
    a_doc, a_B, a_cnt = doc, B, count
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        et = etheta if rows is None else etheta.index_select(0, rows)
        g_old = gamma if rows is None else gamma.index_select(0, rows)
        norm = _row_dots(et, a_doc, a_B).add_(eps)
        acc = torch.zeros_like(et).index_add_(0, a_doc, a_B * (a_cnt / norm)[:, None])
        g_new = acc.mul_(et).add_(alpha)
        change = (g_new - g_old).abs_().mean(1)
        e_new = torch.exp(dirichlet_expectation(g_new))
        if rows is None:
            gamma, etheta = g_new, e_new
        else:
            gamma[rows], etheta[rows] = g_new, e_new
        active = change >= tol
        n_active = int(active.sum())
        if n_active == 0:
            break
        if n_active <= active.shape[0] // 2:  # compact: keep only the active documents
            nnz_keep = active[a_doc]
            new_index = torch.cumsum(active, 0) - 1
            a_doc = new_index[a_doc[nnz_keep]]
            a_B, a_cnt = a_B[nnz_keep], a_cnt[nnz_keep]
            idx = torch.nonzero(active).squeeze(1)
            rows = idx if rows is None else rows[idx]
    if gamma.shape[0] != n_docs:
        raise AssertionError("gamma lost its shape")
    norm = _row_dots(etheta, doc, B).add_(eps)
    return gamma, etheta, norm, n_iter


def doc_terms(gamma64: torch.Tensor, alpha64: torch.Tensor) -> torch.Tensor:
    """E_q[log p(theta_d | alpha) - log q(theta_d | gamma_d)] per document, float64, shape (n,)."""
    elog = dirichlet_expectation(gamma64)
    return (((alpha64 - gamma64) * elog).sum(1)
            + (torch.lgamma(gamma64) - torch.lgamma(alpha64)).sum(1)
            + torch.lgamma(alpha64.sum()) - torch.lgamma(gamma64.sum(1)))


def update_alpha(alpha: torch.Tensor, mean_elog_theta: torch.Tensor, *, max_iter: int = 50,
                 tol: float = 1e-10) -> torch.Tensor:
    """Empirical-Bayes alpha: maximise sum_d E_q[log Dirichlet(theta_d | alpha)].

    The objective n (log Gamma(sum a) - sum log Gamma(a) + sum (a - 1) m), with
    m the mean E[log theta] over documents, is concave; Newton's method with
    the diagonal-plus-rank-one Hessian (Minka 2000) solves it in O(K) per step,
    halving steps that would leave alpha non-positive.
    """
    a = alpha.to(torch.float64).clone()
    m = mean_elog_theta.to(torch.float64)
    for _ in range(max_iter):
        g = torch.digamma(a.sum()) - torch.digamma(a) + m
        q = -torch.polygamma(1, a)
        z = torch.polygamma(1, a.sum())
        b = (g / q).sum() / (1.0 / z + (1.0 / q).sum())
        step = (g - b) / q
        s = 1.0
        while bool((a - s * step <= 0).any()) and s > 1e-8:
            s /= 2
        a = a - s * step
        if float(step.abs().max()) * s < tol:
            break
    if not bool(torch.isfinite(a).all()):
        raise FloatingPointError("the alpha update diverged; pass a fixed alpha instead.")
    return a


class GammaTable:
    """Every document's last gamma, to warm-start its local updates at the next pass.

    Online VI normally starts each mini-batch's local updates afresh; when
    the same documents come back pass after pass (``fit`` on data in memory)
    starting from their previous gamma reaches the same optimum in far fewer
    iterations. Memory O(n_docs K).

    Parameters
    ----------
    n_docs, n_topics : int
    dtype, device
    """

    def __init__(self, n_docs, n_topics, dtype, device):
        self.gamma = torch.zeros(n_docs, n_topics, dtype=dtype, device=device)
        self.seen = torch.zeros(n_docs, dtype=torch.bool, device=device)

    def start(self, rows, fresh):
        """Starting gamma of documents ``rows``: the stored one where seen, else ``fresh``."""
        seen = self.seen[rows]
        return torch.where(seen[:, None], self.gamma[rows], fresh)

    def store(self, rows, gamma):
        self.gamma[rows] = gamma
        self.seen[rows] = True


class LDAModel:
    """The LDA math the engines call.

    Parameters
    ----------
    dtype : torch.dtype
        Compute dtype of the local updates.
    local_max_iter : int
        Most local (per-document) iterations per local step.
    local_tol : float
        Local convergence: mean absolute change of gamma per document.
    learn_alpha : bool
        Re-estimate alpha by empirical Bayes in each global update.
    """

    def __init__(self, dtype=torch.float32, local_max_iter: int = 100, local_tol: float = 1e-3,
                 learn_alpha: bool = False):
        self.dtype = dtype
        self.local_max_iter = local_max_iter
        self.local_tol = local_tol
        self.learn_alpha = learn_alpha

    # ------------------------------------------------------------ local
    def infer(self, params: LDAParams, batch: DocBatch, gamma=None, *, max_iter=None, tol=None):
        """Local update of one batch; returns (gamma, exp_elog_theta, norm, B, n_iter)."""
        B = params.exp_elog_beta_t(self.dtype)[batch.word]
        count = batch.count.to(self.dtype)
        if gamma is None:
            lengths = torch.zeros(batch.n_docs, dtype=torch.float64, device=count.device)
            lengths.index_add_(0, batch.doc, count.to(torch.float64))
            gamma = initial_gamma(batch.n_docs, lengths, params.alpha, self.dtype)
        gamma, etheta, norm, n_iter = local_update(
            batch.doc, count, batch.n_docs, B, params.alpha, gamma.clone(),
            max_iter=self.local_max_iter if max_iter is None else max_iter,
            tol=self.local_tol if tol is None else tol,
        )
        return gamma, etheta, norm, B, n_iter

    def doc_bounds(self, params: LDAParams, batch: DocBatch, gamma, norm) -> torch.Tensor:
        """Per-document local ELBO terms (float64, shape (n_docs,)).

        sum_w n_dw log(norm_dw) + E[log p(theta_d)] - E[log q(theta_d)]: a lower
        bound on log p(w_d | alpha, beta) averaged over q(beta), the bound on a
        document's log-probability under the fitted topics.
        """
        words = torch.zeros(batch.n_docs, dtype=torch.float64, device=norm.device)
        words.index_add_(0, batch.doc,
                         batch.count.to(torch.float64) * torch.log(norm.to(torch.float64)))
        return words + doc_terms(gamma.to(torch.float64), params.alpha)

    def local_step(self, params: LDAParams, batch: DocBatch, local) -> LocalResult:
        """Local updates of one batch, its statistics and bound terms.

        ``local``: None (fresh start), the batch's previous gamma (batch VI),
        or a :class:`GammaTable` (read for the start, then updated).
        """
        table = local if isinstance(local, GammaTable) else None
        if table is not None:
            lengths = torch.zeros(batch.n_docs, dtype=torch.float64, device=batch.count.device)
            lengths.index_add_(0, batch.doc, batch.count.to(torch.float64))
            local = table.start(batch.rows, initial_gamma(batch.n_docs, lengths, params.alpha,
                                                          self.dtype))
        gamma, etheta, norm, B, _ = self.infer(params, batch, local)
        if table is not None:
            table.store(batch.rows, gamma)
        ratio = (batch.count.to(self.dtype) / norm)[:, None]
        V, K = params.concentration.shape[1], params.concentration.shape[0]
        sw = torch.zeros(V, K, dtype=torch.float64, device=norm.device)
        sw.index_add_(0, batch.word, (etheta[batch.doc] * ratio).to(torch.float64))
        stats = {"topic_word": sw.t() * params.exp_elog_beta(self.dtype).to(torch.float64)}
        if self.learn_alpha:
            stats["elog_theta"] = dirichlet_expectation(gamma.to(torch.float64)).sum(0)
            stats["n_docs"] = torch.tensor(float(batch.n_docs), dtype=torch.float64,
                                           device=norm.device)
        bound = self.doc_bounds(params, batch, gamma, norm).sum()
        return LocalResult(stats, bound, batch.n_docs, batch.n_words,
                           gamma if table is None else table)

    # ------------------------------------------------------------ global
    def zero_statistics(self, params: LDAParams) -> dict:
        """The statistics of no document (an empty shard under torch.distributed).

        ``params``: LDAParams (variational; expected statistics) or LDADraw
        (Gibbs; sampled topic-word counts only).
        """
        table = params.topic_word if isinstance(params, LDADraw) else params.concentration
        K, V = table.shape
        f64, device = torch.float64, table.device
        stats = {"topic_word": torch.zeros(K, V, dtype=f64, device=device)}
        if self.learn_alpha and not isinstance(params, LDADraw):
            stats["elog_theta"] = torch.zeros(K, dtype=f64, device=device)
            stats["n_docs"] = torch.zeros((), dtype=f64, device=device)
        return stats

    def maximize(self, stats, params: LDAParams, scale: float = 1.0) -> LDAParams:
        """lambda = eta + scale * E[topic-word counts]; alpha by empirical Bayes if learned."""
        lam = params.eta[None, :] + scale * stats["topic_word"]
        alpha = params.alpha
        if self.learn_alpha and float(stats["n_docs"]) > 0:
            alpha = update_alpha(alpha, stats["elog_theta"] / stats["n_docs"])
        return LDAParams(lam, alpha, params.eta)

    def blend(self, params: LDAParams, target: LDAParams, rho: float) -> LDAParams:
        lam = (1 - rho) * params.concentration + rho * target.concentration
        alpha = (1 - rho) * params.alpha + rho * target.alpha
        return LDAParams(lam, alpha, params.eta)

    def global_bound(self, params: LDAParams) -> torch.Tensor:
        """E_q[log p(beta | eta) - log q(beta | lambda)] summed over topics (float64)."""
        lam, eta = params.concentration, params.eta
        elog = dirichlet_expectation(lam)
        K = lam.shape[0]
        return (((eta[None, :] - lam) * elog).sum()
                + (torch.lgamma(lam) - torch.lgamma(eta)[None, :]).sum()
                + K * torch.lgamma(eta.sum()) - torch.lgamma(lam.sum(1)).sum())

    # ------------------------------------------------------------ Gibbs
    def sample_local(self, draw: LDADraw, batch: DocBatch, local, generator):
        """One sweep over a batch's tokens: z_dn | z_d,-n, beta with theta collapsed.

        Given beta, documents are independent, so the sweep visits token
        position j of *every* document at once: one tensor operation per
        position (a loop over the longest document's length, never over
        tokens or documents), drawing z from
        p(z_dn = k | ...) proportional to (n_dk without token n + alpha_k) beta_k,w_dn,
        an exact Gibbs step for p(z_d | w_d, beta) with theta integrated out.
        A non-zero with count c is c tokens.

        Returns
        -------
        stats : {"topic_word": (K, V) float64 counts of the new assignments}
        log_likelihood : float64
            sum_dw n_dw log sum_k theta_hat_dk beta_kw, theta_hat the posterior
            mean of theta given the assignments.
        n_units : float64, the batch's words
        local : the assignments and the batch's token layout
        """
        K, V = draw.topic_word.shape
        device = batch.count.device
        if local is None:
            local = _token_layout(batch, K, generator)
        z, ndk, tok_doc, tok_word, order, offsets = local
        alpha = draw.alpha.to(self.dtype)
        beta_t = draw.topic_word.t().contiguous().to(self.dtype)
        for j in range(len(offsets) - 1):
            idx = order[offsets[j]:offsets[j + 1]]
            d, w = tok_doc[idx], tok_word[idx]
            ndk[d, z[idx]] -= 1
            p = (ndk[d] + alpha) * beta_t[w]
            cdf = torch.cumsum(p, 1)
            u = torch.rand(len(idx), 1, generator=generator, device=device, dtype=self.dtype)
            new = (cdf < u * cdf[:, -1:]).sum(1).clamp_(max=K - 1)
            ndk[d, new] += 1
            z[idx] = new
        nkw = torch.bincount(z * V + tok_word, minlength=K * V).view(K, V).to(torch.float64)
        theta = ndk + alpha
        theta = theta / theta.sum(1, keepdim=True)
        p_word = (theta[batch.doc] * beta_t[batch.word]).sum(1).to(torch.float64)
        log_lik = (batch.count.to(torch.float64) * torch.log(p_word)).sum()
        return {"topic_word": nkw}, log_lik, batch.n_words, (z, ndk, tok_doc, tok_word, order,
                                                              offsets)

    def sample_global(self, stats, draw: LDADraw, generator) -> LDADraw:
        beta = dirichlet(draw.eta[None, :] + stats["topic_word"], generator)
        return LDADraw(beta, draw.alpha, draw.eta)


def _token_layout(batch: DocBatch, K: int, generator):
    """Tokens of a batch, grouped by their position in their document, with random topics."""
    device = batch.count.device
    nnz = batch.count.shape[0]
    token = torch.repeat_interleave(torch.arange(nnz, device=device),
                                    batch.count.round().to(torch.int64))
    tok_doc, tok_word = batch.doc[token], batch.word[token]
    T = tok_doc.shape[0]
    doc_len = torch.bincount(tok_doc, minlength=batch.n_docs)
    doc_start = torch.cumsum(doc_len, 0) - doc_len
    pos = torch.arange(T, device=device) - doc_start[tok_doc]
    order = torch.argsort(pos, stable=True)
    per_pos = torch.bincount(pos, minlength=1) if T else torch.zeros(1, dtype=torch.int64)
    offsets = [0] + torch.cumsum(per_pos, 0).tolist() if T else [0]
    z = torch.randint(0, K, (T,), generator=generator, device=device)
    ndk = torch.zeros(batch.n_docs, K, device=device)
    ndk.index_put_((tok_doc, z), torch.ones(T, device=device), accumulate=True)
    return z, ndk, tok_doc, tok_word, order, offsets


# ---------------------------------------------------------------- evaluation helpers
def split_counts(counts: SparseCounts, fraction: float, generator: torch.Generator):
    """Split every document's words in two by binomial thinning.

    Each of the c copies of a word goes to the first part with probability
    ``fraction``.

    Returns
    -------
    first, second : SparseCounts
        Same shape; ``first + second`` is ``counts``.
    """
    c = counts.data.to(torch.float64)
    draws = torch.binomial(c.cpu(), torch.full_like(c.cpu(), fraction), generator=generator)
    first = draws.to(c.device).to(counts.data.dtype)
    return (SparseCounts(counts.indptr, counts.indices, first, counts.n_docs,
                         counts.n_features, counts.is_torch),
            SparseCounts(counts.indptr, counts.indices, counts.data - first, counts.n_docs,
                         counts.n_features, counts.is_torch))


def completion_log_likelihood(theta: torch.Tensor, topic_word: torch.Tensor,
                              heldout: SparseCounts) -> torch.Tensor:
    """log p(held-out words | theta, beta) per document, float64, shape (n_docs,).

    ``sum_w n_dw log sum_k theta_dk beta_kw``: the document-completion score
    with point estimates theta (n_docs, K, rows summing to 1) and beta
    (K, V, rows summing to 1).
    """
    rows = heldout.row_ids()
    theta = theta.to(torch.float64)
    beta_t = topic_word.to(torch.float64).t()
    p = (theta[rows] * beta_t[heldout.indices]).sum(1)
    ll = heldout.data.to(torch.float64) * torch.log(p)
    return torch.zeros(heldout.n_docs, dtype=torch.float64, device=ll.device).index_add_(0, rows, ll)


def topic_coherence(top: np.ndarray, X, measure: str = "npmi") -> np.ndarray:
    """Coherence of each topic's top words from document co-occurrence in ``X``.

    Parameters
    ----------
    top : int array, shape (K, n)
        Each topic's top words, most probable first.
    X : scipy.sparse matrix, shape (n_docs, V)
        Reference counts; only whether a word occurs in a document matters.
    measure : {"npmi", "umass"}
        ``npmi``: mean over word pairs of log(p(wi, wj) / (p(wi) p(wj))) /
        -log p(wi, wj), with p the fraction of documents containing the
        words; -1 for pairs that never co-occur (range [-1, 1], higher is
        better). ``umass`` (Mimno et al. 2011): mean over pairs i < j
        (ordered by probability) of log((D(wi, wj) + 1) / D(wj)), with D
        document counts; pairs whose higher-ranked word is absent from ``X``
        are skipped.

    Returns
    -------
    float64 array, shape (K,)
    """
    top = np.asarray(top)
    vocab = np.unique(top)
    where = {w: i for i, w in enumerate(vocab)}
    B = (sp.csc_matrix(X)[:, vocab] > 0).astype(np.float64)
    co = np.asarray((B.T @ B).todense())  # document co-occurrence counts, (u, u)
    df = np.diag(co).copy()
    n = X.shape[0]
    K, m = top.shape
    out = np.empty(K)
    iu, ju = np.triu_indices(m, 1)
    for k in range(K):
        idx = np.array([where[w] for w in top[k]])
        a, b = idx[iu], idx[ju]
        dij = co[a, b]
        if measure == "npmi":
            with np.errstate(divide="ignore", invalid="ignore"):
                pij = dij / n
                pmi = np.log(pij) - np.log(df[a] / n) - np.log(df[b] / n)
                npmi = pmi / -np.log(pij)
            npmi = np.where(dij > 0, npmi, -1.0)
            npmi = np.where(dij == n, 1.0, npmi)  # pairs in every document
            out[k] = npmi.mean()
        else:
            ok = df[a] > 0
            if not ok.any():
                raise ValueError(
                    f"topic {k}'s top words never occur in X: pass reference documents "
                    "that use the model's vocabulary."
                )
            out[k] = np.mean(np.log((dij[ok] + 1.0) / df[a][ok]))
    return out
