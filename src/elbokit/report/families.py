"""Report pages of the family-EM models: ``Mixture``, ``PPCA``, ``FactorAnalysis``."""

from __future__ import annotations

import numpy as np

from elbokit.report import plots
from elbokit.report.common import anomaly_rows, em_training, log_px_histogram
from elbokit.report.html import Page, Table

STAGES = 3


def load_rows_with_missing(path) -> np.ndarray:
    """A .npy/.csv/.parquet file as a float64 array, empty cells as NaN."""
    import torch

    from elbokit.data.sources import as_source

    source = as_source(path, batch_size=65536, dtype=torch.float64, device=torch.device("cpu"),
                       allow_missing=True)
    return np.concatenate([b.double().numpy() for b, _ in source])


def rows_for(model, data) -> np.ndarray:
    """The rows to report on, as the model reads them (typed tables encoded, NaN kept)."""
    if type(model).__name__ == "Mixture":
        data = model._prepare_X(data)
    if isinstance(data, str) or hasattr(data, "__fspath__"):
        return load_rows_with_missing(data)
    return np.asarray(data, dtype=np.float64)


def _training(page: Page, model) -> None:
    em_training(page, model, unit="nats per sample", label="mean log p(x)",
                why="EM sets q(z) to the exact posterior, so the bound is log p(x) itself (missing "
                    "entries marginalised; the KL gap is 0)")


def _anomalies(page: Page, log_px: np.ndarray, quantile: float = 0.01) -> None:
    worst, threshold = anomaly_rows(log_px, quantile)
    page.add("Anomalies: log p(x) per row",
             log_px_histogram(page, log_px, threshold,
                              f"Rows below the {quantile:.0%} quantile of log p(x) are flagged."),
             page.table(Table("anomalies", ["row", "log p(x)"],
                              [[int(i), float(log_px[i])] for i in worst], [None, "{:.3f}"]),
                        "The least probable rows."))


def _pca_points(X: np.ndarray) -> np.ndarray:
    Xf = np.where(np.isnan(X), np.nanmean(X, 0), X)
    centred = Xf - Xf.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2].T if vt.shape[0] >= 2 else np.concatenate([vt.T, np.zeros((X.shape[1], 1))], 1)
    return centred @ axes


def mixture_page(model, X: np.ndarray, metrics: dict) -> Page:
    """A fitted Mixture on rows X: bound, components (weights, sizes, means), anomalies."""
    family = model.family_config_["name"]
    title = "mixed-type (product)" if family == "product" else family
    log_px = np.asarray(model.score_samples(X), dtype=np.float64)
    labels = np.asarray(model.predict(X)).astype(np.int64)
    page = Page(f"Mixture of {title} components: K={model.n_components}",
                f"Fitted by EM on {metrics.get('n_samples', len(X))} rows x {model.n_features_in_} "
                f"features; {model.n_iter_} iterations, "
                f"{'converged' if model.converged_ else 'not converged'}.")
    page.headline.update({"rows": f"{len(X)}", "components": f"{model.n_components}",
                          "mean log p(x) (nats)": f"{log_px.mean():.4f}",
                          "BIC": f"{model.bic(X):.1f}", "EM iterations": f"{model.n_iter_}"})
    _training(page, model)
    K = model.n_components
    blocks = [page.table(Table("components", ["component", "weight", "rows"],
                               [[k, float(w), int((labels == k).sum())]
                                for k, w in enumerate(np.asarray(model.weights_))],
                               [None, "{:.3f}", None]), "Mixing weights and assigned rows.")]
    fitted = getattr(model, "feature_names_in_", None)
    names = [str(n) for n in fitted] if fitted is not None else \
        [f"x{j}" for j in range(model.n_features_in_)]
    try:
        means = np.asarray(model.means_, dtype=np.float64)
        blocks.append(page.table(Table("means", ["component", *names],
                                       [[k, *map(float, means[k])] for k in range(K)]),
                                 "E[x | component] (categorical columns: the most probable code)."))
    except NotImplementedError:
        pass
    if X.shape[1] >= 2:
        points = _pca_points(X)
        blocks.append(page.figure(plots.latent_scatter(points, labels, [str(k) for k in range(K)],
                                                       xlabel="principal component 1",
                                                       ylabel="principal component 2"),
                                  "Rows on their first two principal components (missing entries at "
                                  "the column means), coloured by their most probable component."))
    page.add("Components", *blocks)
    _anomalies(page, log_px)
    return page


def factor_page(model, X: np.ndarray, metrics: dict) -> Page:
    """A fitted PPCA / FactorAnalysis on rows X: bound, latent map, noise, anomalies."""
    name = type(model).__name__
    log_px = np.asarray(model.score_samples(X), dtype=np.float64)
    page = Page(f"{name}: {model.n_components} latent dimensions",
                f"Fitted on {metrics.get('n_samples', len(X))} rows x {model.n_features_in_} features.")
    page.headline.update({"rows": f"{len(X)}", "latent dimensions": f"{model.n_components}",
                          "mean log p(x) (nats)": f"{log_px.mean():.4f}"})
    _training(page, model)
    Z = np.asarray(model.transform(X))
    noise = np.atleast_1d(np.asarray(model.noise_variance_, dtype=np.float64))
    loadings = np.linalg.norm(np.asarray(model.components_, dtype=np.float64), axis=0)
    blocks = [page.table(Table("noise", ["feature", "noise variance", "loading norm"],
                               [[j, float(noise[j % len(noise)]), float(loadings[j])]
                                for j in range(model.n_features_in_)], [None, "{:.4g}", "{:.4g}"]),
                         "Per feature: the noise variance and the norm of its loadings.")]
    if Z.shape[1] >= 2:
        blocks.insert(0, page.figure(plots.latent_scatter(Z[:, :2], xlabel="z1", ylabel="z2"),
                                     "Posterior means E[z | x], first two dimensions."))
    page.add("What the model learned", *blocks)
    _anomalies(page, log_px)
    return page
