"""The HMM math: forward-backward and Viterbi against brute-force enumeration of all
state paths, segments against whole sequences, the log-space fallback, and the
forward-backward example of Wikipedia (the numbers hmmlearn tests its C code with)."""

import itertools
import math

import pytest
import torch

from elbokit.models import hmm, hmm_numba
from elbokit.models.hmm import (
    SequenceLayout,
    forward_backward,
    forward_backward_log,
    segment_length,
    viterbi,
)

F64 = torch.float64


def random_model(K, seed, zero=True):
    g = torch.Generator().manual_seed(seed)
    pi = torch.rand(K, dtype=F64, generator=g) + 0.1
    A = torch.rand(K, K, dtype=F64, generator=g) + 0.05
    if zero:  # a structural zero
        A[0, K - 1] = 0.0
        pi[K - 1] = 0.0
    return pi / pi.sum(), A / A.sum(1, keepdim=True)


def brute_force(log_b, pi, A, lengths, weights):
    """log p(x), gamma, summed xi and the best paths by enumerating every path."""
    K = pi.shape[0]
    N = log_b.shape[0]
    log_px, best_lp = [], []
    gamma = torch.zeros(N, K, dtype=F64)
    xi = torch.zeros(K, K, dtype=F64)
    best_path = torch.zeros(N, dtype=torch.int64)
    start = 0
    for s, L in enumerate(lengths):
        paths, lps = list(itertools.product(range(K), repeat=L)), []
        for z in paths:
            lp = math.log(pi[z[0]]) if pi[z[0]] > 0 else -math.inf
            lp += float(log_b[start, z[0]])
            for t in range(1, L):
                a = float(A[z[t - 1], z[t]])
                lp += (math.log(a) if a > 0 else -math.inf) + float(log_b[start + t, z[t]])
            lps.append(lp)
        lps = torch.tensor(lps, dtype=F64)
        total = torch.logsumexp(lps, 0)
        log_px.append(total)
        for q, z in zip((lps - total).exp(), paths):
            for t in range(L):
                gamma[start + t, z[t]] += q * weights[s]
            for t in range(1, L):
                xi[z[t - 1], z[t]] += q * weights[s]
        b = int(lps.argmax())
        best_lp.append(lps[b])
        best_path[start:start + L] = torch.tensor(paths[b])
        start += L
    return torch.stack(log_px), gamma, xi, torch.stack(best_lp), best_path


CASES = [  # (K, lengths)
    (2, [1, 2, 6]),
    (3, [4, 2, 5, 1, 3, 6]),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"K{c[0]}")
def case(request):
    K, lengths = request.param
    pi, A = random_model(K, seed=K)
    g = torch.Generator().manual_seed(1)
    log_b = 2 * torch.randn(sum(lengths), K, dtype=F64, generator=g)
    w = torch.rand(len(lengths), dtype=F64, generator=g) + 0.5
    return K, lengths, pi, A, log_b, w, brute_force(log_b, pi, A, lengths, w)


PATHS = [  # (segment, recursions, compiled CPU loop)
    (None, forward_backward, True), (None, forward_backward, False), (2, forward_backward, False),
    (3, forward_backward, False), (None, forward_backward_log, False)]


@pytest.mark.parametrize("segment, fb, compiled", PATHS,
                         ids=["compiled", "tensor", "segments2", "segments3", "log"])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_forward_backward_equals_enumeration(case, segment, fb, compiled, dtype, monkeypatch):
    monkeypatch.setattr(hmm, "CPU_KERNEL", compiled and hmm_numba.available())
    K, lengths, pi, A, log_b, w, (log_px, gamma, xi, _, _) = case
    layout = SequenceLayout(torch.tensor(lengths), segment)
    post = fb(log_b.to(dtype), pi, A, layout, w)
    tol = 1e-12 if dtype == F64 else 1e-5
    torch.testing.assert_close(post.log_px, log_px, rtol=tol, atol=tol)
    torch.testing.assert_close(post.gamma.to(F64), gamma, rtol=tol, atol=tol)
    torch.testing.assert_close(post.xi, xi, rtol=tol, atol=tol)
    assert post.gamma[:, K - 1][torch.cumsum(torch.tensor(lengths), 0) - torch.tensor(lengths)].abs().max() == 0


def test_viterbi_equals_the_best_enumerated_path(case):
    K, lengths, pi, A, log_b, w, (_, _, _, best_lp, best_path) = case
    log_prob, states = viterbi(log_b, pi, A, SequenceLayout(torch.tensor(lengths)))
    torch.testing.assert_close(log_prob, best_lp, rtol=1e-12, atol=1e-12)
    assert torch.equal(states, best_path)


def test_segments_equal_whole_sequences_on_long_ones(monkeypatch):
    monkeypatch.setattr(hmm, "CPU_KERNEL", False)
    K = 4
    pi, A = random_model(K, seed=3)
    lengths = torch.tensor([700, 3, 257, 64])
    log_b = 3 * torch.randn(int(lengths.sum()), K, dtype=F64, generator=torch.Generator().manual_seed(2))
    whole = forward_backward(log_b, pi, A, SequenceLayout(lengths))
    cut = forward_backward(log_b, pi, A, SequenceLayout(lengths, segment=19))
    torch.testing.assert_close(cut.log_px, whole.log_px, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(cut.gamma, whole.gamma, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(cut.xi, whole.xi, rtol=1e-9, atol=1e-9)
    assert segment_length(torch.tensor([100_000]), 3, "cpu") == 64
    assert segment_length(torch.full((1000,), 200), 8, "cpu") is None
    monkeypatch.setattr(hmm, "CPU_KERNEL", True)  # the compiled loop: whole sequences on CPUs
    assert segment_length(torch.tensor([100_000]), 3, "cpu") is None


needs_numba = pytest.mark.skipif(not hmm_numba.available(), reason="numba not installed")


def _both(monkeypatch, *args, **kwargs):
    """forward_backward with the compiled loop, then with the tensor recursions."""
    out = []
    for flag in (True, False):
        monkeypatch.setattr(hmm, "CPU_KERNEL", flag)
        out.append(forward_backward(*args, **kwargs))
    return out


@needs_numba
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_compiled_recursions_equal_the_tensor_ones(monkeypatch, dtype):
    K = 4
    pi, A = random_model(K, seed=5)
    g = torch.Generator().manual_seed(3)
    lengths = torch.randint(1, 60, (40,), generator=g)
    log_b = (4 * torch.randn(int(lengths.sum()), K, dtype=F64, generator=g)).to(dtype)
    w = torch.rand(40, dtype=F64, generator=g) + 0.5
    layout = SequenceLayout(lengths)
    tol = 1e-12 if dtype == F64 else 2e-5
    for weight in (None, w):
        ours, tensor = _both(monkeypatch, log_b, pi, A, layout, weight)
        assert ours.gamma.dtype == dtype
        torch.testing.assert_close(ours.log_px, tensor.log_px, rtol=tol, atol=0)
        torch.testing.assert_close(ours.gamma.to(F64), tensor.gamma.to(F64), rtol=tol, atol=tol)
        torch.testing.assert_close(ours.xi, tensor.xi, rtol=tol, atol=tol)
        torch.testing.assert_close(ours.occupancy, tensor.gamma.sum(0, dtype=F64), rtol=tol, atol=0)
    ours, tensor = _both(monkeypatch, log_b, pi, A, layout, need_posterior=False)
    torch.testing.assert_close(ours.log_px, tensor.log_px, rtol=tol, atol=0)
    # the threads' ranges of sequences do not change any sequence's result
    chains = layout.chains
    one = hmm_numba.forward_backward(layout.pack(log_b), pi, A, chains, threads=1)
    three = hmm_numba.forward_backward(layout.pack(log_b), pi, A, chains, threads=3)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])
    torch.testing.assert_close(one[2], three[2], rtol=1e-13, atol=0)


@needs_numba
def test_compiled_recursions_hand_underflow_to_the_exact_paths(monkeypatch):
    pi = torch.tensor([0.5, 0.5], dtype=F64)
    A = torch.eye(2, dtype=F64)
    layout = SequenceLayout(torch.tensor([6]))
    # state 1's emissions are 800 nats below state 0's (beyond exp's range once shifted),
    # but the last observation is impossible in state 0, and no path leaves its state
    log_b = torch.tensor([[0.0, -800.0]] * 5 + [[-math.inf, 0.0]], dtype=F64)
    assert hmm_numba.forward_backward(log_b, pi, A, layout.chains) is None
    ours, tensor = _both(monkeypatch, log_b, pi, A, layout)
    for post in (ours, tensor):
        torch.testing.assert_close(post.log_px, torch.tensor([math.log(0.5) - 4000], dtype=F64),
                                   rtol=1e-14, atol=0)
        torch.testing.assert_close(post.gamma[:, 1], torch.ones(6, dtype=F64))
    # every reachable scale underflows (test below): the loop refuses, log space answers
    pi0 = torch.tensor([1.0, 0.0], dtype=F64)
    A0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=F64)
    log_b0 = torch.tensor([[-2000.0, 0.0]] * 5, dtype=F64)
    assert hmm_numba.forward_backward(log_b0, pi0, A0, SequenceLayout(torch.tensor([5])).chains) is None


def test_jit_compiles_without_a_disk_cache_where_numba_refuses_one(monkeypatch):
    numba = pytest.importorskip("numba")
    real = numba.njit

    def refusing(*args, cache=False, **kwargs):
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'f.py'")
        return real(*args, **kwargs)

    monkeypatch.setattr(numba, "njit", refusing)

    def twice(x):  # pragma: no cover - compiled
        return 2 * x

    assert hmm_numba.jit(twice)(21) == 42


def test_scaling_underflow_falls_back_to_log_space():
    # the only reachable state has an emission 2000 nats below the others: every scale
    # underflows; the result must still be exact (hmmlearn's "scaling" raises here)
    pi = torch.tensor([1.0, 0.0], dtype=F64)
    A = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=F64)
    log_b = torch.tensor([[-2000.0, 0.0]] * 5, dtype=F64)
    layout = SequenceLayout(torch.tensor([5]))
    post = forward_backward(log_b.float(), pi, A, layout)
    assert torch.isfinite(post.log_px).all()
    torch.testing.assert_close(post.log_px, torch.tensor([-10000.0], dtype=F64), rtol=1e-6, atol=0)
    torch.testing.assert_close(post.gamma[:, 0].double(), torch.ones(5, dtype=F64))


def test_wikipedia_forward_backward_example():
    # https://en.wikipedia.org/wiki/Forward-backward_algorithm (hmmlearn's reference numbers)
    frame = torch.tensor([[0.9, 0.2], [0.9, 0.2], [0.1, 0.8], [0.9, 0.2], [0.9, 0.2]], dtype=F64)
    A = torch.tensor([[0.7, 0.3], [0.3, 0.7]], dtype=F64)
    pi = torch.tensor([0.5, 0.5], dtype=F64)
    layout = SequenceLayout(torch.tensor([5]))
    post = forward_backward(frame.log(), pi, A, layout)
    assert round(float(post.log_px), 4) == -3.3725
    expected = torch.tensor([[0.8673, 0.1327], [0.8204, 0.1796], [0.3075, 0.6925],
                             [0.8204, 0.1796], [0.8673, 0.1327]], dtype=F64)
    torch.testing.assert_close(post.gamma, expected, atol=1e-4, rtol=0)
    log_prob, states = viterbi(frame.log(), pi, A, layout)
    assert states.tolist() == [0, 0, 1, 0, 0]
    assert round(float(log_prob), 4) == -4.4590
