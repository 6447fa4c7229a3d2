"""The scaled forward-backward recursions as one compiled CPU loop (numba).

On a CPU the tensor recursions of :mod:`elbokit.models.hmm` run ~9 small
operations per time step, and each costs its dispatch (microseconds) more
than its arithmetic (b K^2 multiply-adds for b running sequences); the
emission shift, its exponential and the checks are more full passes over
memory.  Here one compiled pass shifts every row by its largest
log-emission, NumPy's vectorised exp exponentiates them (in the emissions'
dtype; anything float32 would have lost is redone in float64), and one
compiled loop does a row's whole step at once: alpha_t = (alpha_t-1 A) *
b_t / c_t, and on the way back beta, gamma = alpha beta and the pair counts
sum_t alpha_t^T (u_t+1 * beta_t+1), in float64 arithmetic whatever the dtype
of the emissions (gamma is written in it).  The sorted chains of
the packing run in contiguous ranges, one range per thread (plain threads:
the loop releases the GIL), each thread serial in time over its range and
stepping through its chains side by side, so that every row it reads or
writes is next to the last one (the time-major packing of
:class:`elbokit.models.hmm.Packing`).  A thread's result does not depend on
the other ranges: a sequence's result is the same in any batch.

The loop refuses (status != 0) what the scaled recursion would get wrong,
and the caller then runs the tensor path, whose fallbacks are exact: a row
whose emissions are all -inf or not finite, a scale c_t that is not a
positive finite number, a finite emission more than ``_UNDERFLOW`` nats
below its row's best (its exponential would lose it), or a non-finite beta.

numba compiles the loop on first use (about 2 s per dtype) and caches it on
disk (next to this file, else in the user's cache directory); where neither
is writable it compiles in memory for each process.
"""

from __future__ import annotations

import importlib.util
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_UNDERFLOW = -700.0  # exp of anything below underflows float64's normal range
_TINY = {"float32": 1e-30, "float64": 1e-300}  # exponentials below: recomputed in float64
_ROWS_PER_THREAD = 20_000  # below, a thread's start costs more than its share of the rows
_KERNELS = None


def available() -> bool:
    """Whether numba imports (it is a runtime dependency; the tensor path serves without)."""
    return importlib.util.find_spec("numba") is not None


def jit(fn, **options):
    """``numba.njit(cache=True, nogil=True, **options)``, or without the disk cache where
    numba finds no writable place for it (it refuses ``cache=True`` there)."""
    from numba import njit

    try:
        return njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(cache=False, nogil=True, **options)(fn)


def _shift(lb, r0, r1, gamma, shift):  # pragma: no cover - compiled by numba
    """Rows [r0, r1): shift = the row's largest log-emission (float64), gamma = lb - shift
    (in lb's dtype: the caller exponentiates it, vectorised).  Returns 0, or 1 for a row
    whose largest entry is not finite."""
    K = lb.shape[1]
    for row in range(r0, r1):
        m = lb[row, 0]
        for k in range(1, K):
            v = lb[row, k]
            if v > m or m != m:
                m = v
        if not (m > -math.inf and m < math.inf):
            return 1
        shift[row] = m
        for k in range(K):
            gamma[row, k] = lb[row, k] - m
    return 0


def _recursions(lb, shift, tiny, offsets, sizes, lengths, pi, A, w, c0, c1, need, gamma, u,
                log_px, counts, occupancy):  # pragma: no cover - compiled
    """Forward (and, with ``need``, backward) over the sorted chains [c0, c1).

    lb (N, K) packed log-emissions, shift (N,) their rows' largest; tiny: below it an
    exponential in lb's dtype is recomputed in float64; offsets, sizes (T,) the
    packing's steps; lengths (C,) the sorted chains' lengths; pi (K,), A (K, K), w (C,)
    float64; gamma (N, K): exp(lb - shift) on entry, alpha on the way forward, gamma on
    exit; u (N, K) float64 scratch (B / c, then B beta / c); log_px (C,), counts (K, K) and
    occupancy (K,) (sum of gamma), zeros on entry.  Returns 0, or 1 where the tensor path
    must take over."""
    K = lb.shape[1]
    if c1 <= c0:
        return 0
    T = lengths[c0]
    AT = A.T.copy()
    nxt = np.empty(K)
    scale = np.ones(c1 - c0)  # product of the chains' recent scales (one log per ~600 steps)
    for t in range(T):
        off = offsets[t]
        hi = min(c1, sizes[t])
        prev = offsets[t - 1] if t > 0 else 0
        for i in range(c0, hi):
            row = off + i
            m = shift[row]
            if t == 0:
                for k in range(K):
                    nxt[k] = pi[k]
            else:
                for k in range(K):
                    nxt[k] = 0.0
                for j in range(K):
                    a = gamma[prev + i, j]
                    for k in range(K):
                        nxt[k] += a * A[j, k]
            s = 0.0
            for k in range(K):
                b = float(gamma[row, k])
                if b < tiny:  # lb's dtype may have lost it: float64, or refuse
                    d = float(lb[row, k]) - m
                    if d < _UNDERFLOW and d > -math.inf:
                        return 1
                    b = math.exp(d)
                u[row, k] = b
                nxt[k] *= b
                s += nxt[k]
            if not (s > 1e-300 and s < math.inf):
                return 1
            inv = 1.0 / s
            for k in range(K):
                gamma[row, k] = nxt[k] * inv
                u[row, k] *= inv
            log_px[i] += m
            p = scale[i - c0] * s
            if p < 1e-250 or p > 1e250:
                log_px[i] += math.log(p)
                p = 1.0
            scale[i - c0] = p
    for i in range(c0, c1):
        log_px[i] += math.log(scale[i - c0])
    if not need:
        return 0
    for t in range(T - 1, -1, -1):
        off = offsets[t]
        hi = min(c1, sizes[t])
        cont = min(c1, sizes[t + 1]) if t + 1 < T else c0  # chains that run on to t + 1
        nxt_off = offsets[t + 1] if t + 1 < T else 0
        for i in range(c0, hi):
            row = off + i
            wi = w[i]
            if i < cont:
                nrow = nxt_off + i
                for j in range(K):
                    nxt[j] = 0.0
                for k in range(K):  # beta_t = A (u_t+1 beta_t+1)
                    v = u[nrow, k]
                    for j in range(K):
                        nxt[j] += AT[k, j] * v
                for j in range(K):  # pair counts alpha_t^T (u_t+1 beta_t+1)
                    a = gamma[row, j] * wi
                    for k in range(K):
                        counts[j, k] += a * u[nrow, k]
            else:
                for j in range(K):
                    nxt[j] = 1.0
            for k in range(K):
                if not nxt[k] < math.inf:
                    return 1
                g = gamma[row, k] * nxt[k] * wi
                gamma[row, k] = g
                occupancy[k] += g
                u[row, k] *= nxt[k]
    return 0


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = jit(_shift), jit(_recursions)
    return _KERNELS


def _ranges(lengths: np.ndarray, n: int) -> list[tuple[int, int]]:
    """``n`` contiguous ranges of the sorted chains with about equal rows each."""
    total = np.cumsum(lengths)
    if n <= 1 or len(lengths) < 2:
        return [(0, len(lengths))]
    cuts = np.searchsorted(total, total[-1] * np.arange(1, n) / n)
    inner = sorted(set(int(c) + 1 for c in cuts if int(c) + 1 < len(lengths)))
    bounds = [0] + inner + [len(lengths)]
    return list(zip(bounds[:-1], bounds[1:]))


def forward_backward(lb: torch.Tensor, startprob, transmat, chains, chain_weight=None,
                     need_posterior: bool = True, threads: int | None = None):
    """Scaled forward-backward over packed emissions of whole sequences, or None where the
    tensor path must take over (see the module docstring).

    Parameters
    ----------
    lb : (N, K) CPU tensor, float32 or float64
        log p(x_t | z_t = k), packed by ``chains`` (:class:`elbokit.models.hmm.Packing`).
    startprob : (K,), transmat : (K, K)
    chain_weight : (C,) tensor, optional
        The weight of each sorted chain (multiplies gamma and the pair counts).
    threads : int, optional
        Default: torch's number of threads, at most one per ``_ROWS_PER_THREAD`` rows.

    Returns
    -------
    (log_px (C,) float64 per sorted chain, gamma (N, K) in lb's dtype, xi (K, K) float64,
    occupancy (K,) float64: gamma summed; the last three None without ``need_posterior``),
    or None
    """
    shift_rows, recursions = _kernels()
    x = lb.detach().contiguous().numpy()
    N, K = x.shape
    C = chains.n_chains
    offsets, sizes, lengths = chains.step_arrays
    pi = startprob.detach().to(torch.float64).cpu().numpy()
    A = transmat.detach().to(torch.float64).cpu().numpy()
    w = (np.ones(C) if chain_weight is None
         else chain_weight.detach().to(torch.float64).cpu().numpy())
    gamma = np.empty_like(x)
    shift = np.empty(N)
    u = np.empty(x.shape, dtype=np.float64)
    log_px = np.zeros(C)
    if threads is None:  # torch's threads, each with at least _ROWS_PER_THREAD rows
        threads = min(torch.get_num_threads(), max(1, N // _ROWS_PER_THREAD))
    parts = _ranges(lengths, threads)
    rows = np.linspace(0, N, len(parts) + 1).astype(np.int64)
    counts = np.zeros((len(parts), K, K))
    occupancy = np.zeros((len(parts), K))

    def exponentials(p):
        r0, r1 = int(rows[p]), int(rows[p + 1])
        if shift_rows(x, r0, r1, gamma, shift):
            return 1
        with np.errstate(all="ignore"):  # (exp of -inf: 0, as it should)
            np.exp(gamma[r0:r1], out=gamma[r0:r1])
        return 0

    tiny = _TINY[x.dtype.name]

    def run(p):
        c0, c1 = parts[p]
        return recursions(x, shift, tiny, offsets, sizes, lengths, pi, A, w, c0, c1,
                          need_posterior, gamma, u, log_px, counts[p], occupancy[p])

    if len(parts) == 1:
        status = [exponentials(0) or run(0)]
    else:
        with ThreadPoolExecutor(len(parts), thread_name_prefix="elbokit-hmm") as pool:
            status = list(pool.map(exponentials, range(len(parts))))
            if not any(status):
                status = list(pool.map(run, range(len(parts))))
    if any(status):
        return None
    log_px = torch.from_numpy(log_px)
    if not need_posterior:
        return log_px, None, None, None
    xi = torch.from_numpy(A) * torch.from_numpy(counts).sum(0)  # (torch: NumPy warns on underflow)
    return log_px, torch.from_numpy(gamma), xi, torch.from_numpy(occupancy.sum(0))
