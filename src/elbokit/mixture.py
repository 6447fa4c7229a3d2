"""``GaussianMixture``: the scikit-learn-style estimator over the EM engine."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from elbokit import io
from elbokit._validation import (
    as_2d_tensor,
    as_sample_weight,
    check_nonneg_float,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
    to_output,
)
from elbokit.base import ElbokitEstimator
from elbokit.data import InMemorySource
from elbokit.inference.em import fit_em
from elbokit.models.gaussian_mixture import (
    COVARIANCE_TYPES,
    GaussianMixtureModel,
    GaussianMixtureParams,
    n_parameters,
    precisions_cholesky_from_covariances,
    precisions_from_cholesky,
)
from elbokit.models.kmeans import kmeans_plusplus, lloyd, squared_distances

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
_CHUNK_ELEMENTS = 1 << 20  # elements of one (K, D, chunk) work tensor: stays in cache


@io.register
class GaussianMixture(ElbokitEstimator):
    """Gaussian mixture fitted by expectation-maximisation.

    The joint is p(x, z=k) = weights_[k] N(x | means_[k], covariances_[k]).
    EM alternates the exact posterior q(z) = p(z | x) (E-step) with the
    closed-form maximiser of E_q[log p(x, z)] (M-step); the bound it climbs
    is the mean log-likelihood per sample, which never decreases.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
        Each component's own full matrix, one shared full matrix, a diagonal
        per component, or one variance per component.
    tol : float, default=1e-3
        Stop when the per-sample mean bound changes by less than ``tol``.
    reg_covar : float, default=1e-6
        Added to the covariances' diagonals, keeping them positive definite.
    max_iter : int, default=100
        EM iterations per initialisation.
    n_init : int, default=1
        Initialisations to try; the one with the best final bound is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How initial responsibilities are chosen: k-means (k-means++ seeding
        and Lloyd steps), k-means++ seeding alone, uniform random
        responsibilities, or random samples as centres.
    weights_init : array-like of shape (K,), optional
        User-given initial weights (override ``init_params`` for the weights).
    means_init : array-like of shape (K, D), optional
        User-given initial means.
    precisions_init : array-like, optional
        User-given initial precisions (inverse covariances), shaped as
        ``covariances_``.
    random_state : int, RandomState or None
        Seed for initialisation and sampling.
    warm_start : bool, default=False
        Start a new ``fit`` from the last fitted parameters (``n_init`` is
        then ignored).
    verbose : int, default=0
        0 silent, 1 a progress bar, 2 one line per iteration.
    device : str or torch.device, optional
        Where to compute; by default where the data is.
    dtype : {"float32", "float64"}, default="float32"
        Compute dtype of the E-step. Sufficient statistics always accumulate
        in float64 and the M-step runs in float64.
    batch_size : int, optional
        Rows per chunk of the E-step, bounding memory to O(batch_size * K * D);
        chosen automatically when None.

    Attributes
    ----------
    weights_ : array of shape (K,)
    means_ : array of shape (K, D)
    covariances_ : array
        (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical.
    precisions_ : array
        Inverse covariances, same shapes.
    precisions_cholesky_ : array
        U with U U^T = precision (upper triangular for full/tied).
    lower_bounds_ : array of shape (n_iter_ + 1,)
        Mean log-likelihood per sample before each M-step of the kept run,
        and last under the fitted parameters (EM's ELBO equals log p(x)).
    lower_bound_ : float
        Last entry of ``lower_bounds_``: the training data's mean log p(x).
    converged_ : bool
    n_iter_ : int
    n_features_in_ : int

    Fitted arrays are NumPy arrays when ``fit`` got NumPy data, and float64
    torch tensors on the compute device when it got tensors.
    """

    _fitted_attributes = (
        "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
        "lower_bounds_", "lower_bound_", "converged_", "n_iter_", "n_features_in_",
    )

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-3,
        reg_covar=1e-6,
        max_iter=100,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        device=None,
        dtype="float32",
        batch_size=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    # ------------------------------------------------------------ validation
    def _check_hyperparameters(self):
        check_positive_int(self.n_components, "n_components")
        check_positive_int(self.max_iter, "max_iter", minimum=0)
        check_positive_int(self.n_init, "n_init")
        check_positive_int(self.verbose, "verbose", minimum=0)
        check_nonneg_float(self.tol, "tol")
        check_nonneg_float(self.reg_covar, "reg_covar")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type={self.covariance_type!r} is not supported: "
                f"use one of {', '.join(map(repr, COVARIANCE_TYPES))}."
            )
        if self.init_params not in INIT_METHODS:
            raise ValueError(
                f"init_params={self.init_params!r} is not supported: use one of "
                f"{', '.join(map(repr, INIT_METHODS))}, or give means_init/weights_init/"
                "precisions_init."
            )

    def _model(self) -> GaussianMixtureModel:
        return GaussianMixtureModel(self.covariance_type, float(self.reg_covar), resolve_dtype(self.dtype))

    def _source(self, X, weight=None) -> InMemorySource:
        K, D = self.n_components, X.shape[1]
        rows = self.batch_size or max(256, _CHUNK_ELEMENTS // max(1, K * D))
        return InMemorySource(X, weight, batch_size=rows)

    def _validate(self, X, name="X", reset=False):
        dtype = resolve_dtype(self.dtype)
        device = resolve_device(self.device, X)
        X, kind = as_2d_tensor(X, name=name, dtype=dtype, device=device)
        if not reset:
            check_is_fitted(self)
            expected = self.n_features_in_
            if X.shape[1] != expected:
                raise ValueError(
                    f"{name} has {X.shape[1]} features, but GaussianMixture is expecting "
                    f"{expected} features as input: pass data with {expected} columns."
                )
        return X, kind

    # ------------------------------------------------------------ initialisation
    def _user_array(self, value, name, shape, device):
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        t = t.to(device=device, dtype=torch.float64)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(t.shape)}.")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf.")
        return t

    def _cov_shape(self, D):
        K = self.n_components
        return {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[
            self.covariance_type
        ]

    def _initial_centres(self, X, weight, gen):
        """Centres for the centre-based initialisations, shape (K, D)."""
        K = self.n_components
        if self.init_params == "random_from_data":
            p = torch.ones(X.shape[0], device=X.device) if weight is None else (weight > 0).float()
            idx = torch.multinomial(p, K, replacement=False, generator=gen)
            return X[idx]
        centres = kmeans_plusplus(X, K, gen, weight)
        if self.init_params == "kmeans":
            centres = lloyd(self._source(X, weight), centres)
        return centres

    def _initialize(self, X, weight, gen) -> GaussianMixtureParams:
        """Initial parameters: an M-step from initial responsibilities, then user overrides."""
        model = self._model()
        K, D = self.n_components, X.shape[1]
        f64 = torch.float64
        given = (self.weights_init, self.means_init, self.precisions_init)
        if all(v is not None for v in given):  # nothing left for init_params to choose
            zeros = torch.zeros(K, D, dtype=f64, device=X.device)
            return self._apply_user_init(model.anchor(zeros), D, X.device)
        if self.init_params == "random":
            anchor_means = X.double().mean(0).expand(K, D) if weight is None else (
                (weight.double() @ X.double()) / weight.double().sum()).expand(K, D)

            def responsibilities(Xb):
                r = torch.rand(Xb.shape[0], K, generator=gen, device=X.device, dtype=Xb.dtype)
                return r / r.sum(1, keepdim=True)
        else:
            anchor_means = self._initial_centres(X, weight, gen).to(f64)

            def responsibilities(Xb):
                labels = squared_distances(Xb, anchor_means.to(Xb.dtype)).argmin(1)
                return torch.nn.functional.one_hot(labels, K).to(Xb.dtype)

        anchor = model.anchor(anchor_means)
        total = None
        for Xb, wb in self._source(X, weight):
            stats = model.statistics_from_responsibilities(anchor, Xb, responsibilities(Xb), wb)
            total = stats if total is None else {k: total[k] + stats[k] for k in total}
        params = model.maximize(total, anchor)
        return self._apply_user_init(params, D, X.device)

    def _apply_user_init(self, params: GaussianMixtureParams, D, device) -> GaussianMixtureParams:
        K = self.n_components
        weights, means = params.weights, params.means
        cov, prec_chol = params.covariances, params.precisions_cholesky
        if self.weights_init is not None:
            weights = self._user_array(self.weights_init, "weights_init", (K,), device)
            if bool((weights < 0).any()) or abs(float(weights.sum()) - 1) > 1e-6:
                raise ValueError("weights_init must be non-negative and sum to 1.")
        if self.means_init is not None:
            means = self._user_array(self.means_init, "means_init", (K, D), device)
        if self.precisions_init is not None:
            ct = self.covariance_type
            prec = self._user_array(self.precisions_init, "precisions_init", self._cov_shape(D), device)
            if ct in ("full", "tied"):
                chol, info = torch.linalg.cholesky_ex(prec)
                if bool((info != 0).any()):
                    raise ValueError("precisions_init must be symmetric positive definite.")
                prec_chol, cov = chol, torch.cholesky_inverse(chol)  # L L^T = precision
            else:
                if bool((prec <= 0).any()):
                    raise ValueError("precisions_init must be positive.")
                prec_chol, cov = prec.sqrt(), prec.reciprocal()
        return GaussianMixtureParams(weights, means, cov, prec_chol)

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture by EM.

        Parameters
        ----------
        X : array-like or torch.Tensor, shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights; an integer weight acts as repeating the row.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        X, kind = self._validate(X, reset=True)
        n = X.shape[0]
        if self.n_components > n:
            raise ValueError(
                f"n_components={self.n_components} must be <= n_samples={n}: "
                "decrease n_components or provide more samples."
            )
        weight = as_sample_weight(sample_weight, n, dtype=X.dtype, device=X.device)
        if weight is not None and int((weight > 0).sum()) < self.n_components:
            raise ValueError(
                f"only {int((weight > 0).sum())} samples have a positive sample_weight, "
                f"fewer than n_components={self.n_components}."
            )
        gen = make_generator(self.random_state, X.device)
        warm = self.warm_start and self.__sklearn_is_fitted__()
        if warm:
            first = self._params(X.device)

            def initialize(i):
                return first
        else:
            def initialize(i):
                return self._initialize(X, weight, gen)

        run = fit_em(
            self._model(), initialize, self._source(X, weight),
            n_init=1 if warm else self.n_init, tol=float(self.tol),
            max_iter=int(self.max_iter), verbose=int(self.verbose),
        )
        self._store(run, kind, X.shape[1])
        return self

    def _store(self, run, kind, n_features):
        p = run.params
        ct = self.covariance_type
        out = (lambda t: t) if kind.is_torch else (lambda t: t.detach().cpu().numpy())
        self.weights_ = out(p.weights)
        self.means_ = out(p.means)
        self.covariances_ = out(p.covariances)
        self.precisions_cholesky_ = out(p.precisions_cholesky)
        self.precisions_ = out(precisions_from_cholesky(p.precisions_cholesky, ct))
        self.lower_bounds_ = np.asarray(run.lower_bounds, dtype=np.float64)
        self.lower_bound_ = float(run.lower_bound)
        self.converged_ = bool(run.converged)
        self.n_iter_ = int(run.n_iter)
        self.n_features_in_ = int(n_features)

    def _params(self, device) -> GaussianMixtureParams:
        """Fitted parameters as float64 tensors on ``device``."""
        check_is_fitted(self)

        def t(a):
            return torch.as_tensor(a).to(device=device, dtype=torch.float64)

        return GaussianMixtureParams(
            t(self.weights_), t(self.means_), t(self.covariances_), t(self.precisions_cholesky_)
        )

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most probable component of each sample, shape (n,)."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    # ------------------------------------------------------------ inference
    def _chunked(self, X, fn):
        """Apply ``fn(log_joint_chunk)`` chunk by chunk and concatenate."""
        model = self._model()
        params = self._params(X.device)
        outs = [fn(model.log_joint(params, Xb)) for Xb, _ in self._source(X)]
        return torch.cat(outs)

    def log_joint(self, X):
        """log p(x, z=k) = log weights_[k] + log N(x | means_[k], covariances_[k]).

        Returns
        -------
        array of shape (n_samples, n_components)
        """
        X, kind = self._validate(X)
        return to_output(self._chunked(X, lambda lj: lj), kind)

    def score_samples(self, X):
        """Exact log p(x) per sample (log-sum-exp over components), shape (n,)."""
        X, kind = self._validate(X)
        return to_output(self._chunked(X, lambda lj: torch.logsumexp(lj, 1)), kind)

    def score(self, X, y=None):
        """Mean log p(x) per sample (float)."""
        X, _ = self._validate(X)
        lp = self._chunked(X, lambda lj: torch.logsumexp(lj, 1))
        return float(lp.to(torch.float64).mean())

    def predict_proba(self, X):
        """Posterior p(z=k | x), shape (n, K); rows sum to 1."""
        X, kind = self._validate(X)
        return to_output(self._chunked(X, lambda lj: torch.softmax(lj, 1)), kind)

    def predict(self, X):
        """Most probable component per sample, shape (n,), int64."""
        X, kind = self._validate(X)
        return to_output(self._chunked(X, lambda lj: lj.argmax(1)), kind)

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Returns
        -------
        X : array of shape (n_samples, n_features)
        y : array of shape (n_samples,)
            The component each sample came from.
        """
        check_positive_int(n_samples, "n_samples")
        is_torch = isinstance(self.means_, torch.Tensor)
        device = self.means_.device if is_torch else torch.device("cpu")
        params = self._params(device)
        gen = make_generator(self.random_state, device)
        X, z = self._model().sample(params, int(n_samples), gen)
        if is_torch:
            return X, z
        return X.cpu().numpy(), z.cpu().numpy()

    def _n_parameters(self):
        return n_parameters(self.n_components, self.n_features_in_, self.covariance_type)

    def bic(self, X):
        """Bayesian information criterion on X: -2 log p(X) + p log n (lower is better)."""
        n = np.asarray(X).shape[0] if not isinstance(X, torch.Tensor) else X.shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X):
        """Akaike information criterion on X: -2 log p(X) + 2 p (lower is better)."""
        n = np.asarray(X).shape[0] if not isinstance(X, torch.Tensor) else X.shape[0]
        return -2 * self.score(X) * n + 2 * self._n_parameters()
