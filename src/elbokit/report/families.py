"""Report pages of the family-EM models: ``Mixture``, ``PPCA``, ``FactorAnalysis``."""

from __future__ import annotations

import numpy as np

from elbokit.report.html import Page


def load_rows_with_missing(path: str) -> np.ndarray:
    """A .npy/.csv/.parquet file as a float64 array, empty cells as NaN."""
    import torch

    from elbokit.data.sources import as_source

    source = as_source(path, batch_size=65536, dtype=torch.float64, device=torch.device("cpu"),
                       allow_missing=True)
    return np.concatenate([b.double().numpy() for b, _ in source])


def _bound_section(page: Page, model) -> None:
    from elbokit.report import plots

    bounds = np.asarray(model.lower_bounds_)
    page.add(
        "Training: the bound per iteration",
        page.figure(plots.bound_history(bounds, exact=True),
                    "EM sets q(z) to the exact posterior, so the bound is log p(x) itself "
                    "(missing entries marginalised) and never decreases."),
        page.table(["iteration", "mean log p(x)", "change"],
                   [[i, f"{b:.6f}", "" if i == 0 else f"{b - bounds[i - 1]:.2e}"]
                    for i, b in enumerate(bounds)][-12:]),
    )


def _anomalies(page: Page, log_px: np.ndarray, quantile: float = 0.01) -> None:
    from elbokit.report import plots

    threshold = float(np.quantile(log_px, quantile))
    page.add("Anomalies: log p(x) per sample",
             page.figure(plots.log_density_histogram(log_px, threshold),
                         f"Samples below the {quantile:.0%} quantile of log p(x) are flagged."),
             page.table(["row", "log p(x)"], [[int(i), f"{log_px[i]:.3f}"] for i in np.argsort(log_px)[:10]]))


def mixture_page(model, X, metrics: dict) -> Page:
    """A fitted Mixture on data X: bound, components (weights, sizes, means), anomalies."""
    from elbokit.report import plots

    family = model.family_config_["name"]
    title = "mixed-type (product)" if family == "product" else family
    page = Page(f"Mixture of {title} components: K={model.n_components}",
                f"Fitted by EM on {metrics.get('n_samples', len(X))} samples x "
                f"{model.n_features_in_} features; {model.n_iter_} iterations, "
                f"{'converged' if model.converged_ else 'not converged'}; mean log p(x) = "
                f"{model.lower_bound_:.4f} nats; BIC {model.bic(X):.1f}.")
    _bound_section(page, model)
    labels = np.asarray(model.predict(X))
    try:
        means = np.asarray(model.means_, dtype=np.float64)
    except NotImplementedError:
        means = None
    names = list(getattr(model, "feature_names_in_", [f"x{j}" for j in range(model.n_features_in_)]))
    blocks = [page.table(["component", "weight", "samples"],
                         [[k, f"{w:.3f}", int((labels == k).sum())]
                          for k, w in enumerate(np.asarray(model.weights_))])]
    if means is not None:
        shown = names[:12]
        blocks.append(page.table(["component", *shown],
                                 [[k, *(f"{v:.3g}" for v in row[:12])] for k, row in enumerate(means)]))
    Xf = np.nan_to_num(np.asarray(X, dtype=np.float64))
    if Xf.shape[1] >= 2:
        codes = (Xf - Xf.mean(0)) @ np.linalg.svd(Xf - Xf.mean(0), full_matrices=False)[2][:2].T
        blocks.append(page.figure(plots.latent_scatter(codes, labels),
                                  "Samples on their first two principal components, coloured by "
                                  "their most probable component."))
    page.add("Components", *blocks)
    _anomalies(page, np.asarray(model.score_samples(X), dtype=np.float64))
    return page


def factor_page(model, X, metrics: dict) -> Page:
    """A fitted PPCA / FactorAnalysis on data X: bound, latent map, noise, anomalies."""
    from elbokit.report import plots

    name = type(model).__name__
    page = Page(f"{name}: {model.n_components} latent dimensions",
                f"Fitted on {metrics.get('n_samples', len(X))} samples x {model.n_features_in_} "
                f"features; mean log p(x) = {model.lower_bound_:.4f} nats.")
    _bound_section(page, model)
    Z = np.asarray(model.transform(X))
    noise = np.atleast_1d(np.asarray(model.noise_variance_, dtype=np.float64))
    page.add("What the model learned",
             page.figure(plots.latent_scatter(Z), "Posterior means E[z | x], first two dimensions."),
             page.table(["feature", "noise variance", "loading norm"],
                        [[j, f"{noise[j % len(noise)]:.4g}",
                          f"{np.linalg.norm(np.asarray(model.components_)[:, j]):.4g}"]
                         for j in range(min(model.n_features_in_, 20))]))
    _anomalies(page, np.asarray(model.score_samples(X), dtype=np.float64))
    return page
