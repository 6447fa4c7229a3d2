"""The estimator plumbing of every family-based EM model, written once.

:class:`FamilyEMEstimator` holds what ``Mixture``, ``PPCA``,
``FactorAnalysis`` (and any estimator over a component family) share:
validation, in-memory and streamed data, restarts (``n_init``),
``warm_start``, sample weights, known labels, frozen parameters, exact and
stepwise EM, ``partial_fit``, torch.distributed, the final bound, feature
names, save/load.  A subclass says which family it fits (``_make_family``)
and how many components (``_n_components``), and adds its own outputs.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from elbokit._validation import (
    InputKind,
    _numpy_2d,
    as_sample_weight,
    check_nonneg_float,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
    to_output,
)
from elbokit import io
from elbokit import priors
from elbokit.base import ElbokitEstimator, InformationCriteria
from elbokit.data.sources import InMemorySource, as_source, is_source_like, sample_rows
from elbokit.families import Family, family_spec, get_family
from elbokit.families.base import F64
from elbokit.inference import distributed
from elbokit.inference.em import EMRun, RobbinsMonro, fit_em, run_em, run_stepwise, stepwise_update
from elbokit.models.family_mixture import FamilyMixtureModel, MixtureParams
from elbokit.models.kmeans import kmeans_plusplus, lloyd, squared_distances

from elbokit.mixture import _CHUNK_ELEMENTS, _INIT_SAMPLE, ALGORITHMS, INIT_METHODS  # noqa: F401


def as_float_tensor(X, name, dtype, device, min_samples=1):
    """X as a 2-D floating tensor on ``device``; NaN allowed (a missing entry), inf refused.

    The checks and messages of :func:`elbokit._validation.as_2d_tensor` otherwise.

    Returns (tensor, InputKind, feature names or None).
    """
    names = getattr(X, "feature_names", None)
    if hasattr(X, "columns") and hasattr(X, "dtypes"):  # a pandas DataFrame
        names = [str(c) for c in X.columns]
        X = X.to_numpy(dtype=np.float64, na_value=np.nan)
    if isinstance(X, torch.Tensor):
        if X.is_complex():
            raise ValueError(f"Complex data not supported: {name} has complex values.")
        kind, t = InputKind(True, X.device), X.detach()
    else:
        kind = InputKind(False, torch.device("cpu"))
        arr = _numpy_2d(X, name)
        t = torch.from_numpy(arr.copy() if not arr.flags.writeable else arr)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {tuple(t.shape)}. "
                         f"Reshape your data ({name}.reshape(-1, 1) for one feature).")
    if t.shape[0] < min_samples:
        raise ValueError(f"{name} has {t.shape[0]} sample(s) (shape={tuple(t.shape)}) while a "
                         f"minimum of {min_samples} is required.")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 "
                         "is required.")
    t = t.to(device=device, dtype=t.dtype if t.dtype in (torch.float32, torch.float64) else dtype)
    if bool(torch.isinf(t).any()):
        raise ValueError(f"{name} contains inf: remove those rows or clip the values "
                         "(NaN marks a missing entry).")
    return t, kind, names


def _family_problem(config) -> str | None:
    """None if ``config`` rebuilds a family, else why not (for the load validator)."""
    try:
        get_family(config)
    except (TypeError, ValueError, KeyError) as err:
        return f"not a component family ({err})"
    return None


def _expected_params(model) -> dict:
    """{name: (shape, dtype)} of the fitted family's parameters (for the load validator)."""
    family = get_family(model.family_config_)
    shapes = family.param_shapes(model._n_components(), model.n_features_in_)
    return {k: (tuple(v), F64) for k, v in shapes.items()}


class FamilyEMEstimator(InformationCriteria, ElbokitEstimator):
    """Base class of the EM estimators over a component family (see module docstring).

    Subclasses set the hyperparameters in ``__init__`` (scikit-learn style)
    and implement ``_make_family()`` and ``_n_components()``.
    """

    # EM's stopping rule: scikit-learn's |change| < tol (False), or also not while
    # the gain grows (True: see inference.em.run_em, leave_plateaus)
    _leave_plateaus = False

    _fitted_attributes = (
        "weights_", "params_", "family_config_", "lower_bounds_", "lower_bound_", "converged_",
        "n_iter_", "n_features_in_", "n_steps_",
    )
    _fitted_schema = {
        "family_config_": io.json_value(check=lambda m, v: _family_problem(v)),
        "weights_": io.array(lambda m: (m._n_components(),), low=0, check=io.sums_to_one),
        "params_": io.tensor_dict(lambda m: _expected_params(m)),
        "lower_bounds_": io.array(None), "lower_bound_": io.real(), "converged_": io.flag(),
        "n_iter_": io.integer(low=0), "n_features_in_": io.integer(low=1),
        "n_steps_": io.integer(low=0),
    }

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN is a missing entry, marginalised inside EM
        return tags

    # ------------------------------------------------------------ hooks
    def _make_family(self) -> Family:
        raise NotImplementedError

    def _n_components(self) -> int:
        raise NotImplementedError

    def _extra_checks(self):
        """Subclass-specific hyperparameter checks."""

    def _init_method(self) -> str:
        """The initialisation method's name (a subclass may keep it elsewhere)."""
        return self.init_params

    # ------------------------------------------------------------ validation
    def _check_hyperparameters(self):
        check_positive_int(self._n_components(), "n_components")
        check_positive_int(self.max_iter, "max_iter", minimum=0)
        check_positive_int(self.n_init, "n_init")
        check_positive_int(self.verbose, "verbose", minimum=0)
        check_nonneg_float(self.tol, "tol")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={self.algorithm!r} is not supported: use 'em' or 'stepwise'.")
        if self._init_method() not in INIT_METHODS:
            raise ValueError(f"init_params={self._init_method()!r} is not supported: use one of "
                             f"{', '.join(map(repr, INIT_METHODS))}.")
        RobbinsMonro(self.step_offset, self.step_decay)
        self._extra_checks()

    def _fitted_family(self) -> Family:
        check_is_fitted(self)
        if getattr(self, "_family_cache", None) is None or self._family_cache[0] != self.family_config_:
            self._family_cache = (self.family_config_, get_family(self.family_config_))
        return self._family_cache[1]

    def _model(self, family=None, labelled=False, device=None) -> FamilyMixtureModel:
        family = family if family is not None else self._fitted_family()
        prior = getattr(self, "_fit_prior", None)  # set while fitting with prior= (issue 17)
        if prior is not None:
            return priors.MAPFamilyMixtureModel(family, resolve_dtype(self.dtype), self._frozen(device),
                                                labelled=labelled, prior=prior)
        return FamilyMixtureModel(family, resolve_dtype(self.dtype), self._frozen(device),
                                  labelled=labelled)

    def _frozen(self, device=None) -> dict:
        frozen = getattr(self, "frozen", None) or {}
        if not isinstance(frozen, dict):
            raise ValueError("frozen must be a dict of parameter name to value (e.g. {'loc': means}).")
        out = {}
        for name, value in frozen.items():
            t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
            out[name] = t.to(device=device or "cpu", dtype=F64)
        return out

    def _rows(self, n_features, device, stepwise=False, missing=True, family=None) -> int:
        if self.batch_size:
            return int(self.batch_size)
        if stepwise:
            return 1024
        family = family if family is not None else self._make_family()
        per_row = max(1, family.work_per_row(self._n_components(), n_features, missing))
        budget = _CHUNK_ELEMENTS.get(torch.device(device).type, _CHUNK_ELEMENTS["cpu"])
        return max(64, budget // per_row)

    def _check_features(self, n_features, name="X", names=None):
        check_is_fitted(self)
        if n_features != self.n_features_in_:
            raise ValueError(
                f"{name} has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input: pass data with {self.n_features_in_} columns."
            )
        fitted = getattr(self, "feature_names_in_", None)
        if names is not None and fitted is not None and list(names) != list(fitted):
            raise ValueError(
                "The feature names should match those that were passed during fit: "
                f"got {list(names)}, expected {list(fitted)}; reorder the columns."
            )

    def _prepare_X(self, X):
        """Hook: convert user data (e.g. a DataFrame with categorical columns) to numbers."""
        return X

    def _data(self, X, sample_weight=None, y=None, *, reset=False, stepwise=False, allow_empty=False,
              family=None):
        """Any accepted input as (source, kind, n_features, names, labelled)."""
        dtype = resolve_dtype(self.dtype)
        X = self._prepare_X(X)
        missing_ok = (family or self._make_family()).supports_missing
        if is_source_like(X):
            if sample_weight is not None or y is not None:
                raise ValueError(
                    "sample_weight and y go with in-memory X; with streamed data give "
                    "(X_batch, weight_batch) pairs instead."
                )
            device = resolve_device(self.device)
            probe = as_source(X, batch_size=1, dtype=dtype, device=device, allow_missing=missing_ok)
            n_features = probe.n_features or next(iter(probe))[0].shape[1]
            source = as_source(X, batch_size=self._rows(n_features, device, stepwise, family=family),
                               dtype=dtype, device=device, allow_missing=missing_ok)
            if not reset:
                self._check_features(n_features)
            return source, InputKind(False, torch.device("cpu")), n_features, None, False
        device = resolve_device(self.device, X)
        Xt, kind, names = as_float_tensor(X, "X", dtype, device, min_samples=0 if allow_empty else 1)
        if not reset:
            self._check_features(Xt.shape[1], "X", names)
        weight = as_sample_weight(sample_weight, Xt.shape[0], dtype=Xt.dtype, device=Xt.device,
                                  allow_empty=allow_empty)
        n_features = Xt.shape[1]
        labelled = y is not None
        if labelled:
            yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
            if yt.shape != (Xt.shape[0],):
                raise ValueError(f"y must have shape ({Xt.shape[0]},), one label per row; -1 for unknown.")
            if yt.dtype.is_floating_point and not bool((yt == yt.round()).all()):
                raise ValueError("y must hold integer labels (component indices), -1 for unknown.")
            if bool((yt < -1).any()) or bool((yt >= self._n_components()).any()):
                raise ValueError(f"y must hold labels in -1..{self._n_components() - 1} "
                                 "(-1: unlabelled).")
            Xt = torch.cat([Xt, yt.to(device=Xt.device, dtype=Xt.dtype)[:, None]], 1)
        missing = bool(torch.isnan(Xt).any())
        rows = self._rows(n_features, Xt.device, stepwise, missing, family)
        return InMemorySource(Xt, weight, batch_size=rows), kind, n_features, names, labelled

    # ------------------------------------------------------------ initialisation
    def _initial_resp_fn(self, sample, family, gen, reducer, labelled, device):
        """A function of a batch giving its initial responsibilities (n, K)."""
        K = self._n_components()
        X, weight = sample
        if K == 1:
            return lambda Xb: torch.ones(Xb.shape[0], 1, dtype=Xb.dtype, device=Xb.device)
        if self._init_method() == "random":
            def random_resp(Xb):
                r = torch.rand(Xb.shape[0], K, generator=gen, device=gen.device).to(Xb.device)
                return (r / r.sum(1, keepdim=True)).to(Xb.dtype)
            return random_resp
        feats = None if X is None else family.embed(X[:, :-1] if labelled else X).to(F64)
        if reducer is None:
            centres = self._centres(feats, weight, gen)
        else:
            src = reducer.largest(0 if feats is None else feats.shape[0])
            D = family.embed(torch.zeros(1, self.n_features_in_pending_, dtype=F64)).shape[1]
            centres = torch.zeros(K, D, dtype=F64, device=device)
            if reducer.rank == src:
                centres = self._centres(feats, weight, gen)
            centres = reducer.broadcast(centres, src)
        centre = centres.mean(0)

        def nearest(Xb):
            E = family.embed(Xb).to(F64) - centre
            labels = squared_distances(E, centres - centre).argmin(1)
            return torch.nn.functional.one_hot(labels, K).to(Xb.dtype)
        return nearest

    def _centres(self, feats, weight, gen):
        K = self._n_components()
        centre = feats.mean(0)  # k-means on centred coordinates
        Fc = feats - centre
        if self._init_method() == "random_from_data":
            p = torch.ones(Fc.shape[0]) if weight is None else (weight > 0).to(F64).cpu()
            idx = torch.multinomial(p, K, replacement=False, generator=torch.Generator().manual_seed(
                int(torch.randint(2**31, (1,), generator=gen))))
            return feats[idx.to(feats.device)]
        w = None if weight is None else weight.to(F64)
        centres = kmeans_plusplus(Fc, K, gen, w)
        if self._init_method() == "kmeans":
            centres = lloyd(Fc, centres, w)[0]
        return centres + centre

    def _initialize(self, source, sample, family, gen, device, reducer, labelled):
        """Initial parameters: an M-step from initial responsibilities (labels respected),
        then user-given values; nothing to compute when those give every parameter."""
        given = getattr(self, "params_init", None) or {}
        names = set(family.param_shapes(self._n_components(), self.n_features_in_pending_))
        if getattr(self, "weights_init", None) is not None and names <= set(given):
            K = self._n_components()
            blank = MixtureParams(torch.full((K,), 1.0 / K, dtype=F64, device=device),
                                  {k: torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor)
                                                      else v).to(device=device, dtype=F64)
                                   for k, v in given.items()})
            return self._apply_user_init(blank, device)
        model = self._model(family, labelled, device)
        resp_fn = self._initial_resp_fn(sample, family, gen, reducer, labelled, device)
        total = None
        for Xb, wb in source:
            Xf, yb = model.split(Xb)
            resp = resp_fn(Xf)
            if yb is not None:
                known = yb >= 0
                onehot = torch.nn.functional.one_hot(yb.clamp_min(0), self._n_components()).to(resp.dtype)
                resp = torch.where(known[:, None], onehot, resp)
            stats = model.statistics_from_responsibilities(Xb, resp, wb)
            total = stats if total is None else {k: total[k] + stats[k] for k in total}
        if reducer is not None:
            total = reducer(total)
        params = model.maximize(total, None)
        return self._apply_user_init(params, device)

    def _apply_user_init(self, params: MixtureParams, device) -> MixtureParams:
        weights, fam = params.weights, dict(params.params)
        if getattr(self, "weights_init", None) is not None:
            weights = torch.as_tensor(np.asarray(self.weights_init), dtype=F64, device=device)
            if weights.shape != params.weights.shape or bool((weights < 0).any()) or \
                    abs(float(weights.sum()) - 1) > 1e-6:
                raise ValueError(f"weights_init must have shape {tuple(params.weights.shape)}, be "
                                 "non-negative and sum to 1.")
        for name, value in (getattr(self, "params_init", None) or {}).items():
            if name not in fam:
                raise ValueError(f"params_init has {name!r}, not a parameter of this family "
                                 f"({', '.join(sorted(fam))}).")
            t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
            t = t.to(device=device, dtype=F64)
            if t.shape != fam[name].shape:
                raise ValueError(f"params_init[{name!r}] must have shape {tuple(fam[name].shape)}; "
                                 f"got {tuple(t.shape)}.")
            fam[name] = t
        return MixtureParams(weights, fam)

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM (or stepwise EM, see ``algorithm``).

        Parameters
        ----------
        X : array-like, DataFrame or tensor of shape (n_samples, n_features), or a data source
            NaN marks a missing entry (missing at random). Streamed: the path of a
            .npy/.parquet/.csv file, a list of batches, or a function returning a fresh
            iterator of batches.
        y : array-like of shape (n_samples,), optional
            Known components (0..K-1) of some rows, -1 for the others: semi-supervised EM,
            a labelled row keeps its component.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        stepwise = self.algorithm == "stepwise"
        reducer = distributed.resolve(self.distributed)
        if reducer is not None and stepwise:
            raise ValueError("algorithm='stepwise' runs in one process; under torch.distributed use "
                             "algorithm='em'.")
        base_family = self._make_family()
        source, kind, n_features, names, labelled = distributed.checked(reducer, lambda: self._data(
            X, sample_weight, y, reset=True, stepwise=stepwise, allow_empty=reducer is not None,
            family=base_family))
        self.n_features_in_pending_ = n_features
        device = resolve_device(self.device, X if isinstance(X, torch.Tensor) else None)
        self._fit_prior = distributed.checked(reducer, lambda: priors.resolve_for(
            self, source, reducer, n_features, device))
        gen = make_generator(self.random_state, device)
        sampler = torch.Generator(device=gen.device)
        sampler.manual_seed(int(torch.randint(2**62, (1,), generator=gen, device=gen.device)))
        sample = sample_rows(source, max(_INIT_SAMPLE, self._n_components()), sampler)
        self._check_sample_count(sample, reducer)
        family = distributed.checked(reducer, lambda: self._prepare_family(base_family, sample, labelled,
                                                                           reducer))
        model = self._model(family, labelled, device)
        warm = self.warm_start and self.__sklearn_is_fitted__()
        if warm:
            if n_features != self.n_features_in_:
                raise ValueError(f"warm_start: X has {n_features} features, the fitted model "
                                 f"{self.n_features_in_}: refit with warm_start=False.")
            first = self._params(device)
            previous = float(self.lower_bound_)

            def initialize(i):
                return first
        else:
            previous = None

            def initialize(i):
                return self._initialize(source, sample, family, gen, device, reducer, labelled)

        common = dict(tol=float(self.tol), max_iter=int(self.max_iter), verbose=int(self.verbose))
        steps = {"t": 1}
        if stepwise:
            def runner(params):
                run, steps["t"] = run_stepwise(model, params, source,
                                               RobbinsMonro(self.step_offset, self.step_decay), **common)
                return run
        else:
            def runner(params):
                return run_em(model, params, source, reduce=reducer,
                              leave_plateaus=self._leave_plateaus, **common)

        run = self._run(runner, initialize, warm, common)
        if previous is not None and run.lower_bounds and abs(run.lower_bounds[0] - previous) < self.tol:
            run.converged = True  # the bound had settled across warm-started calls
        del self.n_features_in_pending_, self._fit_prior
        self._store(run, family, kind, n_features, names, n_steps=steps["t"] - 1 if stepwise else 0)
        return self

    def _run(self, runner, initialize, warm, common) -> EMRun:
        import warnings

        from elbokit.inference.em import ConvergenceWarning

        if warm and common["max_iter"] <= 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return fit_em(runner, initialize, n_init=1, **common)
        return fit_em(runner, initialize, n_init=1 if warm else self.n_init, **common)

    def _prepare_family(self, family, sample, labelled, reducer):
        X, _ = sample
        if X is None:
            X = torch.zeros(0, self.n_features_in_pending_ + (1 if labelled else 0), dtype=F64)
        feats = X[:, :-1] if labelled else X
        family = copy.deepcopy(family)
        family.check(feats, "X")
        return family.prepare(feats, reducer)

    def _check_sample_count(self, sample, reducer=None):
        X, weight = sample
        n = 0 if X is None else X.shape[0] if weight is None else int((weight > 0).sum())
        if reducer is not None:
            n = int(reducer.sum(n))
        if self._n_components() > n:
            raise ValueError(f"n_components={self._n_components()} must be <= n_samples={n}: "
                             "decrease n_components or provide more samples.")

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update from the mini-batch X (the first call initialises)."""
        self._check_hyperparameters()
        if getattr(self, "prior", None) is not None:
            raise ValueError("partial_fit is stepwise EM; prior= applies to fit (exact EM): "
                             "set prior=None for partial_fit.")
        first = not self.__sklearn_is_fitted__()
        base_family = self._make_family() if first else self._fitted_family()
        source, kind, n_features, names, labelled = self._data(
            X, sample_weight, y, reset=first, family=base_family)
        Xt, weight = source.X, source.weight
        self.n_features_in_pending_ = n_features
        if first:
            gen = make_generator(self.random_state, Xt.device)
            sample = (Xt, weight)
            self._check_sample_count(sample)
            family = self._prepare_family(base_family, sample, labelled, None)
            params = self._initialize(source, sample, family, gen, Xt.device, None, labelled)
            t, history = 1, []
        else:
            family = base_family
            family.check(Xt[:, :-1] if labelled else Xt, "X")
            params, t, history = self._params(Xt.device), self.n_steps_ + 1, list(self.lower_bounds_)
        del self.n_features_in_pending_
        model = self._model(family, labelled, Xt.device)
        params, mean = stepwise_update(model, params, Xt, weight,
                                       RobbinsMonro(self.step_offset, self.step_decay)(t))
        run = EMRun(params=params, lower_bounds=history + [mean], converged=False, n_iter=t)
        self._store(run, family, kind, n_features, names, n_steps=t)
        return self

    def _store(self, run, family, kind, n_features, names, *, n_steps):
        p = run.params
        out = (lambda t: t) if kind.is_torch else (lambda t: t.detach().cpu().numpy())
        self.weights_ = out(p.weights)
        self.params_ = {k: out(v) for k, v in p.params.items()}
        self.family_config_ = family_spec(family)
        self._family_cache = (self.family_config_, family)
        self.lower_bounds_ = np.asarray(run.lower_bounds, dtype=np.float64)
        self.lower_bound_ = float(run.lower_bounds[-1])
        self.converged_ = bool(run.converged)
        self.n_iter_ = int(run.n_iter)
        self.n_features_in_ = int(n_features)
        self.n_steps_ = int(n_steps)
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _params(self, device) -> MixtureParams:
        check_is_fitted(self)

        def t(a):
            return torch.as_tensor(a).to(device=device, dtype=F64)

        return MixtureParams(t(self.weights_), {k: t(v) for k, v in self.params_.items()})

    def _fitted_state(self):
        state = super()._fitted_state()
        state["params_"] = {k: torch.as_tensor(v).to(F64) for k, v in self.params_.items()}
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
        return state

    def _set_fitted_state(self, state):
        state = dict(state)
        names = state.pop("feature_names_in_", None)
        as_torch = isinstance(state["weights_"], torch.Tensor)
        params = state.pop("params_")
        super()._set_fitted_state(state)
        device = state["weights_"].device if as_torch else None
        self.params_ = {k: (torch.as_tensor(v).to(device) if as_torch else torch.as_tensor(v).numpy())
                        for k, v in params.items()}
        if names is not None:
            self.feature_names_in_ = np.asarray(names, dtype=object)

    # ------------------------------------------------------------ inference
    def _chunked(self, X, fn):
        """``fn(model, params, X_chunk)`` over any accepted input; (concatenated, kind)."""
        family = self._fitted_family()
        source, kind, _, _, _ = self._data(X, family=family)
        model = self._model(family)
        params = None
        outs = []
        for Xb, _ in source:
            if params is None:
                params = self._params(Xb.device)
            Xc = Xb.to(model.dtype) if Xb.dtype != model.dtype else Xb
            family.check(Xc, "X")
            outs.append(fn(model, params, Xc))
        return torch.cat(outs), kind

    def log_joint(self, X):
        """log p(x, z=k) per sample and component, shape (n, K); missing entries marginalised."""
        return to_output(*self._chunked(X, lambda m, p, Xb: m.log_joint(p, Xb)))

    def score_samples(self, X):
        """Exact log p(x) per sample (missing entries marginalised), shape (n,)."""
        return to_output(*self._chunked(X, lambda m, p, Xb: torch.logsumexp(m.log_joint(p, Xb), 1)))

    def score(self, X, y=None):
        """Mean log p(x) per sample (float)."""
        lp, _ = self._chunked(X, lambda m, p, Xb: torch.logsumexp(m.log_joint(p, Xb), 1))
        return float(lp.to(F64).mean())

    def impute(self, X):
        """X with every missing entry (NaN) replaced by E[x_missing | x_observed]
        (the posterior-weighted conditional expectation over the components)."""
        def fill(m, p, Xb):
            resp = torch.softmax(m.log_joint(p, Xb), 1)
            cond = m.family.conditional_mean(p.params, Xb).to(F64)  # (n, K, D)
            filled = (resp[:, :, None] * cond).sum(1)
            return torch.where(torch.isnan(Xb), filled.to(Xb.dtype), Xb)
        return to_output(*self._chunked(X, fill))

    def sample(self, n_samples=1):
        """Draw samples: (X of shape (n_samples, n_features), component of each)."""
        check_is_fitted(self)
        check_positive_int(n_samples, "n_samples")
        is_torch = isinstance(self.weights_, torch.Tensor)
        device = self.weights_.device if is_torch else torch.device("cpu")
        gen = make_generator(self.random_state, device)
        X, z = self._model().sample(self._params(device), int(n_samples), gen)
        return (X, z) if is_torch else (X.cpu().numpy(), z.cpu().numpy())

    def _n_parameters(self):
        params = self._params("cpu")
        return self._fitted_family().n_parameters(params.params) + self._n_components() - 1

    def _total_log_likelihood(self, X):
        lp, _ = self._chunked(X, lambda m, p, Xb: torch.logsumexp(m.log_joint(p, Xb), 1).to(F64))
        return float(lp.sum()), lp.shape[0]

