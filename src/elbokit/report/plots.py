"""Plots for the reports (matplotlib, headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402

COLOURS = plt.get_cmap("tab10")


def bound_history(bounds, *, exact: bool, label: str = "ELBO per sample"):
    """The bound per iteration; for EM it equals log p(x) (the KL gap is 0)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    iters = np.arange(len(bounds))
    ax.plot(iters, bounds, marker="o", ms=3, lw=1.5, color="#1b5fa8", label=label)
    if exact:
        ax.plot(iters, bounds, ls="none", marker="x", ms=6, color="#c0392b",
                label="log p(x) per sample (exact; KL gap = 0)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("nats per sample")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def clusters_2d(points, labels, means, covariances, projection):
    """Samples on a 2-D projection, coloured by cluster, with 2-sigma ellipses.

    Parameters
    ----------
    points : array (n, 2)
        Projected samples.
    labels : array (n,)
    means : array (K, D)
    covariances : array (K, D, D)
    projection : array (D, 2)
        The linear map used for ``points`` (and applied to means/covariances).
    """
    fig, ax = plt.subplots(figsize=(6, 5))
    K = means.shape[0]
    colours = [COLOURS(k % 10) for k in range(K)]
    ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6,
               c=[colours[k] for k in labels], linewidths=0)
    centre = means @ projection
    for k in range(K):
        cov = projection.T @ covariances[k] @ projection
        vals, vecs = np.linalg.eigh(cov)
        vals = np.clip(vals, 1e-12, None)
        angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
        ax.add_patch(Ellipse(centre[k], 4 * np.sqrt(vals[-1]), 4 * np.sqrt(vals[0]), angle=angle,
                             fill=False, lw=1.8, color=colours[k]))
        ax.annotate(str(k), centre[k], fontsize=9, weight="bold", ha="center", va="center")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.grid(alpha=0.3)
    return fig


def criterion_curve(ks, bic, aic, chosen):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ks, bic, marker="o", label="BIC")
    ax.plot(ks, aic, marker="s", label="AIC")
    ax.axvline(chosen, color="#c0392b", ls="--", lw=1, label=f"fitted K = {chosen}")
    ax.set_xlabel("number of components K")
    ax.set_ylabel("criterion (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def log_density_histogram(log_px, threshold):
    """Histogram of log p(x) with the anomaly threshold marked."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.hist(log_px, bins=60, color="#5b8cc0", alpha=0.85)
    ax.axvline(threshold, color="#c0392b", ls="--", lw=1.5,
               label=f"anomaly threshold ({threshold:.2f})")
    flagged = int((log_px < threshold).sum())
    ax.set_title(f"{flagged} of {len(log_px)} samples flagged", fontsize=10)
    ax.set_xlabel("log p(x)")
    ax.set_ylabel("samples")
    ax.legend(fontsize=8)
    return fig


def image_grid(images, image_shape, n_cols: int = 10, title: str = ""):
    """A grid of images (rows of ``images`` reshaped to ``image_shape`` (h, w))."""
    images = np.asarray(images)
    n = len(images)
    n_rows = max(1, int(np.ceil(n / n_cols)))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 0.8, n_rows * 0.8 + 0.3))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for i, ax in enumerate(np.atleast_1d(axes).ravel()[:n]):
        ax.imshow(images[i].reshape(image_shape), cmap="gray_r", vmin=0, vmax=1)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def latent_scatter(codes, labels=None):
    """Posterior means in 2-D (first two dimensions), coloured by label if given."""
    fig, ax = plt.subplots(figsize=(6, 5))
    codes = np.asarray(codes)
    y = codes[:, 1] if codes.shape[1] > 1 else np.zeros(len(codes))
    if labels is None:
        ax.scatter(codes[:, 0], y, s=6, alpha=0.6)
    else:
        sc = ax.scatter(codes[:, 0], y, s=6, alpha=0.7, c=labels, cmap="tab10")
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel("z1 (posterior mean)")
    ax.set_ylabel("z2 (posterior mean)")
    ax.grid(alpha=0.3)
    return fig


def train_validation_history(train, validation):
    fig, ax = plt.subplots(figsize=(6, 3.6))
    epochs = np.arange(1, len(train) + 1)
    ax.plot(epochs, train, marker="o", ms=3, label="training bound (mean per sample)")
    if len(validation):
        ax.plot(epochs[: len(validation)], validation, marker="s", ms=3, label="validation ELBO")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per sample")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def topic_word_bars(top_words, top_weights, n_cols: int = 4):
    """Small multiples: each topic's top words and their probabilities."""
    n = len(top_words)
    n_rows = max(1, int(np.ceil(n / n_cols)))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * 2.6, n_rows * 2.3))
    axes = np.atleast_1d(axes).ravel()
    for ax in axes:
        ax.axis("off")
    for k in range(n):
        ax = axes[k]
        ax.axis("on")
        y = np.arange(len(top_words[k]))[::-1]
        ax.barh(y, top_weights[k], color=COLOURS(k % 10))
        ax.set_yticks(y)
        ax.set_yticklabels(top_words[k], fontsize=7)
        ax.set_title(f"topic {k}", fontsize=9)
        ax.tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    return fig


def doc_topic_heatmap(theta):
    """Document-topic mixtures, one row per document."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    im = ax.imshow(theta, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("topic")
    ax.set_ylabel("document")
    fig.colorbar(im, ax=ax, label="E[theta]")
    return fig
