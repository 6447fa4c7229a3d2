"""``BayesianGaussianMixture``: the variational Gaussian mixture on the conjugate VI engine."""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from elbokit import io
from elbokit._validation import (
    InputKind,
    as_sample_weight,
    check_feature_names,
    check_mixture_settings,
    check_nonneg_float,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
    to_output,
)
from elbokit.base import ElbokitEstimator
from elbokit.bounds import VariationalBound, variational_bound
from elbokit.data.sources import InMemorySource, as_source, is_source_like, sample_rows
from elbokit.em_estimator import as_float_tensor
from elbokit.inference import distributed
from elbokit.inference.em import ConvergenceWarning
from elbokit.inference.vi import accumulate, online_bound, online_step, run_batch_vi, run_online_vi
from elbokit.models.bayesian_mixture import (
    WEIGHT_PRIORS,
    BayesianGaussianMixtureModel,
    BGMMParams,
    BGMMPrior,
    mean_weights,
)
from elbokit.models.gaussian_mixture import (
    COVARIANCE_TYPES,
    GaussianMixtureModel,
    GaussianMixtureParams,
    precisions_from_cholesky,
)
from elbokit.mixture import GaussianMixture, _positive_diagonal
from elbokit.models.kmeans import kmeans_plusplus, lloyd, squared_distances
from elbokit.priors import data_moments, nonsingular_covariance

F64 = torch.float64
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
ALGORITHMS = ("batch", "online")
_INIT_SAMPLE = 100_000


@io.register
class BayesianGaussianMixture(ElbokitEstimator):
    """Variational Bayesian Gaussian mixture (scikit-learn's API), by mean-field VI.

    Priors: weights by a Dirichlet distribution or a (truncated) Dirichlet
    process, components Normal-Wishart (see :mod:`elbokit.models.bayesian_mixture`).
    Batch VI alternates q(z) (the local step) and the globals' coordinate
    update, and the ELBO never decreases (with ``reg_covar=0``; see there);
    ``algorithm="online"`` is stochastic
    VI over mini-batches (natural-gradient steps (t + step_offset)^-step_decay),
    for streams and data larger than memory. Unneeded components end with
    ``weights_`` near 0.

    Parameters
    ----------
    n_components : int, default=1
        Upper bound K on the components used.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    tol : float, default=1e-3
        Stop when the per-sample ELBO changes by less (scikit-learn: the total).
    reg_covar : float, default=1e-6
        Added to each component's sample covariance in the update, as
        scikit-learn does.  That step is not the exact coordinate update, so
        where a column's variance is near ``reg_covar`` (raw breast-cancer
        data: 1e-4 nats per sample, once in 20 iterations) the ELBO can dip by
        that order; with ``reg_covar=0`` every update is exact coordinate ascent
        and the ELBO never decreases (the prior keeps the scale positive definite).
    max_iter : int, default=100
        Iterations (batch) or passes over the data (online) per initialisation.
    n_init : int, default=1
        Initialisations; the one with the highest final ELBO is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        Initial responsibilities, as scikit-learn: k-means labels, the k-means++
        seeds or K random rows (only those rows carry responsibility), or
        uniform random ones.
    weight_concentration_prior_type : {"dirichlet_process", "dirichlet_distribution"}
    weight_concentration_prior : float, optional
        gamma0 / alpha0 (default 1 / n_components).
    mean_precision_prior : float, optional
        beta0 (default 1).
    mean_prior : array of shape (n_features,), optional
        m0 (default the mean of X).
    degrees_of_freedom_prior : float, optional
        nu0 > n_features - 1 (default n_features).
    covariance_prior : float or array, optional
        W0^-1: (D, D) full/tied, (D,) diag, a float spherical (default the
        covariance of X).
    random_state, warm_start, verbose
        As scikit-learn (warm_start: continue from the fitted globals).
    device, dtype : as :class:`~elbokit.GaussianMixture`
        float32 E-step by default, statistics and globals in float64.
    batch_size : int, optional
        Batch VI: rows per chunk (memory only). Online: the mini-batch size
        (default 1024).
    algorithm : {"batch", "online"}, default="batch"
    step_offset, step_decay : float, default=10.0, 0.6
        The online step rho_t = (step_offset + t)^-step_decay, t = 1, 2, ...
    total_samples : float, optional
        The data set's size (sum of weights), needed by ``partial_fit``.
    distributed : None, True or False
        As :class:`~elbokit.GaussianMixture`: statistics summed over the ranks.

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_
        Point estimates (E_q[pi] normalised, m_k, E_q[Lambda_k]^-1, ...), scikit-learn's shapes.
    weight_concentration_ : array (K,) or (2, K)
    mean_precision_ : array (K,)
    degrees_of_freedom_ : array (K,) (a float for ``tied``)
    weight_concentration_prior_, mean_precision_prior_, mean_prior_,
    degrees_of_freedom_prior_, covariance_prior_
        The priors used.
    lower_bounds_ : array
        Per-sample ELBO after each iteration's update (online: the per-pass
        estimate), last under the returned globals after a final local step
        (exact, one pass).
    lower_bound_, converged_, n_iter_, n_features_in_
    n_steps_ : int
        Online updates made.
    """

    _fitted_attributes = (
        "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
        "weight_concentration_", "mean_precision_", "degrees_of_freedom_",
        "weight_concentration_prior_", "mean_precision_prior_", "mean_prior_",
        "degrees_of_freedom_prior_", "covariance_prior_",
        "lower_bounds_", "lower_bound_", "converged_", "n_iter_", "n_features_in_", "n_steps_",
    )

    _fitted_schema = {
        "weights_": io.array("n_components", low=0, check=io.sums_to_one),
        "means_": io.array("n_components", "n_features_in_"),
        "covariances_": io.array(lambda m: m._cov_shape(), check=_positive_diagonal),
        "precisions_": io.array(lambda m: m._cov_shape(), check=_positive_diagonal),
        "precisions_cholesky_": io.array(lambda m: m._cov_shape(), check=_positive_diagonal),
        "weight_concentration_": io.array(
            lambda m: (2, m.n_components) if m.weight_concentration_prior_type == "dirichlet_process"
            else (m.n_components,), positive=True),
        "mean_precision_": io.array("n_components", positive=True),
        "degrees_of_freedom_": io.array(
            lambda m: () if m.covariance_type == "tied" else (m.n_components,), positive=True),
        "weight_concentration_prior_": io.real(positive=True),
        "mean_precision_prior_": io.real(positive=True),
        "mean_prior_": io.array("n_features_in_"),
        "degrees_of_freedom_prior_": io.real(positive=True),
        "covariance_prior_": io.array(lambda m: m._cov_shape(prior=True), check=_positive_diagonal),
        "lower_bounds_": io.array(None), "lower_bound_": io.real(), "converged_": io.flag(),
        "n_iter_": io.integer(low=0), "n_features_in_": io.integer(low=1),
        "n_steps_": io.integer(low=0),
    }

    def __init__(self, n_components=1, *, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans",
                 weight_concentration_prior_type="dirichlet_process",
                 weight_concentration_prior=None, mean_precision_prior=None, mean_prior=None,
                 degrees_of_freedom_prior=None, covariance_prior=None, random_state=None,
                 warm_start=False, verbose=0, device=None, dtype="float32", batch_size=None,
                 algorithm="batch", step_offset=10.0, step_decay=0.6, total_samples=None,
                 distributed=None):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.algorithm = algorithm
        self.step_offset = step_offset
        self.step_decay = step_decay
        self.total_samples = total_samples
        self.distributed = distributed

    # ------------------------------------------------------------ validation
    def _check_hyperparameters(self):
        check_mixture_settings(self)
        for name, value, allowed in (("covariance_type", self.covariance_type, COVARIANCE_TYPES),
                                     ("weight_concentration_prior_type",
                                      self.weight_concentration_prior_type, WEIGHT_PRIORS),
                                     ("init_params", self.init_params, INIT_METHODS),
                                     ("algorithm", self.algorithm, ALGORITHMS)):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported: use one of "
                                 f"{', '.join(map(repr, allowed))}.")
        for name in ("weight_concentration_prior", "mean_precision_prior", "degrees_of_freedom_prior"):
            if getattr(self, name) is not None:
                check_nonneg_float(getattr(self, name), name, strict=True)
        check_nonneg_float(self.step_offset, "step_offset")
        if not (isinstance(self.step_decay, numbers.Real) and 0.5 < self.step_decay <= 1):
            raise ValueError(f"step_decay={self.step_decay!r} must lie in (0.5, 1] for stochastic "
                             "VI to converge.")
        if self.total_samples is not None:
            check_nonneg_float(self.total_samples, "total_samples", strict=True)

    def _cov_shape(self, prior=False):
        K, D = self.n_components, self.n_features_in_
        if prior:
            return {"full": (D, D), "tied": (D, D), "diag": (D,), "spherical": ()}[self.covariance_type]
        return {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[self.covariance_type]

    # ------------------------------------------------------------ data
    # chunks as GaussianMixture's, whose E-step this is (``online``: the mini-batch size)
    _rows = GaussianMixture._rows

    def _model(self) -> GaussianMixtureModel:
        """The Gaussian-mixture model of the E-step (its work per row sizes the chunks)."""
        return GaussianMixtureModel(self.covariance_type, float(self.reg_covar), resolve_dtype(self.dtype))

    def _check_features(self, n_features, names=None):
        check_is_fitted(self)
        if n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but BayesianGaussianMixture is "
                             f"expecting {self.n_features_in_} features as input: pass data with "
                             f"{self.n_features_in_} columns.")

    def _data(self, X, sample_weight=None, *, reset=False, online=False, allow_empty=False):
        """Any accepted input as (source, kind, n_features)."""
        dtype = resolve_dtype(self.dtype)
        if is_source_like(X):
            if sample_weight is not None:
                raise ValueError("sample_weight goes with in-memory X; with streamed data give "
                                 "(X_batch, weight_batch) pairs instead.")
            device = resolve_device(self.device)
            probe = as_source(X, batch_size=1, dtype=dtype, device=device)
            n_features = probe.n_features or next(iter(probe))[0].shape[1]
            source = as_source(X, batch_size=self._rows(n_features, device, online), dtype=dtype,
                               device=device)
            if not reset:
                self._check_features(n_features)
                names = getattr(probe, "feature_names", None)
                if names is not None:  # a file with a header (other streams carry no names)
                    check_feature_names(self, None, reset=False, names=names)
            return source, InputKind(False, torch.device("cpu")), n_features
        if not reset:
            check_is_fitted(self)
            check_feature_names(self, X, reset=False)
        device = resolve_device(self.device, X)
        Xt, kind, _ = as_float_tensor(X, "X", dtype, device, min_samples=0 if allow_empty else 1)
        if bool(torch.isnan(Xt).any()):
            raise ValueError("X contains NaN: BayesianGaussianMixture needs complete rows; impute "
                             "them, or fit elbokit.Mixture, which treats NaN as missing.")
        if not reset:
            self._check_features(Xt.shape[1])
        weight = as_sample_weight(sample_weight, Xt.shape[0], dtype=Xt.dtype, device=Xt.device,
                                  allow_empty=allow_empty)
        rows = self._rows(Xt.shape[1], Xt.device)
        return InMemorySource(Xt, weight, batch_size=rows), kind, Xt.shape[1]

    # ------------------------------------------------------------ priors
    def _resolve_prior(self, n, mean, cov, n_features, device) -> BGMMPrior:
        D, ct = n_features, self.covariance_type

        def tensor(value, name, shape):
            t = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(
                value, torch.Tensor) else value).to(device=device, dtype=F64)
            if tuple(t.shape) != shape:
                raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got "
                                 f"{tuple(t.shape)}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} contains NaN or inf.")
            return t

        if self.degrees_of_freedom_prior is None:
            dof = float(D)
        elif self.degrees_of_freedom_prior > D - 1.0:
            dof = float(self.degrees_of_freedom_prior)
        else:
            raise ValueError("The parameter 'degrees_of_freedom_prior' should be greater than "
                             f"{D - 1}, but got {self.degrees_of_freedom_prior:.3f}.")
        m0 = mean if self.mean_prior is None else tensor(self.mean_prior, "means", (D,))
        if self.covariance_prior is None:
            if not bool(torch.isfinite(cov).all()):
                raise ValueError("the default covariance_prior (the covariance of X) needs at least "
                                 "2 samples: pass more rows or give covariance_prior.")
            # scikit-learn's defaults, made proper where X is singular (blank pixels):
            # the exact ELBO holds the prior's normaliser, -inf for a singular scale
            prior_cov = {"full": lambda: nonsingular_covariance(cov),
                         "tied": lambda: nonsingular_covariance(cov),
                         "diag": lambda: nonsingular_covariance(cov.diagonal().clone()),
                         "spherical": lambda: cov.diagonal().mean()}[ct]()
        elif ct in ("full", "tied"):
            prior_cov = tensor(self.covariance_prior, f"{ct} covariance_prior", (D, D))
            if not bool(torch.allclose(prior_cov, prior_cov.mT)) or \
                    bool((torch.linalg.eigvalsh(prior_cov) <= 0).any()):
                raise ValueError(f"'{ct} covariance_prior' should be symmetric, positive-definite")
        elif ct == "diag":
            prior_cov = tensor(self.covariance_prior, "diag covariance_prior", (D,))
            if bool((prior_cov <= 0).any()):
                raise ValueError("'diag covariance_prior' should be positive")
        else:
            if not isinstance(self.covariance_prior, numbers.Real) or self.covariance_prior <= 0:
                raise ValueError("covariance_prior must be a positive float for "
                                 "covariance_type='spherical'.")
            prior_cov = torch.tensor(float(self.covariance_prior), dtype=F64, device=device)
        g = self.weight_concentration_prior
        return BGMMPrior(ct, self.weight_concentration_prior_type == "dirichlet_process",
                         1.0 / self.n_components if g is None else float(g),
                         1.0 if self.mean_precision_prior is None else float(self.mean_precision_prior),
                         m0.to(F64), dof, prior_cov.to(F64))

    def _vi_model(self, prior) -> BayesianGaussianMixtureModel:
        return BayesianGaussianMixtureModel(prior, float(self.reg_covar), resolve_dtype(self.dtype))

    # ------------------------------------------------------------ initialisation
    def _seeds(self, sample, gen, reducer, n_features, device):
        """Centres (k-means, k-means++) or rows (random_from_data) from the sample, (K, D)."""
        K = self.n_components

        def local():
            X, w = sample
            centre = X.to(F64).mean(0)
            Xc = X.to(F64) - centre
            wd = None if w is None else w.to(F64)
            if self.init_params == "random_from_data":
                p = torch.ones(X.shape[0], dtype=F64, device=X.device) if w is None else (w > 0).to(F64)
                idx = torch.multinomial(p, K, replacement=False, generator=gen)
                return X.to(F64)[idx]
            seeds = kmeans_plusplus(Xc, K, gen, wd)
            if self.init_params == "kmeans":
                seeds = lloyd(Xc, seeds, wd)[0]
            return seeds + centre

        if reducer is None:
            return local()
        src = reducer.largest(0 if sample[0] is None else sample[0].shape[0])
        seeds = torch.zeros(K, n_features, dtype=F64, device=device)
        if reducer.rank == src:
            seeds = local()
        return reducer.broadcast(seeds, src)

    def _initialize(self, model, source, sample, gen, n_features, device, reducer, mean):
        """Globals from initial responsibilities: one coordinate update (scikit-learn's
        ``_initialize``)."""
        K, gm, method = self.n_components, model.gm, self.init_params
        if method in ("k-means++", "random_from_data"):
            # only the seed rows carry responsibility (as scikit-learn)
            seeds = self._seeds(sample, gen, reducer, n_features, device)
            anchor = gm.anchor(seeds)
            stats = gm.statistics_from_responsibilities(
                anchor, seeds.to(model.dtype), torch.eye(K, dtype=model.dtype, device=device), None)
            return model.update(gm.moments(stats, anchor))
        if method == "random":
            anchor = gm.anchor(mean.expand(K, n_features))

            def responsibilities(Xb):
                r = torch.rand(Xb.shape[0], K, generator=gen, device=gen.device, dtype=F64)
                return (r / r.sum(1, keepdim=True)).to(Xb.device)
        else:
            centres = self._seeds(sample, gen, reducer, n_features, device)
            anchor = gm.anchor(centres)
            centre = centres.mean(0)

            def responsibilities(Xb):
                d = squared_distances(Xb.to(F64) - centre, centres - centre)
                return torch.nn.functional.one_hot(d.argmin(1), K).to(Xb.dtype)

        def local():
            total = None
            for Xb, wb in source:
                s = gm.statistics_from_responsibilities(anchor, Xb, responsibilities(Xb), wb)
                total = s if total is None else {k: total[k] + s[k] for k in total}
            return total

        total = distributed.checked(reducer, local)
        if reducer is not None:
            total = reducer(total)
        return model.update(gm.moments(total, anchor))

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit the variational posterior by batch or online (stochastic) VI.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, n_features), or a data source
            In-memory data, or streamed: the path of a .npy/.parquet/.csv file, a
            list of batches, or a function returning a fresh iterator of batches.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        online = self.algorithm == "online"
        reducer = distributed.resolve(self.distributed)
        source, kind, n_features = distributed.checked(reducer, lambda: self._data(
            X, sample_weight, reset=True, online=online, allow_empty=reducer is not None))
        device = resolve_device(self.device, X if isinstance(X, torch.Tensor) else None)
        gen = make_generator(self.random_state, device)
        if reducer is not None:
            gen.manual_seed(reducer.same_seed(gen.initial_seed()))
        sampler = torch.Generator(device=gen.device)
        sampler.manual_seed(int(torch.randint(2**62, (1,), generator=gen, device=gen.device)))
        n, mean, cov = data_moments(source, reducer, n_features, device)
        if self.n_components > n:
            raise ValueError(f"n_components={self.n_components} must be <= n_samples={n:g}: "
                             "decrease n_components or provide more samples.")
        prior = self._resolve_prior(n, mean, cov, n_features, device)
        model = self._vi_model(prior)
        warm = self.warm_start and self.__sklearn_is_fitted__()
        if warm and n_features != self.n_features_in_:
            raise ValueError(f"warm_start: X has {n_features} features, the fitted model "
                             f"{self.n_features_in_}: refit with warm_start=False.")
        sample = None if warm else sample_rows(source, max(_INIT_SAMPLE, self.n_components), sampler)
        batches = _MiniBatches(source, self._rows(n_features, device, True), gen, reducer,
                               n_features, resolve_dtype(self.dtype)) if online else None
        best, t0 = None, self.n_steps_ if warm else 0
        for _ in range(1 if warm else self.n_init):
            params = self._params(device) if warm else self._initialize(
                model, source, sample, gen, n_features, device, reducer, mean)
            if online:
                run = run_online_vi(model, params, batches, total=n, tau0=float(self.step_offset),
                                    kappa=float(self.step_decay), max_iter=int(self.max_iter),
                                    tol=float(self.tol), verbose=int(self.verbose), t0=t0,
                                    desc="BGMM online VI", reduce=reducer)
                _, final, _ = accumulate(model, run.params, source, reduce=reducer)
                run.lower_bounds.append(final)
            else:
                run = run_batch_vi(model, params, source, tol=float(self.tol),
                                   max_iter=int(self.max_iter), verbose=int(self.verbose),
                                   reduce=reducer, desc="BGMM batch VI", warn=False)
            if best is None or run.lower_bound > best.lower_bound:
                best = run
        if warm and best.lower_bounds and abs(best.lower_bounds[0] - self.lower_bound_) < self.tol:
            best.converged = True  # the bound had settled across warm-started calls
        if not best.converged and self.max_iter > 0 and not (warm and self.max_iter <= 1):
            warnings.warn(f"variational inference did not converge in max_iter={self.max_iter} "
                          f"iterations (tol={self.tol}); increase max_iter or tol.",
                          ConvergenceWarning, stacklevel=2)
        self._store(best.params, prior, kind, n_features, best.lower_bounds, best.converged,
                    best.n_iter, best.n_updates if online else (self.n_steps_ if warm else 0))
        check_feature_names(self, None if is_source_like(X) else X, reset=True,
                            names=getattr(source, "feature_names", None))
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stochastic-VI step on the mini-batch X (``total_samples`` rows in all).

        The first call sets the priors from X (unless given) and initialises from it.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        if self.total_samples is None:
            raise ValueError("partial_fit needs total_samples: set BayesianGaussianMixture("
                             "total_samples=N) to the size of the whole data set, which scales "
                             "each mini-batch's statistics.")
        first = not self.__sklearn_is_fitted__()
        source, kind, n_features = self._data(X, sample_weight, reset=first)
        device = source.X.device
        if first:
            gen = make_generator(self.random_state, device)
            n, mean, cov = data_moments(source, None, n_features, device)
            if self.n_components > n:
                raise ValueError(f"n_components={self.n_components} must be <= the rows of the "
                                 f"first mini-batch ({n:g}).")
            prior = self._resolve_prior(n, mean, cov, n_features, device)
            model = self._vi_model(prior)
            params = self._initialize(model, source, (source.X, source.weight), gen, n_features,
                                      device, None, mean)
            t, history = 0, []
        else:
            prior = self._prior(device)
            model = self._vi_model(prior)
            params, t, history = self._params(device), self.n_steps_, list(self.lower_bounds_)
        params, b, u = online_step(model, params, (source.X, source.weight),
                                   total=float(self.total_samples), t=t,
                                   tau0=float(self.step_offset), kappa=float(self.step_decay))
        history.append(online_bound(model, params, [b], [u]))
        self._store(params, prior, kind, n_features, history, False,
                    getattr(self, "n_iter_", 0) + 1, t + 1)
        if first:
            check_feature_names(self, X, reset=True)
        return self

    # ------------------------------------------------------------ fitted state
    def _store(self, params: BGMMParams, prior: BGMMPrior, kind, n_features, bounds, converged,
               n_iter, n_steps):
        out = (lambda t: t) if kind.is_torch else (lambda t: t.detach().cpu().numpy())
        ct = self.covariance_type
        self.weight_concentration_ = out(params.weight_concentration)
        self.mean_precision_ = out(params.mean_precision)
        self.means_ = out(params.means)
        nu = params.degrees_of_freedom
        self.degrees_of_freedom_ = out(nu[0] if ct == "tied" else nu)  # tied: one, 0-d
        self.covariances_ = out(params.covariances)
        self.precisions_cholesky_ = out(params.precisions_cholesky)
        self.precisions_ = out(precisions_from_cholesky(params.precisions_cholesky, ct))
        self.weights_ = out(mean_weights(params, prior.process))
        self.weight_concentration_prior_ = float(prior.weight_concentration)
        self.mean_precision_prior_ = float(prior.mean_precision)
        self.mean_prior_ = out(prior.mean)
        self.degrees_of_freedom_prior_ = float(prior.degrees_of_freedom)
        self.covariance_prior_ = out(prior.covariance)  # spherical: 0-d
        self.lower_bounds_ = np.asarray(bounds, dtype=np.float64)
        self.lower_bound_ = float(bounds[-1]) if len(bounds) else float("-inf")
        self.converged_ = bool(converged)
        self.n_iter_ = int(n_iter)
        self.n_features_in_ = int(n_features)
        self.n_steps_ = int(n_steps)

    def _tensor(self, a, device):
        t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a, dtype=np.float64))
        return t.to(device=device, dtype=F64)

    def _params(self, device) -> BGMMParams:
        check_is_fitted(self)
        t = lambda a: self._tensor(a, device)  # noqa: E731
        K = self.n_components
        nu = t(self.degrees_of_freedom_)
        nu = nu.expand(K).clone() if nu.ndim == 0 else nu
        return BGMMParams(t(self.weight_concentration_), t(self.mean_precision_), t(self.means_), nu,
                          t(self.covariances_), t(self.precisions_cholesky_))

    def _prior(self, device) -> BGMMPrior:
        check_is_fitted(self)
        return BGMMPrior(self.covariance_type, self.weight_concentration_prior_type == "dirichlet_process",
                         float(self.weight_concentration_prior_), float(self.mean_precision_prior_),
                         self._tensor(self.mean_prior_, device), float(self.degrees_of_freedom_prior_),
                         self._tensor(self.covariance_prior_, device))

    # ------------------------------------------------------------ inference
    def _chunked(self, X, fn):
        """``fn(model, params, X_chunk)`` over any accepted input: (concatenated, kind)."""
        check_is_fitted(self)
        source, kind, _ = self._data(X)
        outs, model, params = [], None, None
        for Xb, _ in source:
            if model is None:
                model, params = self._vi_model(self._prior(Xb.device)), self._params(Xb.device)
            outs.append(fn(model, params, Xb))
        return torch.cat(outs), kind

    def predict_proba(self, X):
        """q(z = k | x) from the expected log joint, shape (n, K)."""
        return to_output(*self._chunked(X, lambda m, p, Xb: torch.softmax(m.log_joint(p, Xb), 1)))

    def predict(self, X):
        """The most probable component of each sample under q, shape (n,)."""
        return to_output(*self._chunked(X, lambda m, p, Xb: m.log_joint(p, Xb).argmax(1)))

    def fit_predict(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).predict(X)

    def score_samples(self, X):
        """log p(x | training data) per sample: the posterior predictive under q, a
        mixture of Student-t components with the weights ``weights_``, shape (n,)."""
        return to_output(*self._chunked(
            X, lambda m, p, Xb: torch.logsumexp(m.predictive_log_prob(p, Xb), 1)))

    def score(self, X, y=None):
        """Mean predictive log p(x) per sample (float)."""
        lp, _ = self._chunked(X, lambda m, p, Xb: torch.logsumexp(m.predictive_log_prob(p, Xb), 1))
        return float(lp.mean())

    def elbo_terms(self, X, sample_weight=None) -> VariationalBound:
        """The ELBO of X under the fitted globals (q(z) optimal), in parts:
        E_q[log p(x, z | theta)] + H[q(z)] - KL(q(weights) || p) - KL(q(components) || p).

        With X the training data, ``elbo / n_samples`` is the last entry of ``lower_bounds_``.
        """
        check_is_fitted(self)
        source, _, _ = self._data(X, sample_weight)
        model = self._vi_model(self._prior(source.X.device))
        params = self._params(source.X.device)
        parts = [variational_bound(model.log_joint(params, Xb), None, weight=wb) for Xb, wb in source]
        kl = {"weights": model.kl_weights(params), "components": model.kl_components(params).sum()}
        return VariationalBound(sum(p.expected_log_joint for p in parts),
                                sum(p.entropy for p in parts), kl,
                                sum(p.n_samples for p in parts))

    def sample(self, n_samples=1):
        """Draw from the point-estimate mixture (weights_, means_, covariances_), as
        scikit-learn: (X of shape (n_samples, n_features), component of each)."""
        check_is_fitted(self)
        check_positive_int(n_samples, "n_samples")
        is_torch = isinstance(self.means_, torch.Tensor)
        device = self.means_.device if is_torch else torch.device("cpu")
        p = self._params(device)
        gm = self._vi_model(self._prior(device)).gm
        gp = GaussianMixtureParams(self._tensor(self.weights_, device), p.means, p.covariances,
                                   p.precisions_cholesky)
        X, z = gm.sample(gp, int(n_samples), make_generator(self.random_state, device))
        return (X, z) if is_torch else (X.cpu().numpy(), z.cpu().numpy())


class _MiniBatches:
    """The mini-batches of stochastic VI over a source, one pass per iteration.

    In memory: a fresh random permutation per pass, cut into ceil(n / size)
    mini-batches. Streamed: the source's own chunks, in order. Under
    torch.distributed every rank yields the same number of mini-batches (its
    rows split alike, or padded with empty ones), each rank's part of one
    global mini-batch of about ``size`` rows.
    """

    def __init__(self, source, size, generator, reducer=None, n_features=None, dtype=F64):
        self.source, self.generator, self.reducer = source, generator, reducer
        self.n_features, self.dtype = n_features, dtype
        self.in_memory = isinstance(source, InMemorySource)
        if self.in_memory:
            n = source.n_samples if reducer is None else int(reducer.sum(source.n_samples))
            self.count = max(1, math.ceil(n / size))
        else:
            own = sum(1 for _ in source)
            self.count = own if reducer is None else max(reducer.sizes(own))

    def __iter__(self):
        src = self.source
        if self.in_memory:
            X, w = src.X, src.weight
            order = torch.randperm(X.shape[0], generator=self.generator,
                                   device=self.generator.device).to(X.device)
            bounds = [X.shape[0] * i // self.count for i in range(self.count + 1)]
            for a, b in zip(bounds[:-1], bounds[1:]):
                idx = order[a:b]
                yield X[idx], None if w is None else w[idx]
            return
        served, empty = 0, None
        for X, w in src:
            served += 1
            empty = (X[:0], None if w is None else w[:0])
            yield X, w
        if empty is None:  # a rank without rows
            empty = (torch.zeros(0, self.n_features, dtype=self.dtype), None)
        for _ in range(self.count - served):
            yield empty
