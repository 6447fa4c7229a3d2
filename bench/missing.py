"""Missing values inside EM vs imputing first: held-out log p(x_obs) and imputation error.

On real data (scikit-learn's wine, breast_cancer, iris, diabetes; standardised),
with 10 / 30 / 50 % of the entries removed at random from training and
held-out rows (a 70 / 30 split, every row keeps at least one entry):

With few rows per component a full covariance overfits whatever the method;
the table is printed for reg_covar 1e-3 and 1e-1 (the same for all three).

* ``EM``: ``elbokit.Mixture`` with full-covariance Gaussian components fitted on
  the incomplete rows (the E-step conditions on the observed entries);
* ``mean+GMM``: column means imputed, then scikit-learn's ``GaussianMixture``;
* ``iter+GMM``: scikit-learn's ``IterativeImputer``, then ``GaussianMixture``.

Scores on the held-out rows: the mean log-density of their *observed* entries
(each fitted mixture marginalised over the missing coordinates, the same
formula for all three) and the RMSE of the imputed entries against the
removed values (EM: ``Mixture.impute``, E[x_mis | x_obs]; the others: their
imputer).  Higher log p, lower RMSE is better.

    .venv/bin/python bench/missing.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn import datasets
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, SimpleImputer
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from elbokit import Mixture
from elbokit.families import Gaussian

SETS = {"wine": 3, "breast_cancer": 2, "iris": 3, "diabetes": 3}


def remove(X, fraction, g):
    mask = g.random(X.shape) < fraction
    full = mask.all(1)
    mask[full, g.integers(0, X.shape[1], full.sum())] = False
    out = X.copy()
    out[mask] = np.nan
    return out, mask


def observed_log_density(weights, means, covs, X):
    """Mean over rows of log p(x_obs) under a full-covariance Gaussian mixture."""
    fam = Gaussian("full")
    params = {"loc": torch.as_tensor(means), "covariance": torch.as_tensor(covs)}
    lp = fam.log_prob(params, torch.as_tensor(X)).double() + torch.as_tensor(weights).log()
    return float(torch.logsumexp(lp, 1).mean())


def one(name, K, fraction, seed, reg):
    X = StandardScaler().fit_transform(getattr(datasets, f"load_{name}")().data)
    g = np.random.default_rng(seed)
    order = g.permutation(len(X))
    cut = int(0.7 * len(X))
    train, test = X[order[:cut]], X[order[cut:]]
    train_m, _ = remove(train, fraction, g)
    test_m, test_mask = remove(test, fraction, g)
    out = {}
    t = time.perf_counter()
    em = Mixture(K, family=Gaussian("full", reg_covar=reg), n_init=3, random_state=seed,
                 dtype="float64", max_iter=300).fit(train_m)
    out["EM"] = (observed_log_density(em.weights_, em.params_["loc"], em.params_["covariance"], test_m),
                 float(np.sqrt(np.mean((em.impute(test_m) - test)[test_mask] ** 2))),
                 time.perf_counter() - t)
    for label, imputer in (("mean+GMM", SimpleImputer()),
                           ("iter+GMM", IterativeImputer(max_iter=20, random_state=seed))):
        t = time.perf_counter()
        filled = imputer.fit_transform(train_m)
        gm = GaussianMixture(K, reg_covar=reg, n_init=3, random_state=seed, max_iter=300).fit(filled)
        rmse = float(np.sqrt(np.mean((imputer.transform(test_m) - test)[test_mask] ** 2)))
        out[label] = (observed_log_density(gm.weights_, gm.means_, gm.covariances_, test_m), rmse,
                      time.perf_counter() - t)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--reg", type=float, nargs="+", default=[1e-3, 1e-1],
                        help="reg_covar of all three mixtures (standardised units)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"load: {os.getloadavg()}")
    print(f"{'data':14s} {'missing':>7s}  {'held-out log p(x_obs) per row':^38s}  "
          f"{'imputation RMSE (std. units)':^32s}")
    print(f"{'':14s} {'':>7s}  {'EM':>12s} {'mean+GMM':>12s} {'iter+GMM':>12s}  "
          f"{'EM':>10s} {'mean+GMM':>10s} {'iter+GMM':>10s}")
    for reg in args.reg:
        print(f"reg_covar = {reg}")
        for name, K in SETS.items():
            for fraction in (0.1, 0.3, 0.5):
                runs = [one(name, K, fraction, s, reg) for s in range(args.seeds)]
                mean = {m: np.mean([r[m] for r in runs], 0) for m in runs[0]}
                print(f"{name:14s} {fraction:7.0%}  " + " ".join(f"{mean[m][0]:12.3f}" for m in mean)
                      + "  " + " ".join(f"{mean[m][1]:10.3f}" for m in mean), flush=True)
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
