"""Model selection sweeps: fit one model per candidate setting, score each, pick one.

One loop (:func:`sweep`) serves the mixtures (K x covariance type, by BIC,
AIC or held-out log p(x)), the topic models (K, by held-out perplexity or
coherence) and the VAE (latent size, by held-out importance-sampled
log p(x)). The command line's ``select`` and the reports call it; a
candidate whose fit fails (or does not converge) is kept in the table with
the reason, and the others are still compared.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclass
class Criterion:
    """A column of the sweep's table and whether lower is better."""

    column: str
    lower_is_better: bool


GMM_CRITERIA = {"bic": Criterion("BIC", True), "aic": Criterion("AIC", True),
                "icl": Criterion("ICL", True), "heldout": Criterion("held-out log p(x)", False)}
LDA_CRITERIA = {"perplexity": Criterion("held-out perplexity", True),
                "coherence": Criterion("NPMI", False)}
VAE_CRITERIA = {"heldout": Criterion("held-out log p(x)", False),
                "elbo": Criterion("held-out ELBO", False)}


@dataclass
class Sweep:
    """The result of a sweep.

    Attributes
    ----------
    header : list of str
        Column names: the settings, the scores, "seconds", "note".
    rows : list of list
        One per candidate, in the order tried; a failed fit has NaN scores
        and its error in "note".
    models : list
        The fitted model of each row (None where the fit failed).
    best : int
        Index of the chosen row.
    criterion : Criterion
    """

    header: list
    rows: list
    models: list
    best: int
    criterion: Criterion
    settings: list = field(default_factory=list)

    @property
    def best_model(self):
        return self.models[self.best]

    @property
    def best_settings(self) -> dict:
        return self.settings[self.best]


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers (train, held out): a seeded shuffle, ``fraction`` of it held out
    (at least one row each)."""
    if n < 2:
        raise ValueError(f"{n} rows: at least 2 are needed to hold some out.")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(fraction * n))))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def sweep(settings: list[dict], fit: Callable[[dict], object], score: Callable[[object], dict],
          criterion: Criterion, *, progress: Callable[[str], None] | None = None) -> Sweep:
    """Fit and score every setting; choose the best row by ``criterion``.

    Parameters
    ----------
    settings : list of dict
        The candidates (e.g. ``{"K": 3, "covariance_type": "diag"}``).
    fit : callable
        ``fit(setting)`` returns a fitted model.
    score : callable
        ``score(model)`` returns a dict of scores (including ``criterion.column``).
    progress : callable, optional
        Called with a short description after each candidate.
    """
    rows, models, score_names = [], [], None
    results = []
    for setting in settings:
        start = time.perf_counter()
        note, model, scores = "", None, {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = fit(setting)
                scores = score(model)
            except (ValueError, FloatingPointError, RuntimeError) as err:
                model, note = None, f"failed: {err}"
        if model is not None and any("converge" in str(w.message) for w in caught):
            note = "did not converge (max_iter reached)"
        if score_names is None and scores:
            score_names = list(scores)
        results.append((setting, model, scores, time.perf_counter() - start, note))
        if progress is not None:
            progress(", ".join(f"{k}={v}" for k, v in setting.items()))
    if score_names is None:
        reasons = "; ".join(sorted({r[4] for r in results}))
        raise ValueError(f"every candidate failed: {reasons}")
    keys = list(settings[0])
    header = keys + score_names + ["seconds", "note"]
    for setting, model, scores, seconds, note in results:
        rows.append([setting[k] for k in keys] + [scores.get(s, float("nan")) for s in score_names]
                    + [seconds, note])
        models.append(model)
    j = header.index(criterion.column)
    values = np.array([r[j] if models[i] is not None else np.nan for i, r in enumerate(rows)],
                      dtype=np.float64)
    values = values if criterion.lower_is_better else -values
    best = int(np.nanargmin(np.where(np.isfinite(values), values, np.nan)))
    return Sweep(header, rows, models, best, criterion, list(settings))


def gmm_sweep(X_train, X_test, ks, covariance_types, *, criterion: str = "bic",
              progress=None, prior=None, **params) -> Sweep:
    """:func:`elbokit.select` over (covariance type, K) (starting partitions shared across
    the types, the best start per cell; ``prior`` for mclust's MAP-EM): BIC, AIC and ICL on
    the training rows, mean log p(x) of the held-out rows (``X_test``, optional)."""
    import elbokit

    n_init, seed = params.pop("n_init", 1), params.pop("random_state", 0)
    sel = elbokit.select(X_train, ks, covariance_types, criterion=criterion, prior=prior,
                         n_init=n_init, X_validation=X_test, random_state=seed, refit=False,
                         progress=progress, **params)
    columns = (["covariance_type", "K", "BIC", "AIC"]
               + (["held-out log p(x)"] if X_test is not None else [])
               + ["ICL", "log-likelihood", "parameters", "iterations", "seconds", "note"])
    rows = [[r[sel.header.index(c)] for c in columns] for r in sel.rows]
    extra = {} if prior is None else {"prior": prior}
    settings = [{"covariance_type": r[0], "K": r[1], **extra} for r in rows]
    return Sweep(columns, rows, sel.models, sel.best, GMM_CRITERIA[criterion], settings)


def lda_sweep(train, heldout, ks, *, criterion: str = "perplexity", progress=None,
              **params) -> Sweep:
    """LDA for each K on the ``train`` Corpus: document-completion perplexity and mean NPMI
    coherence of the top 10 words, both on the ``heldout`` documents (raw texts)."""
    from elbokit import LDA

    def fit(s):
        return LDA(s["K"], **params).fit(train)

    def score(lda):
        return {"held-out perplexity": lda.perplexity(heldout),
                "NPMI": float(np.mean(lda.coherence(heldout))),
                "iterations": int(lda.n_iter_)}

    return sweep([{"K": k} for k in ks], fit, score, LDA_CRITERIA[criterion], progress=progress)


def vae_sweep(X_train, X_test, latent_dims, *, n_samples: int = 100, criterion: str = "heldout",
              progress=None, **params) -> Sweep:
    """VAE for each latent size: held-out importance-sampled log p(x) (``n_samples``
    draws per row) and held-out ELBO."""
    from elbokit import VAE

    def fit(s):
        return VAE(s["latent_dim"], **params).fit(X_train)

    def score(vae):
        return {"held-out log p(x)": vae.score(X_test, n_samples=n_samples),
                "held-out ELBO": float(np.mean(np.asarray(vae.elbo(X_test)))),
                "epochs": int(vae.n_epochs_)}

    return sweep([{"latent_dim": d} for d in latent_dims], fit, score, VAE_CRITERIA[criterion],
                 progress=progress)
