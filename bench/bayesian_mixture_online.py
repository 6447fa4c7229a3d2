"""Stochastic VI for BayesianGaussianMixture: how close to the batch optimum, by step schedule.

On several real data sets (scikit-learn's digits, breast cancer, wine, covertype-like
Fashion-MNIST PCA when available), the per-sample ELBO of online VI after a few passes
against batch VI from the same start, for step schedules (step_offset, step_decay):
the defaults were chosen from this table.

    python bench/bayesian_mixture_online.py [--passes 10]
"""

from __future__ import annotations

import argparse
import gzip
import os
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits, load_wine
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

import elbokit

warnings.simplefilter("ignore")
SCHEDULES = [(1.0, 0.6), (1.0, 0.75), (10.0, 0.6), (10.0, 0.75), (64.0, 0.7), (1.0, 0.9)]


def datasets():
    out = {"wine": StandardScaler().fit_transform(load_wine().data),
           "breast cancer": StandardScaler().fit_transform(load_breast_cancer().data),
           "digits (PCA 16)": PCA(16, random_state=0).fit_transform(load_digits().data)}
    path = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if path.exists():
        with gzip.open(path) as f:
            raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)[:20000]
        out["fashion-mnist 20k (PCA 20)"] = PCA(20, random_state=0).fit_transform(raw / 255.0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    print(f"# online VI vs batch VI, K={args.k}, {args.passes} passes, load average "
          f"{os.getloadavg()[0]:.1f}")
    print("per-sample ELBO gap to batch VI (batch - online; smaller is better)")
    print(f"{'data':28s} {'batch size':>10s} " + " ".join(f"{f'{o:g}/{d:g}':>9s}" for o, d in SCHEDULES))
    ranks = []
    for name, X in datasets().items():
        kw = dict(random_state=0, dtype="float64")
        batch = elbokit.BayesianGaussianMixture(args.k, max_iter=300, tol=1e-6, **kw).fit(X)
        size = max(32, len(X) // 20)
        gaps = []
        for offset, decay in SCHEDULES:
            online = elbokit.BayesianGaussianMixture(args.k, algorithm="online", batch_size=size,
                                                     max_iter=args.passes, tol=0, step_offset=offset,
                                                     step_decay=decay, **kw).fit(X)
            gaps.append(batch.lower_bound_ - online.lower_bound_)
        print(f"{name:28s} {size:10d} " + " ".join(f"{g:9.4f}" for g in gaps), flush=True)
        ranks.append(np.argsort(np.argsort(gaps)) + 1)  # 1 = the highest online ELBO
    print("mean rank by the online ELBO reached (1 = best on a set): " + ", ".join(
        f"{o:g}/{d:g} {r:.2f}" for (o, d), r in zip(SCHEDULES, np.mean(ranks, axis=0))))


if __name__ == "__main__":
    main()
