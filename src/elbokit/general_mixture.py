"""``Mixture``: a finite mixture of any component family, fitted by EM.

``Mixture(family="bernoulli")`` clusters binary data, ``"categorical"`` is
latent class analysis, ``"multinomial"`` the mixture of unigrams,
``"poisson"`` count data, ``"student_t"`` robust clustering,
``"von_mises_fisher"`` directions, ``FactorAnalyzer(q)`` the mixture of
factor analysers, and a :class:`~elbokit.families.Product` (or
``family="auto"`` on a DataFrame) mixed-type tables.  Any
:class:`~elbokit.families.Family` subclass works without touching this file.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from elbokit import io
from elbokit._validation import to_output
from elbokit.em_estimator import FamilyEMEstimator
from elbokit.families import Family, get_family
from elbokit.families.tables import TableEncoding


def _is_table(X) -> bool:
    """A pandas DataFrame or a pyarrow Table."""
    if hasattr(X, "columns") and hasattr(X, "dtypes"):
        return True
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover
        return False
    return isinstance(X, pa.Table)


def _is_table_file(X) -> bool:
    return isinstance(X, (str, os.PathLike)) and str(X).lower().endswith(
        (".parquet", ".pq", ".csv", ".tsv"))


def _has_typed_columns(path) -> bool:
    """Whether a Parquet/CSV file has any column that is not floating point."""
    import pyarrow as pa

    path = str(path)
    if path.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        schema = pq.read_schema(path)
    else:
        import pyarrow.csv as pcsv

        delimiter = "\t" if path.lower().endswith(".tsv") else ","
        with pcsv.open_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter)) as reader:
            schema = reader.schema
    return any(not pa.types.is_floating(f.type) for f in schema)


def _read_table(path):
    """A Parquet or CSV file as a pyarrow Table, with its column types."""
    path = str(path)
    if path.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.csv as pcsv

    delimiter = "\t" if path.lower().endswith(".tsv") else ","
    return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))


class _NamedArray(np.ndarray):
    """A float array that remembers its table's column names (for feature_names_in_)."""

    def __new__(cls, values, names):
        obj = np.asarray(values, dtype=np.float64).view(cls)
        obj.feature_names = list(names)
        return obj

    def __array_finalize__(self, obj):
        self.feature_names = getattr(obj, "feature_names", None)


@io.register
class Mixture(FamilyEMEstimator):
    """Finite mixture p(x) = sum_k weights_[k] p_family(x | params_[k]), fitted by EM.

    Parameters
    ----------
    n_components : int, default=1
    family : str, dict or Family, default="auto"
        The component family: a name (``"gaussian"``, ``"bernoulli"``,
        ``"categorical"``, ``"multinomial"``, ``"poisson"``, ``"student_t"``,
        ``"von_mises_fisher"``, ``"factor_analyzer"``), a spec
        ``{"name": ..., "config": {...}}``, or an instance.  ``"auto"``: from
        a DataFrame, one family per column type (floats Gaussian, integers
        Poisson, booleans Bernoulli, strings/categories Categorical); from an
        array, a full-covariance Gaussian.
    tol : float, default=1e-3
        Stop when the per-sample mean log-likelihood changes by less.
    max_iter : int, default=100
    n_init : int, default=1
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        Initial responsibilities: k-means (on the family's ``embed`` coordinates,
        centred), k-means++ seeds, random, or random rows as centres.
    weights_init : array of shape (K,), optional
    params_init : dict of str to array, optional
        Starting values of the family's parameters (override the initialisation).
    frozen : dict of str to array, optional
        Parameters fixed at these values by every M-step (``"weights"`` or any
        of the family's names, e.g. ``{"loc": means}``).
    random_state, warm_start, verbose, device, dtype, batch_size, algorithm,
    step_offset, step_decay, distributed
        As for :class:`~elbokit.GaussianMixture`.
    prior : None, "default" or dict, default=None
        MAP-EM with mclust's conjugate prior, for the Gaussian family (see
        :mod:`elbokit.priors` and ``GaussianMixture(prior=...)``).

    Attributes
    ----------
    weights_ : array (K,)
    params_ : dict of str to array
        The family's parameters, component first (e.g. ``probs`` (K, D)).
    family_config_ : dict
        The fitted family's spec (with settings found in the data, such as levels).
    lower_bounds_, lower_bound_, converged_, n_iter_, n_features_in_, n_steps_
    feature_names_in_ : array of str
        When fitted on a DataFrame.
    categories_ : dict of str to list
        The levels of the DataFrame's categorical columns, in code order.
    """

    _fitted_attributes = FamilyEMEstimator._fitted_attributes + ("encoding_",)
    _fitted_schema = {"encoding_": io.json_value()}

    def __init__(self, n_components=1, *, family="auto", tol=1e-3, max_iter=100, n_init=1,
                 init_params="kmeans", weights_init=None, params_init=None, frozen=None,
                 random_state=None, warm_start=False, verbose=0, device=None, dtype="float32",
                 batch_size=None, algorithm="em", step_offset=2.0, step_decay=0.7,
                 distributed=None, prior=None):
        self.n_components = n_components
        self.family = family
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.params_init = params_init
        self.frozen = frozen
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

    def _n_components(self):
        return self.n_components

    def _make_family(self) -> Family:
        if isinstance(self.family, str) and self.family == "auto":
            encoding = getattr(self, "_pending_encoding", None) or getattr(self, "encoding_", None)
            if encoding is not None and encoding.get("kinds"):
                return TableEncoding.from_config(encoding).family()
            return get_family("gaussian")
        return get_family(self.family)

    def _prepare_X(self, X):
        """Tables: categorical columns to codes (levels kept in ``encoding_``); a table
        file whose encoding has typed columns is read whole."""
        enc = getattr(self, "_pending_encoding", None) or getattr(self, "encoding_", None)
        if _is_table_file(X) and enc and any(k != "gaussian" for k in enc.get("kinds", [])):
            X = _read_table(X)
        if not _is_table(X):
            return X
        fitted = getattr(self, "encoding_", None)
        pending = getattr(self, "_pending_encoding", None)
        for enc in (pending, fitted):
            if enc:
                return _NamedArray(TableEncoding.from_config(enc).encode(X, check_kinds=bool(enc["kinds"])),
                                   enc["columns"])
        return _NamedArray(TableEncoding.from_frame(X).encode(X), [str(c) for c in X.column_names]
                           if hasattr(X, "column_names") else [str(c) for c in X.columns])

    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM; see :meth:`FamilyEMEstimator.fit`. A DataFrame, a pyarrow Table or,
        with ``family="auto"``, a Parquet file gets one family per column type."""
        if _is_table_file(X) and isinstance(self.family, str) and self.family == "auto" \
                and _has_typed_columns(X):
            X = _read_table(X)  # typed columns: read whole (a float-only file streams)
        if _is_table(X):
            self._pending_encoding = TableEncoding.from_frame(X).to_config()
            names = self._pending_encoding["columns"]
            if not isinstance(self.family, str) or self.family != "auto":
                self._pending_encoding = {"columns": names, "kinds": [], "categories": {}}
        else:
            self._pending_encoding = {}
        try:
            super().fit(X, y, sample_weight)
            self.encoding_ = self._pending_encoding
        finally:
            del self._pending_encoding
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        if not self.__sklearn_is_fitted__():
            self._pending_encoding = TableEncoding.from_frame(X).to_config() if _is_table(X) else {}
            try:
                super().partial_fit(X, y, sample_weight)
                self.encoding_ = self._pending_encoding
            finally:
                del self._pending_encoding
            return self
        return super().partial_fit(X, y, sample_weight)

    @property
    def categories_(self):
        enc = getattr(self, "encoding_", None) or {}
        return dict(enc.get("categories", {}))

    def fit_predict(self, X, y=None, sample_weight=None):
        return self.fit(X, y, sample_weight).predict(X)

    def predict_proba(self, X):
        """Posterior p(z=k | x_observed), shape (n, K)."""
        return to_output(*self._chunked(X, lambda m, p, Xb: torch.softmax(m.log_joint(p, Xb), 1)))

    def predict(self, X):
        """Most probable component per sample (incomplete rows too), shape (n,)."""
        return to_output(*self._chunked(X, lambda m, p, Xb: m.log_joint(p, Xb).argmax(1)))

    @property
    def means_(self):
        """E[x | z=k] per component, shape (K, D), when the family has a mean."""
        family = self._fitted_family()
        p = self._params("cpu")
        means = family.mean(p.params)
        return means if isinstance(self.weights_, torch.Tensor) else np.asarray(means)
