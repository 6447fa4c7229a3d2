"""LDA's Gibbs conditional, drawn sparsely: the local sweep of the blocked sampler.

The sampler (:meth:`elbokit.models.lda.LDAModel.sample_local`) draws the
topics beta once per sweep; given beta the documents are independent, and
inside a document each token's topic is drawn from its conditional with
theta integrated out (Magnusson, Jonsson, Villani & Broman 2018, "sparse
partially collapsed" LDA)::

    p(z_i = k | z_-i, beta)  proportional to  (n_dk^-i + alpha_k) beta_kw

    = alpha_k beta_kw           smoothing bucket s_w = sum_k alpha_k beta_kw:
                                the word's alone, its cumulative sums built
                                once per sweep, a topic found by bisection
    + n_dk^-i beta_kw           document bucket r = sum over the document's
                                topics in use only

(SparseLDA's decomposition, Yao, Mimno & McCallum 2009). One uniform per
token picks the bucket and the topic inside it, so the draw is exact, and
its cost per token is the number of topics the document uses plus log K:
a short document's few topics, at most K for a long one. A word's copies in a
document are adjacent, and the compiled sweep updates the document bucket from
one copy to the next (two counts moved by one) rather than summing it again.

Two implementations of the same conditional:

* :func:`sweep_numba` (CPU): each document's tokens in turn, documents in
  parallel threads. A Python-level tensor program cannot do this at
  tomotopy's speed: a vectorised sweep runs one tensor operation per token
  position over the documents that reach it, dozens of operations a
  position, each a full pass over memory with its dispatch cost, and a
  step per position of the longest document (measured in the closing
  note). numba compiles the loop (cached on disk after the first call).
* :func:`sweep_torch` (any device, GPUs): position j of every document at
  once, the conditional computed densely over K (exact, vectorised). Tokens
  beyond position ``long_from`` of long documents are drawn in one block
  given theta_d ~ Dirichlet(alpha + n_d) (an exact blocked-Gibbs step of the
  model with theta kept), so the number of sequential steps is bounded
  whatever the documents' lengths.

Random numbers. The compiled sweep, and the tokens' order and first topics
(:func:`token_state`), are counters (SplitMix64, :func:`mix`) keyed by the chain's
seed, the sweep, the document's row in the corpus and the token's position in it:
a seed repeats the chain on every thread count, in any batch size, and split
over processes (each rank's rows offset by its first document's). The torch
sweep draws its uniforms and theta-blocks from the generator of each call, so
there another batch size is another chain of the same sampler.
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from elbokit.data.text import DocBatch
from elbokit.inference.sampling import dirichlet

LONG_FROM = 64  # torch path: tokens past this position of a document are drawn given theta


@dataclass
class TokenState:
    """One batch's tokens and their topics, grouped by document.

    Attributes
    ----------
    z : IntTensor, shape (T,)
        Topic of each token (int32).
    word : IntTensor, shape (T,)
        Word of each token (int32), tokens of document d in
        ``[doc_ptr[d], doc_ptr[d + 1])``, in a random order fixed at the start.
    doc_ptr : LongTensor, shape (n_docs + 1,)
    doc : LongTensor, shape (T,)
        Document of each token.
    ndk : IntTensor, shape (n_docs, K)
        Topic counts per document, consistent with ``z`` after every sweep.
    rows : LongTensor, shape (n_docs,), optional
        Each document's row in the corpus, which keys its random numbers (default:
        0, 1, ...).
    """

    z: torch.Tensor
    word: torch.Tensor
    doc_ptr: torch.Tensor
    doc: torch.Tensor
    ndk: torch.Tensor
    rows: torch.Tensor | None = None
    _cache: dict | None = None

    @property
    def n_tokens(self) -> int:
        return int(self.z.shape[0])

    def lengths(self) -> torch.Tensor:
        return self.doc_ptr[1:] - self.doc_ptr[:-1]

    def row_keys(self) -> np.ndarray:
        """The documents' rows as the compiled sweep's keys, int64."""
        if self.rows is None:
            return np.arange(self.ndk.shape[0], dtype=np.int64)
        return np.asarray(self.rows.cpu().numpy(), dtype=np.int64)  # no copy when int64


def token_state(batch: DocBatch, K: int, seed: int, first_row: int = 0) -> TokenState:
    """Tokens of ``batch`` (a non-zero of count c is c tokens), the non-zeros shuffled
    within each document and each one's c copies adjacent (the compiled sweep then
    updates a repeated word's document bucket instead of summing it again), with
    topics drawn uniformly.

    Both draws are counters (:func:`mix`) keyed by the chain's ``seed``, the
    document's row in the corpus (``first_row`` + its row in the batch's matrix:
    ``first_row`` is a rank's first document) and the position in the document, so a
    document's tokens and first topics do not depend on the batch it comes in.
    """
    device = batch.count.device
    counts = batch.count.round().to(torch.int64)
    nz_doc = batch.doc.cpu().numpy()  # document of each non-zero, in row order
    if nz_doc.shape[0] and bool((nz_doc[1:] < nz_doc[:-1]).any()):
        raise ValueError("token_state: the batch's non-zeros must be grouped by document.")
    rows = batch.rows.cpu().numpy().astype(np.uint64) + np.uint64(first_row)
    starts = np.zeros(batch.n_docs + 1, np.int64)
    starts[1:] = np.cumsum(np.bincount(nz_doc, minlength=batch.n_docs))
    key = np.empty(nz_doc.shape[0])
    _doc_keyed(mix(stream(seed, ORDER_STREAM), rows), nz_doc, starts, key, lambda u: u)
    # a random order of the non-zeros within each document: sort by (document, random key)
    order = torch.argsort(batch.doc.to(torch.float64)
                          + torch.from_numpy(key).to(device) * 0.5, stable=True)
    del key
    token = torch.repeat_interleave(order, counts[order])
    doc = batch.doc[token]
    T = int(doc.shape[0])
    lengths = torch.bincount(doc, minlength=batch.n_docs)
    doc_ptr = torch.zeros(batch.n_docs + 1, dtype=torch.int64, device=device)
    doc_ptr[1:] = torch.cumsum(lengths, 0)
    z = np.empty(T, np.int32)
    _doc_keyed(mix(stream(seed, TOPIC_STREAM), rows), doc.cpu().numpy(),
               doc_ptr.cpu().numpy(), z, lambda u: np.minimum((u * K).astype(np.int32), K - 1))
    z = torch.from_numpy(z).to(device)
    ndk = doc_topic_counts(doc, z, batch.n_docs, K)
    return TokenState(z, batch.word[token].to(torch.int32), doc_ptr, doc, ndk,
                      torch.from_numpy(rows.astype(np.int64)).to(device))


KEY_BLOCK = 1 << 18  # items per block of counter draws: bounds the temporaries


def _doc_keyed(doc_seeds, item_doc, first_item, out, transform):
    """out[i] = transform(u(doc_seeds[d], i - first_item[d])) for every item i of document
    d = item_doc[i] (items grouped by document, ``first_item`` each one's first), in
    blocks of ``KEY_BLOCK`` items."""
    for a in range(0, out.shape[0], KEY_BLOCK):
        b = min(a + KEY_BLOCK, out.shape[0])
        d = item_doc[a:b]
        out[a:b] = transform(unit(mix(doc_seeds[d], np.arange(a, b) - first_item[d])))


# ---------------------------------------------------------------- counter random numbers
ORDER_STREAM, TOPIC_STREAM, FIRST_SWEEP_STREAM = 0, 1, 2  # the chain's streams (see stream)


def mix(seed, t) -> np.ndarray:
    """:func:`~elbokit.models.lda_kernels.mix` (SplitMix64's t-th output from ``seed``)
    in NumPy, ``seed`` and ``t`` broadcast: uint64 arithmetic wraps as the kernel's.
    In place after the first step (one temporary the size of the output)."""
    from elbokit.models.lda_kernels import GOLDEN

    with np.errstate(over="ignore"):
        z = np.asarray(t, np.uint64) + np.uint64(1)
        z *= np.uint64(GOLDEN)
        z = z + np.asarray(seed, np.uint64)  # broadcast to the output's shape
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            z ^= z >> np.uint64(shift)
            z *= np.uint64(factor)
        z ^= z >> np.uint64(31)
        return z


def unit(bits: np.ndarray) -> np.ndarray:
    """64 random bits to a float64 on [0, 1) (their top 53), as the kernel's ``uniform``."""
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def stream(seed: int, index: int) -> int:
    """The seed of the chain's stream ``index``: ``ORDER_STREAM`` the tokens' order in
    their documents, ``TOPIC_STREAM`` their first topics, ``FIRST_SWEEP_STREAM + s``
    sweep s's uniforms. Each is keyed further by the document's row."""
    return int(mix(seed % 2**64, index))


def doc_topic_counts(doc, z, n_docs: int, K: int) -> torch.Tensor:
    """n_dk, shape (n_docs, K), int32."""
    flat = torch.bincount(doc * K + z.to(torch.int64), minlength=n_docs * K)
    return flat.view(n_docs, K).to(torch.int32)


def smoothing_cdf(beta_t: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Cumulative sums over topics of alpha_k beta_kw, shape (V, K): the smoothing
    bucket of every word (its last column is s_w)."""
    return torch.cumsum(beta_t * alpha.to(beta_t.dtype)[None, :], 1)


# ---------------------------------------------------------------- CPU: numba
def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    return True


def counter_uniforms(seed: int, n: int) -> np.ndarray:
    """u(seed, t) for t = 0..n-1 (float64, shape (n,)): one stream of the counter
    generator (:func:`mix`; for tests)."""
    return unit(mix(seed, np.arange(n)))


def token_uniforms(seed: int, state: TokenState) -> np.ndarray:
    """What the compiled sweep draws for ``seed`` when it is given no uniforms, shape
    (T,): token j of the document in row r gets u(mix(seed, r), j)."""
    lengths = state.lengths().cpu().numpy()
    out = np.empty(state.n_tokens)
    _doc_keyed(mix(seed, state.row_keys()), np.repeat(np.arange(lengths.shape[0]), lengths),
               state.doc_ptr.cpu().numpy(), out, lambda u: u)
    return out


_POOL = None


def _pool(threads: int):
    """Threads for the numba sweep and the topic draws (both release the GIL).
    Plain threads, not numba's parallel layer, whose OpenMP pool fights torch's."""
    global _POOL
    from concurrent.futures import ThreadPoolExecutor

    if _POOL is None or _POOL._max_workers != threads:
        if _POOL is not None:
            _POOL.shutdown(wait=True)
        slots = iter(range(threads))
        lock = threading.Lock()

        def name_slot():
            with lock:
                _SLOT.index = next(slots)

        _POOL = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="elbokit-gibbs",
                                   initializer=name_slot)
    return _POOL


_SLOT = threading.local()


def worker_slot() -> int:
    """The calling thread's index in the pool, 0 to threads - 1 (0 outside it): for
    tables each thread adds to, whichever runs it takes."""
    return getattr(_SLOT, "index", 0)


def run_in_threads(job, doc_ptr: torch.Tensor, n_threads: int, pieces: int = 1):
    """Call ``job(i, first, stop)`` for runs [first, stop) of documents holding about
    equal numbers of entries (``doc_ptr``: CSR row pointers), in ``n_threads`` threads.
    ``pieces`` runs per thread, taken by whichever thread is free (for work that is not
    proportional to the entries, or that one long document makes uneven), the longest
    first; ``i`` is then the run's index, not the thread's (:func:`worker_slot` is)."""
    n_docs = doc_ptr.shape[0] - 1
    total = int(doc_ptr[-1])
    n_runs = n_threads * pieces
    cuts = torch.searchsorted(doc_ptr, torch.linspace(0, total, n_runs + 1,
                                                      dtype=torch.float64).to(doc_ptr.dtype))
    cuts = cuts.clamp_(max=n_docs).tolist()
    cuts[0], cuts[-1] = 0, n_docs
    runs = [(i, a, b) for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])) if b > a]
    # the runs with most entries first (one long document can make a run long): the
    # threads then end close together
    runs.sort(key=lambda r: -int(doc_ptr[r[2]] - doc_ptr[r[1]]))
    jobs = [_pool(n_threads).submit(job, i, a, b) for i, a, b in runs]
    for j in jobs:
        j.result()


_THREADS = None  # set by cpu_threads(): the sampler's threads while torch runs on one


def threads() -> int:
    """Threads the CPU sampler uses: torch's setting (``torch.set_num_threads``)."""
    return _THREADS or max(1, torch.get_num_threads())


def threads_for(n_docs: int, n_entries: int, min_entries: int = 20000) -> int:
    """Threads for a compiled pass over ``n_docs`` documents holding ``n_entries``
    tokens or non-zeros: up to :func:`threads`, one per ``min_entries``."""
    return max(1, min(threads(), n_docs, n_entries // min_entries + 1))


@contextlib.contextmanager
def cpu_threads():
    """Run the CPU sampler's threads with torch on one thread meanwhile.

    torch's OpenMP workers spin between operations; next to the sampler's own
    threads they take the cores the sweep needs (measured: 30 sweeps of the KJV
    in 0.95 CPU s with one thread, 8 CPU s with two). The sweep's tensor
    operations are small, so torch loses little on one thread.
    """
    global _THREADS
    n = max(1, torch.get_num_threads())
    outer = _THREADS
    _THREADS = outer or n
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield _THREADS
    finally:
        if n > 1:
            torch.set_num_threads(n)
        _THREADS = outer


SWEEP_PIECES = 4  # runs of documents per thread, taken by the first thread free
PSI_TABLE = 128  # counts below this read Minka's differences psi(n + a) - psi(a) from a table


def psi_table(alpha: np.ndarray, n: int = PSI_TABLE) -> np.ndarray:
    """psi(c + alpha_k) - psi(alpha_k) for c < n, shape (K + 1, n): row k for alpha_k, the
    last row for alpha_0 = sum_k alpha_k; each the sum over i < c of 1 / (alpha + i)."""
    a = np.append(alpha, alpha.sum())[:, None]
    tab = np.zeros((a.shape[0], n))
    np.cumsum(1.0 / (a + np.arange(n - 1)[None, :]), axis=1, out=tab[:, 1:])
    return tab


def sweep_numba(state: TokenState, beta_t: torch.Tensor, alpha: torch.Tensor,
                u: torch.Tensor | None, word_counts: bool = False, alpha_stats: bool = True,
                seed: int | None = None):
    """One sweep over a CPU batch, each token drawn from :func:`draw_reference`'s
    conditional; updates ``state``.

    Parameters
    ----------
    beta_t : Tensor, shape (V, K)
        beta transposed (float32 or float64), contiguous.
    alpha : Tensor, shape (K,)
    u : float64 Tensor, shape (T,), or None
        One uniform per token; None: token j of the document in row r (``state.rows``)
        draws u(mix(seed, r), j) (:func:`~elbokit.models.lda_kernels.uniform`, see
        :func:`token_uniforms`), computed in the sweep (no pass over an array of them),
        the same whatever batch the document is in.
    seed : int, with ``u=None``
        In [0, 2^64).
    word_counts : bool
        Also return the new assignments' topic-word counts.
    alpha_stats : bool
        Compute Minka's sums (for a learned alpha); small counts read them from
        :func:`psi_table`.

    Returns
    -------
    ll : float64 Tensor, shape (n_docs,)
        Per document, sum over its tokens of log p(w_i | z_-i, beta): the
        log of each token's predictive probability at its draw.
    num : float64 Tensor, shape (K,), or None without ``alpha_stats``
        sum over documents of psi(n_dk + alpha_k) - psi(alpha_k) after the sweep.
    den : float64 Tensor, shape (), or None without ``alpha_stats``
        sum over non-empty documents of psi(N_d + alpha_0) - psi(alpha_0).
    topic_word : float64 Tensor, shape (K, V), with ``word_counts`` only
        The new assignments' topic-word counts, tallied during the sweep (each
        thread its own table, summed): cheaper than counting them afterwards.
    """
    from elbokit.models import lda_kernels

    kernel = lda_kernels.sweep
    n_docs, K = state.ndk.shape
    ll = np.zeros(n_docs)
    n_threads = threads_for(n_docs, state.n_tokens)
    pieces = SWEEP_PIECES if n_threads > 1 else 1
    num = np.zeros((n_threads * pieces, K))  # per run: summed in order, the same on any threads
    den = np.zeros((n_threads * pieces, 1))
    V = beta_t.shape[0]
    nwk = np.zeros((n_threads, V if word_counts else 0, K), np.int32)
    if state.n_tokens:
        bt = np.ascontiguousarray(beta_t.numpy())
        scdf = np.ascontiguousarray(smoothing_cdf(beta_t, alpha).numpy())
        a = np.ascontiguousarray(alpha.to(torch.float64).numpy())
        tab = psi_table(a) if alpha_stats else np.zeros((K + 1, 0))
        if u is None:
            if seed is None:
                raise ValueError("sweep_numba: pass the uniforms u, or u=None and a seed")
            u_arr, seed = np.zeros(0), np.uint64(seed)
        else:
            u_arr, seed = u.numpy(), np.uint64(0)
        args = (state.doc_ptr.numpy(), state.word.numpy(), state.z.numpy(), u_arr, seed,
                state.row_keys(), bt, scdf, a, state.ndk.numpy(), ll, tab)
        if n_threads == 1:
            kernel(*args, num[0], den[0], nwk[0], 0, n_docs)
        else:
            run_in_threads(lambda i, a, b: kernel(*args, num[i], den[i], nwk[worker_slot()],
                                                  a, b), state.doc_ptr, n_threads, pieces)
    out = (torch.from_numpy(ll), torch.from_numpy(num.sum(0)),
           torch.tensor(float(den.sum()), dtype=torch.float64))
    if not alpha_stats:
        out = (out[0], None, None)
    if not word_counts:
        return out
    # summed in int32 (a cell counts at most the batch's tokens), then transposed to float64
    counts = nwk.sum(0, dtype=np.int32 if state.n_tokens < 2**31 else np.int64)
    return out + (torch.from_numpy(np.ascontiguousarray(counts.T, dtype=np.float64)),)




def gamma_rows(concentration: torch.Tensor, seed: int, rows_per_task: int = 2, *,
               normalise: bool = False, single: bool = False) -> torch.Tensor:
    """Gamma(concentration, 1) variates (float64) of a CPU matrix, blocks of rows drawn
    in parallel threads, each block from its own stream spawned from ``seed`` (so the
    draws do not depend on the number of threads).

    With numba, the compiled kernel :func:`~elbokit.models.lda_kernels.gamma_block` on
    the block's counter uniforms (Ahrens-Dieter below 1, Marsaglia-Tsang above; measured
    on one thread: 23-29 ns a draw at 0.05, where the same kernel fed by NumPy's
    generator took 41-44, and 23-28 ns at 5, as before; the Dirichlet draw of a Gibbs
    sweep on the changelogs 13.1 -> 8.4 ms, the KJV 8.7 -> 5.7 ms). Without it NumPy's
    ``standard_gamma`` from the block's generator,
    in float32 with ``single`` (a sampler that computes in float32; a draw below
    float32's range is then the clamp's smallest normal float64).

    ``normalise``: each row clamped at the smallest normal float64 and divided by its
    sum in its thread (Dirichlet rows).
    """
    c = np.ascontiguousarray(concentration.to(torch.float64).numpy())
    out = np.empty_like(c)
    blocks = list(range(0, c.shape[0], rows_per_task))
    seeds = np.random.SeedSequence(seed).spawn(len(blocks))
    tiny = np.finfo(np.float64).tiny
    kernel = None
    if numba_available():
        from elbokit.models import lda_kernels

        kernel = lda_kernels.gamma_block

    def draw(i):
        lo = blocks[i]
        part, shape = out[lo:lo + rows_per_task], c[lo:lo + rows_per_task]
        if kernel is not None:
            kernel(seeds[i].generate_state(1, np.uint64)[0], shape, part, normalise)
            return
        rng = np.random.default_rng(seeds[i])
        if single:
            part[...] = rng.standard_gamma(shape.astype(np.float32), dtype=np.float32)
        else:
            rng.standard_gamma(shape, out=part)
        if normalise:
            np.maximum(part, tiny, out=part)
            part /= part.sum(1, keepdims=True)

    _each_block(draw, len(blocks))
    return torch.from_numpy(out)


def _each_block(job, n_blocks: int):
    """``job(i)`` for every block i, in up to :func:`threads` threads (NumPy's
    generators release the GIL)."""
    n = min(threads(), n_blocks)
    if n <= 1:
        for i in range(n_blocks):
            job(i)
    else:
        list(_pool(n).map(job, range(n_blocks)))


# ---------------------------------------------------------------- any device: torch
def _plan(state: TokenState, long_from: int):
    """The torch sweep's fixed layout, computed once per batch: the tokens drawn in
    the theta-block (and their documents), and the others grouped by position."""
    key = ("plan", long_from)
    if getattr(state, "_cache", None) is None:
        state._cache = {}
    if key not in state._cache:
        start = state.doc_ptr[:-1][state.doc]
        pos = torch.arange(state.n_tokens, device=state.z.device) - start
        late = torch.nonzero(pos >= long_from).squeeze(1)
        long_docs = torch.unique(state.doc[late])
        where = torch.full((state.ndk.shape[0],), -1, dtype=torch.int64, device=pos.device)
        where[long_docs] = torch.arange(long_docs.numel(), device=pos.device)
        early = torch.nonzero(pos < long_from).squeeze(1)
        pos_e = pos[early]
        order = early[torch.argsort(pos_e, stable=True)]
        per_pos = torch.bincount(pos_e, minlength=1).tolist() if early.numel() else []
        state._cache[key] = (late, long_docs, where[state.doc[late]], order, per_pos)
    return state._cache[key]


def sweep_torch(state: TokenState, beta_t: torch.Tensor, alpha: torch.Tensor, u: torch.Tensor,
                generator: torch.Generator, long_from: int = LONG_FROM) -> torch.Tensor:
    """One sweep, vectorised over documents (any device); updates ``state``.

    Tokens at position >= ``long_from`` are drawn first, all at once, from
    theta_d beta_kw with theta_d ~ Dirichlet(alpha + n_d); then position j
    = 0, 1, ... of every document, each draw from the collapsed conditional
    (n_dk^-i + alpha_k) beta_kw computed densely. Returns the per-document sum
    of log predictive probabilities of the tokens at their draws (for
    the block, log sum_k theta_dk beta_kw) and :func:`alpha_statistics`.
    """
    device = state.z.device
    dtype = beta_t.dtype
    n_docs, K = state.ndk.shape
    ll = torch.zeros(n_docs, dtype=torch.float64, device=device)
    if state.n_tokens == 0:
        return (ll, torch.zeros(K, dtype=torch.float64, device=device),
                torch.zeros((), dtype=torch.float64, device=device))
    alpha_c = alpha.to(dtype)
    late, long_docs, slot, order, per_pos = _plan(state, long_from)
    z = state.z.to(torch.int64)
    if late.numel():
        d = state.doc[late]
        theta = dirichlet(alpha.to(torch.float64)[None, :]
                          + state.ndk[long_docs].to(torch.float64), generator).to(dtype)
        p = theta.index_select(0, slot) * beta_t.index_select(0, state.word[late].to(torch.int64))
        cdf = torch.cumsum(p, 1)
        total = cdf[:, -1]
        new = (cdf < (u[late].to(dtype) * total)[:, None]).sum(1).clamp_(max=K - 1)
        z[late] = new
        ll.index_add_(0, d, torch.log(total.to(torch.float64)))
    ndk = doc_topic_counts(state.doc, z, n_docs, K).to(dtype)
    lengths = state.lengths().to(torch.float64)
    a0 = float(alpha.to(torch.float64).sum())
    start = 0
    for n in per_pos:
        idx = order[start:start + n]
        start += n
        d, w = state.doc[idx], state.word[idx].to(torch.int64)
        old = z[idx]
        ndk[d, old] -= 1
        p = (ndk.index_select(0, d) + alpha_c) * beta_t.index_select(0, w)
        cdf = torch.cumsum(p, 1)
        total = cdf[:, -1]
        new = (cdf < (u[idx].to(dtype) * total)[:, None]).sum(1).clamp_(max=K - 1)
        ndk[d, new] += 1
        z[idx] = new
        ll.index_add_(0, d, torch.log(total.to(torch.float64) / (lengths[d] - 1 + a0)))
    state.z = z.to(torch.int32)
    state.ndk = ndk.round().to(torch.int32)
    num, den = alpha_statistics(state.ndk, state.lengths(), alpha)
    return ll, num, den


def alpha_statistics(ndk: torch.Tensor, lengths: torch.Tensor, alpha: torch.Tensor):
    """sum_d psi(n_dk + alpha_k) - psi(alpha_k) per topic, and sum over non-empty
    documents of psi(N_d + alpha_0) - psi(alpha_0): Minka's fixed-point statistics."""
    a = alpha.to(torch.float64)
    nd = ndk.to(torch.float64)
    num = torch.where(nd > 0, torch.digamma(nd + a) - torch.digamma(a), 0.0).sum(0)
    lengths = lengths.to(torch.float64)
    lengths = lengths[lengths > 0]
    den = (torch.digamma(lengths + a.sum()) - torch.digamma(a.sum())).sum()
    return num, den


def sweep(state: TokenState, beta_t: torch.Tensor, alpha: torch.Tensor,
          generator: torch.Generator, use_numba: bool | None = None, alpha_stats: bool = True,
          seed: int | None = None):
    """One local sweep: numba on CPU (when available), the vectorised torch sweep
    elsewhere. Returns (per-document log predictive, Minka's alpha numerators and
    denominator (None on CPU without ``alpha_stats``), the new assignments' topic-word
    counts (K, V) float64), see :func:`sweep_numba`.

    ``seed``: the compiled sweep's counter seed (this sweep's stream of the chain,
    :func:`stream`; required there). The torch sweep draws from ``generator``."""
    if use_numba is None:
        use_numba = state.z.device.type == "cpu" and numba_available()
    if use_numba:
        return sweep_numba(state, beta_t.contiguous(), alpha, None, word_counts=True,
                           alpha_stats=alpha_stats, seed=seed)
    u = uniforms(state.n_tokens, generator, state.z.device)
    out = sweep_torch(state, beta_t, alpha, u, generator)
    V, K = beta_t.shape
    nkw = torch.bincount(state.z.to(torch.int64) * V + state.word.to(torch.int64),
                         minlength=K * V).view(K, V).to(torch.float64)
    return out + (nkw,)


UNIFORM_BLOCK = 1 << 18  # tokens per NumPy stream of a sweep's uniforms


def uniforms(n: int, generator: torch.Generator, device) -> torch.Tensor:
    """One uniform on [0, 1) per token, float64, shape (n,), drawn from ``generator``.

    On CPU from NumPy's PCG64 (about 3x torch's CPU generator per number: 6.6 ms
    against 2.3 ms for the 1.25M tokens of a man-page corpus), in blocks of
    ``UNIFORM_BLOCK`` tokens, each from its own stream spawned from one seed that
    ``generator`` draws, the blocks in threads: the draws depend on the seed alone,
    not on the number of threads. Elsewhere torch's generator on the device.
    """
    device = torch.device(device)
    if device.type != "cpu":
        return torch.rand(n, generator=generator, device=device, dtype=torch.float64)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    out = np.empty(n)
    starts = list(range(0, n, UNIFORM_BLOCK))
    seeds = np.random.SeedSequence(seed).spawn(len(starts))

    def draw(i):
        lo = starts[i]
        np.random.default_rng(seeds[i]).random(out=out[lo:lo + UNIFORM_BLOCK])

    _each_block(draw, len(starts))
    return torch.from_numpy(out)


def draw_reference(n_minus: torch.Tensor, alpha: torch.Tensor, beta_w: torch.Tensor) -> torch.Tensor:
    """The dense conditional (n_dk^-i + alpha_k) beta_kw normalised, shape (..., K): what
    every sweep draws from (for tests and documentation)."""
    p = (n_minus.to(torch.float64) + alpha.to(torch.float64)) * beta_w.to(torch.float64)
    return p / p.sum(-1, keepdim=True)


# ---------------------------------------------------------------- learned priors
def minka_alpha_step(alpha: torch.Tensor, num: torch.Tensor, den: torch.Tensor, *,
                     floor: float = 1e-6) -> torch.Tensor:
    """One step of Minka's fixed point for an asymmetric Dirichlet prior on theta:

    alpha_k <- alpha_k sum_d [psi(n_dk + alpha_k) - psi(alpha_k)]
                     / sum_d [psi(N_d + alpha_0) - psi(alpha_0)],

    ``num`` and ``den`` those sums at the current alpha (see
    :func:`alpha_statistics`). Each step raises the Dirichlet-multinomial
    evidence of the counts (Minka 2000; Mallet and tomotopy optimise alpha
    so); the sampler takes one per sweep, the counts moving with it.
    """
    a = alpha.to(torch.float64)
    if float(den) <= 0:
        return a.clone()
    new = (a * num.to(torch.float64) / den).clamp_min(floor)
    if not bool(torch.isfinite(new).all()):
        raise FloatingPointError("the alpha update diverged; pass a fixed alpha instead.")
    return new


def minka_alpha(alpha: torch.Tensor, ndk: torch.Tensor, *, n_iter: int = 100,
                floor: float = 1e-6) -> torch.Tensor:
    """Minka's fixed point iterated on fixed counts ``ndk`` (n_docs, K): the alpha
    maximising their Dirichlet-multinomial evidence."""
    lengths = ndk.sum(1)
    a = alpha.to(torch.float64)
    for _ in range(n_iter):
        a = minka_alpha_step(a, *alpha_statistics(ndk, lengths, a), floor=floor)
    return a


def minka_eta(eta: float, topic_word: torch.Tensor, *, n_iter: int = 20,
              floor: float = 1e-6) -> float:
    """Minka's fixed point for a symmetric Dirichlet prior eta on the topics from counts.

    eta <- eta sum_kw [psi(n_kw + eta) - psi(eta)] / (V sum_k [psi(n_k + V eta) - psi(V eta)]),

    the first sum taken from the histogram of the counts:
    sum_n h(n) (psi(n + eta) - psi(eta)) = sum_j (#counts > j) / (eta + j).
    """
    from scipy.special import digamma  # scalar loop: NumPy, not small torch operations

    nkw = topic_word.to(torch.float64)
    K, V = nkw.shape
    hist = torch.bincount(nkw.round().to(torch.int64).reshape(-1), minlength=2).to(torch.float64)
    above = torch.flip(torch.cumsum(torch.flip(hist, (0,)), 0), (0,))[1:].cpu().numpy()
    j = np.arange(above.shape[0], dtype=np.float64)  # counts > j, for j = 0, 1, ...
    nk = nkw.sum(1).cpu().numpy()
    e = float(eta)
    for _ in range(n_iter):
        num = float((above / (e + j)).sum())
        den = V * float((digamma(nk + V * e) - digamma(V * e)).sum())
        if den <= 0:
            break
        e = max(e * num / den, floor)
    if not math.isfinite(e):
        raise FloatingPointError("the eta update diverged; pass a fixed eta instead.")
    return float(e)
