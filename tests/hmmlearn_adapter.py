"""hmmlearn's API over elbokit's HMMs, so that hmmlearn's own tests run against elbokit.

Thin: every computation is elbokit's.  What the adapter adds is hmmlearn's calling
conventions (see the README's list of differences):

* ``score`` is the total log-likelihood and ``score_samples`` returns (total,
  posteriors); ``sample(n_samples, random_state, currstate)`` draws one sequence;
* ``tol`` is on the total log-likelihood (elbokit's is per sample): converted at fit;
  ``n_iter`` defaults to 10; ``implementation`` is accepted and ignored (elbokit picks
  scaled or log-space recursions itself); the decoder ``algorithm`` is hmmlearn's;
* ``_init`` (initialise without EM), ``_check`` (validate the attributes),
  ``_check_and_set_n_features``, ``n_features``, ``_covars_``;
* a model whose parameters were all set by hand is usable without ``fit``;
* elbokit's warnings are re-emitted through :mod:`logging`, as hmmlearn reports them.
"""

from __future__ import annotations

import logging
import types
import warnings

import numpy as np
import torch

import elbokit
from elbokit.families import Categorical, family_spec
from elbokit.hmm import check_stochastic

_log = logging.getLogger("hmmlearn.base")
F64 = torch.float64


class _Adapter:
    """Mixed in front of an elbokit HMM class."""

    def _adapter_init(self, values, init_method="kmeans"):
        """hmmlearn's constructor arguments, plus elbokit's others at their defaults."""
        for k, v in values.items():
            if k not in ("self", "__class__", "algorithm", "implementation"):
                setattr(self, k, v)
        self.decoder, self.implementation = values["algorithm"], values["implementation"]
        for name in ("startprob_init", "transmat_init", "params_init", "device", "batch_size",
                     "distributed"):
            setattr(self, name, None)
        self.algorithm, self.init_method, self.n_init, self.warm_start = "em", init_method, 1, False
        self.dtype, self.step_offset, self.step_decay = "float64", 2.0, 0.7
        self.verbose = int(values["verbose"])

    # ---------------------------------------------------------------- fitting
    def _logged(self, fn, X, lengths):
        total_tol = self.tol
        n = sum(len(s) for s in X) if isinstance(X, list) and X and np.ndim(X[0]) == 2 else len(X)
        self.tol = float(total_tol) / max(n, 1)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = fn(np.asarray(X) if isinstance(X, list) else X, lengths)
        finally:
            self.tol = total_tol
        for w in caught:
            if not issubclass(w.category, elbokit.ConvergenceWarning):
                _log.warning(str(w.message))
        return out

    def fit(self, X, lengths=None):
        out = self._logged(super().fit, X, lengths)
        self._after_fit()
        return out

    def _init(self, X, lengths=None):
        if lengths is not None and np.ndim(lengths) == 0:
            lengths = None
        n_iter, self.n_iter = self.n_iter, 0
        try:
            self._logged(super().fit, X, lengths)
        finally:
            self.n_iter = n_iter
        self._after_fit()

    def _after_fit(self):
        pass

    # ---------------------------------------------------------------- checks
    def _check(self):
        family = self._make_family()  # raises for a bad covariance_type
        K = self.n_components
        for name, shape in (("startprob_", (K,)), ("transmat_", (K, K))):
            if not hasattr(self, name):
                raise ValueError(f"{name} is not set.")
            value = np.asarray(getattr(self, name), dtype=np.float64)
            check_stochastic(torch.as_tensor(value), shape, name)
        params = self.__dict__.get("params_") or {}
        D = self._dims()
        for name, shape in self._prepared(family, D).param_shapes(K, D).items():
            if name not in params:
                raise ValueError(f"the emission parameter {name!r} is not set.")
            got = np.shape(params[name])
            if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
                raise ValueError(f"{name} must have shape {shape}; got {got}.")
        self._check_emissions(params)

    def _check_emissions(self, params):
        pass

    def _prepared(self, family, D):
        return family.prepare(torch.zeros(1, D, dtype=F64))

    def _ensure_fitted(self):
        """Hand-set parameters as a usable model (elbokit needs its fitted state)."""
        if self.__sklearn_is_fitted__():
            return
        self._check()
        D = self._dims()
        self.family_config_ = family_spec(self._prepared(self._make_family(), D))
        self._family_cache = None
        self.n_features_in_ = D
        self.occupancy_ = np.full(self.n_components, 1.0 / self.n_components)
        self.lower_bounds_, self.lower_bound_ = np.array([np.nan]), float("nan")
        self.converged_, self.n_iter_, self.n_steps_ = False, 0, 0

    # ---------------------------------------------------------------- inference
    def score(self, X, lengths=None):
        self._ensure_fitted()
        return super().score(np.asarray(X), lengths) * len(np.asarray(X))

    def score_samples(self, X, lengths=None):
        self._ensure_fitted()
        X = np.asarray(X)
        return super().score(X, lengths) * len(X), super().predict_proba(X, lengths)

    def predict_proba(self, X, lengths=None):
        self._ensure_fitted()
        return super().predict_proba(np.asarray(X), lengths)

    def decode(self, X, lengths=None, algorithm=None):
        self._ensure_fitted()
        return super().decode(np.asarray(X), lengths, algorithm or self.decoder)

    def predict(self, X, lengths=None):
        return self.decode(X, lengths)[1]

    def aic(self, X, lengths=None):
        self._ensure_fitted()
        return super().aic(np.asarray(X), lengths)

    def bic(self, X, lengths=None):
        self._ensure_fitted()
        return super().bic(np.asarray(X), lengths)

    def sample(self, n_samples=1, random_state=None, currstate=None):
        self._ensure_fitted()
        if currstate is None:
            return super().sample(1, n_samples, random_state=random_state)
        saved = self.startprob_
        self.startprob_ = np.eye(self.n_components)[currstate]
        try:
            return super().sample(1, n_samples, random_state=random_state)
        finally:
            self.startprob_ = saved


class GaussianHMM(_Adapter, elbokit.GaussianHMM):
    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3,
                 startprob_prior=1.0, transmat_prior=1.0, means_prior=0, means_weight=0,
                 covars_prior=1e-2, covars_weight=1, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="stmc", init_params="stmc",
                 implementation="log"):
        self._adapter_init(dict(locals()))

    def _dims(self):
        if "n_features" in self.__dict__:
            return self.__dict__["n_features"]
        return np.shape(self.means_)[1]

    @property
    def n_features(self):
        return self._dims()

    @n_features.setter
    def n_features(self, value):
        self.__dict__["n_features"] = value

    @property
    def _covars_(self):
        return np.asarray(self.params_["covariance"])


class CategoricalHMM(_Adapter, elbokit.CategoricalHMM):
    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0,
                 emissionprob_prior=1.0, n_features=None, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="ste", init_params="ste",
                 implementation="log"):
        self._adapter_init(dict(locals()), init_method="random")

    def _dims(self):
        return 1

    def _make_family(self):
        probs = (self.__dict__.get("params_") or {}).get("probs")
        levels = self.n_features or (None if probs is None else np.shape(probs)[-1])
        return Categorical(levels)

    def _prepared(self, family, D):
        if family.n_levels is None:
            raise ValueError("emissionprob_ (or n_features) is not set.")
        return family.prepare(torch.zeros(1, D, dtype=F64))

    def _check_emissions(self, params):
        check_stochastic(torch.as_tensor(np.asarray(params["probs"])), np.shape(params["probs"]),
                         "emissionprob_")

    def _after_fit(self):
        if self.n_features is None:
            self.n_features = int(np.shape(self.params_["probs"])[-1])

    def _check_and_set_n_features(self, X):
        X = np.asarray(X)
        if X.dtype.kind not in "iu":
            raise ValueError("Symbols should be integers")
        Categorical().check(torch.as_tensor(X.astype(np.float64)))
        if self.n_features is None:
            self.n_features = int(X.max()) + 1


class PoissonHMM(_Adapter, elbokit.PoissonHMM):
    def __init__(self, n_components=1, startprob_prior=1.0, transmat_prior=1.0,
                 lambdas_prior=0.0, lambdas_weight=0.0, algorithm="viterbi", random_state=None,
                 n_iter=10, tol=1e-2, verbose=False, params="stl", init_params="stl",
                 implementation="log"):
        self._adapter_init(dict(locals()))

    def _dims(self):
        shape = np.shape(self.lambdas_)
        if len(shape) != 2:
            raise ValueError(f"lambdas_ must have shape (n_components, n_features); got {shape}.")
        return shape[1]


class GMMHMM(_Adapter, elbokit.GMMHMM):
    def __init__(self, n_components=1, n_mix=1, min_covar=1e-3, startprob_prior=1.0,
                 transmat_prior=1.0, weights_prior=1.0, means_prior=0.0, means_weight=0.0,
                 covars_prior=None, covars_weight=None, algorithm="viterbi",
                 covariance_type="diag", random_state=None, n_iter=10, tol=1e-2, verbose=False,
                 params="stmcw", init_params="stmcw", implementation="log"):
        self._adapter_init(dict(locals()))

    def _dims(self):
        return np.shape(self.means_)[-1]


# what the suites import as ``hmm``
hmm_module = types.SimpleNamespace(GaussianHMM=GaussianHMM, CategoricalHMM=CategoricalHMM,
                                   PoissonHMM=PoissonHMM, GMMHMM=GMMHMM)
