"""HTML reports: what a fitted model learned, as plots a person can read.

``write_report(model_dir)`` loads a saved model (and the data it was fitted
on, recorded in ``metrics.json``) and writes ``report.html`` beside it: the
bound per iteration and, per model family, the plots that show its latent
structure.  Pages are self-contained (inline CSS, PNG data URIs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elbokit.report.html import Page

MAX_PLOT_ROWS = 5000


def read_metrics(model_dir) -> dict:
    """``metrics.json`` of a model directory ({} if there is none); a regular file of at most 64 MiB."""
    from elbokit import files

    path = Path(model_dir) / "metrics.json"
    if not path.exists() and not path.is_symlink():
        return {}
    metrics = files.read_json(path, max_bytes=64 << 20, what="metrics file")
    if not isinstance(metrics, dict):
        raise ValueError(f"{path} does not hold a JSON object: it is not elbokit's metrics file.")
    return metrics


def _check_paths(data, labels) -> None:
    """The data and labels named (in metrics.json or by the caller) are files elbokit may open."""
    from elbokit import files

    if isinstance(data, (str, Path)):
        files.check_input(data, what="data file", allow_dir=True)
    if isinstance(labels, (str, Path)):
        files.check_input(labels, what="labels file")


def _write_page(page: Page, out, model_dir) -> Path:
    """The page, safely written to ``out`` (a path or a claim; default MODEL_DIR/report.html)."""
    from elbokit import files

    target = out if out is not None else Path(model_dir) / "report.html"
    if not isinstance(target, files.Claim):
        target = Path(target)
    return files.write_output(target, lambda tmp: Path(tmp).write_text(page.render()),
                              overwrite=True, what="report file")


def load_rows(data, max_rows: int | None = None, seed: int = 0) -> np.ndarray:
    """A data file (or array) as a float64 array, subsampled to ``max_rows``.

    IDX image files (``*-idx3-ubyte``, optionally ``.gz``) are read as grey levels in [0, 1].
    """
    from elbokit.data.idx import is_idx_path

    if isinstance(data, (str, Path)) and is_idx_path(data):
        from elbokit.data.idx import load_idx_images

        X = load_idx_images(data).astype(np.float64)
    elif isinstance(data, (str, Path)):
        import torch

        from elbokit.data.sources import as_source

        source = as_source(data, batch_size=65536, dtype=torch.float64, device=torch.device("cpu"))
        X = np.concatenate([b.double().numpy() for b, _ in source])
    else:
        X = np.asarray(data, dtype=np.float64)
    if max_rows is not None and len(X) > max_rows:
        X = X[np.sort(np.random.default_rng(seed).choice(len(X), max_rows, replace=False))]
    return X


def _pca_projection(X: np.ndarray) -> np.ndarray:
    """The top-2 principal axes of X, shape (D, 2) (padded for D = 1)."""
    centred = X - X.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2].T
    if axes.shape[1] < 2:
        axes = np.concatenate([axes, np.zeros((X.shape[1], 1))], 1)
    return axes


def _dense_covariances(gm) -> np.ndarray:
    cov = np.asarray(gm.covariances_, dtype=np.float64)
    K, D = np.asarray(gm.means_).shape
    return {"full": lambda: cov, "tied": lambda: np.broadcast_to(cov, (K, D, D)),
            "diag": lambda: np.stack([np.diag(c) for c in cov]),
            "spherical": lambda: cov[:, None, None] * np.eye(D)}[gm.covariance_type]()


def gaussian_mixture_page(gm, X, metrics: dict, anomaly_quantile: float = 0.01) -> Page:
    """Report of a fitted GaussianMixture on data X."""
    from elbokit import GaussianMixture
    from elbokit.report import plots

    K = gm.n_components
    page = Page(
        f"Gaussian mixture: K={K}, covariance_type={gm.covariance_type!r}",
        f"Fitted by EM on {metrics.get('n_samples', len(X))} samples x {gm.n_features_in_} "
        f"features; {gm.n_iter_} iterations, {'converged' if gm.converged_ else 'not converged'}; "
        f"mean log p(x) = {gm.lower_bound_:.4f} nats.",
    )
    page.add(
        "Training: the bound per iteration",
        page.figure(plots.bound_history(gm.lower_bounds_, exact=True),
                    "EM sets q(z) to the exact posterior, so the ELBO equals log p(x) at every "
                    "iteration and the KL gap is 0; it never decreases."),
        page.table(["iteration", "mean log p(x)", "change"],
                   [[i, f"{b:.6f}", "" if i == 0 else f"{b - gm.lower_bounds_[i - 1]:.2e}"]
                    for i, b in enumerate(gm.lower_bounds_)][-12:]),
    )
    Xs = X if len(X) <= MAX_PLOT_ROWS else load_rows(X, MAX_PLOT_ROWS)
    labels = np.asarray(gm.predict(Xs))
    projection = _pca_projection(Xs)
    ks = list(range(max(1, K - 3), K + 4))
    fits = [GaussianMixture(k, covariance_type=gm.covariance_type, random_state=0,
                            reg_covar=gm.reg_covar).fit(Xs) if k != K else gm for k in ks
            if k <= len(Xs)]
    ks = ks[: len(fits)]
    page.add(
        "Clusters",
        page.figure(plots.clusters_2d(Xs @ projection, labels, np.asarray(gm.means_, dtype=np.float64),
                                      _dense_covariances(gm), projection),
                    "Samples on the first two principal components, coloured by their most "
                    "probable component; ellipses at 2 standard deviations."),
        page.figure(plots.criterion_curve(ks, [f.bic(Xs) for f in fits], [f.aic(Xs) for f in fits], K),
                    "BIC and AIC for nearby numbers of components (lower is better)."),
        page.table(["component", "weight", "samples"],
                   [[k, f"{w:.3f}", int((labels == k).sum())]
                    for k, w in enumerate(np.asarray(gm.weights_))]),
    )
    log_px = np.asarray(gm.score_samples(Xs), dtype=np.float64)
    threshold = float(np.quantile(log_px, anomaly_quantile))
    worst = np.argsort(log_px)[:10]
    page.add(
        "Anomalies: log p(x) per sample",
        page.figure(plots.log_density_histogram(log_px, threshold),
                    f"Samples below the {anomaly_quantile:.0%} quantile of log p(x) are flagged."),
        page.table(["row", "log p(x)"], [[int(i), f"{log_px[i]:.3f}"] for i in worst]),
    )
    return page


def _image_side(n_features: int, image_shape=None):
    if image_shape is not None:
        return tuple(image_shape[-2:])
    side = int(round(n_features ** 0.5))
    return (side, side) if side * side == n_features else None


def vae_page(vae, X, metrics: dict, labels=None, anomaly_quantile: float = 0.01) -> Page:
    """Report of a fitted VAE on data X."""
    from elbokit.report import plots

    Xs = X if len(X) <= 2000 else load_rows(X, 2000)
    elbo = np.asarray(vae.elbo(Xs), dtype=np.float64)
    log_px = np.asarray(vae.score_samples(Xs, n_samples=64), dtype=np.float64)
    page = Page(
        f"Variational autoencoder: latent_dim={vae.latent_dim}, likelihood={vae.likelihood!r}",
        f"Trained by amortised VI for {vae.n_epochs_} epochs on {metrics.get('n_samples', len(X))} "
        f"samples x {vae.n_features_in_} features; on these samples: mean ELBO {elbo.mean():.3f}, "
        f"importance-sampled log p(x) {log_px.mean():.3f} (k=64), so the KL gap "
        f"KL(q || p(z|x)) is about {log_px.mean() - elbo.mean():.3f} nats.",
    )
    page.add(
        "Training: the bound per epoch",
        page.figure(plots.train_validation_history(vae.history_["train"], vae.history_["validation"]),
                    "The ELBO is a lower bound on log p(x); the gap to the importance-sampled "
                    "estimate is KL(q(z|x) || p(z|x))."),
        page.table(["", "nats per sample"],
                   [["mean ELBO", f"{elbo.mean():.4f}"],
                    ["importance-sampled log p(x), k=64", f"{log_px.mean():.4f}"],
                    ["KL gap (estimate)", f"{log_px.mean() - elbo.mean():.4f}"]]),
    )
    shape = _image_side(vae.n_features_in_, vae.image_shape)
    figures = []
    if shape is not None:
        figures.append(page.figure(plots.image_grid(vae.sample(40), shape),
                                   "Samples: z ~ p(z), shown as E[x | z]."))
        pairs = np.concatenate([Xs[:10], np.asarray(vae.reconstruct(Xs[:10]))])
        figures.append(page.figure(plots.image_grid(pairs, shape),
                                   "Top row: data; bottom row: reconstructions E[x | E_q[z|x]]."))
        figures.append(page.figure(plots.image_grid(np.asarray(vae.interpolate(Xs[0], Xs[1], 10)), shape),
                                   "Interpolation between the codes of two samples, decoded."))
    codes = np.asarray(vae.transform(Xs))
    lab = None if labels is None else np.asarray(labels)[: len(Xs)]
    figures.append(page.figure(plots.latent_scatter(codes, lab),
                               "Latent codes (posterior means), first two dimensions."))
    page.add("What the model learned", *figures)
    threshold = float(np.quantile(log_px, anomaly_quantile))
    page.add(
        "Anomalies: importance-sampled log p(x) per sample",
        page.figure(plots.log_density_histogram(log_px, threshold),
                    f"Samples below the {anomaly_quantile:.0%} quantile are flagged."),
        page.table(["row", "log p(x)"], [[int(i), f"{log_px[i]:.3f}"] for i in np.argsort(log_px)[:10]]),
    )
    return page


def lda_page(lda, documents, metrics: dict) -> Page:
    """Report of a fitted LDA on (raw or count) documents."""
    from elbokit.report import plots

    theta = np.asarray(lda.transform(documents[:60]))
    weights = np.asarray(lda.topic_word_, dtype=np.float64)
    top = np.argsort(-weights, 1)[:, :10]
    vocab = list(lda.vocabulary_) if getattr(lda, "vocabulary_", None) is not None else None
    words = [[vocab[i] if vocab else str(i) for i in row] for row in top]
    page = Page(
        f"LDA: {lda.n_topics} topics, method={lda.method!r}",
        f"Fitted on {metrics.get('n_documents', '?')} documents; {len(lda.lower_bounds_)} recorded "
        f"bound values; the last {lda.lower_bounds_[-1]:.4f}.",
    )
    exact = lda.method != "gibbs"
    page.add(
        "Training: the bound per iteration",
        page.figure(plots.bound_history(lda.lower_bounds_, exact=False,
                                        label="ELBO per word" if exact else "log-likelihood estimate"),
                    "Mean-field VI climbs the ELBO, a lower bound on log p(x); its gap to log p(x) "
                    "is KL(q || p(z, theta, beta | x)), not computable exactly here."
                    if exact else "The sampler's per-word estimate, per sweep."),
    )
    page.add(
        "Topics",
        page.figure(plots.topic_word_bars(words, [weights[k, top[k]] for k in range(len(top))]),
                    "Each topic's ten most probable words, p(word | topic)."),
        page.figure(plots.doc_topic_heatmap(theta),
                    "Topic mixtures of the first documents (E[theta | document])."),
        grid=False,
    )
    return page


def write_report(model_dir, data=None, out=None, labels=None) -> Path:
    """Write ``report.html`` for the model saved in ``model_dir``.

    Parameters
    ----------
    model_dir : path
        A directory written by ``save`` (with ``metrics.json`` from the CLI).
    data : path or array, optional
        The data to show; defaults to the data recorded at fit time.
    out : path or elbokit.files.Claim, optional
        Where to write (replacing a report there); defaults to ``model_dir/report.html``.
    """
    import elbokit

    model = elbokit.load(model_dir)
    metrics = read_metrics(model_dir)
    data = data if data is not None else metrics.get("data")
    if data is None:
        raise ValueError(f"{model_dir} records no data: pass the data to report on.")
    _check_paths(data, labels if labels is not None else metrics.get("labels"))
    name = type(model).__name__
    if name == "LDA":
        from elbokit.data.text import read_documents

        docs = data if isinstance(data, list) else read_documents(data)
        page = lda_page(model, docs, metrics)
        return _write_page(page, out, model_dir)
    X = load_rows(data, max_rows=200_000)
    if name == "GaussianMixture":
        page = gaussian_mixture_page(model, X, metrics)
    elif name == "VAE":
        labels = labels if labels is not None else metrics.get("labels")
        if isinstance(labels, (str, Path)):
            labels = np.load(labels)
        page = vae_page(model, X.astype(np.float32), metrics, labels=labels)
    else:
        raise ValueError(f"no report for {name} yet.")
    return _write_page(page, out, model_dir)
