"""Quick GPU check of LDA: every method on CUDA from torch sparse counts, same API as on CPU.

Not yet run on a GPU (written where only CPUs were at hand; ``python
bench/lda_gpu_smoke.py 3000`` on a CPU runs the same code as a dry run).

Synthetic corpus from a known LDA (no download): fits each method on CUDA, checks
topic recovery, transform / perplexity / coherence / save-load on the GPU, and
times one batch-VI fit on CUDA against the same fit on the CPU.
"""

import sys
import tempfile
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.optimize import linear_sum_assignment

import elbokit

warnings.simplefilter("ignore")


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


rng = np.random.default_rng(0)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a dry run of the same code
N = int(sys.argv[1]) if len(sys.argv) > 1 else 30_000
V, K, L = 5_000, 50, 60
beta = rng.dirichlet(np.full(V, 0.05), K)
theta = rng.dirichlet(np.full(K, 0.1), N)


P = theta @ beta
X = sp.csr_matrix(np.stack([rng.multinomial(L, P[d]) for d in range(N)]))
Xt = torch.sparse_csr_tensor(torch.as_tensor(X.indptr), torch.as_tensor(X.indices),
                             torch.as_tensor(X.data, dtype=torch.float32), X.shape).to(DEVICE)
print(f"{N} docs, V={V}, K={K}, nnz={X.nnz}; device "
      f"{torch.cuda.get_device_name() if DEVICE == 'cuda' else 'cpu'}")
for method, kw in [("batch", dict(max_iter=10, tol=0.0)),
                   ("online", dict(max_iter=5, batch_size=4096)),
                   ("gibbs", dict(max_iter=20))]:
    lda = elbokit.LDA(K, method=method, random_state=0, **kw)
    sync(); t = time.perf_counter()
    lda.fit(Xt)
    sync(); wall = time.perf_counter() - t
    tw = lda.topic_word_.cpu().numpy()
    cost = np.abs(tw[:, None, :] - beta[None]).sum(2)
    r, c = linear_sum_assignment(cost)
    mix = lda.transform(Xt)
    assert mix.device.type == DEVICE and torch.isfinite(mix).all()
    perp = lda.perplexity(X[:2000])
    npmi = lda.coherence(X[:5000]).mean()
    with tempfile.TemporaryDirectory() as d:
        lda.save(d + "/m")
        back = elbokit.load(d + "/m", device=DEVICE)
        assert torch.equal(back.components_, lda.components_)
    print(f"{method:7s} fit {wall:6.2f} s  topic L1 median {np.median(cost[r, c]):.3f}  "
          f"perplexity {perp:8.1f}  NPMI {npmi:.3f}  components_ on {lda.components_.device}")
lda_cpu = elbokit.LDA(K, max_iter=3, tol=0.0, random_state=0)
t = time.perf_counter(); lda_cpu.fit(X); t_cpu = time.perf_counter() - t
lda_gpu = elbokit.LDA(K, max_iter=3, tol=0.0, random_state=0)
sync(); t = time.perf_counter(); lda_gpu.fit(Xt); sync()
t_gpu = time.perf_counter() - t
print(f"batch VI, 3 iterations: CPU ({torch.get_num_threads()} threads) {t_cpu:.2f} s, "
      f"{DEVICE} {t_gpu:.2f} s, ratio {t_cpu / t_gpu:.1f}x")
