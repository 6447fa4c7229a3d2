"""PPCA and factor analysis: elbokit vs scikit-learn's PCA.score and FactorAnalysis.

Per data set (real: digits without its constant pixels, breast_cancer and
wine standardised, Fashion-MNIST 5,000 x 784 scaled to [0, 1] without
constant pixels):

* PPCA: elbokit's maximum-likelihood mean log p(x) against
  ``PCA(q).score`` (whose covariance divides by n - 1, so the two differ by
  about D / (4 n^2)) and the time of each fit;
* factor analysis: both fitted to the same tolerance on the per-sample mean
  log-likelihood (scikit-learn's ``tol`` is on the total, so it gets
  tol * n), their final ``score``, iterations and seconds, and the ratio.

    .venv/bin/python bench/factor.py [--tol 1e-6] [--q 5 10]
"""

from __future__ import annotations

import argparse
import gzip
import os
import time
import warnings

import numpy as np
from sklearn import datasets
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis
from sklearn.preprocessing import StandardScaler

from elbokit import PPCA, FactorAnalysis


def sets():
    digits = datasets.load_digits().data.astype(np.float64)
    out = {"digits": digits[:, digits.std(0) > 0],
           "breast_cancer": StandardScaler().fit_transform(datasets.load_breast_cancer().data),
           "wine": StandardScaler().fit_transform(datasets.load_wine().data)}
    path = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    if os.path.exists(path):
        with gzip.open(path) as f:
            raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)[:5000] / 255.0
        out["fashion[:5000]"] = raw[:, raw.std(0) > 0]
    return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--q", type=int, nargs="+", default=[5, 10])
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"load: {os.getloadavg()}")
    for name, X in sets().items():
        n, D = X.shape
        for q in args.q:
            t_ours, ours = timed(lambda: PPCA(q).fit(X))
            t_sk, sk = timed(lambda: PCA(q).fit(X))
            diff = ours.score(X) - sk.score(X)
            print(f"PPCA {name:16s} {n:5d}x{D:<4d} q={q:<3d} ours {ours.score(X):12.6f} "
                  f"PCA.score {sk.score(X):12.6f} diff {diff:+.2e} (D/4n^2 {D / (4 * n * n):.2e})  "
                  f"s ours {t_ours:.3f} sklearn {t_sk:.3f}", flush=True)
            t_ours, ours = timed(lambda: FactorAnalysis(q, tol=args.tol, max_iter=100000).fit(X))
            t_sk, sk = timed(lambda: SkFactorAnalysis(q, tol=args.tol * n, max_iter=100000).fit(X))
            print(f"FA   {name:16s} {n:5d}x{D:<4d} q={q:<3d} ours {ours.score(X):12.6f} "
                  f"sklearn {sk.score(X):12.6f} diff {ours.score(X) - sk.score(X):+.2e}  "
                  f"iterations ours {ours.n_iter_} sklearn {sk.n_iter_}  s ours {t_ours:.3f} "
                  f"sklearn {t_sk:.3f} ratio {t_sk / t_ours:.1f}x", flush=True)
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
