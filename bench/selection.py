"""Model selection: elbokit.select against scikit-learn's BIC on its own GaussianMixture.

1. Generated data with a known number of components and covariance structure
   (50 seeds per scenario): how often each method chooses the true K, and the
   true (K, covariance type). scikit-learn: GaussianMixture for every K and
   type with its defaults (k-means start, n_init=1), lowest BIC. elbokit:
   ``select`` (BIC) with its defaults (Ward + k-means starts shared across
   types), with and without mclust's prior.
2. Real data bundled with scikit-learn (iris, wine, breast cancer, diabetes):
   the BIC and ICL tables by K and covariance type, and each method's choice.

    python bench/selection.py [--seeds 50] [--out bench/results/selection.txt]
    python bench/selection.py --scenarios full-3 --first-seed 50 --seeds 200 --skip-real
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.mixture import GaussianMixture as SklearnGMM
from sklearn.preprocessing import StandardScaler

import elbokit

TYPES = ("full", "tied", "diag", "spherical")


def random_spd(rng, d, kind, scale):
    if kind == "spherical":
        return np.eye(d) * scale * rng.uniform(0.5, 1.5)
    if kind == "diag":
        return np.diag(scale * rng.uniform(0.2, 2.0, d))
    A = rng.normal(size=(d, d))
    Q, _ = np.linalg.qr(A)
    return Q @ np.diag(scale * rng.uniform(0.1, 2.0, d)) @ Q.T


def scenario(name, seed):
    """(X, true K, true covariance type) for one seed of a scenario."""
    rng = np.random.default_rng(seed)
    if name.startswith("cigars"):  # scikit-learn#34845: parallel cigars, apart on the short axis
        K = int(name[-1])
        angle = rng.uniform(0, np.pi)
        R = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        cov = R @ np.diag([30.0, 0.15]) @ R.T
        counts = rng.multinomial(120 * K, np.full(K, 1 / K))
        parts = [rng.multivariate_normal(R @ [rng.normal(0, 1), 2.0 * k], cov, c)
                 for k, c in enumerate(counts)]
        return np.concatenate(parts), K, "tied"
    K, d, kind, n, sep = {"full-3": (3, 3, "full", 300, 2.5), "tied-3": (3, 3, "tied", 300, 2.5),
                          "diag-4": (4, 4, "diag", 400, 3.0), "spherical-5": (5, 2, "spherical", 400, 3.0),
                          "full-2-elongated": (2, 2, "full", 200, 2.5)}[name]
    tied = random_spd(rng, d, "full", 1.0)
    parts, labels = [], []
    means = [np.zeros(d)]
    while len(means) < K:  # centres at least `sep` apart (in units of the spread)
        c = rng.normal(size=d) * sep * 1.5
        if min(np.linalg.norm(c - m) for m in means) >= sep:
            means.append(c)
    weights = rng.dirichlet(np.full(K, 5.0))
    counts = rng.multinomial(n, weights)
    for k in range(K):
        cov = tied if kind == "tied" else random_spd(rng, d, kind, 1.0)
        if name == "full-2-elongated":
            Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
            cov = Q @ np.diag([6.0, 0.3]) @ Q.T
        parts.append(rng.multivariate_normal(means[k], cov, counts[k]))
        labels += [k] * counts[k]
    return np.concatenate(parts), K, kind


def sklearn_choice(X, ks, seed):
    best = None
    for ct in TYPES:
        for k in ks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    gm = SklearnGMM(k, covariance_type=ct, random_state=seed).fit(X)
                except ValueError:
                    continue
            b = gm.bic(X)
            if best is None or b < best[0]:
                best = (b, k, ct)
    return best[1], best[2]


def elbokit_choice(X, ks, seed, prior):
    s = elbokit.select(X, ks, random_state=seed, prior=prior, dtype="float64")
    b = s.best_settings
    return b["K"], b["covariance_type"]


SCENARIOS = ("full-3", "tied-3", "diag-4", "spherical-5", "full-2-elongated", "cigars-2", "cigars-3")


def generated(n_seeds, out, names=SCENARIOS, first_seed=0):
    ks = range(1, 8)
    print(f"\n## Generated data: {n_seeds} seeds per scenario (seeds {first_seed}.."
          f"{first_seed + n_seeds - 1}), K in 1..7, 4 covariance types", file=out)
    print("chosen true K (true K and type) out of seeds; lowest BIC\n", file=out)
    print(f"{'scenario':18s} {'sklearn GMM BIC':>18s} {'elbokit select':>18s} {'elbokit + prior':>18s}"
          f" {'seconds sk/el/el+p':>22s}", file=out)
    totals = np.zeros((3, 2), dtype=int)
    for name in names:
        hits = np.zeros((3, 2), dtype=int)
        secs = np.zeros(3)
        for seed in range(first_seed, first_seed + n_seeds):
            X, K, kind = scenario(name, seed)
            for j, fn in enumerate((lambda: sklearn_choice(X, ks, seed),
                                    lambda: elbokit_choice(X, ks, seed, None),
                                    lambda: elbokit_choice(X, ks, seed, "default"))):
                t = time.perf_counter()
                k, ct = fn()
                secs[j] += time.perf_counter() - t
                hits[j, 0] += k == K
                hits[j, 1] += (k == K) and (ct == kind)
        totals += hits
        cells = [f"{h[0]:3d} ({h[1]:3d})".rjust(18) for h in hits]
        print(f"{name:18s} " + " ".join(cells) + f" {secs[0]:6.1f}/{secs[1]:6.1f}/{secs[2]:6.1f}",
              file=out, flush=True)
    cells = [f"{h[0]:3d} ({h[1]:3d})".rjust(18) for h in totals]
    print(f"{'total':18s} " + " ".join(cells), file=out, flush=True)


def real(out):
    sets = {"iris (raw)": (load_iris().data, 3),
            "wine (standardised)": (StandardScaler().fit_transform(load_wine().data), 3),
            "breast cancer (standardised)": (StandardScaler().fit_transform(load_breast_cancer().data), 2),
            "diabetes (standardised)": (StandardScaler().fit_transform(load_diabetes().data), None)}
    for name, (X, n_classes) in sets.items():
        ks = range(1, 10)
        print(f"\n## {name}: {X.shape[0]} x {X.shape[1]}"
              + (f", {n_classes} known classes" if n_classes else ""), file=out)
        for prior in (None, "default"):
            t = time.perf_counter()
            s = elbokit.select(X, ks, prior=prior, dtype="float64")
            secs = time.perf_counter() - t
            for score in ("BIC", "ICL"):
                curves = s.pivot(score)
                print(f"\n{score} by K and covariance type (elbokit, prior={prior!r}; lower is "
                      f"better; {secs:.1f} s for the grid)", file=out)
                print("type      " + "".join(f"{k:>10d}" for k in ks), file=out)
                for ct in TYPES:
                    row = curves[("gaussian", ct)]
                    print(f"{ct:10s}" + "".join(f"{row[k]:10.1f}" for k in ks), file=out)
            icl_best = min(range(len(s.rows)), key=lambda i: s.rows[i][s.header.index("ICL")]
                           if s.models[i] is not None else np.inf)
            print(f"elbokit (prior={prior!r}): BIC chooses {s.best_settings['covariance_type']} "
                  f"K={s.best_settings['K']}; ICL chooses {s.rows[icl_best][1]} "
                  f"K={s.rows[icl_best][2]}", file=out)
        k, ct = sklearn_choice(X, ks, 0)
        print(f"scikit-learn GaussianMixture BIC chooses {ct} K={k}", file=out, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--out", default=None)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help="comma-separated, from: " + ", ".join(SCENARIOS))
    ap.add_argument("--skip-generated", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args()
    out = sys.stdout if args.out is None else open(args.out, "w")
    print(f"# Model selection benchmark (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores at start)", file=out)
    if not args.skip_generated:
        names = [s for s in args.scenarios.split(",") if s]
        unknown = sorted(set(names) - set(SCENARIOS))
        if unknown:
            ap.error(f"--scenarios: unknown {unknown}; choose from {', '.join(SCENARIOS)}")
        generated(args.seeds, out, names, args.first_seed)
    if not args.skip_real:
        real(out)
    print(f"\n(load average {os.getloadavg()[0]:.1f} at the end)", file=out)


if __name__ == "__main__":
    main()
