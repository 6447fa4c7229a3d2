"""``GaussianMixture``: the scikit-learn-style estimator over the EM engine."""

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
    as_2d_tensor,
    as_sample_weight,
    check_feature_names,
    check_mixture_settings,
    make_generator,
    output_dtype,
    resolve_device,
    resolve_dtype,
    to_output,
)
from elbokit.base import ElbokitEstimator, InformationCriteria
from elbokit.data.sources import InMemorySource, as_source, is_source_like, sample_rows
from elbokit.inference import distributed
from elbokit.inference.em import (
    EMRun,
    RobbinsMonro,
    add_statistics,
    fit_em,
    run_em,
    run_stepwise,
    stepwise_update,
)
from elbokit.models.gaussian_mixture import (
    COVARIANCE_TYPES,
    DegenerateComponentWarning,
    GaussianMixtureModel,
    GaussianMixtureParams,
    duplicate_components,
    n_parameters,
    precisions_from_cholesky,
    with_user_parameters,
)
from elbokit import priors
from elbokit.models.kmeans import assignment_dtype, kmeans, nearest

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")
ALGORITHMS = ("em", "stepwise")
# rows k-means initialisation sees at most (a random sample of the data):
# _INIT_ROWS, or _INIT_ROWS_PER_COMPONENT per component when more
_INIT_ROWS = 2048
_INIT_ROWS_PER_COMPONENT = 64
_INIT_SAMPLE = 100_000  # the general Mixture's initialisation sample (elbokit.em_estimator)
_LLOYD_STEPS = 30  # Lloyd iterations at most: k-means only seeds EM
_KMEANS_RUNS = 3  # k-means runs on the sample, the lowest inertia kept (cheap: it is small)
# elements of one chunk's work tensor, (chunk, K + D) or for full covariances
# the (chunk, K, D) residuals: on a CPU small enough to stay in cache (the
# full type's fewer, larger GEMMs pay off up to twice that); on a GPU large
# enough that kernel launches do not dominate
_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 26}


def _positive_diagonal(gm, value) -> str | None:
    """Load check: covariances, precisions and their factors have a positive diagonal."""
    t = torch.as_tensor(value)
    d = torch.diagonal(t, dim1=-2, dim2=-1) if gm.covariance_type in ("full", "tied") else t
    return None if bool((d > 0).all()) else "must have a positive diagonal"


@io.register
class GaussianMixture(InformationCriteria, ElbokitEstimator):
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
        Rows per chunk. For ``algorithm="em"`` a memory knob only (results do
        not depend on it): the E-step works on chunks, bounding memory to
        O(batch_size * K * D); chosen automatically when None. For
        ``"stepwise"`` the mini-batch size (default 1024).
    algorithm : {"em", "stepwise"}, default="em"
        ``"em"``: exact EM, one pass over the data per iteration. ``"stepwise"``:
        stepwise (online) EM, one update per mini-batch with step
        rho_t = (t + step_offset)^-step_decay; ``max_iter`` counts epochs.
    step_offset : float, default=2.0
        Robbins-Monro offset t0 of stepwise EM and ``partial_fit`` (>= 0).
    step_decay : float, default=0.7
        Robbins-Monro forgetting rate kappa, in (0.5, 1].
    distributed : None, True or False, default=None
        Fit across the ranks of a ``torch.distributed`` process group, each
        passing its own shard (possibly empty) to ``fit``: statistics are
        summed with one all_reduce per iteration, initial centres are
        broadcast, and every rank ends with the same parameters. None
        detects an initialised group of several ranks (e.g. under torchrun).
    prior : None, "default" or dict, default=None
        MAP-EM with mclust's conjugate prior (:mod:`elbokit.priors`): a weak
        normal-inverse-Wishart on means and covariances, a Dirichlet on the
        weights; "default" takes mclust's ``defaultPrior`` from the data, a
        dict overrides any of ``shrinkage``, ``mean``, ``dof``, ``scale``,
        ``weight_concentration``. EM then climbs log p(X | theta) + log p(theta)
        (``lower_bounds_`` per sample), no covariance degenerates, and
        ``bic`` uses the log-likelihood at the MAP estimate as mclust does.

    ``fit`` takes in-memory data or, to stream data larger than memory, the
    path of a ``.npy``, ``.parquet`` or ``.csv`` file, a list of batches, or a
    function returning a fresh iterator of batches (arrays, or pairs of
    arrays and sample weights).  Exact EM makes one pass per iteration and
    gives the same result as in memory.

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
    n_steps_ : int
        Stepwise updates made so far (``partial_fit`` / ``"stepwise"``).
    n_reseeded_ : int
        Empty components re-seeded (by splitting the widest one) during the fit.

    Fitted arrays are NumPy arrays when ``fit`` got NumPy data, and float64
    torch tensors on the compute device when it got tensors.
    """

    _fitted_attributes = (
        "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
        "lower_bounds_", "lower_bound_", "converged_", "n_iter_", "n_features_in_",
        "n_steps_", "n_reseeded_",
    )
    _fitted_schema = {
        "weights_": io.array("n_components", low=0, check=io.sums_to_one),
        "means_": io.array("n_components", "n_features_in_"),
        "covariances_": io.array(lambda m: m._cov_shape(m.n_features_in_), check=_positive_diagonal),
        "precisions_": io.array(lambda m: m._cov_shape(m.n_features_in_), check=_positive_diagonal),
        "precisions_cholesky_": io.array(lambda m: m._cov_shape(m.n_features_in_),
                                         check=_positive_diagonal),
        "lower_bounds_": io.array(None), "lower_bound_": io.real(), "converged_": io.flag(),
        "n_iter_": io.integer(low=0), "n_features_in_": io.integer(low=1),
        "n_steps_": io.integer(low=0, optional=True), "n_reseeded_": io.integer(low=0, optional=True),
    }

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
        algorithm="em",
        step_offset=2.0,
        step_decay=0.7,
        distributed=None,
        prior=None,
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
        self.algorithm = algorithm
        self.step_offset = step_offset
        self.step_decay = step_decay
        self.distributed = distributed
        self.prior = prior

    # ------------------------------------------------------------ validation
    def _check_hyperparameters(self):
        check_mixture_settings(self)
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(
                f"covariance_type={self.covariance_type!r} is not supported: "
                f"use one of {', '.join(map(repr, COVARIANCE_TYPES))}."
            )
        if self.algorithm not in ALGORITHMS:
            raise ValueError(
                f"algorithm={self.algorithm!r} is not supported: use 'em' (exact) or "
                "'stepwise' (online, mini-batches)."
            )
        self._schedule()
        priors.check_prior(self.prior, self.algorithm)
        if self.init_params not in INIT_METHODS:
            raise ValueError(
                f"init_params={self.init_params!r} is not supported: use one of "
                f"{', '.join(map(repr, INIT_METHODS))}, or give means_init/weights_init/"
                "precisions_init."
            )

    def _model(self, dtype: torch.dtype | None = None) -> GaussianMixtureModel:
        """The model's math, computing in ``dtype`` (default: the estimator's)."""
        dtype = resolve_dtype(self.dtype) if dtype is None else dtype
        prior = getattr(self, "_fit_prior", None)  # set while fitting with prior=
        if prior is not None:
            return priors.MAPGaussianMixtureModel(self.covariance_type, float(self.reg_covar),
                                                  dtype, prior)
        return GaussianMixtureModel(self.covariance_type, float(self.reg_covar), dtype)

    def _schedule(self) -> RobbinsMonro:
        return RobbinsMonro(self.step_offset, self.step_decay)

    def _rows(self, n_features: int, device, stepwise: bool = False) -> int:
        if self.batch_size:
            return int(self.batch_size)
        if stepwise:
            return 1024
        per_row = self._model().work_per_row(self.n_components, n_features)
        kind = torch.device(device).type
        budget = _CHUNK_ELEMENTS.get(kind, _CHUNK_ELEMENTS["cpu"])
        if kind != "cuda" and self.covariance_type == "full":
            budget *= 2
        return max(256, budget // per_row)

    def _source(self, X, weight=None) -> InMemorySource:
        return InMemorySource(X, weight, batch_size=self._rows(X.shape[1], X.device))

    def _check_features(self, n_features: int, name: str):
        check_is_fitted(self)
        expected = self.n_features_in_
        if n_features != expected:
            raise ValueError(
                f"{name} has {n_features} features, but GaussianMixture is expecting "
                f"{expected} features as input: pass data with {expected} columns."
            )

    def _validate(self, X, name="X", reset=False, allow_empty=False):
        if not reset:
            check_is_fitted(self)
            check_feature_names(self, X, reset=False)
        dtype = resolve_dtype(self.dtype)
        device = resolve_device(self.device, X)
        X, kind = as_2d_tensor(X, name=name, dtype=dtype, device=device, keep_float=True,
                               min_samples=0 if allow_empty else 1)
        if not reset:
            self._check_features(X.shape[1], name)
        return X, kind

    def _data(self, X, sample_weight=None, *, reset=False, stepwise=False, allow_empty=False):
        """Any accepted input as (source, output kind, n_features).

        Streams paths and iterables; checks and chunks in-memory data.  Unless
        ``reset`` (fit sets them when it succeeds), checks the feature names
        against a DataFrame's columns or a CSV/Parquet header.
        """
        if is_source_like(X):
            if not reset:
                check_is_fitted(self)
            if sample_weight is not None:
                raise ValueError(
                    "sample_weight goes with in-memory X; with streamed data give "
                    "(X_batch, weight_batch) pairs instead."
                )
            device = resolve_device(self.device)
            probe = as_source(X, batch_size=1, dtype=resolve_dtype(self.dtype), device=device)
            n_features = probe.n_features or next(iter(probe))[0].shape[1]
            source = as_source(X, batch_size=self._rows(n_features, device, stepwise),
                               dtype=resolve_dtype(self.dtype), device=device)
            if not reset:
                names = getattr(probe, "feature_names", None)
                if names is not None:  # a file with a header (other streams carry no names)
                    check_feature_names(self, None, reset=False, names=names)
                self._check_features(n_features, "X")
            return source, InputKind(False, torch.device("cpu")), n_features
        X, kind = self._validate(X, reset=reset, allow_empty=allow_empty)
        weight = as_sample_weight(sample_weight, X.shape[0], dtype=X.dtype, device=X.device,
                                  allow_empty=allow_empty)
        rows = self._rows(X.shape[1], X.device, stepwise)
        return InMemorySource(X, weight, batch_size=rows), kind, X.shape[1]

    # ------------------------------------------------------------ initialisation
    def _cov_shape(self, D):
        K = self.n_components
        return {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}[
            self.covariance_type
        ]

    def _initial_centres(self, X, weight, gen):
        """Centres for the centre-based initialisations, from the sample X, shape (K, D), float64."""
        K = self.n_components
        if self.init_params == "random_from_data":
            p = torch.ones(X.shape[0], device=X.device) if weight is None else (weight > 0).float()
            idx = torch.multinomial(p, K, replacement=False, generator=gen)
            return X[idx].to(torch.float64)
        if self.init_params == "k-means++":  # the seeding alone, one draw
            return kmeans(X, K, gen, weight, lloyd_steps=0)
        return kmeans(X, K, gen, weight, lloyd_steps=_LLOYD_STEPS, n_init=_KMEANS_RUNS)

    def _initialize(self, source, sample, gen, n_features, device, reducer=None):
        """Initial parameters: an M-step from initial responsibilities, then user overrides.

        Centres come from ``sample`` (a random subset of the data, the whole
        data when small); the M-step from one pass over ``source`` with each
        row assigned to its nearest centre.  Statistics and maximiser run in
        float64 (hard assignments make it cheap: n D^2 for full covariances).
        With several processes, the centres come from the rank with the
        largest sample and are broadcast; the statistics are reduced.

        Returns
        -------
        params : GaussianMixtureParams
        n_reseeded : int
            Components re-seeded by the initial M-step.
        """
        X, weight = sample
        model = self._model(torch.float64)  # (the posterior mode with prior=)
        K, D = self.n_components, n_features
        f64 = torch.float64
        given = (self.weights_init, self.means_init, self.precisions_init)
        if all(v is not None for v in given):  # nothing left for init_params to choose
            zeros = torch.zeros(K, D, dtype=f64, device=device)
            return self._apply_user_init(model.anchor(zeros)), 0
        if self.init_params == "random":
            sums = torch.zeros(D + 1, dtype=f64, device=device)
            if X is not None:
                w = torch.ones(X.shape[0], dtype=f64, device=X.device) if weight is None else weight.double()
                sums = torch.cat([w @ X.double(), w.sum().reshape(1)]).to(device)
            if reducer is not None:
                sums = reducer({"s": sums})["s"]
            anchor = model.anchor((sums[:D] / sums[D]).expand(K, D))

            def statistics(Xb, wb):
                r = torch.rand(Xb.shape[0], K, generator=gen, device=gen.device, dtype=f64)
                resp = (r / r.sum(1, keepdim=True)).to(Xb.device)
                return model.statistics_from_responsibilities(anchor, Xb, resp, wb)
        else:
            if reducer is None:
                centres = self._initial_centres(X, weight, gen)
            else:
                src = reducer.largest(0 if X is None else X.shape[0])
                centres = torch.zeros(K, D, dtype=f64, device=device)
                if reducer.rank == src:
                    centres = self._initial_centres(X, weight, gen)
                centres = reducer.broadcast(centres, src)
            anchor = None
            # float32 distances where they keep the centres apart, float64 otherwise
            # (whatever the compute dtype: both dtypes start from the same labels)
            precise = X is None or assignment_dtype(centres, X) == f64
            if reducer is not None:  # the same on every rank
                precise = bool(reducer.sum(float(precise)))
            dtype = f64 if precise else torch.float32

            def statistics(Xb, wb):
                return model.statistics_from_labels(centres, Xb, nearest(Xb, centres, dtype), wb)

        total = None
        for Xb, wb in source:
            total = add_statistics(total, statistics(Xb, wb))
        if reducer is not None:
            total = reducer(total)
        moments = (model.moments(total, anchor) if anchor is not None
                   else model.moments_from_labels(total, centres))
        params = model.from_moments(moments)
        return self._apply_user_init(params), model.n_reseeded

    def _apply_user_init(self, params: GaussianMixtureParams) -> GaussianMixtureParams:
        return with_user_parameters(params, self.covariance_type, self.weights_init,
                                    self.means_init, self.precisions_init)

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit the mixture by EM (or stepwise EM, see ``algorithm``).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, n_features), or a data source
            In-memory data; or, streamed in chunks, the path of a .npy, .parquet
            or .csv file, a list of batches, or a function returning a fresh
            iterator of batches (arrays or (array, weights) pairs).
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights; an integer weight acts as repeating the row.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        stepwise = self.algorithm == "stepwise"
        reducer = distributed.resolve(self.distributed)
        if reducer is not None and stepwise:
            raise ValueError(
                "algorithm='stepwise' runs in one process; under torch.distributed use "
                "algorithm='em' (or pass distributed=False to fit each rank on its own)."
            )
        source, kind, n_features = distributed.checked(reducer, lambda: self._data(
            X, sample_weight, reset=True, stepwise=stepwise, allow_empty=reducer is not None))
        warm = self.warm_start and self.__sklearn_is_fitted__()
        if warm and n_features != self.n_features_in_:
            raise ValueError(
                f"X has {n_features} features, but GaussianMixture is expecting "
                f"{self.n_features_in_} features as input: warm_start=True continues the fitted "
                f"model, which needs data with {self.n_features_in_} columns; set "
                "warm_start=False to fit a new one."
            )
        device = resolve_device(self.device, X if isinstance(X, torch.Tensor) else None)
        self._fit_prior = distributed.checked(reducer, lambda: priors.resolve_for(
            self, source, reducer, n_features, device))
        try:
            return self._fit(X, source, kind, n_features, device, reducer, stepwise, warm)
        finally:
            del self._fit_prior

    def _fit(self, X, source, kind, n_features, device, reducer, stepwise, warm):
        gen = make_generator(self.random_state, device)
        # the sample draws from its own stream, so that every kind of source
        # leaves ``gen`` in the same state for the initialisation
        sampler = torch.Generator(device=gen.device)
        sampler.manual_seed(int(torch.randint(2**62, (1,), generator=gen, device=gen.device)))
        rows = max(_INIT_ROWS, _INIT_ROWS_PER_COMPONENT * self.n_components)
        sample = sample_rows(source, rows, sampler)
        self._check_sample_count(sample, reducer)
        reseeded = [0]
        if warm:
            first, previous = self._params(device), self._carried_bound()

            def initialize(i):
                return first
        else:
            previous = -math.inf

            def initialize(i):
                params, n = self._initialize(source, sample, gen, n_features, device, reducer)
                reseeded[0] += n
                return params

        common = dict(tol=float(self.tol), max_iter=int(self.max_iter), verbose=int(self.verbose))
        steps = {"t": 1}

        def runner(params):  # a fresh model per run: each starts in the compute dtype
            model = self._model()
            try:
                if stepwise:
                    run, steps["t"] = run_stepwise(model, params, source, self._schedule(), **common)
                    return run
                return run_em(model, params, source, reduce=reducer, previous=previous, **common)
            finally:
                reseeded[0] += model.n_reseeded

        run = fit_em(runner, initialize, n_init=1 if warm else self.n_init, **common)
        self._store(run, kind, n_features, n_steps=steps["t"] - 1 if stepwise else 0,
                    n_reseeded=reseeded[0])
        check_feature_names(self, None if is_source_like(X) else X, reset=True,
                            names=getattr(source, "feature_names", None))
        return self

    def _carried_bound(self) -> float:
        """The bound a warm start continues from: the last per-iteration bound of the
        previous fit (its final entry is that of the parameters the new fit starts
        from), so that convergence is detected across calls as in scikit-learn."""
        bounds = np.asarray(self.lower_bounds_)
        return float(bounds[-2]) if bounds.size >= 2 else -math.inf

    def _check_sample_count(self, sample, reducer=None):
        X, weight = sample
        n = 0 if X is None else X.shape[0] if weight is None else int((weight > 0).sum())
        if reducer is not None:
            n = int(reducer.sum(n))
        if self.n_components > n:
            what = "n_samples" if weight is None else "samples with a positive sample_weight"
            raise ValueError(
                f"n_components={self.n_components} must be <= {what}={n}: "
                "decrease n_components or provide more samples."
            )

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update from the mini-batch X.

        The first call initialises the mixture from X (which needs at least
        ``n_components`` rows); each call then moves the running statistics a
        step rho_t = (t + step_offset)^-step_decay towards X's.  Continues
        from a model fitted by ``fit`` as well.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        if self.prior is not None:
            raise ValueError("partial_fit is stepwise EM; prior= applies to fit (exact EM): "
                             "set prior=None for partial_fit.")
        first = not self.__sklearn_is_fitted__()
        Xt, kind = self._validate(X, reset=first)
        weight = as_sample_weight(sample_weight, Xt.shape[0], dtype=Xt.dtype, device=Xt.device)
        model = self._model()
        if first:
            gen = make_generator(self.random_state, Xt.device)
            source = InMemorySource(Xt, weight, batch_size=self._rows(Xt.shape[1], Xt.device))
            sample = (Xt, weight)
            self._check_sample_count(sample)
            params, reseeded = self._initialize(source, sample, gen, Xt.shape[1], Xt.device)
            t, history = 1, []
        else:
            params, t, reseeded = self._params(Xt.device), self.n_steps_ + 1, self.n_reseeded_
            history = list(self.lower_bounds_)
        params, mean = stepwise_update(model, params, Xt, weight, self._schedule()(t))
        run = EMRun(params=params, lower_bounds=history + [mean], converged=False, n_iter=t)
        self._store(run, kind, Xt.shape[1], n_steps=t, n_reseeded=model.n_reseeded + reseeded)
        if first:
            check_feature_names(self, X, reset=True)
        return self

    def _store(self, run, kind, n_features, *, n_steps, n_reseeded):
        """Set the fitted attributes from ``run`` (arrays in the input's type and
        float dtype) and warn about degenerate components."""
        p = run.params
        ct = self.covariance_type
        dtype = output_dtype(kind)
        out = ((lambda t: t.to(dtype)) if kind.is_torch
               else (lambda t: t.detach().cpu().to(dtype).numpy()))
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
        self.n_steps_ = int(n_steps)
        self.n_reseeded_ = int(n_reseeded)
        if n_reseeded:
            warnings.warn(
                f"{n_reseeded} time(s) a component lost all its samples and was re-seeded by "
                "splitting the widest component; if this persists, decrease n_components.",
                DegenerateComponentWarning,
                stacklevel=3,
            )
        duplicates = duplicate_components(p, ct)
        if duplicates:
            warnings.warn(
                f"{len(duplicates)} component(s) duplicate another (the same weight, mean and "
                f"covariance: {', '.join(f'{i} and {j}' for i, j in duplicates[:5])}): the data "
                f"hold fewer distinct clusters than n_components={self.n_components}; decrease "
                "n_components.",
                DegenerateComponentWarning,
                stacklevel=3,
            )

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
        """Apply ``fn(log_joint, offset)`` chunk by chunk over any accepted input.

        ``log_joint + offset`` is log p(x, z=k) (see
        :meth:`GaussianMixtureModel.log_joint_shifted`).

        Returns
        -------
        out : Tensor
            The chunks' results, concatenated.
        kind : InputKind
        """
        source, kind, _ = self._data(X)
        model = self._model()
        params = None
        outs = []
        for Xb, _ in source:
            if params is None:
                params = self._params(Xb.device)
            outs.append(fn(*model.log_joint_shifted(params, Xb)))
        return torch.cat(outs), kind

    @staticmethod
    def _out(t: torch.Tensor, kind: InputKind):
        """A floating result in the input's type and float dtype."""
        return to_output(t.to(output_dtype(kind)), kind)

    def log_joint(self, X):
        """log p(x, z=k) = log weights_[k] + log N(x | means_[k], covariances_[k]).

        Returns
        -------
        array of shape (n_samples, n_components)
        """
        return self._out(*self._chunked(X, lambda lj, c: lj.to(torch.float64) + c))

    def score_samples(self, X):
        """Exact log p(x) per sample (log-sum-exp over components), shape (n,)."""
        return self._out(*self._chunked(X, _log_marginal))

    def score(self, X, y=None):
        """Mean log p(x) per sample (float): the mean of ``score_samples(X)``, taken
        in its dtype, as scikit-learn takes it."""
        return float(self._out(*self._chunked(X, _log_marginal)).mean())

    def predict_proba(self, X):
        """Posterior p(z=k | x), shape (n, K); rows sum to 1."""
        return self._out(*self._chunked(X, lambda lj, c: torch.softmax(lj, 1)))

    def predict(self, X):
        """Most probable component per sample, shape (n,), int64."""
        return to_output(*self._chunked(X, lambda lj, c: lj.argmax(1)))

    def sample(self, n_samples=1):
        """Draw samples from the fitted mixture.

        Returns
        -------
        X : array of shape (n_samples, n_features), float64
        y : array of shape (n_samples,)
            The component each sample came from.
        """
        check_is_fitted(self)
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r} . The sampling requires at "
                "least one sample: pass n_samples >= 1."
            )
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

    def _total_log_likelihood(self, X):
        lp, _ = self._chunked(X, _log_marginal)
        return float(lp.sum()), lp.shape[0]



def _log_marginal(log_joint: torch.Tensor, offset: float) -> torch.Tensor:
    """log p(x) = logsumexp_k log p(x, z=k), in float64, from the shifted log joint."""
    return torch.logsumexp(log_joint, 1).to(torch.float64) + offset
