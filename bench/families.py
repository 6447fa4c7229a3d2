"""Mixtures of Bernoulli, Categorical and Poisson components: elbokit vs pomegranate.

Both run EM from the same initial parameters for the same number of
iterations in float64; printed per data set: the final mean log-likelihood
per sample of each (and their difference), seconds per EM iteration of each
and the ratio; elbokit's float32 default beside it.  Real data only:

* binarised digits: scikit-learn's 8x8 digits (1797 x 64), pixel > 7, and
  Fashion-MNIST (10,000 x 784, pixel > 127) from /usr/share/datasets;
* categorical: the UCI sets that Weka ships as examples (Debian package
  ``weka``: ``apt-get download weka && dpkg -x weka_*.deb /tmp/weka``):
  congressional votes (435 x 16, y/n/?), soybean (683 x 35), breast-cancer
  (286 x 9); a '?' is its own level here (pomegranate has no missing values
  in this path);
* counts: word counts of the KJV gospels shipped with elbokit (verses x the
  100 most frequent words) and of the fortune databases.

    .venv/bin/python bench/families.py [--iters 20] [--k 10]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import time
import warnings

import numpy as np
import torch

WEKA = [os.environ.get("WEKA_EXAMPLES", ""), "/usr/share/doc/weka/examples",
        "/tmp/weka/usr/share/doc/weka/examples"]


def digits_binary():
    from sklearn.datasets import load_digits

    return (load_digits().data > 7).astype(np.float64)


def fashion_binary(n=10000):
    path = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    if not os.path.exists(path):
        return None
    with gzip.open(path) as f:
        raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 784)
    return (raw[:n] > 127).astype(np.float64)


def read_arff(path):
    """Nominal columns of an ARFF file as level codes (a '?' is one more level); the
    last attribute (the class) is dropped.  A plain reader: SciPy's trips on levels
    written with spaces."""
    levels, rows, in_data = [], [], False
    with open(path, errors="ignore") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("%"):
                continue
            low = line.lower()
            if low.startswith("@attribute"):
                spec = line[line.index("{") + 1:line.rindex("}")] if "{" in line else None
                levels.append(None if spec is None else [v.strip().strip("'\"") for v in spec.split(",")])
            elif low.startswith("@data"):
                in_data = True
            elif in_data:
                rows.append([v.strip().strip("'\"") for v in line.split(",")])
    cols = []
    for j, levs in enumerate(levels[:-1]):
        if levs is None:
            continue
        codes = {lev: i for i, lev in enumerate(levs + ["?"])}
        cols.append([codes[r[j]] for r in rows])
    return np.array(cols, dtype=np.float64).T


def arff_categorical(name):
    for folder in WEKA:
        path = os.path.join(folder, f"{name}.arff")
        if folder and os.path.exists(path):
            return read_arff(path)
    return None


def word_counts(texts, n_words=100):
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(max_features=n_words, stop_words="english")
    X = cv.fit_transform(texts).toarray().astype(np.float64)
    return X[X.sum(1) > 0]


def kjv_counts():
    from elbokit.datasets import kjv_gospels

    return word_counts(kjv_gospels())


def fortune_counts():
    texts = []
    for path in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if os.path.isfile(path) and not path.endswith((".dat", ".u8")):
            with open(path, errors="ignore") as f:
                texts += [t.strip() for t in f.read().split("\n%\n") if t.strip()]
    return word_counts(texts) if texts else None


def floored(cls, names):
    """pomegranate's distribution with its cached logs floored at log(1e-300), as
    elbokit's are: as shipped, a probability or rate of exactly 0 gives
    0 * log 0 = NaN in its matrix products, and the fit turns to NaN."""

    class Floored(cls):
        def _reset_cache(self):
            super()._reset_cache()
            if self._initialized:
                for name in names:
                    getattr(self, name).clamp_(min=-690.0)

    Floored.__name__ = f"Floored{cls.__name__}"
    return Floored


def pomegranate_model(family, weights, params, X, patched=True):
    from pomegranate.distributions import Bernoulli, Categorical, Poisson
    from pomegranate.gmm import GeneralMixtureModel

    if patched:
        Bernoulli = floored(Bernoulli, ["_log_probs", "_log_inv_probs"])
        Poisson = floored(Poisson, ["_log_lambdas"])
    K = len(weights)
    if family == "bernoulli":
        dists = [Bernoulli(probs=torch.tensor(params["probs"][k])) for k in range(K)]
    elif family == "poisson":
        dists = [Poisson(lambdas=torch.tensor(params["rate"][k])) for k in range(K)]
    else:
        dists = [Categorical(probs=torch.tensor(params["probs"][k])) for k in range(K)]
    return GeneralMixtureModel(dists, priors=torch.tensor(weights), max_iter=1,
                               tol=-float("inf"), init="random")


def best_of(repeats, fn):
    """The fastest of ``repeats`` runs (the machine is shared): (seconds, result)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def run_one(name, family, X, K, iters, repeats):
    from elbokit import Mixture

    # the shared start: elbokit's k-means initialisation, no EM step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = Mixture(K, family=family, max_iter=0, random_state=0, dtype="float64").fit(X)
    params = dict(start.params_)
    if family == "bernoulli":  # pomegranate refuses a start with probabilities of 0 or 1
        params["probs"] = params["probs"].clip(1e-6, 1 - 1e-6)
    elif family == "categorical":
        real = params["probs"] > 0
        levels = real.sum(2)  # padded levels stay exactly 0
        params["probs"] = np.where(real, np.maximum(params["probs"], 1e-6), 0.0)
        params["probs"] /= params["probs"].sum(2, keepdims=True)
        assert (levels > 0).all()
    start.params_ = params
    kw = dict(weights_init=start.weights_, params_init=params, tol=0, max_iter=iters,
              random_state=0)
    times = {}
    X32 = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, ours = best_of(repeats, lambda: Mixture(K, family=family, dtype="float64", **kw).fit(X))
        times["ours64"] = t / (iters + 1)  # iters E- and M-steps and the final E-step
        t, ours32 = best_of(repeats, lambda: Mixture(K, family=family, dtype="float32", **kw).fit(X32))
        times["ours32"] = t / (iters + 1)
    Xp = torch.as_tensor(X if family != "categorical" else X.astype(np.int64))

    def pomegranate_fit(patched=True, max_iter=iters):
        pm = pomegranate_model(family, start.weights_, start.params_, Xp, patched)
        pm.max_iter = max_iter
        return pm.fit(Xp)

    shipped = float(pomegranate_fit(False, min(iters, 5)).log_probability(Xp).mean())
    t, pm = best_of(repeats, pomegranate_fit)
    times["pom"] = t / iters
    ll_pom = float(pm.log_probability(Xp).mean())
    ll_ours = ours.score(X)
    print(f"{name:28s} {family:11s} {X.shape[0]:6d}x{X.shape[1]:<4d} K={K:<3d} "
          f"ll/sample ours {ll_ours:12.6f} pomegranate {ll_pom:12.6f} (as shipped {shipped:.4f}) "
          f"|diff| {abs(ll_ours - ll_pom):.1e}  "
          f"s/iter ours {times['ours64']:.5f} (f32 {times['ours32']:.5f}) pomegranate {times['pom']:.5f}  "
          f"ratio {times['pom'] / times['ours64']:5.1f}x (f32 {times['pom'] / times['ours32']:5.1f}x)  "
          f"f32 ll {ours32.score(X.astype(np.float32)):.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", default="", help="run the data sets whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"load: {os.getloadavg()}  torch threads {torch.get_num_threads()}")
    sets = [("digits > 7", "bernoulli", digits_binary()),
            ("fashion-mnist[:10k] > 127", "bernoulli", fashion_binary()),
            ("votes (weka/UCI)", "categorical", arff_categorical("vote")),
            ("soybean (weka/UCI)", "categorical", arff_categorical("soybean")),
            ("breast-cancer (weka/UCI)", "categorical", arff_categorical("breast-cancer")),
            ("KJV gospels, 100 words", "poisson", kjv_counts()),
            ("fortunes, 100 words", "poisson", fortune_counts())]
    for name, family, X in sets:
        if args.only not in name:
            continue
        if X is None:
            print(f"{name}: not found (see the module docstring)")
            continue
        run_one(name, family, X, args.k, args.iters, args.repeats)
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
