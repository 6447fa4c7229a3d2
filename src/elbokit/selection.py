"""Model selection for mixtures: a sweep over K x covariance type (x family), as mclust does.

:func:`select` fits one mixture per cell of the grid and scores each by

* **BIC** = -2 log p(X | theta_hat) + p log n (lower is better; with a prior,
  the log-likelihood at the MAP estimate, as mclust computes it),
* **ICL** = BIC - 2 sum_n log tau_n,z_n, the BIC plus the entropy of the hard
  classification (Biernacki, Celeux & Govaert 2000; mclust's ``icl``),
* **AIC**, and the mean **held-out log p(x)** on a validation split
  (``validation_fraction > 0``).

Initialisations are shared where that is sound: for each K, the same
starting partitions serve every covariance type (the parameters of each type
are its M-step from that partition), and one hierarchical tree (Ward's
criterion on the whitened data, mclust's ``hcUse="SVD"``) gives nested
partitions for every K at once.  Each cell keeps its best start by the final
EM objective.  k-means alone, as in scikit-learn, often leaves full
covariances at poor optima on elongated clusters, and BIC then prefers more
components (scikit-learn#34845); the hierarchical start, several starts per
cell and the prior (``prior="default"``, mclust's) are what make the choice
robust.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.utils.validation import _get_feature_names

from elbokit.models.gaussian_mixture import COVARIANCE_TYPES, GaussianMixtureModel, precisions_from_cholesky
from elbokit.models.kmeans import kmeans_plusplus, lloyd, squared_distances

CRITERIA = {"bic": ("BIC", True), "icl": ("ICL", True), "aic": ("AIC", True),
            "heldout": ("held-out log p(x)", False)}
F64 = torch.float64
_WARD_ROWS = 3000  # the tree is O(n^2): built on a random subset beyond this


@dataclass
class Selection:
    """The outcome of :func:`select`.

    Attributes
    ----------
    header : list of str
        Columns: family, covariance_type, K, the scores, iterations, seconds, note.
    rows : list of list
        One per cell of the grid, in the order fitted; a failed fit has NaN
        scores and its reason in "note".
    models : list
        The fitted model of each row (None where the fit failed).
    best : int
        Index of the chosen row.
    criterion : str
    best_model_ : estimator
        The chosen model (refitted on all the data when a validation split was used).
    """

    header: list
    rows: list
    models: list
    best: int
    criterion: str
    best_model_: object = None
    settings: list = field(default_factory=list)

    @property
    def best_settings(self) -> dict:
        return self.settings[self.best]

    @property
    def best_model(self):
        """The chosen cell's model as fitted in the sweep."""
        return self.models[self.best]

    @property
    def table(self) -> list[dict]:
        """The rows as dicts keyed by ``header``."""
        return [dict(zip(self.header, r)) for r in self.rows]

    def to_frame(self):
        """The table as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=self.header)

    def pivot(self, score: str = "BIC") -> dict:
        """{(family, covariance_type): {K: score}}: the curves of a score by K, per type."""
        j = self.header.index(score)
        out: dict = {}
        for r in self.rows:
            out.setdefault((r[0], r[1]), {})[r[2]] = r[j]
        return out

    def __str__(self) -> str:
        def fmt(v):
            return f"{v:.2f}" if isinstance(v, float) else str(v)

        cells = [self.header] + [[fmt(v) for v in r] for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(len(self.header))]
        lines = ["  ".join(c[i].rjust(widths[i]) for i in range(len(c))) for c in cells]
        s = self.best_settings
        lines.append(f"best by {self.criterion}: {s}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- starts
def _whiten(X: np.ndarray) -> np.ndarray:
    """Centred data rotated and scaled by its SVD: unit variance along every principal axis."""
    Xc = X - X.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    keep = s > s.max() * 1e-10
    return Xc @ vt[keep].T / (s[keep] / math.sqrt(max(len(X) - 1, 1)))


def ward_partitions(X: np.ndarray, ks, seed: int = 0) -> dict:
    """Nested partitions from one Ward tree on the whitened data, {K: labels}.

    Beyond ``_WARD_ROWS`` rows the tree is built on a random subset and the
    other rows join the nearest cluster mean.
    """
    from scipy.cluster.hierarchy import fcluster, ward

    W = _whiten(X)
    rng = np.random.default_rng(seed)
    subset = np.arange(len(W)) if len(W) <= _WARD_ROWS else np.sort(
        rng.choice(len(W), _WARD_ROWS, replace=False))
    tree = ward(W[subset])
    out = {}
    for k in ks:
        if k > len(subset):
            continue
        cut = fcluster(tree, k, "maxclust") - 1
        if cut.max() + 1 != k:
            continue
        if len(subset) == len(W):
            out[k] = cut
            continue
        centres = np.stack([W[subset][cut == j].mean(0) for j in range(k)])
        d = squared_distances(torch.as_tensor(W), torch.as_tensor(centres))
        out[k] = d.argmin(1).numpy()
    return out


def kmeans_partition(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means++ seeding and Lloyd steps (on centred data), labels (n,)."""
    Xt = torch.as_tensor(X - X.mean(0), dtype=F64)
    gen = torch.Generator().manual_seed(int(seed))
    _, labels = lloyd(Xt, kmeans_plusplus(Xt, k, gen))
    return labels.numpy()


def start_from_partition(X: np.ndarray, labels: np.ndarray, k: int, covariance_type: str,
                         reg_covar: float, prior=None) -> dict | None:
    """``weights_init``, ``means_init`` and ``precisions_init`` of a covariance type: its
    M-step (with ``prior`` the posterior mode) from a hard partition. None if a part is empty
    or the M-step fails."""
    if np.bincount(labels, minlength=k).min() == 0:
        return None
    Xt = torch.as_tensor(X, dtype=F64)
    resp = torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.int64), k).to(F64)
    if prior is None:
        model = GaussianMixtureModel(covariance_type, float(reg_covar), F64)
    else:
        from elbokit.priors import MAPGaussianMixtureModel

        model = MAPGaussianMixtureModel(covariance_type, float(reg_covar), F64, prior)
    centres = (resp.mT @ Xt) / resp.sum(0)[:, None]
    anchor = model.anchor(centres)
    try:
        p = model.maximize(model.statistics_from_responsibilities(anchor, Xt, resp, None), anchor)
    except ValueError:
        return None
    return {"weights_init": p.weights.numpy(), "means_init": p.means.numpy(),
            "precisions_init": precisions_from_cholesky(p.precisions_cholesky, covariance_type).numpy()}


# --------------------------------------------------------------------------- scores
def icl(model, X) -> float:
    """BIC - 2 sum_n log tau_n,z_n with z_n the most probable component (lower is better)."""
    tau = np.asarray(model.predict_proba(X), dtype=np.float64)
    hard = np.log(np.clip(tau.max(1), 1e-300, None)).sum()
    return float(model.bic(X) - 2 * hard)


def _scores(model, X_fit, X_val) -> dict:
    n = len(X_fit)
    total = float(model.score(X_fit)) * n
    out = {"log-likelihood": total, "parameters": int(model._n_parameters()),
           "BIC": float(model.bic(X_fit)), "ICL": icl(model, X_fit), "AIC": float(model.aic(X_fit))}
    if X_val is not None:
        out["held-out log p(x)"] = float(model.score(X_val))
    out["iterations"] = int(model.n_iter_)
    return out


def _objective(model) -> float:
    return float(model.lower_bound_)


# --------------------------------------------------------------------------- the sweep
def select(X, n_components=range(1, 10), covariance_types=COVARIANCE_TYPES, *, families=None,
           criterion: str = "bic", prior=None, init: str = "auto", n_init: int = 1,
           validation_fraction: float = 0.0, X_validation=None, random_state: int = 0,
           refit: bool = True, progress=None, **params) -> Selection:
    """Fit a mixture for every K x covariance type (x family) and choose one.

    Parameters
    ----------
    X : array of shape (n_samples, n_features)
    n_components : iterable of int
    covariance_types : iterable of {"full", "tied", "diag", "spherical"}
        For the Gaussian family.
    families : list of str or dict, optional
        Component families of :class:`~elbokit.Mixture` to sweep besides (or,
        without ``"gaussian"`` in the list, instead of) the Gaussian one; None:
        Gaussian only.
    criterion : {"bic", "icl", "aic", "heldout"}
    prior : None, "default" or dict
        MAP-EM with mclust's prior for the Gaussian cells (see :mod:`elbokit.priors`).
    init : {"auto", "kmeans", "ward"}
        Starting partitions per K, shared by every covariance type: "auto" tries
        the Ward tree's partition and ``n_init`` k-means ones and keeps the best
        final objective per cell; "kmeans" only the k-means ones; "ward" only
        the tree's.
    n_init : int
        k-means starts per K.
    validation_fraction : float in [0, 1)
        Rows held out (seeded shuffle): BIC/ICL/AIC on the others, held-out
        log p(x) on these. 0: everything on all rows (required for mclust's BIC).
    X_validation : array of shape (m, n_features), optional
        Held-out rows given instead of a split: X is then all fitted on.
    random_state : int
    refit : bool
        With a validation split, refit the chosen cell on all rows.
    progress : callable, optional
        Called with a short description after each cell.
    **params
        Passed to each estimator (``reg_covar``, ``tol``, ``max_iter``, ``dtype``, ...).

    Returns
    -------
    Selection
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r}: use one of {', '.join(CRITERIA)}.")
    if init not in ("auto", "kmeans", "ward"):
        raise ValueError(f"init={init!r}: use 'auto', 'kmeans' or 'ward'.")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction!r} must lie in [0, 1).")
    if X_validation is not None and validation_fraction > 0:
        raise ValueError("give either validation_fraction or X_validation, not both.")
    if criterion == "heldout" and validation_fraction == 0 and X_validation is None:
        raise ValueError("criterion='heldout' needs validation_fraction > 0 (e.g. 0.2) or "
                         "X_validation.")
    columns = _get_feature_names(X)  # a DataFrame's: every model keeps them, as fit would
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError("X must be a 2-D array with at least 2 rows.")
    ks = sorted({int(k) for k in n_components})
    if not ks or ks[0] < 1:
        raise ValueError("n_components must hold integers >= 1.")
    types = list(covariance_types)
    for t in types:
        if t not in COVARIANCE_TYPES:
            raise ValueError(f"covariance type {t!r}: use {', '.join(COVARIANCE_TYPES)}.")
    names = ["gaussian"] if families is None else list(families)
    X_fit, X_val = X, None if X_validation is None else np.asarray(X_validation, dtype=np.float64)
    if validation_fraction > 0:
        order = np.random.default_rng(random_state).permutation(len(X))
        n_val = max(1, int(round(validation_fraction * len(X))))
        X_val, X_fit = X[np.sort(order[:n_val])], X[np.sort(order[n_val:])]
    if ks[-1] > len(X_fit):
        raise ValueError(f"K={ks[-1]} exceeds the {len(X_fit)} rows fitted: lower n_components.")
    results = []
    gaussian = any(_is_gaussian(f) for f in names)
    if gaussian:
        results += _gaussian_cells(X_fit, X_val, ks, types, prior, init, n_init, random_state,
                                   progress, params)
    for fam in names:
        if not _is_gaussian(fam):
            results += _family_cells(X_fit, X_val, ks, fam, n_init, random_state, progress, params)
    selection = _assemble(results, criterion, X, X_fit is not X and refit, params)
    if columns is not None:
        for model in [*selection.models, selection.best_model]:
            if model is not None:
                model.feature_names_in_ = columns
    return selection


def _is_gaussian(family) -> bool:
    return family == "gaussian" or (isinstance(family, dict) and family.get("name") == "gaussian")


def _timed_fit(make, X):
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = make().fit(X)
            note = "did not converge" if any("converge" in str(w.message) for w in caught) else ""
        except (ValueError, FloatingPointError, RuntimeError) as err:
            model, note = None, f"failed: {err}"
    return model, note, time.perf_counter() - start


def _gaussian_cells(X_fit, X_val, ks, types, prior, init, n_init, seed, progress, params):
    from elbokit import GaussianMixture
    from elbokit.priors import GaussianPrior, check_prior

    settings = check_prior(prior)
    mean, cov = X_fit.mean(0), np.atleast_2d(np.cov(X_fit.T))
    tree = ward_partitions(X_fit, ks, seed) if init in ("auto", "ward") else {}
    reg = params.get("reg_covar", 1e-6)
    out = []
    for k in ks:
        partitions = []
        if k in tree:
            partitions.append(("ward", tree[k]))
        if init in ("auto", "kmeans") or not partitions:
            partitions += [(f"kmeans{i}", kmeans_partition(X_fit, k, seed + i)) for i in range(n_init)]
        for ct in types:
            resolved = None if settings is None else GaussianPrior.resolve(
                settings, k, ct, torch.as_tensor(mean), torch.as_tensor(cov))
            best = None
            for name, labels in partitions:
                start = start_from_partition(X_fit, labels, k, ct, reg, resolved)
                if start is None:
                    continue
                model, note, seconds = _timed_fit(lambda: GaussianMixture(
                    k, covariance_type=ct, prior=prior, random_state=seed, **start, **params), X_fit)
                if best is None or (model is not None and (best[0] is None or
                                                           _objective(model) > _objective(best[0]))):
                    best = (model, note + (f" start={name}" if model is not None else ""), seconds)
            if best is None:
                best = (None, "failed: every start had an empty component", 0.0)
            model, note, seconds = best
            cell = {"family": "gaussian", "covariance_type": ct, "K": k}
            out.append((cell, model, {} if model is None else _scores(model, X_fit, X_val),
                        seconds, note.strip(), {} if prior is None else {"prior": prior}))
            if progress is not None:
                progress(f"gaussian {ct} K={k}")
    return out


def _family_cells(X_fit, X_val, ks, family, n_init, seed, progress, params):
    from elbokit import Mixture

    name = family if isinstance(family, str) else family.get("name", str(family))
    out = []
    for k in ks:
        model, note, seconds = _timed_fit(lambda: Mixture(k, family=family, n_init=n_init,
                                                          random_state=seed, **params), X_fit)
        out.append(({"family": name, "covariance_type": "-", "K": k}, model,
                    {} if model is None else _scores(model, X_fit, X_val), seconds, note,
                    dict(family=family)))
        if progress is not None:
            progress(f"{name} K={k}")
    return out


def _assemble(results, criterion, X_all, refit, params) -> Selection:
    names = None
    for _, model, scores, *_ in results:
        if model is not None:
            names = list(scores)
            break
    if names is None:
        raise ValueError("every cell of the grid failed: " +
                         "; ".join(sorted({r[4] for r in results})))
    header = ["family", "covariance_type", "K"] + names + ["seconds", "note"]
    rows, models, settings = [], [], []
    for cell, model, scores, seconds, note, how in results:
        rows.append([cell["family"], cell["covariance_type"], cell["K"]]
                    + [scores.get(s, float("nan")) for s in names] + [round(seconds, 3), note])
        models.append(model)
        settings.append(dict(cell, **how))
    column, lower = CRITERIA[criterion]
    if column not in header:
        raise ValueError(f"criterion={criterion!r} needs a validation split.")
    j = header.index(column)
    values = np.array([r[j] if models[i] is not None else np.nan for i, r in enumerate(rows)])
    values = values if lower else -values
    best = int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))
    chosen = models[best]
    if refit and chosen is not None:
        chosen = _refit(chosen, X_all)
    return Selection(header, rows, models, best, criterion, chosen, settings)


def _refit(model, X):
    """The chosen model's settings fitted on all rows, from its own fitted parameters."""
    from sklearn.base import clone

    again = clone(model)
    if hasattr(again, "means_init"):
        again.set_params(weights_init=model.weights_, means_init=model.means_,
                         precisions_init=model.precisions_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return again.fit(X)
