"""The Gaussian mixture report: bound, clusters, feature profiles, model selection across
covariance types and K, agreement with given labels, silhouette, anomalies."""

from __future__ import annotations

import numpy as np

from elbokit.report import plots
from elbokit.report.common import (
    agreement,
    anomaly_rows,
    bound_table_and_plot,
    decreases,
    log_px_histogram,
)
from elbokit.report.data import Data, categories, read_labels
from elbokit.report.html import Page, Table

MAX_PLOT_ROWS = 5000     # rows drawn in the scatter plots
SWEEP_ROWS = 2000        # rows the model-selection sweep refits on
SILHOUETTE_ROWS = 2000   # silhouettes cost O(n^2)
MAX_PROFILE_FEATURES = 40
STAGES = 6


def feature_names(gm, metrics: dict) -> list[str]:
    """The model's feature names (``feature_names_in_``, else those the command line
    recorded), else x0, x1, ..."""
    names = getattr(gm, "feature_names_in_", None)
    if names is None:
        names = metrics.get("feature_names")
    D = int(gm.n_features_in_)
    if names is None or len(names) != D:
        return [f"x{j}" for j in range(D)]
    return [str(n) for n in names]


def _dense_covariances(gm) -> np.ndarray:
    cov = np.asarray(gm.covariances_, dtype=np.float64)
    K, D = np.asarray(gm.means_).shape
    return {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (K, D, D)),
            "diag": lambda: np.stack([np.diag(c) for c in cov]),
            "spherical": lambda: cov[:, None, None] * np.eye(D)}[gm.covariance_type]()


def _pca_axes(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, the top-2 principal axes (D, 2; padded for D = 1) and their variance shares."""
    centre = X.mean(0)
    _, s, vt = np.linalg.svd(X - centre, full_matrices=False)
    axes = vt[:2].T
    share = (s ** 2 / max((s ** 2).sum(), 1e-300))[:2]
    if axes.shape[1] < 2:
        axes = np.concatenate([axes, np.zeros((X.shape[1], 1))], 1)
        share = np.concatenate([share, [0.0]])
    return centre, axes, share


def gaussian_mixture_page(gm, data: Data, metrics: dict, labels=None, progress=None,
                          anomaly_quantile: float = 0.01) -> Page:
    """Report of a fitted GaussianMixture on ``data`` (every row scored; plots on a sample)."""
    progress = progress or (lambda stage: None)
    K, D = gm.n_components, int(gm.n_features_in_)
    names = feature_names(gm, metrics)
    progress("scoring every row")
    full = data.model_input()
    log_px = np.asarray(gm.score_samples(full), dtype=np.float64)
    assigned = np.asarray(gm.predict(full)).astype(np.int64)
    n = len(log_px)
    if labels is not None:
        labels = read_labels(labels, n, data.description)
    rows = data.sample(MAX_PLOT_ROWS)
    converged = "converged" if gm.converged_ else "NOT converged (max_iter reached)"
    page = Page(
        f"Gaussian mixture: K={K}, covariance_type={gm.covariance_type!r}",
        (f"Fitted by EM on {metrics['n_samples']} rows x {D} features " if "n_samples" in metrics
         else f"Fitted by EM on data with {D} features ")
        + f"({gm.n_iter_} iterations, {converged}); shown: {data.description}, {n} rows"
        + (f" (plots on a random sample of {len(rows.index)}; every row is scored)."
           if rows.is_sample else "."),
    )
    bic = -2 * log_px.sum() + gm._n_parameters() * np.log(n)
    page.headline.update({"rows": f"{n}", "features": f"{D}", "components": f"{K}",
                          "mean log p(x) (nats)": f"{log_px.mean():.4f}", "BIC": f"{bic:.1f}",
                          "EM iterations": f"{gm.n_iter_}"})
    _training(page, gm)
    progress("clusters")
    _clusters(page, gm, rows, assigned, labels, names)
    _profiles(page, gm, names)
    progress("model selection")
    _selection(page, gm, rows, metrics, progress)
    progress("agreement and silhouette")
    if labels is not None:
        blocks, scores = agreement(page, assigned, labels, found_name="cluster", name="clusters")
        page.headline.update({k: f"{v:.3f}" for k, v in scores.items()})
        page.add("Clusters against the given labels", *blocks)
    _silhouette(page, rows, np.asarray(gm.predict(rows.X)).astype(np.int64), K)
    progress("anomalies")
    _anomalies(page, gm, data, log_px, assigned, labels, names, anomaly_quantile)
    return page


def _training(page: Page, gm) -> None:
    down = decreases(gm.lower_bounds_)
    truth = ("it never decreased" if down == 0 else
             f"it decreased at {down} iterations: float32 rounding; refit with --dtype float64")
    page.add("Training: the bound per iteration", *bound_table_and_plot(
        page, gm.lower_bounds_, int(gm.n_iter_), what="iteration", unit="nats per sample",
        label="mean log p(x)", exact=True,
        caption=f"EM sets q(z) to the exact posterior, so the ELBO equals log p(x) (the KL gap is "
                f"0) at every iteration; {truth}. The star: the returned parameters (best of "
                f"n_init={gm.n_init} restarts)."))


def _clusters(page: Page, gm, rows, assigned, labels, names) -> None:
    K = gm.n_components
    sample_labels = np.asarray(gm.predict(rows.X)).astype(np.int64)
    centre, axes, share = _pca_axes(rows.X)
    points = (rows.X - centre) @ axes
    means = np.asarray(gm.means_, dtype=np.float64)
    covs = _dense_covariances(gm)
    centres2 = (means - centre) @ axes
    covs2 = np.einsum("da,kde,eb->kab", axes, covs, axes)
    palette = plots.colours(K)
    header = ["row", "PC1", "PC2", "cluster"]
    given = None
    if labels is not None:
        given = np.asarray(labels)[rows.index]
        header.append("label")
    table = Table("clusters-scatter", header,
                  [[int(r), float(p[0]), float(p[1]), int(c)] + ([given[i].item()] if given is not None else [])
                   for i, (r, p, c) in enumerate(zip(rows.index, points, sample_labels))])
    xl, yl = (f"principal component {i + 1} ({share[i]:.0%} of the variance)" for i in range(2))
    sampled = f" ({len(rows.index)} of {rows.n_total} rows, drawn at random)" if rows.is_sample else ""
    blocks = [page.figure(
        plots.clusters_2d(points, sample_labels, centres2, covs2, palette, xlabel=xl, ylabel=yl),
        f"Rows{sampled} on the first two principal components, coloured by their most "
        "probable component; ellipses at 2 standard deviations.", table)]
    if given is not None:
        label_names, codes = categories(given)
        blocks.append(page.figure(
            plots.clusters_2d(points, codes, None, None, plots.colours(len(label_names)),
                              names=label_names, xlabel=xl, ylabel=yl),
            "The same rows, coloured by the given labels.", table))
    weights = np.asarray(gm.weights_, dtype=np.float64)
    counts = np.bincount(assigned, minlength=K)
    sizes = Table("components", ["component", "weight", "rows", "share of rows"],
                  [[k, float(weights[k]), int(counts[k]), float(counts[k] / max(1, counts.sum()))]
                   for k in range(K)])
    blocks.append(page.table(sizes, "Mixture weight of each component, and the rows it is the "
                                    "most probable component of (all rows)."))
    page.add("Clusters", *blocks)


def _profiles(page: Page, gm, names) -> None:
    """Component means in units of the mixture's own standard deviation per feature."""
    means = np.asarray(gm.means_, dtype=np.float64)
    w = np.asarray(gm.weights_, dtype=np.float64)
    var = np.stack([np.diag(c) for c in _dense_covariances(gm)])
    overall = w @ means
    overall_var = w @ (var + means ** 2) - overall ** 2
    z = (means - overall) / np.sqrt(np.maximum(overall_var, 1e-300))
    D = means.shape[1]
    shown = np.arange(D)
    note = ""
    if D > MAX_PROFILE_FEATURES:
        shown = np.sort(np.argsort(-(w @ z ** 2))[:MAX_PROFILE_FEATURES])
        note = (f" The {MAX_PROFILE_FEATURES} of {D} features whose means differ most between "
                "components are shown; the CSV has all.")
    table = Table("feature-profiles",
                  ["component", "weight"] + [f"{n} (mean)" for n in names]
                  + [f"{n} (standardised)" for n in names],
                  [[k, float(w[k])] + means[k].tolist() + z[k].tolist() for k in range(len(w))])
    fig = plots.heatmap(z[:, shown], list(range(len(w))), [names[j] for j in shown],
                        xlabel="feature", ylabel="component", cbar="sd units",
                        cmap="RdBu_r", centre=True,
                        width=plots.FULL if len(shown) > 10 else plots.HALF)
    page.add("Feature profiles", page.figure(
        fig, "Each component's mean of each feature, in standard deviations of the mixture "
             "from the mixture's overall mean (red: above, blue: below)." + note, table),
        grid=len(shown) <= 10)


def _selection(page: Page, gm, rows, metrics, progress) -> None:
    """BIC/AIC across covariance types and K: the sweep `elbokit select` recorded, or one
    run here on a sample of the rows."""
    from elbokit._sweep import COVARIANCE_TYPES, GMM_CRITERIA, sweep

    recorded = metrics.get("selection")
    K = gm.n_components
    if recorded:
        header = recorded["header"]
        table_rows = [[np.nan if v is None else v for v in r] for r in recorded["rows"]]
        caption = (f"The sweep of `elbokit select` that chose this model ({recorded['criterion']}; "
                   f"{recorded['n_train']} training rows).")
    else:
        X = rows.X if len(rows.X) <= SWEEP_ROWS else rows.X[np.sort(
            np.random.default_rng(1).choice(len(rows.X), SWEEP_ROWS, replace=False))]
        ks = [k for k in range(max(1, K - 3), K + 4) if k <= len(X)]
        params = dict(reg_covar=gm.reg_covar, dtype=gm.dtype, max_iter=gm.max_iter, tol=gm.tol,
                      random_state=0)
        settings = [{"covariance_type": t, "K": k} for t in COVARIANCE_TYPES for k in ks]
        own = {"covariance_type": gm.covariance_type, "K": K}
        if hasattr(progress, "grow"):
            progress.grow(len(settings))
        result = sweep(
            settings,
            lambda s: gm if s == own else _fit(s, X, params),
            lambda m: {"BIC": m.bic(X), "AIC": m.aic(X)},
            GMM_CRITERIA["bic"], progress=progress)
        header, table_rows = result.header, result.rows
        sampled = f"a random {len(X)} of the {rows.n_total} rows" if len(X) < rows.n_total else \
            f"all {len(X)} rows"
        failed = sum(1 for r in table_rows if str(r[-1]).startswith(("failed", "did not")))
        caption = (f"Each covariance type and K near the fitted one, fitted on {sampled} "
                   "(one start each); lower is better, the star marks the fitted model"
                   + (f"; {failed} fits failed or did not converge (see the CSV's note)."
                      if failed else "."))
    table = Table("model-selection", header, table_rows)
    if "BIC" in header and "covariance_type" in header:
        small = Table("model-selection-plotted", ["covariance_type", "K", "BIC", "AIC"],
                      [[r[header.index("covariance_type")], r[header.index("K")],
                        r[header.index("BIC")], r[header.index("AIC")]] for r in table_rows])
        fig = plots.criterion_curves(small, (gm.covariance_type, K))
        page.add("Model selection: BIC and AIC by covariance type and K",
                 page.figure(fig, caption, table), grid=False)


def _fit(setting, X, params):
    from elbokit import GaussianMixture

    return GaussianMixture(setting["K"], covariance_type=setting["covariance_type"], **params).fit(X)


def _silhouette(page: Page, rows, assigned, K) -> None:
    from sklearn.metrics import silhouette_samples

    X, found = rows.X, assigned
    if len(X) > SILHOUETTE_ROWS:
        keep = np.sort(np.random.default_rng(2).choice(len(X), SILHOUETTE_ROWS, replace=False))
        X, found = X[keep], found[keep]
    if len(np.unique(found)) < 2 or len(np.unique(found)) >= len(X):
        return
    values = silhouette_samples(X, found)
    mean = float(values.mean())
    page.headline["silhouette"] = f"{mean:.3f}"
    per = Table("silhouette", ["cluster", "rows", "mean silhouette"],
                [[k, int((found == k).sum()), float(values[found == k].mean())]
                 for k in range(K) if (found == k).any()])
    page.add("Silhouette", page.figure(
        plots.silhouette(values, found, plots.colours(K), mean),
        f"How much closer each row is to its own cluster than to the next one (Euclidean, on "
        f"{len(X)} rows); the mean is {mean:.3f}.", per))


def _anomalies(page: Page, gm, data: Data, log_px, assigned, labels, names, quantile) -> None:
    worst, threshold = anomaly_rows(log_px, quantile)
    values = data.take(worst) if len(worst) else np.zeros((0, len(names)))
    header = ["row", "log p(x)", "component"] + (["label"] if labels is not None else [])
    rows = [[int(i), float(log_px[i]), int(assigned[i])]
            + ([np.asarray(labels)[i].item()] if labels is not None else []) for i in worst]
    full = Table("anomalies", header + names, [r + values[j].tolist() for j, r in enumerate(rows)])
    shown = Table("anomalies-shown", header + names[:4],
                  [r + values[j][:4].tolist() for j, r in enumerate(rows)])
    page.add(
        "Anomalies: log p(x) per row",
        log_px_histogram(page, log_px, threshold, f"Every row's log p(x); rows below the "
                                                  f"{quantile:.0%} quantile are flagged."),
        page.table(shown, "The 10 rows with the lowest log p(x): row numbers in the data "
                          "(from 0), feature values as the model sees them"
                   + (" (the first 4 features; the CSV has all)." if len(names) > 4 else "."), csv=full),
    )
