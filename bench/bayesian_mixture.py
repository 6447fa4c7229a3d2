"""BayesianGaussianMixture: elbokit against scikit-learn, side by side in one process.

1. Agreement from the same start (float64, reg_covar=0): elbokit's globals are
   given to scikit-learn (its warm start), both run the same iterations; the
   largest differences of the parameters and of scikit-learn's lower bound
   (elbokit's ELBO less the constant scikit-learn drops) are printed.
2. Time per iteration on n x D data with K components (default 100k x 32,
   K = 32), from that start: elbokit float32 (its default) and float64
   against scikit-learn on float64 and on float32 input (its fastest path);
   per-iteration = (time of b iterations - time of a) / (b - a), the best of
   ``--repeats``.
3. What a user waits for: default fits (initialisation included) and where
   they end (iterations, per-sample ELBO).

    python bench/bayesian_mixture.py [--n 100000 --d 32 --k 32 --types full,diag] [--threads 1]

``--threads`` limits torch and scikit-learn's BLAS (threadpoolctl) alike; on a
machine shared with other jobs, 1 thread each gives comparable figures (torch's
OpenMP threads wait on descheduled siblings under oversubscription), and
``--clock cpu`` times with the process's CPU time instead of the wall clock (at
1 thread: the work done, not the time spent descheduled).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn.mixture import BayesianGaussianMixture as SklearnBGMM
from threadpoolctl import threadpool_limits

import elbokit
from elbokit.models.bayesian_mixture import sklearn_bound_offset

warnings.simplefilter("ignore")
clock = time.perf_counter  # --clock cpu: time.process_time


def data(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 3
    X = centres[rng.integers(k, size=n)] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(1, d))
    return X + 10.0  # an offset, as real data has


def start(X, k, ct, **kw):
    return elbokit.BayesianGaussianMixture(k, covariance_type=ct, max_iter=0, random_state=0,
                                           dtype="float64", **kw).fit(X)


def sklearn_from(b0, X, n_iter, **kw):
    sk = SklearnBGMM(n_components=b0.n_components, covariance_type=b0.covariance_type,
                     max_iter=n_iter, tol=0, warm_start=True, **kw)
    sk._check_parameters(X)
    wc = b0.weight_concentration_
    cast = (lambda a: np.asarray(a, dtype=X.dtype)) if X.dtype == np.float32 else (lambda a: a)
    sk._set_parameters((tuple(wc) if np.ndim(wc) == 2 else wc, b0.mean_precision_, cast(b0.means_),
                        b0.degrees_of_freedom_, cast(b0.covariances_), cast(b0.precisions_cholesky_)))
    sk.converged_, sk.lower_bound_ = False, -np.inf
    t = clock()
    sk.fit(X)
    return clock() - t, sk


def elbokit_from(b0, X, n_iter, dtype, **kw):
    b = elbokit.BayesianGaussianMixture(b0.n_components, covariance_type=b0.covariance_type,
                                        dtype=dtype, **kw)
    for name in b0._fitted_attributes:
        setattr(b, name, getattr(b0, name))
    b.set_params(warm_start=True, max_iter=n_iter, tol=0)
    t = clock()
    b.fit(X)
    return clock() - t, b


def agreement(X, k, ct, n_iter):
    b0 = start(X, k, ct, reg_covar=0.0)
    _, sk = sklearn_from(b0, X, n_iter, reg_covar=0.0)
    _, ours = elbokit_from(b0, X, n_iter, "float64", reg_covar=0.0)
    diffs = {name: float(np.max(np.abs(np.asarray(getattr(ours, name)) - np.asarray(getattr(sk, name)))))
             for name in ("weights_", "means_", "covariances_", "precisions_cholesky_")}
    offset = sklearn_bound_offset(ours._prior("cpu"), k, X.shape[1], len(X))
    theirs = np.asarray(sk.lower_bounds_, dtype=np.float64).reshape(-1)
    rel = np.max(np.abs(ours.lower_bounds_[:-1] * len(X) - offset - theirs) / np.abs(theirs))
    return diffs, float(rel)


def per_iteration(fn, a, b, repeats):
    """(fastest of b iterations - fastest of a) / (b - a): each minimum filters the
    noise of its own runs (a minimum of differences would be biased low)."""
    ta = min(fn(a)[0] for _ in range(repeats))
    tb = min(fn(b)[0] for _ in range(repeats))
    return (tb - ta) / (b - a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--types", default="full,tied,diag,spherical")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-defaults", action="store_true")
    ap.add_argument("--skip-agreement", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    global clock
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    with threadpool_limits(args.threads):
        run(args)


def run(args):
    print(f"# BayesianGaussianMixture vs scikit-learn: {args.n} x {args.d}, K={args.k}; "
          f"torch {torch.__version__}, {os.cpu_count()} cores, {args.threads} thread(s) each, "
          f"{args.clock} clock, "
          f"load average {os.getloadavg()[0]:.1f} at start (GPU: none on this machine, not measured)")
    X = data(args.n, args.d, args.k)
    X32 = X.astype(np.float32)
    small = data(20_000, 8, 6, seed=1)
    if not args.skip_agreement:
        agreements(args, X, small)
    timings(args, X, X32)
    calibration(args, X32)
    if not args.skip_defaults:
        defaults(args, X, X32)
    print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)")


def agreements(args, X, small):
    print("\n## Same start, float64, reg_covar=0 (20k x 8, K=6, 20 iterations; and the big data, 3)")
    for ct in args.types.split(","):
        for name, Xa, k, it in (("20k x 8", small, 6, 20), ("big", X, args.k, 3)):
            diffs, rel = agreement(Xa, k, ct, it)
            print(f"{ct:9s} {name:8s} max |diff|: " + ", ".join(f"{n} {v:.1e}" for n, v in diffs.items())
                  + f"; bound rel. diff {rel:.1e}", flush=True)


def timings(args, X, X32):
    print("\n## Seconds per iteration from the same start (per-iteration = (fastest of "
          f"{args.repeats} fits of 4 iterations - fastest of {args.repeats} of 1) / 3)")
    print(f"{'type':9s} {'elbokit f32':>12s} {'elbokit f64':>12s} {'sklearn f64':>12s} "
          f"{'sklearn f32':>12s} {'ratio vs sk f64':>16s} {'vs sk f32':>10s}")
    for ct in args.types.split(","):
        b0 = start(X, args.k, ct)
        times = [per_iteration(lambda i: elbokit_from(b0, X32, i, "float32"), 1, 4, args.repeats),
                 per_iteration(lambda i: elbokit_from(b0, X, i, "float64"), 1, 4, args.repeats),
                 per_iteration(lambda i: sklearn_from(b0, X, i), 1, 4, args.repeats),
                 per_iteration(lambda i: sklearn_from(b0, X32, i), 1, 4, args.repeats)]
        print(f"{ct:9s} " + " ".join(f"{t:12.3f}" for t in times)
              + f" {times[2] / times[0]:16.1f} {times[3] / times[0]:10.1f}", flush=True)


def calibration(args, X32):
    """The same ratio for GaussianMixture (whose E-step this one shares), in the same run:
    how much of a low ratio is the machine's load."""
    from sklearn.mixture import GaussianMixture as SklearnGMM

    g0 = elbokit.GaussianMixture(args.k, max_iter=1, tol=0, random_state=0).fit(X32)
    init = dict(weights_init=g0.weights_, means_init=g0.means_, precisions_init=g0.precisions_)

    def timed(cls, it):
        t = clock()
        cls(args.k, max_iter=it, tol=0, **init).fit(X32)
        return clock() - t, None

    ours = per_iteration(lambda i: timed(elbokit.GaussianMixture, i), 1, 4, args.repeats)
    theirs = per_iteration(lambda i: timed(SklearnGMM, i), 1, 4, args.repeats)
    print(f"\nGaussianMixture, full, float32, same run: elbokit {ours:.3f} s, scikit-learn "
          f"{theirs:.3f} s per iteration, ratio {theirs / ours:.1f}", flush=True)


def defaults(args, X, X32):
    print("\n## Default fits, initialisation included (elbokit float32; scikit-learn float32 "
          "input; tol 1e-3: per sample for elbokit, on the total bound for scikit-learn)")
    for ct in args.types.split(","):
        t = clock()
        ours = elbokit.BayesianGaussianMixture(args.k, covariance_type=ct, random_state=0).fit(X32)
        t_ours = clock() - t
        t = clock()
        sk = SklearnBGMM(n_components=args.k, covariance_type=ct, random_state=0).fit(X32)
        t_sk = clock() - t
        sk_elbo = (float(np.ravel(sk.lower_bound_)[0]) + sklearn_bound_offset(
            ours._prior("cpu"), args.k, args.d, len(X))) / len(X)
        print(f"{ct:9s} elbokit {t_ours:7.1f} s, {ours.n_iter_:3d} iterations, ELBO/sample "
              f"{ours.lower_bound_:.4f}, {int((ours.weights_ > 1e-3).sum())} active | "
              f"scikit-learn {t_sk:7.1f} s, {sk.n_iter_:3d} iterations, ELBO/sample ~{sk_elbo:.4f}"
              f", {int((sk.weights_ > 1e-3).sum())} active | ratio {t_sk / t_ours:.1f}", flush=True)


if __name__ == "__main__":
    main()
