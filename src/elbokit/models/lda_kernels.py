"""The compiled CPU kernels of LDA (numba): the Gibbs sweep and its random numbers
(:mod:`elbokit.models.lda_gibbs`), the variational local updates
(:mod:`elbokit.models.lda`).

They live at module level, imported on first use: numba's disk cache keys a kernel
by its module and name, and a kernel defined inside a function that calls another
such closure is compiled again in every process (measured: 3 s before a fresh
process's first batch-VI fit, 1.2 s before its first sampled one, and a new cache
file per process). Compiled with :func:`elbokit.models.hmm_numba.jit` (the disk
cache where it can be written).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from elbokit.models.hmm_numba import jit

# SIMD dot products in the local updates: their sums may reassociate
fastjit = functools.partial(jit, fastmath={"reassoc", "contract"})
GOLDEN = 0x9E3779B97F4A7C15  # SplitMix64's increment: 2^64 / the golden ratio


# ---------------------------------------------------------------- shared
@jit
def digamma(x):  # pragma: no cover - recurrence up to 6, then the asymptotic series
    """psi(x) for x > 0, float64."""
    r = 0.0
    while x < 6.0:
        r -= 1.0 / x
        x += 1.0
    f = 1.0 / (x * x)
    return r + math.log(x) - 0.5 / x - f * (1.0 / 12 - f * (1.0 / 120 - f * (
        1.0 / 252 - f * (1.0 / 240 - f / 132))))


@jit
def mix(seed, t):  # pragma: no cover
    """The t-th output of the SplitMix64 generator started at ``seed`` (Steele, Lea &
    Flood 2014, Java's SplittableRandom; it passes BigCrush): 64 random bits, uint64.
    A counter-based draw: computed where it is used, from (seed, t) alone."""
    z = np.uint64(seed) + np.uint64(t + 1) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@jit
def uniform(seed, t):  # pragma: no cover
    """u(seed, t) = :func:`mix`'s top 53 bits as a float64 on [0, 1). The sweep keys token
    j of the document in row r by (mix(seed, r), j), so a sweep needs no array of
    uniforms and its draws depend neither on how the tokens are split between threads
    nor on which other documents share the batch."""
    return np.float64(mix(seed, t) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


# ---------------------------------------------------------------- Gibbs sampling
@jit
def sweep(doc_ptr, words, z, u, seed, rows, beta_t, scdf, alpha, ndk, ll, psi_tab, num,
          den, nwk, first, stop):  # pragma: no cover
    """Documents [first, stop) of :func:`~elbokit.models.lda_gibbs.sweep_numba`, each
    token's topic drawn from the sparse buckets in turn; without ``u``, token j of
    document d from uniform(mix(seed, rows[d]), j)."""
    K = beta_t.shape[1]
    count_words = nwk.shape[0] > 0  # (V, K) word-topic counts of the new draws, or none
    n_tab = psi_tab.shape[1]  # Minka's statistics wanted when the table is not empty
    given = u.shape[0] > 0  # the uniforms given, or drawn from (seed, row, position)
    a0 = 0.0
    for k in range(K):
        a0 += alpha[k]
    psi_a = np.empty(K)
    for k in range(K):
        psi_a[k] = digamma(alpha[k])
    psi_a0 = digamma(a0)
    topics = np.empty(K, np.int32)   # the document's topics in use ...
    where = np.full(K, -1, np.int32)  # ... each one's slot in that list ...
    p = np.zeros(K)                   # ... and its term n_dk beta_kw of the bucket
    for d in range(first, stop):
        lo, hi = doc_ptr[d], doc_ptr[d + 1]
        if hi == lo:
            continue
        nd = ndk[d]
        doc_seed = mix(seed, rows[d])
        m = 0
        for t in range(lo, hi):  # the topics in use, from the tokens: O(length)
            k = z[t]
            if where[k] < 0:
                where[k] = m
                topics[m] = k
                m += 1
        norm = (hi - lo - 1) + a0
        acc = 0.0
        prod = 1.0
        last_w = -1
        r_all = 0.0  # the document bucket of word last_w with every count in
        for t in range(lo, hi):
            w = words[t]
            k = z[t]
            nd[k] -= 1
            repeat = w == last_w  # a repeat of the word (a count's copies are adjacent)
            if repeat:  # its own count left topic k: one term moves
                p[where[k]] -= beta_t[w, k]
            if nd[k] == 0:  # drop k from the topics in use
                m -= 1
                last = topics[m]
                slot = where[k]
                topics[slot] = last
                p[slot] = p[m]
                where[last] = slot
                where[k] = -1
            if repeat:
                r = r_all - beta_t[w, k]
            else:
                r = 0.0  # document bucket, its terms kept for the draw below
                for j in range(m):
                    kk = topics[j]
                    q = nd[kk] * beta_t[w, kk]
                    p[j] = q
                    r += q
                last_w = w
            if m == 0 or r < 0.0:  # empty bucket (a difference can round below 0)
                r = 0.0
            s = scdf[w, K - 1]  # smoothing bucket
            x = (u[t] if given else uniform(doc_seed, t - lo)) * (r + s)
            if x < r:
                new = topics[m - 1]
                for j in range(m):
                    x -= p[j]
                    if x < 0.0:
                        new = topics[j]
                        break
            else:
                x -= r
                a, b = 0, K - 1
                while a < b:
                    mid = (a + b) >> 1
                    if scdf[w, mid] > x:
                        b = mid
                    else:
                        a = mid + 1
                new = a
            prod *= (r + s) / norm
            if prod < 1e-280:
                acc += math.log(prod)
                prod = 1.0
            if nd[new] == 0:
                where[new] = m
                topics[m] = new
                p[m] = 0.0
                m += 1
            nd[new] += 1
            b_new = beta_t[w, new]
            p[where[new]] += b_new
            r_all = r + b_new
            z[t] = new
            if count_words:
                nwk[w, new] += 1
        ll[d] = acc + math.log(prod)
        # Minka's statistics: sum_d psi(n_dk + alpha_k) - psi(alpha_k), psi(N_d + a0) - psi(a0),
        # small counts from the table of those differences (sums of 1 / (alpha_k + i))
        for j in range(m):
            kk = topics[j]
            where[kk] = -1
            if n_tab:
                c = nd[kk]
                if c < n_tab:
                    num[kk] += psi_tab[kk, c]
                else:
                    num[kk] += digamma(c + alpha[kk]) - psi_a[kk]
        if n_tab:
            c = hi - lo
            if c < n_tab:
                den[0] += psi_tab[K, c]
            else:
                den[0] += digamma(c + a0) - psi_a0


@jit
def open_uniform(seed, t):  # pragma: no cover
    """:func:`uniform` moved half a step up, on (0, 1): a draw whose log is finite."""
    return uniform(seed, t) + 0.5 / 9007199254740992.0


@jit
def gamma_block(seed, shape, out, normalise):  # pragma: no cover
    """Gamma(a, 1) variates of ``shape``'s entries into ``out`` from counter uniforms
    (:func:`uniform` of ``seed``, the counter running on through the block).

    a >= 1: Marsaglia & Tsang's (2000) squeeze-and-reject, its normals by Marsaglia's
    polar method (both of a pair used). a < 1: Ahrens & Dieter's (1974) rejection GS (Devroye 1986,
    p. 425): with b = 1 + a / e and V = b U, X = V^(1/a) accepted with probability
    exp(-X) when V <= 1, else X = -log((b - V) / a) accepted with probability
    X^(a - 1); no normal, no exponential (a draw costs two uniforms, a log and an exp
    at about 97% acceptance at a = 0.05). ``normalise``: each row clamped at the smallest
    normal float64 and divided by its sum (Dirichlet rows)."""
    tiny = np.finfo(np.float64).tiny
    t = 0
    spare = 0.0
    have_spare = False
    for i in range(shape.shape[0]):
        total = 0.0
        for j in range(shape.shape[1]):
            a = shape[i, j]
            if a < 1.0:
                b = 1.0 + a / math.e
                while True:
                    v = b * open_uniform(seed, t)
                    u = uniform(seed, t + 1)
                    t += 2
                    if v <= 1.0:
                        g = math.exp(math.log(v) / a)
                        if u <= 1.0 - g or u <= math.exp(-g):
                            break
                    else:
                        g = -math.log((b - v) / a)
                        if u <= math.exp((a - 1.0) * math.log(g)):
                            break
            else:
                d = a - 1.0 / 3.0
                c = 1.0 / math.sqrt(9.0 * d)
                while True:
                    if have_spare:
                        x = spare
                        have_spare = False
                    else:
                        while True:
                            p = 2.0 * uniform(seed, t) - 1.0
                            q = 2.0 * uniform(seed, t + 1) - 1.0
                            t += 2
                            r2 = p * p + q * q
                            if 0.0 < r2 < 1.0:
                                break
                        f = math.sqrt(-2.0 * math.log(r2) / r2)
                        x = p * f
                        spare = q * f
                        have_spare = True
                    v = 1.0 + c * x
                    if v <= 0.0:
                        continue
                    v = v * v * v
                    uu = open_uniform(seed, t)
                    t += 1
                    x2 = x * x
                    if uu < 1.0 - 0.0331 * x2 * x2:
                        break
                    if math.log(uu) < 0.5 * x2 + d * (1.0 - v + math.log(v)):
                        break
                g = d * v
            if normalise and g < tiny:
                g = tiny
            out[i, j] = g
            total += g
        if normalise:
            for j in range(shape.shape[1]):
                out[i, j] /= total


# ---------------------------------------------------------------- variational local updates
@fastjit
def exp_elog_theta(gamma, d, et, topics, m):  # pragma: no cover
    """et[k] = exp(E[log theta_dk]) for the m topics ``topics[:m]``; returns sum_k gamma_dk."""
    K = gamma.shape[1]
    total = 0.0
    for k in range(K):
        total += gamma[d, k]
    psum = digamma(total)
    for j in range(m):
        k = topics[j]
        et[k] = math.exp(digamma(gamma[d, k]) - psum)
    return total

@fastjit
def settle(gamma, d, et, acc, alpha, topics, m, tol, floor):  # pragma: no cover
    """gamma_dk = alpha_k + et_k acc_k for the m topics; True when the mean absolute
    change over all K topics is below tol (or the float resolution at gamma's scale)."""
    K = gamma.shape[1]
    change = 0.0
    for j in range(m):
        k = topics[j]
        g = alpha[k] + et[k] * acc[k]
        change += abs(g - gamma[d, k])
        gamma[d, k] = g
    total = exp_elog_theta(gamma, d, et, topics, m)
    return tol > 0 and change / K < max(tol, total / K * floor)

@jit
def active_topics(gamma, d, alpha, topics, frozen_below):  # pragma: no cover
    """topics[:m] = the topics whose expected count gamma_dk - alpha_k in document d is
    at least ``frozen_below``; returns m (all K if none is)."""
    K = gamma.shape[1]
    m = 0
    for k in range(K):
        if gamma[d, k] - alpha[k] >= frozen_below:
            topics[m] = k
            m += 1
    if m == 0:
        for k in range(K):
            topics[k] = k
        m = K
    return m

@fastjit
def row_pass(lo, hi, words, counts, beta_t, et, acc, topics, m, eps):  # pragma: no cover
    """acc_k = sum_i n_i beta_ik / (sum_j et_j beta_ij + eps) over the m topics, row by
    row of beta_t: cheapest for a few non-zeros. All K topics: contiguous (SIMD) loops."""
    K = et.shape[0]
    for j in range(m):
        acc[topics[j]] = 0.0
    for i in range(lo, hi):
        row = beta_t[words[i]]
        dot = 0.0
        if m == K:
            for k in range(K):
                dot += et[k] * row[k]
            r = counts[i] / (dot + eps)
            for k in range(K):
                acc[k] += r * row[k]
        else:
            for j in range(m):
                k = topics[j]
                dot += et[k] * row[k]
            r = counts[i] / (dot + eps)
            for j in range(m):
                k = topics[j]
                acc[k] += r * row[k]

@fastjit
def column_pass(lo, n, counts, bt, et, acc, topics, m, eps, dots):  # pragma: no cover
    """:func:`row_pass` on the transposed rows ``bt`` (K, n): both products run along
    contiguous memory."""
    dots[:n] = 0.0
    for j in range(m):
        k = topics[j]
        e = et[k]
        for i in range(n):
            dots[i] += e * bt[k, i]
    for i in range(n):
        dots[i] = counts[lo + i] / (dots[i] + eps)
    for j in range(m):
        k = topics[j]
        a = 0.0
        for i in range(n):
            a += bt[k, i] * dots[i]
        acc[k] = a

@fastjit
def norms(lo, hi, words, beta_t, et, norm, eps):  # pragma: no cover
    """phi's normalisers sum_k et_k beta_ik + eps of the document's non-zeros."""
    K = et.shape[0]
    for i in range(lo, hi):
        row = beta_t[words[i]]
        dot = 0.0
        for k in range(K):
            dot += et[k] * row[k]
        norm[i] = dot + eps

@jit
def solve_doc(lo, hi, words, counts, beta_t, alpha, gamma, d, et, acc, norm, max_iter,
              tol, floor, eps, frozen_below, transposed, bt, dots, topics,
              every):  # pragma: no cover
    """One document's fixed-point iterations; returns their number.

    Sparse in the topics: a topic whose expected count in the document is below
    ``frozen_below`` is frozen (its gamma kept, left out of the products), so an
    iteration costs O(nnz_d m) for the m topics in use (a few of K once a document
    settles). When the active topics settle, one iteration over every topic checks
    the stopping rule (frozen topics can come back there): the document stops only
    on an update of all K topics, as the dense iteration would (``frozen_below=0``,
    with ``tol=0``: every iteration is dense)."""
    K = et.shape[0]
    n = hi - lo
    if transposed:
        for i in range(n):
            row = beta_t[words[lo + i]]
            for k in range(K):
                bt[k, i] = row[k]
    m = active_topics(gamma, d, alpha, topics, frozen_below) if frozen_below > 0 else K
    sparse = m < K
    it = 0
    while it < max_iter:
        it += 1
        use = topics if sparse else every
        size = m if sparse else K
        if transposed:
            column_pass(lo, n, counts, bt, et, acc, use, size, eps, dots)
        else:
            row_pass(lo, hi, words, counts, beta_t, et, acc, use, size, eps)
        settled = settle(gamma, d, et, acc, alpha, use, size, tol, floor)
        if settled and not sparse:
            break
        if frozen_below > 0:
            if settled:  # settled on the active topics: check all K next
                sparse = False
                exp_elog_theta(gamma, d, et, every, K)
            else:
                m = active_topics(gamma, d, alpha, topics, frozen_below)
                sparse = m < K
    if sparse:
        exp_elog_theta(gamma, d, et, every, K)
    norms(lo, hi, words, beta_t, et, norm, eps)
    return it

@jit
def doc_bound(lo, hi, counts, norm, gamma, d, alpha, prior_norm):  # pragma: no cover
    """:func:`_doc_bounds` of document d, float64."""
    K = gamma.shape[1]
    words = 0.0
    for i in range(lo, hi):
        words += counts[i] * math.log(np.float64(norm[i]))  # float64 log of float32
    total = 0.0
    for k in range(K):
        total += np.float64(gamma[d, k])
    psum = digamma(total)
    terms = prior_norm - math.lgamma(total)
    for k in range(K):
        g = np.float64(gamma[d, k])
        terms += (alpha[k] - g) * (digamma(g) - psum) + math.lgamma(g)
    return words + terms

@jit
def local(doc_ptr, words, counts, beta_t, alpha, alpha64, gamma, etheta, norm, n_iter,
          bound, max_iter, tol, floor, eps, frozen_below, long_nnz, guard, first,
          stop):  # pragma: no cover
    K = beta_t.shape[1]
    et = np.empty(K)
    acc = np.empty(K)
    topics = np.empty(K, dtype=np.int64)
    every = np.arange(K)
    start = np.empty(K)
    b_start = 0.0
    prior_norm = 0.0
    for k in range(K):
        prior_norm -= math.lgamma(alpha64[k])
    prior_norm += math.lgamma(alpha64.sum())
    widest = 0
    for d in range(first, stop):
        n = doc_ptr[d + 1] - doc_ptr[d]
        if n >= long_nnz:
            widest = max(widest, n)
    bt = np.empty((K, widest), dtype=beta_t.dtype)
    dots = np.empty(widest, dtype=beta_t.dtype)
    for d in range(first, stop):
        lo, hi = doc_ptr[d], doc_ptr[d + 1]
        exp_elog_theta(gamma, d, et, every, K)
        if guard:  # the starting point's bound, to keep it if it ends higher
            norms(lo, hi, words, beta_t, et, norm, eps)
            b_start = doc_bound(lo, hi, counts, norm, gamma, d, alpha64, prior_norm)
            for k in range(K):
                start[k] = gamma[d, k]
        n_iter[d] = solve_doc(lo, hi, words, counts, beta_t, alpha, gamma, d, et, acc,
                              norm, max_iter, tol, floor, eps, frozen_below,
                              hi - lo >= long_nnz, bt, dots, topics, every)
        b = doc_bound(lo, hi, counts, norm, gamma, d, alpha64, prior_norm)
        if guard and b_start > b + 1e-12 * abs(b):  # rounding (float32 sums)
            for k in range(K):
                gamma[d, k] = start[k]
            exp_elog_theta(gamma, d, et, every, K)
            norms(lo, hi, words, beta_t, et, norm, eps)
            b = b_start
        bound[d] = b
        for k in range(K):
            etheta[d, k] = et[k]

@jit
def word_stats(doc_ptr, words, counts, etheta, norm, out, first, stop):  # pragma: no cover
    K = etheta.shape[1]
    for d in range(first, stop):
        for i in range(doc_ptr[d], doc_ptr[d + 1]):
            r = counts[i] / float(norm[i])
            row = out[words[i]]
            for k in range(K):
                row[k] += r * etheta[d, k]
