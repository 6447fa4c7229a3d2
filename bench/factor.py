"""PPCA and factor analysis: elbokit vs scikit-learn's PCA.score and FactorAnalysis.

Per data set (real: digits without its constant pixels, breast_cancer and
wine standardised, Fashion-MNIST's first 5,000 and all 60,000 training images
scaled to [0, 1], read with elbokit's IDX reader; constant pixels dropped):

* PPCA: elbokit's maximum-likelihood mean log p(x) against
  ``PCA(q).score`` (whose covariance divides by n - 1, so the two differ by
  about D / (4 n^2)), the seconds of each fit and their ratio;
* factor analysis at the same tolerance on the per-sample mean
  log-likelihood (scikit-learn's ``tol`` is on the total, so it gets
  tol * n): final ``score``, iterations, seconds and the ratio;
* factor analysis as a user runs it: both with their defaults (scikit-learn:
  ``svd_method="randomized"``, its fastest path at high D), fit end to end on
  float32 input: score, seconds and the ratio.

Ratios are scikit-learn's seconds over elbokit's (> 1: elbokit is faster), each
side best of ``--repeat`` runs taken alternately in one process.

    .venv/bin/python bench/factor.py [--tol 1e-6] [--q 5 10] [--repeat 2] [--sets digits fashion]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from sklearn import datasets
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SkFactorAnalysis
from sklearn.preprocessing import StandardScaler

from elbokit import PPCA, FactorAnalysis
from elbokit.data.idx import load_idx_images

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def sets(names=None):
    digits = datasets.load_digits().data.astype(np.float64)
    out = {"digits": lambda: digits[:, digits.std(0) > 0],
           "breast_cancer": lambda: StandardScaler().fit_transform(datasets.load_breast_cancer().data),
           "wine": lambda: StandardScaler().fit_transform(datasets.load_wine().data)}
    if os.path.exists(FASHION):
        images = load_idx_images(FASHION)  # float32 in [0, 1]
        out["fashion[:5000]"] = lambda: images[:5000][:, images[:5000].std(0) > 0].astype(np.float64)
        out["fashion"] = lambda: images[:, images.std(0) > 0]
    for name, make in out.items():
        if names is None or any(name.startswith(n) for n in names):
            yield name, make()


def best_of(repeat, *fits):
    """Each fit ``repeat`` times, alternating; (best seconds, last model) per fit."""
    best = [np.inf] * len(fits)
    models = [None] * len(fits)
    for _ in range(repeat):
        for i, fit in enumerate(fits):
            t = time.perf_counter()
            models[i] = fit()
            best[i] = min(best[i], time.perf_counter() - t)
    return list(zip(best, models))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--q", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--sets", nargs="+", default=None, help="name prefixes (default: all)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"load: {os.getloadavg()}  threads: OMP={os.environ.get('OMP_NUM_THREADS')} "
          f"MKL={os.environ.get('MKL_NUM_THREADS')} OPENBLAS={os.environ.get('OPENBLAS_NUM_THREADS')}")
    for name, X in sets(args.sets):
        n, D = X.shape
        X32 = X.astype(np.float32)
        for q in args.q:
            tag = f"{name:14s} {n:5d}x{D:<4d} q={q:<3d}"
            (t_ours, ours), (t_sk, sk) = best_of(args.repeat, lambda: PPCA(q).fit(X), lambda: PCA(q).fit(X))
            diff = ours.score(X) - sk.score(X)
            print(f"PPCA       {tag} ours {ours.score(X):12.6f} PCA.score {sk.score(X):12.6f} "
                  f"diff {diff:+.2e} (D/4n^2 {D / (4 * n * n):.2e})  s ours {t_ours:.3f} "
                  f"sklearn {t_sk:.3f} ratio {t_sk / t_ours:.2f}x", flush=True)
            (t_ours, ours), (t_sk, sk) = best_of(
                args.repeat, lambda: FactorAnalysis(q, tol=args.tol, max_iter=100000).fit(X),
                lambda: SkFactorAnalysis(q, tol=args.tol * n, max_iter=100000).fit(X))
            print(f"FA same tol {tag} ours {ours.score(X):12.6f} sklearn {sk.score(X):12.6f} "
                  f"diff {ours.score(X) - sk.score(X):+.2e}  iterations ours {ours.n_iter_} "
                  f"sklearn {sk.n_iter_}  s ours {t_ours:.3f} sklearn {t_sk:.3f} "
                  f"ratio {t_sk / t_ours:.2f}x", flush=True)
            (t_ours, ours), (t_sk, sk) = best_of(args.repeat, lambda: FactorAnalysis(q).fit(X32),
                                                 lambda: SkFactorAnalysis(q).fit(X32))
            print(f"FA defaults {tag} ours {ours.score(X):12.6f} sklearn {sk.score(X):12.6f} "
                  f"diff {ours.score(X) - sk.score(X):+.2e}  iterations ours {ours.n_iter_} "
                  f"sklearn {sk.n_iter_}  s ours {t_ours:.3f} sklearn {t_sk:.3f} "
                  f"ratio {t_sk / t_ours:.2f}x (float32 input)", flush=True)
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
