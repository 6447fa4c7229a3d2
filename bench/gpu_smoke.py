"""Quick GPU check: one GaussianMixture fit on CUDA vs scikit-learn on CPU (same start)."""

import time
import warnings

import numpy as np
import torch
from sklearn.mixture import GaussianMixture as SK

import elbokit

warnings.simplefilter("ignore")
rng = np.random.default_rng(0)
N, D, K, iters = 100_000, 32, 32, 10
X = (rng.normal(size=(N, D)) + rng.normal(scale=4, size=(K, D))[rng.integers(0, K, N)]).astype(np.float32)
for ct in ("full", "diag"):
    init = elbokit.GaussianMixture(K, covariance_type=ct, max_iter=1, random_state=0,
                                   init_params="random_from_data").fit(X[:20000])
    kw = dict(covariance_type=ct, max_iter=iters, tol=0, weights_init=init.weights_,
              means_init=init.means_, precisions_init=init.precisions_)
    t = time.perf_counter(); sk = SK(K, **kw).fit(X.astype(np.float64)); t_sk = time.perf_counter() - t
    Xc = torch.as_tensor(X, device="cuda")
    elbokit.GaussianMixture(K, **kw).fit(Xc)  # warm-up
    torch.cuda.synchronize(); t = time.perf_counter()
    gm = elbokit.GaussianMixture(K, **kw).fit(Xc)
    torch.cuda.synchronize(); t_gpu = time.perf_counter() - t
    print(f"{ct}: sklearn CPU {t_sk / iters * 1e3:.1f} ms/iter, elbokit CUDA {t_gpu / (iters + 1) * 1e3:.2f} "
          f"ms/iter, ratio {t_sk / iters / (t_gpu / (iters + 1)):.0f}x; mean log p "
          f"sklearn {sk.score(X):.5f} elbokit {gm.score(Xc):.5f}")
