"""Hidden Markov models: the math that the EM engine drives (Baum-Welch).

A hidden Markov model (HMM) over a sequence x_1..x_T with hidden states
z_1..z_T in {0..K-1} is

    p(x, z) = pi[z_1] p(x_1 | z_1) prod_{t>1} A[z_{t-1}, z_t] p(x_t | z_t),

with ``startprob`` pi (K,), ``transmat`` A (K, K) (rows sum to 1) and the
emission p(x_t | z_t = k) any component family (:mod:`elbokit.families`).
The latent z is a whole state path, but its posterior is tractable: the
forward-backward recursions give the state marginals
gamma_t(k) = p(z_t = k | x) and the pair marginals
xi_t(j, k) = p(z_t = j, z_{t+1} = k | x), so EM is exact (Baum-Welch): the
E-step sums gamma (start counts, emission statistics through the family,
which takes gamma as its responsibilities) and xi (transition counts); the
M-step normalises the counts and calls the family's maximiser.

Batching.  A batch holds whole sequences, rows in sequence order (what
hmmlearn calls X plus ``lengths``).  The recursions run over time with one
tensor operation per step across all sequences of the batch: the sequences
are sorted by length and their rows laid out time-major ("packed", as
:func:`torch.nn.utils.rnn.pack_sequence` does), so that at step t the
sequences still running are the first ``batch_sizes[t]`` rows of a
contiguous block.  No Python loop runs over sequences.  On a CPU the
recursions over whole sequences run as one compiled loop instead
(:mod:`elbokit.models.hmm_numba`, when numba imports; ``CPU_KERNEL``): the
same packing, the same numbers, without the tensor operations' per-step cost;
where it refuses a batch (underflow), the tensor recursions below take it.

Numerics.  The recursions are *scaled* (Rabiner, 1989): the filtered
alpha_t = p(z_t | x_1..t) is normalised at every step by
c_t = p(x_t | x_1..t-1), with the emission likelihoods shifted by their
per-row maximum, so that log p(x) = sum_t (log c_t + max_k log p(x_t | k))
is accumulated in float64 and nothing overflows; each step is one (b, K) x
(K, K) product.  Where a scale underflows (every reachable state more than
~87 nats (float32) below the best emission), the batch is redone by the
log-space recursions (log-sum-exp, float64), which never underflow.
Emission log-densities are computed in the compute dtype; every statistic
is summed in float64.

Sequence boundaries travel with the rows as one extra last column of every
batch (1 at the first step of a sequence, 0 elsewhere), so that in-memory
data, streamed files and several processes need nothing special; weights
(one per sequence, repeated over its rows) come as the engine's row weights.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from elbokit.families.base import F64, Family, Params
from elbokit.models import hmm_numba
from elbokit.models.family_mixture import FamilyMixtureModel

FAMILY_PREFIX = "f."
CPU_KERNEL = hmm_numba.available()
"""Whether CPU batches run the compiled recursions (:mod:`elbokit.models.hmm_numba`; whole
sequences, no segments); False: the tensor recursions everywhere."""
START, TRANS, OCCUPANCY = "start", "trans", "nk"


@dataclass(frozen=True)
class HMMParams:
    """Parameters of an HMM (float64).

    Attributes
    ----------
    startprob : (K,)
        pi, the distribution of the first state.
    transmat : (K, K)
        A[j, k] = p(z_{t+1} = k | z_t = j).
    params : dict of str to Tensor
        The emission family's parameters, state first.
    weights : (K,)
        Expected fraction of time steps spent in each state (the state
        occupancy of the last E-step); what stepwise EM weights the emission
        statistics of the current parameters by.
    """


    startprob: torch.Tensor
    transmat: torch.Tensor
    params: Params
    weights: torch.Tensor


# --------------------------------------------------------------------------- layout
class Packing:
    """Contiguous row ranges ("chains") sorted by decreasing length and laid out time-major.

    Parameters
    ----------
    starts, lengths : (C,) int64 tensors
        First row and length (>= 1) of each chain.

    Attributes
    ----------
    order : (C,) int64
        The chains sorted by decreasing length (stable); "sorted chain i" is chain order[i].
    batch_sizes, offsets : list of int, one per step
        Chains still running at each step; start of the step's block in the packed order.
    packed : (N,) int64
        Row of every packed position.
    prev, nxt : (P,) int64
        Packed positions of every consecutive pair (t, t+1) within a chain.
    first, last : (C,) int64
        Packed positions of the first and the last step of each sorted chain.
    chain : (N,) int64
        Sorted chain of every packed position.
    """

    def __init__(self, starts: torch.Tensor, lengths: torch.Tensor):
        device = lengths.device
        self.order = torch.sort(lengths, descending=True, stable=True).indices
        L = lengths[self.order]
        self.n_chains = int(L.shape[0])
        self.n_rows = int(L.sum())
        self.length = int(L[0]) if self.n_chains else 0
        steps = torch.arange(self.length, device=device)
        running = steps[:, None] < L[None, :]  # (T, C): a prefix of every step's row
        sizes = running.sum(1)
        self.batch_sizes = sizes.tolist()
        self.offsets = (torch.cumsum(sizes, 0) - sizes).tolist()
        self.packed = (starts[self.order][None, :] + steps[:, None])[running]
        offsets = torch.cumsum(sizes, 0) - sizes
        step_of = torch.repeat_interleave(steps, sizes)
        self.chain = torch.arange(self.n_rows, device=device) - offsets[step_of]
        later = step_of > 0
        self.nxt = torch.nonzero(later).flatten()
        self.prev = offsets[step_of[later] - 1] + self.chain[later]
        self.first = torch.arange(self.n_chains, device=device)
        self.last = offsets[L - 1] + self.first if self.n_chains else self.first

    @functools.cached_property
    def step_arrays(self):
        """(offsets, batch sizes, length of every sorted chain) as int64 NumPy arrays."""
        import numpy as np

        sizes = np.asarray(self.batch_sizes, dtype=np.int64)
        # sorted chain i runs while i < batch_sizes[t]: its length is the count of such steps
        lengths = np.searchsorted(-sizes, -np.arange(self.n_chains), side="left")
        return np.asarray(self.offsets, dtype=np.int64), sizes, lengths.astype(np.int64)

    def steps(self):
        """(t, offset, batch size) for every step."""
        return zip(range(self.length), self.offsets, self.batch_sizes)

    def ends_at(self, t: int) -> tuple[int, int]:
        """Sorted chains [a, b) whose last step is t."""
        nxt = self.batch_sizes[t + 1] if t + 1 < self.length else 0
        return nxt, self.batch_sizes[t]


class SequenceLayout:
    """The sequences of one batch, packed for the recursions (see the module docstring).

    A long sequence is cut into segments of ``segment`` steps that the
    recursions run side by side (each segment is a *chain*); the exact
    messages between consecutive segments come from one transfer matrix per
    segment, so the number of sequential steps drops from T to about
    4 * segment + 2 * T / segment.

    Parameters
    ----------
    lengths : (B,) int64 tensor
        Length of each sequence (>= 1), in the order of the batch's rows.
    segment : int, optional
        Segment length; None: whole sequences (no segments).
    """

    def __init__(self, lengths: torch.Tensor, segment: int | None = None):
        lengths = lengths.to(torch.int64)
        device = lengths.device
        self.lengths = lengths
        self.n_sequences = int(lengths.shape[0])
        self.n_rows = int(lengths.sum())
        self.starts = torch.cumsum(lengths, 0) - lengths
        self.max_length = int(lengths.max()) if self.n_sequences else 0
        self.segment = segment if segment and self.max_length > segment else None
        if self.segment is None:
            self.chains = Packing(self.starts, lengths)
            self.sequence = self.chains.order  # original sequence of each sorted chain
            self._whole = self.chains
            self.seq_first = torch.empty_like(self.chains.order)  # packed first step of each
            self.seq_first[self.chains.order] = torch.arange(self.n_sequences, device=device)
            return
        C = self.segment
        n_seg = (lengths + C - 1) // C
        seq = torch.repeat_interleave(torch.arange(self.n_sequences, device=device), n_seg)
        index = torch.arange(int(n_seg.sum()), device=device) - torch.repeat_interleave(
            torch.cumsum(n_seg, 0) - n_seg, n_seg)  # segment number j within its sequence
        starts = self.starts[seq] + index * C
        seg_len = torch.minimum(lengths[seq] - index * C, torch.full_like(index, C))
        self.chains = Packing(starts, seg_len)
        self.sequence = seq[self.chains.order]
        position = torch.empty_like(self.chains.order)
        position[self.chains.order] = torch.arange(self.chains.n_chains, device=device)
        sorted_index = index[self.chains.order]
        self.starts_sequence = sorted_index == 0  # per sorted chain
        # every segment in sequence order ("flat"): its sorted chain, its number j, and the
        # sequence's number of segments (the scans over segments run in this order)
        self.flat_chain = position
        self.flat_index = index
        self.flat_count = n_seg[seq]
        later = torch.nonzero(index > 0).flatten()  # step pairs across segment boundaries
        self.cross_prev = self.chains.last[position[later - 1]]
        self.cross_next = self.chains.first[position[later]]
        self.seq_first = position[torch.cumsum(n_seg, 0) - n_seg]
        self._whole = None

    @classmethod
    def from_starts(cls, starts: torch.Tensor, segment="auto", n_states: int = 2) -> "SequenceLayout":
        """The layout of a batch whose rows carry a sequence-start marker (1 at a start)."""
        n = starts.shape[0]
        if n and float(starts[0]) != 1.0:
            raise ValueError("a batch of sequences must begin at the start of a sequence.")
        first = torch.nonzero(starts > 0.5).flatten()
        ends = torch.cat([first[1:], first.new_tensor([n])])
        lengths = ends - first
        if segment == "auto":
            segment = segment_length(lengths, n_states, starts.device)
        return cls(lengths, segment)

    def unsegmented(self) -> "SequenceLayout":
        """The same sequences without segments."""
        return self if self.segment is None else SequenceLayout(self.lengths)

    @property
    def whole(self) -> Packing:
        """The packing of the whole sequences (for the log-space pass and Viterbi)."""
        if self._whole is None:
            self._whole = Packing(self.starts, self.lengths)
        return self._whole

    def pack(self, rows: torch.Tensor) -> torch.Tensor:
        return rows[self.chains.packed]

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(packed)
        out[self.chains.packed] = packed
        return out


def _compiled(device) -> bool:
    """Whether the recursions on ``device`` run the compiled CPU loop."""
    return CPU_KERNEL and torch.device(device).type == "cpu"


def segment_length(lengths: torch.Tensor, n_states: int, device) -> int | None:
    """The segment length for long sequences, or None (whole sequences).

    Whole sequences cost ~9 tensor operations per time step of the longest one (a fixed
    ~10 microseconds each on a CPU); segments cost their steps plus the work of the
    transfer matrices, ~(60 K^2 + 4 K^3) per row (K states).  The segment length is the
    power of two nearest sqrt(T) / 4, the fastest measured on one sequence of 2,000 to
    200,000 steps (bench/hmm.py's long-sequence case).  None on a CPU with the compiled
    loop, whose steps cost no dispatch: it runs whole sequences faster.
    """
    T = int(lengths.max()) if lengths.numel() else 0
    if T < 256 or _compiled(device):
        return None
    per_op = 1e-5
    per_flop = 1e-11 if torch.device(device).type == "cuda" else 1e-9
    K = n_states
    work = float(lengths.sum()) * (60 * K * K + 4 * K ** 3) * per_flop
    if work > 0.5 * 9 * T * per_op:
        return None
    return int(min(1024, max(8, 2 ** round(math.log2(math.sqrt(T) / 4)))))


# --------------------------------------------------------------------------- forward-backward
_SERIAL_WORK = 1 << 18  # multiply-adds per step below which a step runs on one thread
_FLUSH = 16  # steps whose pair counts add up in the compute dtype before a float64 sum


@contextmanager
def step_threads(work: int, device):
    """Run a recursion's steps on one CPU thread when each step is small.

    A step of b sequences costs b K^2 operations: far too little to share
    among threads, and every op that enters a parallel region waits for the
    other threads to wake, which costs milliseconds when the cores are busy
    (measured on the shared 2-core machine: a (200, 4, 4) batched product,
    6 us on one thread, 0.6-33 ms on two).  Large steps keep every thread.
    """
    n = torch.get_num_threads()
    if torch.device(device).type != "cpu" or work >= _SERIAL_WORK or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _serial_steps(cube: bool = False, layout_at: int = 2):
    """Decorator: the recursion ``fn(x, ...)`` (x of shape (N, K); its packing or layout the
    argument at ``layout_at``) under :func:`step_threads`; the per-step work is the first
    step's batch times K^2, or K^3 for transfer matrices."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            x, layout = args[0], args[layout_at]
            chains = layout.chains if isinstance(layout, SequenceLayout) else layout
            K = x.shape[1]
            first = chains.batch_sizes[0] if chains.batch_sizes else 0
            with step_threads(first * K * K * (K if cube else 1), x.device):
                return fn(*args, **kwargs)
        return inner
    return wrap


@dataclass
class Posterior:
    """What one forward-backward pass gives.

    Attributes
    ----------
    log_px : (B,) float64
        log p(x) of each sequence, in the batch's order.
    gamma : (N, K)
        State marginals p(z_t = k | x) of every row (times its sequence's weight).
    xi : (K, K) float64
        Expected transition counts, summed over the batch (times the weights).
    occupancy : (K,) float64 or None
        gamma summed over the rows, where the recursions summed it on the way.
    """

    log_px: torch.Tensor
    gamma: torch.Tensor | None
    xi: torch.Tensor | None
    occupancy: torch.Tensor | None = None


def _finite_positive(c: torch.Tensor) -> bool:
    """Every scale > 0 and finite (their log sum is then finite)."""
    return bool(torch.isfinite(c.log().sum())) if c.numel() else True


def _log_combine(log_w: torch.Tensor, M: torch.Tensor, dim: int) -> torch.Tensor:
    """exp(log_w) applied to the rows (dim=1: w M) or columns (dim=2: M w) of M,
    with the shift done in log space; float64, not normalised (log scale returned)."""
    shift = log_w.max(1, keepdim=True).values
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    w = (log_w - shift).exp()
    out = (w[:, None, :] @ M).squeeze(1) if dim == 1 else (M @ w[:, :, None]).squeeze(2)
    return out, shift


@_serial_steps()
def _forward(B, A, chains: Packing, prior):
    """Scaled forward pass: (alpha, c), packed; alpha_t = p(z_t | x_1..t), c_t = p(x_t | x_<t)
    (times exp of the emission shift).  ``prior`` (C or 1, K): p(z at each chain's first step
    | what came before)."""
    alpha = torch.empty_like(B)
    c = torch.empty(B.shape[0], 1, dtype=B.dtype, device=B.device)
    for t, off, bs in chains.steps():
        cur = alpha[off:off + bs]
        if t == 0:
            torch.mul(B[:bs], prior[:bs] if prior.shape[0] > 1 else prior, out=cur)
        else:
            prev = chains.offsets[t - 1]
            torch.mm(alpha[prev:prev + bs], A, out=cur)
            cur.mul_(B[off:off + bs])
        torch.sum(cur, 1, keepdim=True, out=c[off:off + bs])
        cur.div_(c[off:off + bs])
    return alpha, c


@_serial_steps()
def _backward(u, A, chains: Packing, end_beta, alpha, weight=None, log_u=None):
    """Scaled backward pass: (beta, pair counts); ``u`` holds B / c on entry and B beta / c
    on exit.  ``end_beta`` (C, K) or None (ones): beta at each chain's last step.

    The expected transition counts within chains, sum_t alpha_t^T u_{t+1} (times the
    chains' ``weight``; A multiplies them afterwards), are added step by step in float64,
    so that no (N, K) gather is made.  ``log_u``: log(B / c), given where some B / c
    underflowed: then u = exp(log(B / c) + log beta), so that a huge beta still lifts a
    tiny emission (the product is formed in log space).
    """
    beta = torch.empty_like(u)
    AT = A.mT.contiguous()
    K = u.shape[1]
    counts = torch.zeros(K, K, dtype=F64, device=u.device)
    part = torch.zeros(K, K, dtype=u.dtype, device=u.device)  # the last _FLUSH steps' counts
    for i, (t, off, bs) in enumerate(reversed(list(chains.steps()))):
        cur = beta[off:off + bs]
        a, b = chains.ends_at(t)
        if a:
            nxt = chains.offsets[t + 1]
            un = u[nxt:nxt + a]
            torch.mm(un, AT, out=cur[:a])
            left = alpha[off:off + a] if weight is None else alpha[off:off + a] * weight[:a, None]
            torch.addmm(part, left.mT, un, out=part)
            if part.dtype != F64 and i % _FLUSH == _FLUSH - 1:
                counts += part
                part.zero_()
        if end_beta is None:
            cur[a:b].fill_(1.0)
        else:
            cur[a:b] = end_beta[a:b]
        if log_u is None:
            u[off:off + bs].mul_(cur)
        else:
            torch.exp(log_u[off:off + bs] + cur.log(), out=u[off:off + bs])
    return beta, counts + part


@_serial_steps(cube=True)
def _forward_transfers(B, A, layout: SequenceLayout, startprob):
    """Per chain, the filtered distribution at its last step from each state before its
    first step (rows: row-normalised, with log scales), float64: (P (C, K, K), log_s (C, K))."""
    chains = layout.chains
    K = B.shape[1]
    Bd, Ad = B.to(F64), A.to(F64)
    P = torch.empty(chains.n_chains, K, K, dtype=F64, device=B.device)
    log_s = torch.zeros(chains.n_chains, K, dtype=F64, device=B.device)
    for t, off, bs in chains.steps():
        Bt = Bd[off:off + bs, None, :]
        if t == 0:
            init = torch.where(layout.starts_sequence[:bs, None, None],
                               startprob.to(F64)[None, None, :].expand(bs, K, K), Ad[None])
            P[:bs] = init * Bt
        else:
            P[:bs] = (P[:bs] @ Ad) * Bt
        r = P[:bs].sum(2, keepdim=True)
        P[:bs] /= r
        log_s[:bs] += r.squeeze(2).log()
    return P, log_s


def _scan(Q, s, layout: SequenceLayout, combine, reverse: bool):
    """Inclusive scan of K x K transfer matrices over each sequence's segments, in the flat
    order (Hillis-Steele: log2(segments) levels of batched products, not one step per
    segment).  ``(Q, s)`` carry scaled matrices with log scales; ``combine(earlier, later)``."""
    j, count = layout.flat_index, layout.flat_count
    d = 1
    while True:
        sel = torch.nonzero(j + d < count if reverse else j >= d).flatten()
        if sel.numel() == 0:
            return Q, s
        other = sel + d if reverse else sel - d
        first, second = (sel, other) if reverse else (other, sel)
        Qn, sn = combine(Q[first], s[first], Q[second], s[second])
        Q, s = Q.clone(), s.clone()
        Q[sel], s[sel] = Qn, sn
        d *= 2


def _rows_product(Q1, s1, Q2, s2):
    """(diag(e^s1) Q1)(diag(e^s2) Q2) as (row-normalised Q, row log scales s)."""
    m = s2.max(1, keepdim=True).values.nan_to_num_(neginf=0.0)
    R = (Q1 * (s2 - m).exp()[:, None, :]) @ Q2
    r = R.sum(2, keepdim=True)
    return R / r.clamp_min(torch.finfo(R.dtype).tiny), s1 + m + r.squeeze(2).log()


def _columns_product(Q1, s1, Q2, s2):
    """(Q1 diag(e^s1))(Q2 diag(e^s2)) as (column-normalised Q, column log scales s)."""
    m = s1.max(1, keepdim=True).values.nan_to_num_(neginf=0.0)
    R = (Q1 * (s1 - m).exp()[:, None, :]) @ Q2
    r = R.sum(1, keepdim=True)
    return R / r.clamp_min(torch.finfo(R.dtype).tiny), s2 + m + r.squeeze(1).log()


@_serial_steps(cube=True)
def _chain_priors(B, A, layout: SequenceLayout, startprob):
    """p(z at the first step of every sorted chain | the steps before it), (C, K).

    The filtered distribution at the end of segment j is row 0 of the product of the
    transfer matrices of segments 0..j (segment 0's rows all start from startprob)."""
    K = B.shape[1]
    P, log_s = _forward_transfers(B, A, layout, startprob)
    Q, s = _scan(P[layout.flat_chain], log_s[layout.flat_chain], layout, _rows_product, False)
    end = Q[:, 0, :]  # (flat) filtered distribution at each segment's last step
    prior = startprob.to(F64)[None].expand(layout.chains.n_chains, K).clone()
    later = torch.nonzero(layout.flat_index > 0).flatten()
    prior[layout.flat_chain[later]] = end[later - 1] @ A.to(F64)
    return prior.to(B.dtype)


@_serial_steps(cube=True)
def _chain_end_betas(u, A, layout: SequenceLayout):
    """beta at the last step of every sorted chain (ones for a sequence's last segment), (C, K);
    ``u`` = B / c.  Column-normalised backward transfer matrices G (beta at the end of the
    segment before = G beta at the end of this one), multiplied by a scan from the end."""
    chains = layout.chains
    K = u.shape[1]
    ud, Ad = u.to(F64), A.to(F64)
    R = torch.empty(chains.n_chains, K, K, dtype=F64, device=u.device)
    log_s = torch.zeros(chains.n_chains, K, dtype=F64, device=u.device)
    for t, off, bs in reversed(list(chains.steps())):
        a, b = chains.ends_at(t)
        ut = ud[off:off + bs]
        if a:
            R[:a] = Ad @ (ut[:a, :, None] * R[:a])
        R[a:b] = Ad[None] * ut[a:b, None, :]
        r = R[:bs].sum(1, keepdim=True)
        R[:bs] /= r
        log_s[:bs] += r.squeeze(1).log()
    Q, s = _scan(R[layout.flat_chain], log_s[layout.flat_chain], layout, _columns_product, True)
    end = torch.ones(chains.n_chains, K, dtype=F64, device=u.device)
    before = torch.nonzero(layout.flat_index + 1 < layout.flat_count).flatten()
    # beta at the end of segment j = (G_j+1 ... G_J) 1, in log space for the scales
    w, shift = _log_combine(s[before + 1], Q[before + 1], dim=2)
    end[layout.flat_chain[before]] = w * shift.exp()
    return end.to(u.dtype)


def forward_backward(log_b: torch.Tensor, startprob, transmat, layout: SequenceLayout,
                     seq_weight: torch.Tensor | None = None, need_posterior: bool = True):
    """Scaled forward-backward over the emissions of a batch (rows in the batch's order).

    Parameters
    ----------
    log_b : (N, K)
        log p(x_t | z_t = k) per row; its dtype is the compute dtype.
    startprob : (K,), transmat : (K, K)
    layout : SequenceLayout
    seq_weight : (B,), optional
        Weight of each sequence (multiplies gamma and xi).
    need_posterior : bool
        False: only log p(x) (the forward pass).

    Returns
    -------
    Posterior (gamma per row; gamma and xi None without ``need_posterior``)
    """
    post = forward_backward_packed(layout.pack(log_b), startprob, transmat, layout, seq_weight,
                                   need_posterior)
    gamma = None if post.gamma is None else layout.unpack(post.gamma)
    return Posterior(post.log_px, gamma, post.xi, post.occupancy)


def _shifted(lb):
    """(per-row maximum (N, 1), exp(lb - maximum)): the emissions scaled into [0, 1]."""
    shift = lb.max(1, keepdim=True).values.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return shift, (lb - shift).exp_()


def _underflows(lb, B) -> bool:
    """Whether some finite emission underflowed to 0 once shifted."""
    if not lb.numel() or float(B.min()) > 0:
        return False
    return bool((B == 0).logical_and_(torch.isfinite(lb)).any())


def _repacked(fn, lb, layout: SequenceLayout, other: SequenceLayout, *args):
    """``fn`` run on ``other``'s packing of the same rows; gamma back in ``layout``'s."""
    post = fn(other.pack(layout.unpack(lb)), *args[:2], other, *args[2:])
    gamma = None if post.gamma is None else layout.pack(other.unpack(post.gamma))
    return Posterior(post.log_px, gamma, post.xi, post.occupancy)


def forward_backward_packed(lb: torch.Tensor, startprob, transmat, layout: SequenceLayout,
                            seq_weight: torch.Tensor | None = None, need_posterior: bool = True):
    """:func:`forward_backward` on emissions packed by ``layout`` (``layout.pack``); gamma
    is returned packed the same way."""
    dtype = lb.dtype
    if layout.segment is None and _compiled(lb.device) and dtype in (torch.float32, F64):
        w = None if seq_weight is None else seq_weight[layout.sequence]
        out = hmm_numba.forward_backward(lb, startprob, transmat, layout.chains, w,
                                         need_posterior)
        if out is not None:  # (None: the tensor recursions and their exact fallbacks)
            log_px = torch.empty(layout.n_sequences, dtype=F64, device=lb.device)
            log_px[layout.sequence] = out[0]
            return Posterior(log_px, *out[1:])
    shift, B = _shifted(lb)
    lost = need_posterior and _underflows(lb, B)
    if lost and dtype != F64:  # emissions beyond float32's range: the recursions in float64
        return forward_backward_packed(lb.to(F64), startprob, transmat, layout, seq_weight)
    if lost and layout.segment is not None:  # (the transfer matrices would lose them)
        return _repacked(forward_backward_packed, lb, layout, layout.unsegmented(), startprob,
                         transmat, seq_weight)
    chains = layout.chains
    A = transmat.to(dtype)
    if layout.segment is None:
        prior = startprob.to(dtype)[None]
    else:
        prior = _chain_priors(B, A, layout, startprob)
    alpha, c = _forward(B, A, chains, prior)
    if not _finite_positive(c):
        return _repacked(_log_space, lb, layout, layout, startprob, transmat, seq_weight,
                         need_posterior)
    log_c = (c.to(F64).log() + shift.to(F64)).squeeze(1)
    log_px = torch.zeros(layout.n_sequences, dtype=F64, device=B.device)
    log_px.index_add_(0, layout.sequence[chains.chain], log_c)
    if not need_posterior:
        return Posterior(log_px, None, None)
    u = B.div_(c)
    log_u = (lb - shift - c.log()) if lost else None
    end_beta = None if layout.segment is None else _chain_end_betas(u, A, layout)
    w = None if seq_weight is None else seq_weight.to(dtype)[layout.sequence]
    beta, counts = _backward(u, A, chains, end_beta, alpha, w, log_u)
    if layout.segment is not None:  # the pairs across segment boundaries
        left = alpha[layout.cross_prev]
        if w is not None:
            left = left * w[chains.chain[layout.cross_prev]][:, None]
        counts += left.to(F64).mT @ u[layout.cross_next].to(F64)
    xi = A.to(F64) * counts
    gamma = alpha.mul_(beta)
    if w is not None:
        gamma.mul_(w[chains.chain][:, None])
    if not bool(torch.isfinite(torch.cat([gamma.sum(0, dtype=F64), xi.reshape(-1)])).all()):
        return _repacked(_log_space, lb, layout, layout, startprob, transmat, seq_weight,
                         need_posterior)
    return Posterior(log_px, gamma, xi)


def _log_space(lb, startprob, transmat, layout, seq_weight, need_posterior):
    """The log-space pass on packed emissions (gamma packed), for the fallbacks."""
    post = forward_backward_log(layout.unpack(lb), startprob, transmat, layout, seq_weight,
                                need_posterior)
    gamma = None if post.gamma is None else layout.pack(post.gamma)
    return Posterior(post.log_px, gamma, post.xi, post.occupancy)


@_serial_steps(layout_at=3)
def forward_backward_log(log_b: torch.Tensor, startprob, transmat, layout: SequenceLayout,
                         seq_weight: torch.Tensor | None = None, need_posterior: bool = True):
    """Forward-backward in log space (log-sum-exp), float64, over whole sequences; the
    same outputs as :func:`forward_backward`.  Slower, and immune to underflow."""
    whole = layout.whole
    lb_ = log_b.to(F64)[whole.packed]
    log_pi = startprob.to(F64).log()
    log_A = transmat.to(F64).log()
    la = torch.empty_like(lb_)
    for t, off, bs in whole.steps():
        if t == 0:
            la[:bs] = log_pi + lb_[:bs]
        else:
            prev = whole.offsets[t - 1]
            la[off:off + bs] = torch.logsumexp(la[prev:prev + bs, :, None] + log_A, 1) + lb_[off:off + bs]
    log_px_sorted = torch.logsumexp(la[whole.last], 1)
    log_px = torch.empty_like(log_px_sorted)
    log_px[whole.order] = log_px_sorted
    if not need_posterior:
        return Posterior(log_px, None, None)
    lbeta = torch.empty_like(lb_)
    for t, off, bs in reversed(list(whole.steps())):
        a, b = whole.ends_at(t)
        if a:
            nxt = whole.offsets[t + 1]
            nb = lbeta[nxt:nxt + a] + lb_[nxt:nxt + a]
            lbeta[off:off + a] = torch.logsumexp(log_A + nb[:, None, :], 2)
        lbeta[off + a:off + b] = 0.0
    seq = whole.chain
    gamma = (la + lbeta - log_px_sorted[seq][:, None]).exp()
    pair = (la[whole.prev][:, :, None] + log_A + (lb_ + lbeta)[whole.nxt][:, None, :]
            - log_px_sorted[seq[whole.nxt]][:, None, None]).exp()
    if seq_weight is not None:
        w = seq_weight.to(F64)[whole.order]
        gamma = gamma * w[seq][:, None]
        pair = pair * w[seq[whole.nxt]][:, None, None]
    out = torch.empty_like(gamma)
    out[whole.packed] = gamma
    return Posterior(log_px, out.to(log_b.dtype), pair.sum(0))


@_serial_steps(layout_at=3)
def viterbi(log_b: torch.Tensor, startprob, transmat, layout: SequenceLayout):
    """The most probable state path of every sequence (max-product in log space).

    Returns
    -------
    log_prob : (B,) float64
        log p(x, z*) of each sequence, in the batch's order.
    states : (N,) int64
        z*_t of every row.
    """
    whole = layout.whole
    dtype = log_b.dtype
    lb_ = log_b[whole.packed]
    log_pi = startprob.to(F64).log().to(dtype)
    log_A = transmat.to(F64).log().to(dtype)
    delta = torch.empty_like(lb_)
    psi = torch.zeros(lb_.shape, dtype=torch.int64, device=lb_.device)
    for t, off, bs in whole.steps():
        if t == 0:
            delta[:bs] = log_pi + lb_[:bs]
        else:
            prev = whole.offsets[t - 1]
            best, arg = (delta[prev:prev + bs, :, None] + log_A).max(1)
            delta[off:off + bs] = best + lb_[off:off + bs]
            psi[off:off + bs] = arg
    packed_states = torch.empty(lb_.shape[0], dtype=torch.int64, device=lb_.device)
    z = torch.empty(whole.n_chains, dtype=torch.int64, device=lb_.device)
    for t, off, bs in reversed(list(whole.steps())):
        a, b = whole.ends_at(t)
        if a:
            nxt = whole.offsets[t + 1]
            z[:a] = psi[nxt:nxt + a].gather(1, z[:a, None]).squeeze(1)
        z[a:b] = delta[off + a:off + b].argmax(1)
        packed_states[off:off + bs] = z[:bs]
    log_prob = torch.empty(whole.n_chains, dtype=F64, device=lb_.device)
    log_prob[whole.order] = delta[whole.last].to(F64).max(1).values
    states = torch.empty_like(packed_states)
    states[whole.packed] = packed_states
    return log_prob, states


# --------------------------------------------------------------------------- the EM model
def split_batch(X: torch.Tensor, n_states: int = 2):
    """(features, sequence layout) of a batch whose last column marks sequence starts."""
    return X[:, :-1], SequenceLayout.from_starts(X[:, -1], n_states=n_states)


def _dirichlet_map(counts: torch.Tensor, prior, allowed: torch.Tensor, fallback: torch.Tensor):
    """MAP of a categorical under Dirichlet(prior) along the last axis: counts + prior - 1,
    clipped at 0, zero where not allowed (structural zeros), normalised; ``fallback`` for a
    row with nothing."""
    prior = torch.as_tensor(prior, dtype=F64, device=counts.device)
    num = (counts + (prior - 1)).clamp_min(0.0) * allowed  # (counts + prior - 1 loses tiny counts)
    total = num.sum(-1, keepdim=True)
    return torch.where(total > 0, num / total.clamp_min(1e-300), fallback)


class HMMModel:
    """E-step, M-step, density and sampler of an HMM with ``family`` emissions.

    Parameters
    ----------
    family : Family
        The emission family (prepared).
    dtype : torch.dtype
        Compute dtype of the emission densities and the scaled recursions.
    frozen : set of str
        Parameters held at their current values: ``"startprob"``,
        ``"transmat"`` and any of the family's parameter names.
    startprob_prior, transmat_prior : float or array
        Dirichlet concentrations (1: maximum likelihood; c > 1 adds c - 1
        pseudo-counts).
    emission_prior : callable, optional
        ``emission_prior(stats) -> stats``: the emission statistics with a
        conjugate prior's pseudo-statistics added (MAP-EM), before the maximiser.
    """

    def __init__(self, family: Family, dtype: torch.dtype, frozen=(), startprob_prior=1.0,
                 transmat_prior=1.0, emission_prior=None):
        self.family = family
        self.dtype = dtype
        self.frozen = set(frozen)
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.emission_prior = emission_prior

    # ------------------------------------------------------------ densities
    def _split(self, p: HMMParams, X: torch.Tensor):
        """(features packed by the layout, in the compute dtype; layout) of a batch.

        The last batch's are kept: an in-memory source serves the same rows at every
        pass (a view of the same memory, held here so that it cannot be reused), and
        the layout and the packed copy are then built once per fit, not per iteration.
        """
        key = (X.data_ptr(), tuple(X.shape), X.stride(), X.device, X.dtype)
        cached = getattr(self, "_last", None)
        if cached is not None and cached[0] == key:
            return cached[2], cached[3]
        Xf, layout = split_batch(X, p.transmat.shape[0])
        Xc = Xf.to(self.dtype) if Xf.dtype != self.dtype else Xf
        packed = layout.pack(Xc)
        self._last = (key, X, packed, layout)
        return packed, layout

    def emission_log_prob(self, p: HMMParams, X: torch.Tensor) -> torch.Tensor:
        """log p(x_t | z_t = k), shape (N, K), in the compute dtype."""
        return self.family.log_prob(p.params, X).to(self.dtype)

    def _posterior(self, p, Xp, layout, weight=None, need_posterior=True) -> Posterior:
        """Forward-backward on packed rows ``Xp`` (gamma packed)."""
        seq_weight = None if weight is None else weight[layout.starts]
        return forward_backward_packed(self.emission_log_prob(p, Xp), p.startprob, p.transmat,
                                       layout, seq_weight, need_posterior)

    # ------------------------------------------------------------ E-step
    def expected_statistics(self, p: HMMParams, X, weight):
        Xp, layout = self._split(p, X)
        post = self._posterior(p, Xp, layout, weight)
        stats = {FAMILY_PREFIX + k: v
                 for k, v in self.family.statistics(p.params, Xp, post.gamma).items()}
        stats[START] = post.gamma[layout.seq_first].sum(0, dtype=F64)
        stats[TRANS] = post.xi
        stats[OCCUPANCY] = (post.gamma.sum(0, dtype=F64) if post.occupancy is None
                            else post.occupancy)
        if weight is None:
            log_lik = post.log_px.sum()
        else:
            log_lik = post.log_px @ weight.to(F64)[layout.starts]
        return stats, log_lik

    def log_likelihood(self, p: HMMParams, X) -> torch.Tensor:
        """log p(x) of every sequence of a batch, in the batch's order, float64."""
        Xp, layout = self._split(p, X)
        return self._posterior(p, Xp, layout, need_posterior=False).log_px

    def state_marginals(self, p: HMMParams, X) -> torch.Tensor:
        """p(z_t = k | x) of every row of a batch, shape (N, K)."""
        Xp, layout = self._split(p, X)
        return layout.unpack(self._posterior(p, Xp, layout).gamma)

    def decode(self, p: HMMParams, X):
        """Viterbi: (log p(x, z*) per sequence of the batch, z* per row)."""
        Xp, layout = self._split(p, X)
        log_b = layout.unpack(self.emission_log_prob(p, Xp))
        return viterbi(log_b, p.startprob, p.transmat, layout)

    # ------------------------------------------------------------ M-step
    def family_stats(self, stats):
        n = len(FAMILY_PREFIX)
        return {k[n:]: v for k, v in stats.items() if k.startswith(FAMILY_PREFIX)}

    def maximize(self, stats, p: HMMParams) -> HMMParams:
        startprob, transmat = p.startprob, p.transmat
        if "startprob" not in self.frozen:
            startprob = _dirichlet_map(stats[START], self.startprob_prior,
                                       (p.startprob > 0).to(F64), p.startprob)
        if "transmat" not in self.frozen:
            transmat = _dirichlet_map(stats[TRANS], self.transmat_prior,
                                      (p.transmat > 0).to(F64), p.transmat)
        fixed = {k: v for k, v in p.params.items() if k in self.frozen}
        fam_stats = self.family_stats(stats)
        if self.emission_prior is not None:
            fam_stats = self.emission_prior(fam_stats)
        params = self.family.maximize(fam_stats, p.params, fixed or None)
        for k, v in fixed.items():
            params[k] = v
        nk = stats[OCCUPANCY]
        weights = torch.where(nk.sum() > 0, nk / nk.sum().clamp_min(1e-300), p.weights)
        return HMMParams(startprob, transmat, params, weights)

    # ------------------------------------------------------------ stepwise EM
    def moments(self, stats, p: HMMParams):
        """Each group of statistics per unit of its own total weight, with the anchor."""
        starts, steps = stats[START].sum().clamp_min(1e-300), stats[OCCUPANCY].sum().clamp_min(1e-300)
        pairs = stats[TRANS].sum().clamp_min(1e-300)
        out = {k: v / steps for k, v in stats.items()}
        out[START], out[TRANS] = stats[START] / starts, stats[TRANS] / pairs
        return (out, p)

    def moments_of(self, p: HMMParams):
        w = p.weights.to(F64)
        fam = self.family.statistics_of(p.params, w)
        out = {FAMILY_PREFIX + k: v for k, v in fam.items()}
        out[START] = p.startprob.to(F64).clone()
        out[TRANS] = w[:, None] * p.transmat.to(F64)
        out[OCCUPANCY] = w.clone()
        return (out, p)

    # the blend of two (statistics, anchor) moments and the M-step from one: the mixture's
    blend = FamilyMixtureModel.blend
    from_moments = FamilyMixtureModel.from_moments

    # ------------------------------------------------------------ sampling
    def sample(self, p: HMMParams, n_sequences: int, length: int, generator: torch.Generator):
        """``n_sequences`` sequences of ``length`` steps: (X (n * length, D), z (n * length,)),
        sequence-major (the rows of sequence i are i * length ... (i + 1) * length - 1)."""
        device = p.startprob.device
        z = torch.empty(n_sequences, length, dtype=torch.int64, device=device)
        z[:, 0] = torch.multinomial(p.startprob.to(F64), n_sequences, replacement=True,
                                    generator=generator)
        A = p.transmat.to(F64)
        for t in range(1, length):
            z[:, t] = torch.multinomial(A[z[:, t - 1]], 1, generator=generator).squeeze(1)
        flat = z.reshape(-1)
        return self.family.sample(p.params, flat, generator), flat
