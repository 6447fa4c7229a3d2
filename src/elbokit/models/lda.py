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

The local (per-document) updates run on CPU as a compiled loop (numba) over
each document's own non-zeros, documents in threads
(:func:`local_update_numba`); elsewhere (GPUs, or ``use_numba=False``) over
the non-zeros of a batch of documents at once: with
``B[i] = exp(E[log beta])[:, w_i]`` gathered once per batch, one local
iteration is O(nnz K) tensor work (:func:`local_update`). Both are the same
update with the same per-document stopping rule.  phi is never
materialised: its normaliser ``norm_i = sum_k exp(E log theta_dk) B[i, k]``
is all the gamma update, the statistics and the bound need, since
``log norm_i = logsumexp_k(E log theta_dk + E log beta_kw)`` is the per-word
term of the bound at the optimal phi.  Compute is in the estimator's dtype
(float32 by default); the statistics and the bound accumulate in float64.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch

from elbokit.data.text import DocBatch, SparseCounts
from elbokit.inference.sampling import dirichlet
from elbokit.inference.vi import LocalResult
from elbokit.models import lda_gibbs


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

    def elog_beta(self) -> torch.Tensor:
        """E[log beta] under q, shape (K, V), float64, cached (the bound and the local
        updates both need it)."""
        if "elog" not in self._cache:
            self._cache["elog"] = dirichlet_expectation(self.concentration)
        return self._cache["elog"]

    def exp_elog_beta(self, dtype) -> torch.Tensor:
        """exp(E[log beta]), shape (K, V), computed in ``dtype`` and cached per dtype."""
        if dtype not in self._cache:
            self._cache[dtype] = torch.exp(self.elog_beta()).to(dtype)
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
    sweeps : int
        Sweeps made so far (the priors are learned from ``PRIORS_FROM`` on). It also
        names the next sweep's stream of the compiled sweep's random numbers: a sweep
        from the same draw repeats its draws.
    """

    topic_word: torch.Tensor
    alpha: torch.Tensor
    eta: torch.Tensor
    sweeps: int = 0


# Gibbs: sweeps before alpha and eta are learned. Learned from the first sweep, alpha can
# follow the random initial assignments into a state the chain leaves slowly (a generated
# corpus, 4 topics, 1 seed in 6: per-token log-likelihood -2.87 after 40 sweeps and -2.705
# after 200, -2.698 from every other seed and from that seed with a symmetric alpha); from
# sweep 5 that seed gives -2.698, and the KJV and fortunes (3 seeds, K=50) -6.503 and
# -7.791 (from sweep 1: -6.477, -7.788; from sweep 10: -6.494, -7.799)
PRIORS_FROM = 5


def initial_gamma(n_docs: int, doc_lengths: torch.Tensor, alpha: torch.Tensor, dtype):
    """Blei et al.'s deterministic start: gamma_dk = alpha_k + N_d / K, shape (n_docs, K)."""
    K = alpha.shape[0]
    return (alpha.to(dtype)[None, :] + (doc_lengths.to(dtype) / K)[:, None]).contiguous()


def _row_dots(et, doc, B):
    """sum_k et[doc_i, k] B[i, k] for every non-zero i, shape (nnz,)."""
    return torch.einsum("ik,ik->i", et.index_select(0, doc), B)


def _doc_sums(doc, n_docs: int, weights, B):
    """sum over each document's non-zeros i of weights[i] B[i], shape (n_docs, K).

    ``doc`` is sorted (the non-zeros come document by document), so this is a
    sparse CSR (n_docs x nnz) times dense product, several times faster than a
    scatter-add, and it sums each document's rows in their order whatever
    other documents share the batch."""
    crow = torch.zeros(n_docs + 1, dtype=torch.int64, device=doc.device)
    crow[1:] = torch.cumsum(torch.bincount(doc, minlength=n_docs), 0)
    cols = torch.arange(doc.shape[0], device=doc.device)
    with warnings.catch_warnings():  # torch calls its CSR support "beta"
        warnings.simplefilter("ignore", UserWarning)
        S = torch.sparse_csr_tensor(crow, cols, weights.to(B.dtype), size=(n_docs, doc.shape[0]),
                                    check_invariants=False)
        return S @ B


def local_update(doc, count, n_docs, B, alpha, gamma, *, max_iter: int, tol: float):
    """Coordinate ascent on q(theta_d), q(z_d) for a batch of documents, each on its own.

    Every document iterates until its own gamma settles (mean absolute
    change below ``tol``) or ``max_iter`` iterations: a document's result
    does not depend on the other documents of the batch (the work is
    compacted to the documents still moving once the stopped ones hold 30%
    of the non-zeros; until then a stopped document's gamma is left as it is).

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
        Most iterations per document.
    tol : float
        A document stops when its mean absolute change of gamma is below ``tol``
        (or below 64 float-epsilons of its mean gamma: the resolution of
        float32 sums over a long document's words; ``tol=0`` runs ``max_iter``).

    Returns
    -------
    gamma : Tensor, shape (n_docs, K)
    exp_elog_theta : Tensor, shape (n_docs, K)
        exp(E[log theta]) at ``gamma``.
    norm : Tensor, shape (nnz,)
        phi's normaliser at the returned gamma (consistent with it).
    n_iter : int
        Iterations of the longest-running document.
    """
    eps = torch.finfo(B.dtype).eps
    floor = 64 * eps  # relative resolution of the sums below
    alpha = alpha.to(B.dtype)
    etheta = torch.exp(dirichlet_expectation(gamma))
    rows = None  # the documents worked on (None: all of them)
    live = None  # which of those are still moving (None: all)
    a_doc, a_B, a_cnt = doc, B, count
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        et = etheta if rows is None else etheta.index_select(0, rows)
        g_old = gamma if rows is None else gamma.index_select(0, rows)
        norm = _row_dots(et, a_doc, a_B).add_(eps)
        acc = _doc_sums(a_doc, et.shape[0], a_cnt / norm, a_B)
        g_new = acc.mul_(et).add_(alpha)
        change = (g_new - g_old).abs_().mean(1)
        if live is not None:  # documents that stopped keep their gamma
            g_new = torch.where(live[:, None], g_new, g_old)
            change = change.masked_fill_(~live, 0.0)
        e_new = torch.exp(dirichlet_expectation(g_new))
        if rows is None:
            gamma, etheta = g_new, e_new
        else:
            gamma[rows], etheta[rows] = g_new, e_new
        # (with tol > 0) a change below the compute dtype's resolution at gamma's
        # scale is rounding: a long document's gamma cannot settle finer than that
        moving = change >= (torch.clamp(g_new.mean(1) * floor, min=tol) if tol > 0 else tol)
        n_moving = int(moving.sum())
        if n_moving == 0:
            break
        nnz_keep = moving[a_doc]
        if int(nnz_keep.sum()) <= 0.7 * nnz_keep.shape[0]:  # compact to the moving documents
            new_index = torch.cumsum(moving, 0) - 1
            a_doc = new_index[a_doc[nnz_keep]]
            a_B, a_cnt = a_B[nnz_keep], a_cnt[nnz_keep]
            idx = torch.nonzero(moving).squeeze(1)
            rows = idx if rows is None else rows[idx]
            live = None
        else:
            live = moving
    if gamma.shape[0] != n_docs:
        raise AssertionError("gamma lost its shape")
    norm = _row_dots(etheta, doc, B).add_(eps)
    return gamma, etheta, norm, n_iter


# compiled local update: documents with at least this many distinct words work on a
# transposed copy of their rows (K, nnz_d), built once per solve. Measured, 30 local
# iterations of every document at K=50 on one thread: licences 0.131 -> 0.064 s, Debian
# changelogs 0.155 -> 0.089 s, man pages 0.338 -> 0.270 s; short documents (verses,
# fortunes) keep the row-by-row loop, faster below ~32 non-zeros.
LONG_DOC_NNZ = 32
# compiled local update: a topic whose expected count in a document (gamma_dk - alpha_k)
# is below FROZEN_BELOW * tol is left out of that document's iterations until the others
# settle. Digamma's slope near a small alpha makes a document's topics all or nothing: at
# the fitted optimum (K=50, alpha=0.05) the unused ones sit at alpha + 1e-9, and 3.0
# (changelogs), 5.2 (man pages), 1.9 (fortunes) topics per non-zero are in use. A fresh
# solve of every document, 2 threads: changelogs 120 -> 79 ms, man pages 291 -> 162 ms;
# the same fits (held-out log-likelihood equal to 4 decimals, the same iteration counts).
FROZEN_BELOW = 0.1
# compiled local update: runs of documents per thread, taken by whichever thread is free
# (a document's iterations, not its size, set its cost)
LOCAL_PIECES = 4


def local_update_numba(doc, word, count, n_docs: int, beta_t, alpha, gamma, *, max_iter: int,
                       tol: float, long_nnz: int = LONG_DOC_NNZ, guard: bool = False):
    """:func:`local_update` compiled, on CPU: each document's loop runs on its own
    non-zeros (no work on documents that stopped), the documents split among
    :func:`~elbokit.models.lda_gibbs.threads` threads. With ``tol > 0`` an iteration
    costs O(nnz_d m) for the m topics a document uses, not O(nnz_d K): topics with an
    expected count below ``FROZEN_BELOW * tol`` are frozen until the others settle,
    and a document stops only on an update of all K topics (the stopping rule of
    :func:`local_update`; the path there may differ by the frozen topics' changes,
    within the tolerance). ``tol=0``: the dense iterations, as :func:`local_update`.

    Parameters as :func:`local_update`, but ``word`` (nnz,) and ``beta_t`` (V, K),
    exp(E[log beta]) transposed, instead of the gathered rows B; ``doc`` sorted.
    ``max_iter=0`` evaluates ``gamma`` as it is (its exp(E log theta) and phi normalisers).
    ``long_nnz``: documents with at least this many non-zeros work on a transposed
    copy of their rows (the same update, summed in another order). ``guard``: a
    document whose starting point has the higher bound (float32 rounding) keeps it.

    Returns
    -------
    gamma, exp_elog_theta, norm, n_iter : as :func:`local_update`, ``n_iter`` per
    document (LongTensor, shape (n_docs,)).
    bound : Tensor, shape (n_docs,)
        :func:`_doc_bounds` of the returned state, float64.
    """
    from elbokit.models import lda_kernels

    kernel = lda_kernels.local
    dt = beta_t.dtype
    ptr = _doc_ptr(doc, n_docs)
    gamma = gamma.to(dt).contiguous().clone()
    etheta = torch.empty_like(gamma)
    norm = torch.empty(doc.shape[0], dtype=dt)
    n_iter = torch.zeros(n_docs, dtype=torch.int64)
    bound = torch.empty(n_docs, dtype=torch.float64)
    eps = float(torch.finfo(dt).eps)
    args = (ptr.numpy(), word.numpy(), count.to(dt).numpy(), beta_t.contiguous().numpy(),
            alpha.to(dt).numpy(), alpha.to(torch.float64).numpy(), gamma.numpy(),
            etheta.numpy(), norm.numpy(), n_iter.numpy(), bound.numpy(), int(max_iter),
            float(tol), 64 * eps, eps, float(tol) * FROZEN_BELOW, int(long_nnz), bool(guard))
    _in_threads(lambda i, a, b: kernel(*args, a, b), ptr, pieces=LOCAL_PIECES)
    return gamma, etheta, norm, n_iter, bound


def _doc_ptr(doc, n_docs: int) -> torch.Tensor:
    """CSR row pointers of the sorted document index of non-zeros, shape (n_docs + 1,)."""
    ptr = torch.zeros(n_docs + 1, dtype=torch.int64)
    ptr[1:] = torch.cumsum(torch.bincount(doc, minlength=n_docs), 0)
    return ptr


def _in_threads(job, ptr, min_entries: int = 20000, pieces: int = 1) -> int:
    """``job(i, first, stop)`` over runs of documents, in up to
    :func:`~elbokit.models.lda_gibbs.threads` threads (one per ``min_entries``
    non-zeros; ``pieces`` as :func:`~elbokit.models.lda_gibbs.run_in_threads`);
    returns the number of threads used."""
    n_docs = ptr.shape[0] - 1
    n_threads = lda_gibbs.threads_for(n_docs, int(ptr[-1]), min_entries)
    if n_threads == 1:
        job(0, 0, n_docs)
    else:
        with lda_gibbs.cpu_threads():
            lda_gibbs.run_in_threads(job, ptr, n_threads, pieces)
    return n_threads


def word_statistics_numba(doc, word, count, etheta, norm, n_words: int) -> torch.Tensor:
    """sum over non-zeros (d, w) of n_dw exp(E log theta_d) / norm_dw, per word, float64,
    shape (V, K): the topic-word statistics before the factor exp(E log beta)."""
    from elbokit.models import lda_kernels

    kernel = lda_kernels.word_stats
    n_docs, K = etheta.shape
    ptr = _doc_ptr(doc, n_docs)
    out = np.zeros((lda_gibbs.threads_for(n_docs, doc.shape[0]), n_words, K))
    args = (ptr.numpy(), word.numpy(), count.to(torch.float64).numpy(),
            etheta.contiguous().numpy(), norm.contiguous().numpy())
    used = _in_threads(lambda i, a, b: kernel(*args, out[i], a, b), ptr)
    return torch.from_numpy(out[0] if used == 1 else out[:used].sum(0))


def doc_terms(gamma64: torch.Tensor, alpha64: torch.Tensor) -> torch.Tensor:
    """E_q[log p(theta_d | alpha) - log q(theta_d | gamma_d)] per document, float64, shape (n,)."""
    elog = dirichlet_expectation(gamma64)
    return (((alpha64 - gamma64) * elog).sum(1)
            + (torch.lgamma(gamma64) - torch.lgamma(alpha64)).sum(1)
            + torch.lgamma(alpha64.sum()) - torch.lgamma(gamma64.sum(1)))


NEWTON_CLOSE = 1e-6  # update_alpha: a relative Newton step below this is the last


def update_alpha(alpha: torch.Tensor, mean_elog_theta: torch.Tensor, *, max_iter: int = 50,
                 tol: float = 1e-10, bounds=(1e-6, 1e4)) -> torch.Tensor:
    """Empirical-Bayes alpha: maximise sum_d E_q[log Dirichlet(theta_d | alpha)].

    The objective n (log Gamma(sum a) - sum log Gamma(a) + sum (a - 1) m), with
    m the mean E[log theta] over documents, is concave; Newton's method with
    the diagonal-plus-rank-one Hessian (Minka 2000) solves it in O(K) per
    step. Each step is halved until it stays in ``bounds`` and raises the
    objective, so that degenerate statistics (a document or two, float32
    rounding) leave alpha where it was rather than diverge.
    """
    a = alpha.to(torch.float64).clone()
    m = mean_elog_theta.to(torch.float64)
    lo, hi = bounds

    def objective(x):
        return float(torch.lgamma(x.sum()) - torch.lgamma(x).sum() + ((x - 1) * m).sum())

    if not bool(torch.isfinite(m).all()):
        return a
    f = objective(a)
    for _ in range(max_iter):
        g = torch.digamma(a.sum()) - torch.digamma(a) + m
        q = -torch.polygamma(1, a)
        z = torch.polygamma(1, a.sum())
        b = (g / q).sum() / (1.0 / z + (1.0 / q).sum())
        step = (g - b) / q
        if float((step.abs() / a).max()) < NEWTON_CLOSE:
            # close to the optimum the objective's change is below its float64 rounding,
            # so a line search would accept or refuse this last step by rounding alone
            new = a - step
            if bool(((new >= lo) & (new <= hi)).all()):
                a = new
            break
        s = 1.0
        while s > 1e-10:
            new = a - s * step
            if bool(((new >= lo) & (new <= hi)).all()):
                f_new = objective(new)
                if f_new >= f:
                    break
            s /= 2
        else:
            break
        a, f = new, f_new
        if float(step.abs().max()) * s < tol:
            break
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


def update_eta(eta: float, elog_beta_sum: float, n_topics: int, n_words: int, *,
               max_iter: int = 50, tol: float = 1e-10) -> float:
    """Empirical-Bayes symmetric eta: maximise sum_k E_q[log Dirichlet(beta_k | eta)].

    The objective K (log Gamma(V e) - V log Gamma(e)) + (e - 1) S, with S the
    sum over topics and words of E[log beta_kw], is concave in e; Newton's
    method on log e (Minka 2000) keeps e positive.
    """
    K, V, S = float(n_topics), float(n_words), float(elog_beta_sum)
    x = math.log(float(eta))
    for _ in range(max_iter):
        e = math.exp(x)
        g = K * V * (_digamma(V * e) - _digamma(e)) + S           # d/de
        h = K * V * (V * _trigamma(V * e) - _trigamma(e))         # d2/de2 < 0
        gx, hx = g * e, h * e * e + g * e                          # in x = log e
        step = gx / hx if hx < 0 else -1.0 if gx < 0 else 1.0
        step = max(-2.0, min(2.0, step))
        x -= step
        if abs(step) < tol:
            break
    e = math.exp(x)
    if not math.isfinite(e):
        raise FloatingPointError("the eta update diverged; pass a fixed eta instead.")
    return e


def _digamma(x: float) -> float:
    return float(torch.digamma(torch.tensor(x, dtype=torch.float64)))


def _trigamma(x: float) -> float:
    return float(torch.polygamma(1, torch.tensor(x, dtype=torch.float64)))


FRESH_MAX_INTERVAL = 16  # batch VI: most iterations between two fresh re-solves
FRESH_MARGIN = 1e-6  # relative bound gain by which a fresh re-solve beats the warm start


def _doc_bounds(doc, count, n_docs: int, gamma, norm, alpha) -> torch.Tensor:
    """Per-document local ELBO terms from the phi normalisers, float64, shape (n_docs,)."""
    words = torch.zeros(n_docs, dtype=torch.float64, device=norm.device)
    words.index_add_(0, doc, count.to(torch.float64) * torch.log(norm.to(torch.float64)))
    return words + doc_terms(gamma.to(torch.float64), alpha)


@dataclass
class DocState:
    """Batch VI's local state of a batch of documents, carried from one iteration to the next.

    Attributes
    ----------
    gamma : Tensor, shape (n_docs, K)
        The documents' q(theta) concentrations.
    interval : LongTensor, shape (n_docs,)
        Iterations between two fresh re-solves of each document (doubles each
        time a fresh re-solve does not beat the warm start).
    wait : LongTensor, shape (n_docs,)
        Iterations left before each document's next fresh re-solve (0: at the next).
    """

    gamma: torch.Tensor
    interval: torch.Tensor
    wait: torch.Tensor

    @classmethod
    def fresh(cls, gamma: torch.Tensor) -> "DocState":
        """The state after a fresh solve of every document: re-solved afresh again next time."""
        ones = torch.ones(gamma.shape[0], dtype=torch.int64, device=gamma.device)
        return cls(gamma, ones, ones - 1)


class LocalSolution(NamedTuple):
    """Documents' local state after their updates.

    Attributes
    ----------
    gamma, etheta : Tensor, shape (n_docs, K)
        q(theta)'s concentrations and exp(E[log theta]) at them.
    norm : Tensor, shape (nnz,)
        phi's normalisers at ``gamma``.
    n_iter : int
        Iterations of the longest-running document.
    bound : Tensor, shape (n_docs,)
        Each document's bound terms at that state (:meth:`LDAModel.doc_bounds`), float64.
    """

    gamma: torch.Tensor
    etheta: torch.Tensor
    norm: torch.Tensor
    n_iter: int
    bound: torch.Tensor


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
    learn_alpha, learn_eta : bool
        Re-estimate alpha (asymmetric) / eta (symmetric) by empirical Bayes in
        each global update: Newton's method on the bound (VI), Minka's fixed
        point on the sampled counts (Gibbs).
    use_numba : bool, optional
        On CPU, the compiled kernels (default when numba imports: the Gibbs
        sweep, the VI local updates and their statistics) or the vectorised
        torch ones (the only ones on other devices).
    fresh_max_interval : int, default=FRESH_MAX_INTERVAL
        Batch VI: most iterations between two fresh re-solves of a document
        (see :meth:`batch_local`).

    Attributes
    ----------
    chain_seed : int
        Gibbs: the seed of the chain's counter random numbers (the tokens' order and
        first topics, the compiled sweeps'), keyed further by each document's row
        (see :mod:`elbokit.models.lda_gibbs`).
    first_row : int
        Gibbs: the corpus row of this process's first document (a rank's offset), so
        that a document's random numbers do not depend on how the corpus is split.
    """

    def __init__(self, dtype=torch.float32, local_max_iter: int = 100, local_tol: float = 1e-3,
                 learn_alpha: bool = False, learn_eta: bool = False,
                 use_numba: bool | None = None, fresh_max_interval: int = FRESH_MAX_INTERVAL):
        self.dtype = dtype
        self.fresh_max_interval = int(fresh_max_interval)
        self.local_max_iter = local_max_iter
        self.local_tol = local_tol
        self.learn_alpha = learn_alpha
        self.learn_eta = learn_eta
        self.use_numba = use_numba
        self.chain_seed = 0
        self.first_row = 0

    # ------------------------------------------------------------ local
    def _lengths(self, batch: DocBatch) -> torch.Tensor:
        lengths = torch.zeros(batch.n_docs, dtype=torch.float64, device=batch.count.device)
        return lengths.index_add_(0, batch.doc, batch.count.to(torch.float64))

    def _compiled(self, device) -> bool:
        if self.use_numba is None:
            return torch.device(device).type == "cpu" and lda_gibbs.numba_available()
        return bool(self.use_numba)

    def solve(self, params: LDAParams, doc, word, count, n_docs: int, gamma, *, max_iter=None,
              tol=None, guard: bool = False) -> LocalSolution:
        """:func:`local_update` of documents from their starting ``gamma`` (compiled on
        CPU, :func:`local_update_numba`), with each document's bound. ``guard``: a
        document whose start has the higher bound (float32 rounding) keeps it, so that
        the bound never decreases."""
        max_iter = self.local_max_iter if max_iter is None else max_iter
        tol = self.local_tol if tol is None else tol
        if self._compiled(count.device):
            g, e, n, its, b = local_update_numba(
                doc, word, count, n_docs, params.exp_elog_beta_t(self.dtype), params.alpha,
                gamma, max_iter=max_iter, tol=tol, guard=guard)
            return LocalSolution(g, e, n, int(its.max()) if n_docs else 0, b)
        B = params.exp_elog_beta_t(self.dtype)[word]
        start = gamma.to(self.dtype)

        def run(n):
            g, e, nm, its = local_update(doc, count.to(self.dtype), n_docs, B, params.alpha,
                                         start.clone(), max_iter=n, tol=tol)
            return LocalSolution(g, e, nm, its, _doc_bounds(doc, count, n_docs, g, nm,
                                                            params.alpha))

        out = run(max_iter)
        if not guard:
            return out
        first = run(0)
        keep = first.bound > out.bound + 1e-12 * out.bound.abs()
        return LocalSolution(torch.where(keep[:, None], first.gamma, out.gamma),
                             torch.where(keep[:, None], first.etheta, out.etheta),
                             torch.where(keep[doc], first.norm, out.norm), out.n_iter,
                             torch.where(keep, first.bound, out.bound))

    def infer(self, params: LDAParams, batch: DocBatch, gamma=None, *, max_iter=None, tol=None,
              guard: bool = False) -> LocalSolution:
        """Local update of one batch (see :meth:`solve`).

        Without ``gamma`` every document starts from Blei et al.'s
        deterministic point alpha + N_d / K, so its result is its own alone.
        """
        if gamma is None:
            gamma = initial_gamma(batch.n_docs, self._lengths(batch), params.alpha, self.dtype)
        return self.solve(params, batch.doc, batch.word, batch.count, batch.n_docs, gamma,
                          max_iter=max_iter, tol=tol, guard=guard)

    def doc_bounds(self, params: LDAParams, batch: DocBatch, gamma, norm) -> torch.Tensor:
        """Per-document local ELBO terms (float64, shape (n_docs,)).

        sum_w n_dw log(norm_dw) + E[log p(theta_d)] - E[log q(theta_d)]: a lower
        bound on log p(w_d | alpha, beta) averaged over q(beta), the bound on a
        document's log-probability under the fitted topics.
        """
        return _doc_bounds(batch.doc, batch.count, batch.n_docs, gamma, norm, params.alpha)

    def local_step(self, params: LDAParams, batch: DocBatch, local) -> LocalResult:
        """Local updates of one batch, its statistics and bound terms.

        ``local``: None (a fresh start), the batch's :class:`DocState` (batch
        VI) or a :class:`GammaTable` (online VI: read for the start, then
        updated). Batch VI: see :meth:`batch_local`.
        """
        if isinstance(local, DocState):
            sol, state = self.batch_local(params, batch, local)
            return self.result(params, batch, sol, state)
        table = local if isinstance(local, GammaTable) else None
        start = None
        if table is not None:
            start = table.start(batch.rows, initial_gamma(batch.n_docs, self._lengths(batch),
                                                          params.alpha, self.dtype))
        sol = self.infer(params, batch, start)
        if table is not None:
            table.store(batch.rows, sol.gamma)
            return self.result(params, batch, sol, table)
        return self.result(params, batch, sol, DocState.fresh(sol.gamma))

    def batch_local(self, params: LDAParams, batch: DocBatch, state: "DocState"):
        """Batch VI's local step: warm starts, with scheduled fresh re-solves per document.

        Every document goes on from its previous gamma under the new topics
        (a warm start settles in a few iterations). A document due for a
        fresh re-solve (see :class:`DocState`) is also solved from Blei et
        al.'s deterministic start alpha + N_d / K, and keeps whichever optimum
        has the higher bound: a document is not held to the topic it
        favoured under the random initial topics (warm starts alone stop at
        that fixed point, with near-duplicate topics). When the fresh
        optimum is better by more than ``FRESH_MARGIN`` (relative) the
        document is re-solved afresh again at the next iteration; otherwise
        its interval between re-solves doubles, up to ``fresh_max_interval``,
        so that documents that settled in their optimum (most of them, after
        the first iterations) cost warm starts only. The decisions are per
        document, so a document's result depends on itself alone, and the
        bound never decreases (each kept state is at least the previous one).

        Returns
        -------
        solution : LocalSolution
            The kept state of every document (``n_iter``: of the warm or fresh solve
            that ran longest).
        state : DocState
        """
        dt = self.dtype
        # the previous gamma where the warm start ended lower (float32 sums)
        gamma, etheta, norm, n_iter, best = self.infer(params, batch, state.gamma.to(dt),
                                                       guard=True)
        interval, wait = state.interval.clone(), state.wait - 1
        due = state.wait <= 0
        if bool(due.any()):
            rows = torch.nonzero(due).squeeze(1)
            sel = due[batch.doc]
            sub_doc = (torch.cumsum(due, 0) - 1)[batch.doc[sel]]
            start = initial_gamma(rows.shape[0], self._lengths(batch)[rows], params.alpha, dt)
            g_f, e_f, n_f, its, b_f = self.solve(params, sub_doc, batch.word[sel],
                                                 batch.count[sel], rows.shape[0], start)
            n_iter = max(n_iter, its)
            b_old = best[rows]
            take = b_f > b_old + 1e-12 * b_old.abs()
            won = b_f > b_old + FRESH_MARGIN * b_old.abs()
            gamma[rows] = torch.where(take[:, None], g_f, gamma[rows])
            etheta[rows] = torch.where(take[:, None], e_f, etheta[rows])
            norm[sel] = torch.where(take[sub_doc], n_f, norm[sel])
            best[rows] = torch.where(take, b_f, b_old)
            step = torch.where(won, torch.ones_like(interval[rows]),
                               torch.clamp(2 * interval[rows], max=self.fresh_max_interval))
            interval[rows] = step
            wait[rows] = step - 1
        return LocalSolution(gamma, etheta, norm, n_iter, best), DocState(gamma, interval, wait)

    def result(self, params: LDAParams, batch: DocBatch, sol: LocalSolution,
               local=None) -> LocalResult:
        """The statistics and bound terms of a batch's local state ``sol``."""
        gamma, etheta, norm = sol.gamma, sol.etheta, sol.norm
        V, K = params.concentration.shape[1], params.concentration.shape[0]
        if self._compiled(norm.device):
            sw = word_statistics_numba(batch.doc, batch.word, batch.count, etheta, norm, V)
        else:
            ratio = (batch.count.to(self.dtype) / norm)[:, None]
            sw = torch.zeros(V, K, dtype=torch.float64, device=norm.device)
            sw.index_add_(0, batch.word, (etheta[batch.doc] * ratio).to(torch.float64))
        stats = {"topic_word": sw.t() * params.exp_elog_beta(self.dtype).to(torch.float64)}
        if self.learn_alpha:
            stats["elog_theta"] = dirichlet_expectation(gamma.to(torch.float64)).sum(0)
            stats["n_docs"] = torch.tensor(float(batch.n_docs), dtype=torch.float64,
                                           device=norm.device)
        return LocalResult(stats, sol.bound.sum(), batch.n_docs, batch.n_words, local)

    # ------------------------------------------------------------ global
    def zero_statistics(self, params) -> dict:
        """The statistics of no document (an empty shard under torch.distributed).

        ``params``: LDAParams (variational; expected statistics) or LDADraw
        (Gibbs; sampled counts).
        """
        gibbs = isinstance(params, LDADraw)
        table = params.topic_word if gibbs else params.concentration
        K, V = table.shape
        f64, device = torch.float64, table.device
        stats = {"topic_word": torch.zeros(K, V, dtype=f64, device=device)}
        if self.learn_alpha and not gibbs:
            stats["elog_theta"] = torch.zeros(K, dtype=f64, device=device)
            stats["n_docs"] = torch.zeros((), dtype=f64, device=device)
        if self.learn_alpha and gibbs:
            stats["alpha_num"] = torch.zeros(K, dtype=f64, device=device)
            stats["alpha_den"] = torch.zeros((), dtype=f64, device=device)
        return stats

    def maximize(self, stats, params: LDAParams, scale: float = 1.0) -> LDAParams:
        """lambda = eta + scale * E[topic-word counts]; alpha, eta by empirical Bayes if learned."""
        lam = params.eta[None, :] + scale * stats["topic_word"]
        alpha, eta = params.alpha, params.eta
        if self.learn_alpha and float(stats["n_docs"]) > 0:
            alpha = update_alpha(alpha, stats["elog_theta"] / stats["n_docs"])
        if self.learn_eta:
            e = update_eta(float(eta[0]), float(dirichlet_expectation(lam).sum()), *lam.shape)
            eta = torch.full_like(eta, e)
            lam = lam - params.eta[None, :] + eta[None, :]
        return LDAParams(lam, alpha, eta)

    def blend(self, params: LDAParams, target: LDAParams, rho: float) -> LDAParams:
        lam = (1 - rho) * params.concentration + rho * target.concentration
        alpha = (1 - rho) * params.alpha + rho * target.alpha
        eta = (1 - rho) * params.eta + rho * target.eta
        return LDAParams(lam, alpha, eta)

    def global_bound(self, params: LDAParams) -> torch.Tensor:
        """E_q[log p(beta | eta) - log q(beta | lambda)] summed over topics (float64)."""
        lam, eta = params.concentration, params.eta
        elog = params.elog_beta()
        K = lam.shape[0]
        return (((eta[None, :] - lam) * elog).sum()
                + (torch.lgamma(lam) - torch.lgamma(eta)[None, :]).sum()
                + K * torch.lgamma(eta.sum()) - torch.lgamma(lam.sum(1)).sum())

    # ------------------------------------------------------------ Gibbs
    def sample_local(self, draw: LDADraw, batch: DocBatch, local, generator):
        """One sweep over a batch's tokens: z_dn | z_d,-n, beta with theta collapsed.

        Given beta the documents are independent; each token's topic is drawn
        from (n_dk^-i + alpha_k) beta_kw, sparsely (see
        :mod:`elbokit.models.lda_gibbs`). A non-zero with count c is c tokens.
        On CPU the random numbers are counters keyed by ``chain_seed``,
        ``draw.sweeps`` and each document's row, not drawn from ``generator`` (which
        the torch sweep uses), so the draws do not depend on the batch.

        Returns
        -------
        stats : dict
            ``topic_word``: (K, V) float64 counts of the new assignments; with
            alpha learned, ``alpha_num`` / ``alpha_den``: the sums of Minka's
            fixed point at the sweep's alpha.
        log_likelihood : float64
            sum over tokens of log p(w_i | z_-i, beta), each token's predictive
            probability at its draw.
        n_units : float64, the batch's words
        local : :class:`~elbokit.models.lda_gibbs.TokenState`
        """
        K, V = draw.topic_word.shape
        if local is None:
            local = lda_gibbs.token_state(batch, K, self.chain_seed, self.first_row)
        beta_t = transposed(draw.topic_word, self.dtype)
        seed = lda_gibbs.stream(self.chain_seed, lda_gibbs.FIRST_SWEEP_STREAM + draw.sweeps)
        ll, num, den, nkw = lda_gibbs.sweep(local, beta_t, draw.alpha, generator,
                                            self.use_numba, alpha_stats=self.learn_alpha,
                                            seed=seed)
        stats = {"topic_word": nkw.to(draw.topic_word.device)}
        if self.learn_alpha:
            stats["alpha_num"], stats["alpha_den"] = num, den
        return stats, ll.sum(), batch.n_words, local

    def sample_global(self, stats, draw: LDADraw, generator) -> LDADraw:
        """beta ~ Dirichlet(eta + counts); then alpha (one step) and eta by Minka's fixed
        point if learned, from sweep ``PRIORS_FROM`` on."""
        beta = dirichlet(draw.eta[None, :] + stats["topic_word"], generator,
                         single=self.dtype == torch.float32)
        alpha, eta = draw.alpha, draw.eta
        learn = draw.sweeps + 1 >= PRIORS_FROM
        if self.learn_alpha and learn:
            alpha = lda_gibbs.minka_alpha_step(alpha, stats["alpha_num"], stats["alpha_den"])
        if self.learn_eta and learn:
            eta = torch.full_like(eta, lda_gibbs.minka_eta(float(eta[0]), stats["topic_word"]))
        return LDADraw(beta, alpha, eta, draw.sweeps + 1)


def transposed(a: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``a.T`` contiguous in ``dtype``: on CPU by NumPy, whose cast-and-transpose copy
    takes a fifth of torch's (0.3 against 1.4 ms for a 50 x 8981 float64 matrix)."""
    if a.device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return a.t().contiguous().to(dtype)
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    return torch.from_numpy(np.ascontiguousarray(a.numpy().T, dtype=np_dtype))


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


EPSILON = 1e-12  # gensim's smoothing of co-occurrence probabilities in (N)PMI


def cooccurrence(words: np.ndarray, X=None, sequences=None, window_size: int | None = None):
    """How often the ``words`` occur, alone and in pairs, in reference "windows".

    Parameters
    ----------
    words : int array, shape (u,)
        Distinct word indices.
    X : scipy.sparse matrix, shape (n_docs, V), optional
        Counts: every document is one window (order is unknown).
    sequences : list of int arrays, optional
        Token sequences (word index per position, -1 for a token outside the
        vocabulary, which still takes its place in a window), with
        ``window_size``: gensim's boolean sliding window -- every run of
        ``window_size`` consecutive tokens of a document is one window, a
        document shorter than that is one window. (gensim's accumulator drops
        a word from a window when one of its occurrences slides out although
        another is still inside; here a window holds a word if any of its
        tokens is that word, so the two agree unless a word repeats within a
        window.)

    Returns
    -------
    occurrences : float64 array, shape (u,)
        Windows holding each word.
    co : float64 array, shape (u, u)
        Windows holding both words (its diagonal is ``occurrences``).
    n_windows : int
    """
    words = np.asarray(words, dtype=np.int64)
    if sequences is None:
        B = (sp.csc_matrix(X)[:, words] > 0).astype(np.float64)
        co = np.asarray((B.T @ B).todense())
        return np.diag(co).copy(), co, int(X.shape[0])
    where = np.full(int(max(words.max(), max((int(q.max()) for q in sequences if len(q)),
                                                 default=0))) + 2, -1, dtype=np.int64)
    where[words] = np.arange(len(words))
    u = len(words)
    co = np.zeros((u, u))
    n_windows = 0
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64)
        L = len(seq)
        n_win = max(1, L - window_size + 1) if window_size else 1
        n_windows += n_win
        slot = where[seq] if L else seq
        present = np.unique(slot[slot >= 0])
        if present.size == 0:
            continue
        if not window_size or L <= window_size:
            co[np.ix_(present, present)] += 1.0
            continue
        # window s = tokens [s, s + window_size); word j is in it if any of its positions is
        hits = np.zeros((present.size, L + 1))
        rank = np.searchsorted(present, slot[slot >= 0])
        hits[rank, np.nonzero(slot >= 0)[0] + 1] = 1.0
        cum = np.cumsum(hits, 1)
        inside = (cum[:, window_size:] - cum[:, :L - window_size + 1]) > 0  # (m, n_win)
        W = inside.astype(np.float64)
        co[np.ix_(present, present)] += W @ W.T
    return np.diag(co).copy(), co, n_windows


def npmi_matrix(occurrences, co, n_windows) -> np.ndarray:
    """Normalised PMI of every pair, as gensim computes it (``EPSILON``-smoothed).

    log((p_ij + eps) / (p_i p_j)) / -log(p_ij + eps), p the fractions of
    windows; a pair with a word that never occurs gets -1 (gensim would
    return inf there).
    """
    n = float(n_windows)
    p = occurrences / n
    pij = co / n
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log((pij + EPSILON) / np.outer(p, p)) / -np.log(pij + EPSILON)
    missing = (p[:, None] == 0) | (p[None, :] == 0)
    return np.where(missing, -1.0, out)


def topic_coherence(top: np.ndarray, X=None, measure: str = "npmi", *, sequences=None,
                    window_size: int | None = None) -> np.ndarray:
    """Coherence of each topic's top words from co-occurrence in reference documents.

    Parameters
    ----------
    top : int array, shape (K, n)
        Each topic's top words, most probable first.
    X : scipy.sparse matrix, shape (n_docs, V), optional
        Reference counts: each document is one window (only whether a word
        occurs in it matters).
    measure : {"npmi", "c_v", "umass"}
        ``npmi``: mean over word pairs of the normalised PMI (range [-1, 1]);
        gensim's ``c_npmi``. ``c_v`` (Roeder, Both & Hinneburg 2015): for
        each top word, the cosine between its vector of NPMIs with the
        topic's words and the sum of those vectors over the topic's words,
        averaged; gensim's ``c_v``. ``umass`` (Mimno et al. 2011): mean over
        pairs i < j (ordered by probability) of log((D(wi, wj) + 1) / D(wi)),
        D document counts; pairs whose higher-ranked word is absent are
        skipped. Higher is better for all.
    sequences, window_size :
        Token sequences and a sliding window (see :func:`cooccurrence`)
        instead of ``X``: then ``npmi`` and ``c_v`` equal gensim's
        ``CoherenceModel(coherence="c_npmi" / "c_v", window_size=...)``
        on the same tokens. With ``X`` they equal gensim's with a window at
        least as long as the longest document.

    Returns
    -------
    float64 array, shape (K,)
    """
    top = np.asarray(top)
    vocab = np.unique(top)
    where = {w: i for i, w in enumerate(vocab)}
    occ, co, n = cooccurrence(vocab, X, sequences, window_size)
    K, m = top.shape
    out = np.empty(K)
    iu, ju = np.triu_indices(m, 1)
    npmi = npmi_matrix(occ, co, n) if measure in ("npmi", "c_v") else None
    for k in range(K):
        idx = np.array([where[w] for w in top[k]])
        if measure == "npmi":
            out[k] = npmi[idx[iu], idx[ju]].mean()
        elif measure == "c_v":
            M = npmi[np.ix_(idx, idx)]
            total = M.sum(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                cos = (M @ total) / (np.linalg.norm(M, axis=1) * np.linalg.norm(total))
            out[k] = np.nan_to_num(cos).mean()
        elif measure == "umass":
            a, b = idx[iu], idx[ju]
            ok = occ[a] > 0
            if not ok.any():
                raise ValueError(
                    f"topic {k}'s top words never occur in X: pass reference documents "
                    "that use the model's vocabulary."
                )
            out[k] = np.mean(np.log((co[a, b][ok] + 1.0) / occ[a][ok]))
        else:
            raise ValueError(f"measure={measure!r} is not supported: use 'npmi', 'c_v' or "
                             "'umass'.")
    return out


def topic_diversity(top: np.ndarray) -> float:
    """Fraction of distinct words among all topics' top words (Dieng, Ruiz & Blei 2020):
    1 when no two topics share a top word, 1/K when all are the same."""
    top = np.asarray(top)
    return float(np.unique(top).size / top.size)
