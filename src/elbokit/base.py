"""What every elbokit estimator shares: scikit-learn's conventions, save/load."""

from __future__ import annotations

import math

from sklearn.base import BaseEstimator

from elbokit import io


class ElbokitEstimator(BaseEstimator):
    """Base class: ``get_params``/``set_params`` from scikit-learn, plus persistence.

    Subclasses list their fitted attributes in ``_fitted_attributes``; those
    are what :meth:`save` writes and :func:`elbokit.load` restores, after
    checking each against its declaration in ``_fitted_schema`` (merged with
    the base classes' declarations; see :mod:`elbokit.io`).
    """

    _fitted_attributes: tuple[str, ...] = ()
    _fitted_schema: dict = {
        "feature_names_in_": io.strings(length="n_features_in_", optional=True),
    }

    def __sklearn_is_fitted__(self) -> bool:
        return all(hasattr(self, a) for a in self._fitted_attributes)

    def _fitted_state(self) -> dict:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self)
        state = {a: getattr(self, a) for a in self._fitted_attributes}
        if hasattr(self, "feature_names_in_"):  # set by fit when X had names: a JSON list
            state["feature_names_in_"] = [str(name) for name in self.feature_names_in_]
        return state

    def _set_fitted_state(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)
        if isinstance(getattr(self, "feature_names_in_", None), list):
            import numpy as np

            self.feature_names_in_ = np.asarray(self.feature_names_in_, dtype=object)

    def save(self, path, *, overwrite: bool = False, extra_files=None):
        """Save the fitted estimator to the directory ``path`` (safetensors + JSON).

        Refuses to replace an existing ``path`` unless ``overwrite=True``, and
        even then replaces only an elbokit model, never another directory.
        ``extra_files`` (name to text or bytes) are written alongside, in the
        same atomic step.  Load it back with :func:`elbokit.load`.
        """
        return io.save(self, path, overwrite=overwrite, extra_files=extra_files)


class InformationCriteria:
    """BIC and AIC for a likelihood model fitted by EM.

    The estimator provides ``_total_log_likelihood(X) -> (sum of log p(x), n_samples)``
    and ``_n_parameters()`` (the number of free parameters the fit estimates).
    """

    def bic(self, X):
        """Bayesian information criterion on X: -2 log p(X) + p log n (lower is better)."""
        return self._criterion(self._total_log_likelihood(X), "bic")

    def aic(self, X):
        """Akaike information criterion on X: -2 log p(X) + 2 p (lower is better)."""
        return self._criterion(self._total_log_likelihood(X), "aic")

    def _criterion(self, total_and_n, which: str) -> float:
        total, n = total_and_n
        penalty = math.log(n) if which == "bic" else 2.0
        return -2 * total + self._n_parameters() * penalty
