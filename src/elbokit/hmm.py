"""Hidden Markov models fitted by EM (Baum-Welch): ``HMM`` with any emission family,
and hmmlearn-style conveniences ``GaussianHMM``, ``CategoricalHMM``, ``PoissonHMM``,
``GMMHMM``.

The math is :mod:`elbokit.models.hmm` (batched forward-backward, Viterbi); the
plumbing (restarts, warm start, streamed data, stepwise EM, torch.distributed,
save/load) is :class:`elbokit.em_estimator.FamilyEMEstimator`'s, shared with
``Mixture``.  Sequences are given as hmmlearn takes them (X with all sequences
one after the other, plus ``lengths``), as a list of arrays, or streamed (see
:mod:`elbokit.data.sequences`).

For users of hmmlearn: the parameter names are hmmlearn's (``n_iter``,
``params`` / ``init_params`` letter strings, ``startprob_prior``,
``transmat_prior``, ``startprob_``, ``transmat_``, ``means_``, ``covars_``,
``emissionprob_``, ``lambdas_``, ``weights_``), and attributes set before
``fit`` are kept for the letters missing from ``init_params``.  The
differences (``score`` is a mean per sample, ``score_samples`` gives log p(x)
per sequence, ``tol`` is per sample, ``algorithm`` chooses EM or stepwise EM,
``sample(n_sequences, length)``) are listed in the README.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from elbokit import io
from elbokit._validation import (
    InputKind,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
    to_output,
)
from elbokit.data import sequences as seqdata
from elbokit.em_estimator import FamilyEMEstimator, as_float_tensor
from elbokit.families import Categorical, Family, Gaussian, Poisson, get_family
from elbokit.families.base import F64
from elbokit.models.hmm import HMMModel, HMMParams
from elbokit.models.mixture_emission import MixtureOf

_ELEMENTS = {"cpu": 1 << 25, "cuda": 1 << 27}  # per batch: the recursions keep ~6K values per row
_STEPWISE_ROWS = 8192
START_LETTER, TRANS_LETTER = "s", "t"


def _as_f64(value, device, name):
    t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
    t = t.to(device=device, dtype=F64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or inf.")
    return t


def check_stochastic(t: torch.Tensor, shape, name: str) -> torch.Tensor:
    """A probability vector / row-stochastic matrix of ``shape``, or a clear error."""
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(t.shape)}.")
    if bool((t < 0).any()):
        raise ValueError(f"{name} has negative entries: probabilities are >= 0.")
    sums = t.sum(-1)
    if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-6)):
        what = "sum to 1" if t.ndim == 1 else "have rows that sum to 1"
        raise ValueError(f"{name} must {what} (got {sums.cpu().numpy().round(6)}).")
    return t


@io.register
class HMM(FamilyEMEstimator):
    """Hidden Markov model with any component family as emissions, fitted by Baum-Welch.

    p(x, z) = startprob[z_1] prod_t transmat[z_{t-1}, z_t] p_emission(x_t | z_t).
    EM is exact here: the E-step is forward-backward (batched over sequences),
    the M-step normalises the expected start and transition counts and calls the
    emission family's maximiser with the state marginals as weights.  The bound
    recorded per iteration (``lower_bounds_``) is log p(x) per sample (time step).

    Parameters
    ----------
    n_components : int, default=1
        Number of hidden states K.
    emission : str, dict or Family, default="gaussian"
        The emission family (see :mod:`elbokit.families`): ``"gaussian"``
        (full covariance), ``"categorical"``, ``"poisson"``, ``"bernoulli"``,
        ``"student_t"``, a :class:`~elbokit.families.Product` for mixed columns,
        ``MixtureOf(...)`` for a mixture per state, or any instance.
    startprob_prior, transmat_prior : float or array, default=1.0
        Dirichlet concentrations of the start and transition probabilities
        (1: maximum likelihood; c > 1 adds c - 1 pseudo-counts).  Zeros of the
        start or transition probabilities stay zero (left-right models).
    n_iter : int, default=100
        Maximum number of EM iterations (hmmlearn's name).
    tol : float, default=1e-5
        Stop when log p(x) per sample (time step) has changed by less in two iterations
        in a row, the second gain not the larger (chosen by measurement on four data
        sets, ``bench/hmm_tol.py``: 1e-4 stops on plateaus that 1e-5 leaves; and a lone
        small gain, or a growing one, is the bound creeping near the symmetric start:
        fortunes' characters, 2 states, stopped at -2.8695 after 3 iterations, now climb
        to -2.777).
    n_init : int, default=1
        Restarts from different initialisations; the best bound is kept.
    params : str, default="ste"
        Which parameters EM updates: ``s`` start probabilities, ``t``
        transitions, ``e`` emissions; the others stay at their initial values.
    init_params : str, default="ste"
        Which parameters ``fit`` initialises; the others must be set before
        ``fit`` (hmmlearn style: ``model.transmat_ = ...``) or given as ``*_init``.
    init_method : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How the emissions start: from the states of k-means on the data (on the
        family's embedding), k-means++ seeds, random posterior weights, or random rows.
        Start and transition probabilities start uniform.
    startprob_init, transmat_init : array, optional
        Starting values (override ``init_params``).
    params_init : dict of str to array, optional
        Starting values of the emission family's parameters.
    random_state, warm_start, verbose, device, dtype, batch_size, algorithm,
    step_offset, step_decay, distributed
        As for :class:`~elbokit.Mixture`; ``algorithm="stepwise"`` is stepwise EM
        over batches of whole sequences; ``batch_size`` counts rows (time steps).

    Attributes
    ----------
    startprob_ : array (K,)
    transmat_ : array (K, K)
    params_ : dict of str to array
        The emission family's parameters, state first.
    occupancy_ : array (K,)
        Expected fraction of time steps in each state on the training data.
    family_config_, lower_bounds_, lower_bound_, converged_, n_iter_,
    n_features_in_, n_steps_, feature_names_in_
        As for :class:`~elbokit.Mixture`.
    """

    _fitted_attributes = tuple(a for a in FamilyEMEstimator._fitted_attributes if a != "weights_") + (
        "occupancy_", "startprob_", "transmat_")
    _fitted_schema = {
        "weights_": io.array(None, optional=True),  # (an HMM keeps its state weights in occupancy_)
        "occupancy_": io.array(lambda m: (m.n_components,), low=0, check=io.sums_to_one),
        "startprob_": io.array(lambda m: (m.n_components,), low=0, check=io.sums_to_one),
        "transmat_": io.array(lambda m: (m.n_components, m.n_components), low=0,
                              check=io.sums_to_one),
    }
    _emission_letters = {"e": None}  # letter -> family parameter names (None: all of them)
    _default_params = "ste"

    def __init__(self, n_components=1, *, emission="gaussian", startprob_prior=1.0,
                 transmat_prior=1.0, n_iter=100, tol=1e-5, n_init=1, params="ste",
                 init_params="ste", init_method="kmeans", startprob_init=None, transmat_init=None,
                 params_init=None, random_state=None, warm_start=False, verbose=0, device=None,
                 dtype="float32", batch_size=None, algorithm="em", step_offset=2.0, step_decay=0.7,
                 distributed=None):
        self.emission = emission
        _init_common(self, locals())

    # ------------------------------------------------------------ hooks of the plumbing
    @property
    def max_iter(self):
        """hmmlearn's ``n_iter``, under the name the EM plumbing reads."""
        return self.n_iter

    # uniform start and transition probabilities put the first iterations near the
    # symmetric saddle (states alike but for their emissions): on text the bound creeps
    # there by < tol per step before it climbs (fortunes, 2 states: -2.8695 for 10
    # iterations, then -2.79)
    _leave_plateaus = True

    def _run(self, runner, initialize, warm, common):
        """The plumbing's restarts, with its convergence advice in hmmlearn's words (``n_iter``:
        the parameter this estimator has; the command line then names ``--n-iter``)."""
        from elbokit.inference.em import ConvergenceWarning

        with warnings.catch_warnings(record=True) as caught:
            run = super()._run(runner, initialize, warm, common)
        for w in caught:
            if issubclass(w.category, ConvergenceWarning):
                w.message = ConvergenceWarning(str(w.message).replace("max_iter", "n_iter"))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        return run

    def _n_components(self):
        return self.n_components

    def _init_method(self):
        return self.init_method

    def _make_family(self) -> Family:
        return get_family(self.emission)

    def _extra_checks(self):
        letters = {START_LETTER, TRANS_LETTER, *self._emission_letters}
        for name in ("params", "init_params"):
            value = getattr(self, name)
            if not isinstance(value, str) or set(value) - letters:
                raise ValueError(f"{name}={value!r}: use a string of the letters "
                                 f"{''.join(sorted(letters))!r} (e.g. {self._default_params!r}).")
        for name in ("startprob_prior", "transmat_prior"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(value)) or np.any(value < 0):
                raise ValueError(f"{name} must be finite and >= 0 (Dirichlet concentrations).")

    def _rows(self, n_features, device, stepwise=False, missing=True, family=None):
        if self.batch_size:
            return int(self.batch_size)
        if stepwise:
            return _STEPWISE_ROWS
        family = family if family is not None else self._make_family()
        K = self.n_components
        per_row = max(1, family.work_per_row(K, n_features, missing)) + 8 * K
        budget = _ELEMENTS.get(torch.device(device).type, _ELEMENTS["cpu"])
        return max(4096, budget // per_row)

    # ------------------------------------------------------------ data
    def _data(self, X, sample_weight=None, y=None, *, reset=False, stepwise=False, allow_empty=False,
              family=None):
        """Sequences (X + lengths ``y``, a list of arrays, or streamed) as
        (source, kind, n_features, names, True): the last column marks sequence starts."""
        lengths = y
        if sample_weight is not None:
            raise ValueError("an HMM takes no sample_weight: repeat a sequence to weight it.")
        dtype = resolve_dtype(self.dtype)
        if seqdata.is_streamed(X):
            device = resolve_device(self.device)
            probe = seqdata.stream(X, lengths, batch_size=1 << 16, dtype=dtype, device=device)
            n_features = next(iter(probe))[0].shape[1] - 1
            if not reset:
                self._check_features(n_features)
            rows = self._rows(n_features, device, stepwise, family=family)
            source = seqdata.stream(X, lengths, batch_size=rows, dtype=dtype, device=device)
            return source, InputKind(False, torch.device("cpu")), n_features, None, True
        if seqdata.is_sequence_list(X):
            if lengths is not None:
                raise ValueError("lengths goes with X holding all sequences one after the other; "
                                 "a list of arrays gives one sequence per array.")
            parts = [s if isinstance(s, torch.Tensor) else np.asarray(s) for s in X]
            parts = [p.reshape(-1, 1) if p.ndim == 1 else p for p in parts]
            lengths = [int(p.shape[0]) for p in parts]
            X = torch.cat(parts) if isinstance(parts[0], torch.Tensor) else np.concatenate(parts)
        X = self._prepare_X(X)
        device = resolve_device(self.device, X)
        Xt, kind, names = as_float_tensor(X, "X", dtype, device, min_samples=0 if allow_empty else 1)
        if not reset:
            self._check_features(Xt.shape[1], "X", names)
        if Xt.shape[0] == 0:
            lengths_t = torch.zeros(0, dtype=torch.int64)
        else:
            lengths_t = seqdata.check_lengths(lengths, Xt.shape[0])
        rows = self._rows(Xt.shape[1], Xt.device, stepwise, bool(torch.isnan(Xt).any()), family)
        source = seqdata.InMemorySequences(Xt, lengths_t.to(Xt.device), None, batch_size=rows)
        return source, kind, Xt.shape[1], names, True

    # ------------------------------------------------------------ parameters
    def _emission_names(self, family, n_features=1):
        return list(family.param_shapes(self.n_components, n_features))

    def _names_of(self, letter, family, n_features):
        names = self._emission_letters[letter]
        return self._emission_names(family, n_features) if names is None else list(names)

    def _frozen_names(self, family, n_features):
        frozen = set()
        if START_LETTER not in self.params:
            frozen.add("startprob")
        if TRANS_LETTER not in self.params:
            frozen.add("transmat")
        for letter in self._emission_letters:
            if letter not in self.params:
                frozen.update(self._names_of(letter, family, n_features))
        return frozen

    def _model(self, family=None, labelled=False, device=None) -> HMMModel:
        family = family if family is not None else self._fitted_family()
        n_features = 1  # the parameter names do not depend on it
        prior_s = _as_f64(self.startprob_prior, device or "cpu", "startprob_prior")
        prior_t = _as_f64(self.transmat_prior, device or "cpu", "transmat_prior")
        return HMMModel(family, resolve_dtype(self.dtype), self._frozen_names(family, n_features),
                        prior_s, prior_t, self._emission_prior())

    def _emission_prior(self):
        """A function adding prior pseudo-statistics to the emission statistics, or None."""
        return None

    def _params(self, device) -> HMMParams:
        check_is_fitted(self)

        def t(a):
            return torch.as_tensor(a).to(device=device, dtype=F64)

        return HMMParams(t(self.startprob_), t(self.transmat_),
                         {k: t(v) for k, v in self.params_.items()}, t(self.occupancy_))

    def _preset(self, device):
        """Values set before ``fit`` (hmmlearn style) or fitted: (startprob, transmat, params)."""
        sp = getattr(self, "startprob_", None)
        tm = getattr(self, "transmat_", None)
        params = getattr(self, "params_", None) or {}
        return (None if sp is None else _as_f64(sp, device, "startprob_"),
                None if tm is None else _as_f64(tm, device, "transmat_"),
                {k: _as_f64(v, device, f"params_[{k!r}]") for k, v in params.items()})

    # ------------------------------------------------------------ initialisation
    def _initialize(self, source, sample, family, gen, device, reducer, labelled):
        K = self.n_components
        D = self.n_features_in_pending_
        names = self._emission_names(family, D)
        startprob, transmat, preset = self._preset(device)
        fresh = set(names) - set(preset)
        for letter in self._emission_letters:
            if letter in self.init_params:
                fresh.update(self._names_of(letter, family, D))
        self._warn_overwritten(startprob, transmat, preset, family, D)
        occupancy = torch.full((K,), 1.0 / K, dtype=F64, device=device)
        params = {k: v for k, v in preset.items() if k in names}
        if fresh:
            emissions, occupancy = self._initial_emissions(sample, family, gen, device, reducer)
            params.update({k: emissions[k] for k in fresh})
        if START_LETTER in self.init_params or startprob is None:
            startprob = torch.full((K,), 1.0 / K, dtype=F64, device=device)
        if TRANS_LETTER in self.init_params or transmat is None:
            transmat = torch.full((K, K), 1.0 / K, dtype=F64, device=device)
        if self.startprob_init is not None:
            startprob = _as_f64(self.startprob_init, device, "startprob_init")
        if self.transmat_init is not None:
            transmat = _as_f64(self.transmat_init, device, "transmat_init")
        startprob = check_stochastic(startprob, (K,), "startprob")
        transmat = check_stochastic(transmat, (K, K), "transmat")
        for name, value in (self.params_init or {}).items():
            if name not in names:
                raise ValueError(f"params_init has {name!r}, not a parameter of the emission "
                                 f"family ({', '.join(names)}).")
            params[name] = _as_f64(value, device, f"params_init[{name!r}]")
        self._check_emission_shapes(params, family, D)
        start = HMMParams(startprob, transmat, params, occupancy)
        n_values = (0 if sample[0] is None else sample[0].shape[0]) * D
        n_free = self._count_free(start, family)
        if reducer is None and n_values < n_free:
            warnings.warn(f"fitting {n_free} free parameters to {n_values} values of X gives a "
                          "degenerate solution: give more data, or decrease n_components.",
                          UserWarning, stacklevel=4)
        return start

    def _warn_overwritten(self, startprob, transmat, preset, family, D):
        """hmmlearn's warning: an attribute set before the first fit that fit initialises."""
        if self.__sklearn_is_fitted__():
            return
        given = {START_LETTER: startprob is not None, TRANS_LETTER: transmat is not None}
        for letter in self._emission_letters:
            given[letter] = any(n in preset for n in self._names_of(letter, family, D))
        for letter, present in given.items():
            if present and letter in self.init_params:
                warnings.warn(f"a value set for the parameters of {letter!r} will be overwritten "
                              f"during initialization because init_params contains {letter!r}: "
                              f"remove {letter!r} from init_params to start from it.",
                              UserWarning, stacklevel=5)

    def _check_emission_shapes(self, params, family, n_features):
        for name, shape in family.param_shapes(self.n_components, n_features).items():
            got = tuple(params[name].shape)
            if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
                raise ValueError(f"the emission parameter {name!r} has shape {got}; this model "
                                 f"needs {tuple(shape)} (n_components={self.n_components}, "
                                 f"{n_features} features).")

    def _initial_emissions(self, sample, family, gen, device, reducer):
        """Emission parameters from the initial state assignments of a sample of rows, and
        the occupancy they imply; identical on every rank under torch.distributed."""
        X, weight = sample
        K = self.n_components
        resp_fn = self._initial_resp_fn(sample, family, gen, reducer, True, device)
        shapes = family.param_shapes(K, self.n_features_in_pending_)
        n = 0 if X is None else X.shape[0]
        src = 0 if reducer is None else reducer.largest(n)
        if reducer is None or reducer.rank == src:
            feats = X[:, :-1].to(resolve_dtype(self.dtype)).contiguous()
            resp = resp_fn(feats)
            if weight is not None:
                resp = resp * weight[:, None].to(resp.dtype)
            params = family.initialize(feats, resp, gen)
            occupancy = resp.sum(0, dtype=F64)
            occupancy = occupancy / occupancy.sum().clamp_min(1e-300)
        else:
            params = {k: torch.zeros(shapes[k], dtype=F64, device=device) for k in shapes}
            occupancy = torch.zeros(K, dtype=F64, device=device)
        if reducer is not None:
            params = {k: reducer.broadcast(v.to(F64), src) for k, v in params.items()}
            occupancy = reducer.broadcast(occupancy, src)
        return {k: v.to(device=device, dtype=F64) for k, v in params.items()}, occupancy

    # ------------------------------------------------------------ fitting
    def fit(self, X, lengths=None):
        """Fit by Baum-Welch (or stepwise EM, see ``algorithm``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), list of arrays, or a stream
            All sequences one after the other (with ``lengths``); a list of arrays
            (one sequence each); or streamed: a .npy/.csv/.parquet file of rows
            (with ``lengths``), a directory or a list of .npy files (one sequence
            each), a function returning a fresh iterator of sequences.  NaN marks a
            missing entry (marginalised).
        lengths : array-like of int, optional
            Length of each sequence; they sum to n_samples.  None: one sequence.

        Returns
        -------
        self
        """
        return super().fit(X, lengths)

    def partial_fit(self, X, lengths=None):
        """One stepwise-EM update from the sequences in X (the first call initialises)."""
        return super().partial_fit(X, lengths)

    def _store(self, run, family, kind, n_features, names, *, n_steps):
        super()._store(run, family, kind, n_features, names, n_steps=n_steps)
        out = (lambda t: t) if kind.is_torch else (lambda t: t.detach().cpu().numpy())
        p = run.params
        self.occupancy_ = out(p.weights)
        self.startprob_ = out(p.startprob)
        self.transmat_ = out(p.transmat)
        self.__dict__.pop("weights_", None)

    def _set_fitted_state(self, state):
        """(``io.load`` has checked every attribute against ``_fitted_schema``.)"""
        super()._set_fitted_state(dict(state, weights_=state["occupancy_"]))

    @property
    def weights_(self):
        """The expected fraction of time steps in each state (``occupancy_``)."""
        try:
            return self.occupancy_
        except AttributeError:
            raise AttributeError("weights_") from None

    @weights_.setter
    def weights_(self, value):
        self.occupancy_ = value

    # ------------------------------------------------------------ inference
    def _batches(self, X, lengths, fn):
        """``fn(model, params, batch)`` over the batches of sequences of any accepted input;
        (list of outputs, kind)."""
        family = self._fitted_family()
        source, kind, _, _, _ = self._data(X, y=lengths, family=family)
        model = self._model(family)
        params, outs = None, []
        for Xb, _ in source:
            if params is None:
                params = self._params(Xb.device)
            family.check(Xb[:, :-1], "X")
            outs.append(fn(model, params, Xb))
        return outs, kind

    def score_samples(self, X, lengths=None):
        """Exact log p(x) of each sequence, shape (n_sequences,).

        (hmmlearn's ``score_samples`` returns the total and the posteriors: here they
        are ``score(X, lengths) * n_samples`` and ``predict_proba``.)
        """
        outs, kind = self._batches(X, lengths, lambda m, p, Xb: m.log_likelihood(p, Xb))
        return to_output(torch.cat(outs), kind)

    def _total(self, X, lengths):
        outs, _ = self._batches(X, lengths, lambda m, p, Xb: (m.log_likelihood(p, Xb).sum(),
                                                              Xb.shape[0]))
        return float(sum(float(a) for a, _ in outs)), int(sum(n for _, n in outs))

    def score(self, X, lengths=None):
        """log p(x) per sample (time step): the total log-likelihood over all sequences
        divided by n_samples (the quantity ``lower_bounds_`` records; hmmlearn's ``score``
        is the total)."""
        total, n = self._total(X, lengths)
        return total / n

    def predict_proba(self, X, lengths=None):
        """Posterior state marginals p(z_t = k | x), shape (n_samples, K)."""
        outs, kind = self._batches(X, lengths, lambda m, p, Xb: m.state_marginals(p, Xb))
        return to_output(torch.cat(outs), kind)

    def predict(self, X, lengths=None):
        """The most probable state path (Viterbi), one state per row, shape (n_samples,)."""
        return self.decode(X, lengths)[1]

    def decode(self, X, lengths=None, algorithm="viterbi"):
        """The most probable states: ``"viterbi"`` (the best path; log p(x, z*) summed
        over the sequences) or ``"map"`` (each step's most probable state; the log of the
        product of those maximal posteriors, where hmmlearn sums the posteriors).
        Returns (log_prob, states)."""
        if algorithm == "viterbi":
            outs, kind = self._batches(X, lengths, lambda m, p, Xb: m.decode(p, Xb))
            log_prob = float(sum(float(lp.sum()) for lp, _ in outs))
            return log_prob, to_output(torch.cat([s for _, s in outs]), kind)
        if algorithm == "map":
            outs, kind = self._batches(X, lengths, lambda m, p, Xb: m.state_marginals(p, Xb))
            gamma = torch.cat(outs)
            best = gamma.max(1)
            return float(best.values.to(F64).log().sum()), to_output(best.indices, kind)
        raise ValueError(f"algorithm={algorithm!r}: use 'viterbi' or 'map'.")

    def sample(self, n_sequences=1, length=100, random_state=None):
        """Draw ``n_sequences`` sequences of ``length`` steps.

        Returns
        -------
        X : array of shape (n_sequences * length, n_features)
            The sequences one after the other (lengths ``[length] * n_sequences``).
        states : array of shape (n_sequences * length,)
        """
        check_is_fitted(self)
        check_positive_int(n_sequences, "n_sequences")
        check_positive_int(length, "length")
        is_torch = isinstance(self.startprob_, torch.Tensor)
        device = self.startprob_.device if is_torch else torch.device("cpu")
        gen = make_generator(self.random_state if random_state is None else random_state, device)
        X, z = self._model().sample(self._params(device), int(n_sequences), int(length), gen)
        return (X, z) if is_torch else (X.cpu().numpy(), z.cpu().numpy())

    def get_stationary_distribution(self):
        """The stationary distribution of the state chain, pi = pi transmat_ (K,)."""
        check_is_fitted(self)
        A = np.asarray(torch.as_tensor(self.transmat_).cpu(), dtype=np.float64)
        vals, vecs = np.linalg.eig(A.T)
        v = np.real_if_close(vecs[:, np.argmax(vals.real)]).real
        return v / v.sum()

    # ------------------------------------------------------------ model selection
    def _emission_count(self, params, family, fitted: set) -> int:
        """Free emission parameters among ``fitted`` names (default: all or none)."""
        names = self._emission_names(family)
        if fitted >= set(names):
            return family.n_parameters(params)
        return int(sum(params[n].numel() for n in names if n in fitted))

    def _n_parameters(self):
        return self._count_free(self._params("cpu"), self._fitted_family())

    def _count_free(self, p: HMMParams, family) -> int:
        """Free parameters that EM fits (``params``), structural zeros excluded."""
        fitted = set(self._emission_names(family)) - self._frozen_names(family, 1)
        n = self._emission_count(p.params, family, fitted)
        if START_LETTER in self.params:
            n += int((p.startprob > 0).sum()) - 1
        if TRANS_LETTER in self.params:
            n += int((p.transmat > 0).sum()) - self.n_components
        return n

    def bic(self, X, lengths=None):
        """Bayesian information criterion: -2 log p(X) + n_free log(n_samples) (lower is better).
        Free parameters: those EM fits (``params``), structural zeros excluded."""
        return self._criterion(self._total(X, lengths), "bic")

    def aic(self, X, lengths=None):
        """Akaike information criterion: -2 log p(X) + 2 n_free (lower is better)."""
        return self._criterion(self._total(X, lengths), "aic")


# --------------------------------------------------------------------------- conveniences
class _NamedParams:
    """hmmlearn's attribute names over ``params_`` entries (settable before fit)."""

    def __init__(self, key, doc):
        self.key = key
        self.__doc__ = doc

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        params = obj.__dict__.get("params_") or {}
        if self.key not in params:
            raise AttributeError(self.key)
        return obj._present(self.key, params[self.key])

    def __set__(self, obj, value):
        params = dict(obj.__dict__.get("params_") or {})
        params[self.key] = obj._absorb(self.key, value)
        obj.__dict__["params_"] = params


class _Convenience(HMM):
    """Shared by the hmmlearn-style classes: hmmlearn's names for the emission parameters."""

    def _present(self, key, value):
        return value

    def _absorb(self, key, value):
        return value if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)


_COMMON_DOC = """
    startprob_prior, transmat_prior, n_iter, tol, n_init, params, init_params, init_method,
    startprob_init, transmat_init, params_init, random_state, warm_start, verbose, device,
    dtype, batch_size, algorithm, step_offset, step_decay, distributed
        As for :class:`HMM`.
"""


@io.register
class GaussianHMM(_Convenience):
    """HMM with Gaussian emissions (hmmlearn's ``GaussianHMM``).

    Parameters
    ----------
    n_components : int, default=1
    covariance_type : {"diag", "spherical", "full", "tied"}, default="diag"
    min_covar : float, default=1e-3
        Added to the diagonal of every covariance in every M-step.  (hmmlearn
        adds it at initialisation only and lets ``covars_prior=1e-2`` bound the
        M-step instead: on data with constant columns, as digits' blank pixels,
        its variances there shrink towards 1e-2 / n_k and its log-likelihoods
        grow without that floor, so the two are not comparable there.)
    """ + _COMMON_DOC + """
    Attributes
    ----------
    means_ : array (K, D)
    covars_ : array (K, D, D)
        Full covariance matrices (as hmmlearn returns them); the stored form is
        ``params_["covariance"]`` (shape by ``covariance_type``).  Setting
        ``covars_`` takes hmmlearn's per-type shape.
    startprob_, transmat_, params_, occupancy_, lower_bounds_, ...
        As for :class:`HMM`.
    """

    _emission_letters = {"m": ("loc",), "c": ("covariance",)}
    _default_params = "stmc"
    means_ = _NamedParams("loc", "Means of the states, (K, D).")
    covars_ = _NamedParams("covariance", "Covariances of the states, (K, D, D).")

    def __init__(self, n_components=1, covariance_type="diag", min_covar=1e-3, *,
                 startprob_prior=1.0, transmat_prior=1.0, n_iter=100, tol=1e-5, n_init=1,
                 params="stmc", init_params="stmc", init_method="kmeans", startprob_init=None,
                 transmat_init=None, params_init=None, random_state=None, warm_start=False,
                 verbose=0, device=None, dtype="float32", batch_size=None, algorithm="em",
                 step_offset=2.0, step_decay=0.7, distributed=None):
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        _init_common(self, locals())

    def _make_family(self):
        return Gaussian(self.covariance_type, reg_covar=self.min_covar)

    def _present(self, key, value):
        if key != "covariance":
            return value
        is_torch = isinstance(value, torch.Tensor)
        t = torch.as_tensor(value, dtype=F64)
        K, D = self.n_components, self._n_dims()
        full = {"full": lambda: t, "tied": lambda: t.expand(K, D, D),
                "diag": lambda: torch.diag_embed(t),
                "spherical": lambda: t[:, None, None] * torch.eye(D, dtype=F64)}[self.covariance_type]()
        full = full.clone()
        return full.to(value.device) if is_torch else full.numpy()

    def _n_dims(self):
        if hasattr(self, "n_features_in_"):
            return self.n_features_in_
        loc = (self.__dict__.get("params_") or {}).get("loc")
        if loc is None:
            raise AttributeError("covars_ needs means_ (or a fit) to know the number of features.")
        return np.asarray(loc).shape[1]

    def _absorb(self, key, value):
        value = super()._absorb(key, value)
        if key == "covariance" and self.covariance_type == "spherical":
            value = value.reshape(value.shape[0], -1)[:, 0] if value.ndim > 1 else value
        if key == "covariance" and self.covariance_type == "diag" and value.ndim == 3:
            value = np.stack([np.diag(c) for c in value])
        return value

    def _emission_count(self, params, family, fitted):
        K, D = params["loc"].shape
        cov = {"full": K * D * (D + 1) // 2, "tied": D * (D + 1) // 2, "diag": K * D,
               "spherical": K}[self.covariance_type]
        return ("loc" in fitted) * K * D + ("covariance" in fitted) * cov


@io.register
class CategoricalHMM(_Convenience):
    """HMM with categorical emissions: one symbol per step (hmmlearn's ``CategoricalHMM``).

    X holds integer symbols 0 .. n_features - 1 in one column (several columns:
    independent categorical variables per step).

    Parameters
    ----------
    n_components : int, default=1
    n_features : int, optional
        Number of symbols; by default one more than the largest symbol seen.
    emissionprob_prior : float or array, default=1.0
        Dirichlet concentration of the emission probabilities.
    init_method : default="random"
        As hmmlearn: random emission probabilities (uniform draws, normalised);
        "kmeans" etc. as for :class:`HMM`.
    """ + _COMMON_DOC + """
    Attributes
    ----------
    emissionprob_ : array (K, n_features)
        p(symbol | state) (one column of symbols; several: ``params_["probs"]``).
    """

    _emission_letters = {"e": ("probs",)}
    _default_params = "ste"

    def __init__(self, n_components=1, n_features=None, emissionprob_prior=1.0, *,
                 startprob_prior=1.0, transmat_prior=1.0, n_iter=100, tol=1e-5, n_init=1,
                 params="ste", init_params="ste", init_method="random", startprob_init=None,
                 transmat_init=None, params_init=None, random_state=None, warm_start=False,
                 verbose=0, device=None, dtype="float32", batch_size=None, algorithm="em",
                 step_offset=2.0, step_decay=0.7, distributed=None):
        self.n_features = n_features
        self.emissionprob_prior = emissionprob_prior
        _init_common(self, locals())

    def _make_family(self):
        return Categorical(self.n_features)

    @property
    def emissionprob_(self):
        """p(symbol | state), shape (K, n_symbols) (the first column's)."""
        params = self.__dict__.get("params_") or {}
        if "probs" not in params:
            raise AttributeError("emissionprob_")
        probs = params["probs"]
        return probs[:, 0] if probs.ndim == 3 else probs

    @emissionprob_.setter
    def emissionprob_(self, value):
        value = value if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)
        params = dict(self.__dict__.get("params_") or {})
        params["probs"] = value[:, None, :] if value.ndim == 2 else value
        self.__dict__["params_"] = params

    def _emission_prior(self):
        prior = self.emissionprob_prior
        if np.all(np.asarray(prior) == 1.0):
            return None

        def add(stats):
            p = torch.as_tensor(np.asarray(prior), dtype=F64, device=stats["counts"].device)
            p = p[:, None, :] if p.ndim == 2 else p
            return dict(stats, counts=(stats["counts"] + (p - 1)).clamp_min(0.0))
        return add

    def _initial_emissions(self, sample, family, gen, device, reducer):
        if self.init_method != "random":
            return super()._initial_emissions(sample, family, gen, device, reducer)
        K = self.n_components
        real = family._real(device).to(F64)
        u = torch.rand((K, *real.shape), generator=gen, device=gen.device, dtype=F64).to(device)
        if reducer is not None:
            u = reducer.broadcast(u, 0)
        probs = u * real
        return {"probs": probs / probs.sum(2, keepdim=True)}, torch.full((K,), 1.0 / K, dtype=F64,
                                                                          device=device)


@io.register
class PoissonHMM(_Convenience):
    """HMM with independent Poisson counts per step (hmmlearn's ``PoissonHMM``).

    Parameters
    ----------
    n_components : int, default=1
    lambdas_prior, lambdas_weight : float or array, default=0.0
        Gamma prior on the rates: rate = (lambdas_prior + sum gamma x) / (lambdas_weight + sum gamma)
        (hmmlearn's MAP update; 0, 0: maximum likelihood).
    """ + _COMMON_DOC + """
    Attributes
    ----------
    lambdas_ : array (K, D)
        The Poisson rates of the states.
    """

    _emission_letters = {"l": ("rate",)}
    _default_params = "stl"
    lambdas_ = _NamedParams("rate", "Poisson rates of the states, (K, D).")

    def __init__(self, n_components=1, lambdas_prior=0.0, lambdas_weight=0.0, *,
                 startprob_prior=1.0, transmat_prior=1.0, n_iter=100, tol=1e-5, n_init=1,
                 params="stl", init_params="stl", init_method="kmeans", startprob_init=None,
                 transmat_init=None, params_init=None, random_state=None, warm_start=False,
                 verbose=0, device=None, dtype="float32", batch_size=None, algorithm="em",
                 step_offset=2.0, step_decay=0.7, distributed=None):
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight
        _init_common(self, locals())

    def _make_family(self):
        return Poisson()

    def _emission_prior(self):
        a, b = self.lambdas_prior, self.lambdas_weight
        if np.all(np.asarray(a) == 0) and np.all(np.asarray(b) == 0):
            return None

        def add(stats):
            dev = stats["sum"].device
            return dict(stats, sum=stats["sum"] + torch.as_tensor(np.asarray(a), dtype=F64, device=dev),
                        n=stats["n"] + torch.as_tensor(np.asarray(b), dtype=F64, device=dev))
        return add


@io.register
class GMMHMM(_Convenience):
    """HMM with a Gaussian mixture per state (hmmlearn's ``GMMHMM``).

    Parameters
    ----------
    n_components : int, default=1
    n_mix : int, default=1
        Gaussian components per state.
    covariance_type : {"diag", "spherical", "full", "tied"}, default="diag"
        ``"tied"``: each state's components share one full covariance (hmmlearn).
    min_covar : float, default=1e-3
        Added to the diagonal of every covariance in every M-step.  (hmmlearn
        adds it at initialisation only and lets ``covars_prior=1e-2`` bound the
        M-step instead: on data with constant columns, as digits' blank pixels,
        its variances there shrink towards 1e-2 / n_k and its log-likelihoods
        grow without that floor, so the two are not comparable there.)
    """ + _COMMON_DOC + """
    Attributes
    ----------
    weights_ : array (K, n_mix)
        Mixture weights of each state (hmmlearn's name; the state occupancy is ``occupancy_``).
    means_ : array (K, n_mix, D)
    covars_ : array
        hmmlearn's shapes: (K, M, D) diag, (K, M) spherical, (K, M, D, D) full, (K, D, D) tied.
    """

    _emission_letters = {"w": ("weights",), "m": ("c.loc",), "c": ("c.covariance",)}
    _default_params = "stwmc"

    def __init__(self, n_components=1, n_mix=1, covariance_type="diag", min_covar=1e-3, *,
                 startprob_prior=1.0, transmat_prior=1.0, n_iter=100, tol=1e-5, n_init=1,
                 params="stmcw", init_params="stmcw", init_method="kmeans", startprob_init=None,
                 transmat_init=None, params_init=None, random_state=None, warm_start=False,
                 verbose=0, device=None, dtype="float32", batch_size=None, algorithm="em",
                 step_offset=2.0, step_decay=0.7, distributed=None):
        self.n_mix = n_mix
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        _init_common(self, locals())

    def _make_family(self):
        tied = self.covariance_type == "tied"
        inner = Gaussian("full" if tied else self.covariance_type, reg_covar=self.min_covar)
        return MixtureOf(inner, self.n_mix, tied_within=tied)

    # hmmlearn's names, in its shapes
    def _param(self, key):
        params = self.__dict__.get("params_") or {}
        if key not in params:
            raise AttributeError(key)
        return params[key]

    def _set(self, key, value):
        params = dict(self.__dict__.get("params_") or {})
        params[key] = value if isinstance(value, torch.Tensor) else np.asarray(value, dtype=np.float64)
        self.__dict__["params_"] = params

    @property
    def weights_(self):
        """Mixture weights of each state, (K, n_mix)."""
        return self._param("weights")

    @weights_.setter
    def weights_(self, value):
        if np.ndim(value) == 1:  # the state occupancy, from the plumbing
            self.occupancy_ = value
        else:
            self._set("weights", value)

    @property
    def means_(self):
        """Means, (K, n_mix, D)."""
        loc = self._param("c.loc")
        return loc.reshape(self.n_components, self.n_mix, -1)

    @means_.setter
    def means_(self, value):
        v = np.asarray(value, dtype=np.float64) if not isinstance(value, torch.Tensor) else value
        self._set("c.loc", v.reshape(self.n_components * self.n_mix, -1))

    @property
    def covars_(self):
        """Covariances in hmmlearn's shape for ``covariance_type``."""
        cov = self._param("c.covariance")
        K, M = self.n_components, self.n_mix
        if self.covariance_type == "tied":
            return cov.reshape(K, M, *cov.shape[1:])[:, 0]
        return cov.reshape(K, M, *cov.shape[1:])

    @covars_.setter
    def covars_(self, value):
        v = np.asarray(value, dtype=np.float64) if not isinstance(value, torch.Tensor) else value
        K, M = self.n_components, self.n_mix
        if self.covariance_type == "tied":  # (K, D, D): one per state, repeated over its components
            v = (v[:, None].expand(K, M, *v.shape[1:]) if isinstance(v, torch.Tensor)
                 else np.broadcast_to(v[:, None], (K, M, *v.shape[1:])))
        self._set("c.covariance", v.reshape(K * M, *v.shape[2:]))

    def _emission_count(self, params, family, fitted):
        K, M = self.n_components, self.n_mix
        D = params["c.loc"].shape[1]
        cov = {"full": K * M * D * (D + 1) // 2, "tied": K * D * (D + 1) // 2, "diag": K * M * D,
               "spherical": K * M}[self.covariance_type]
        return (("weights" in fitted) * K * (M - 1) + ("c.loc" in fitted) * K * M * D
                + ("c.covariance" in fitted) * cov)


def _init_common(est, values):
    """Set the hyperparameters every HMM shares from a constructor's ``locals()``."""
    for name in ("n_components", "startprob_prior", "transmat_prior", "n_iter", "tol", "n_init",
                 "params", "init_params", "init_method", "startprob_init", "transmat_init",
                 "params_init", "random_state", "warm_start", "verbose", "device", "dtype",
                 "batch_size", "algorithm", "step_offset", "step_decay", "distributed"):
        setattr(est, name, values[name])
