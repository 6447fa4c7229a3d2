"""Plots for the reports (matplotlib, headless).

Conventions: half-width figures are ``HALF`` inches wide, full-width ones
``FULL``; iteration, epoch and K axes have integer ticks; categorical
colours come from :func:`colours`, which never repeats a colour within a
plot; small multiples share their scales.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Ellipse  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

HALF = 6.0
FULL = 12.0
BLUE, RED, GREY = "#1b5fa8", "#c0392b", "#8a96a3"


def colours(n: int) -> list:
    """``n`` distinct categorical colours: tab10 up to 10, tab20 up to 20, then
    evenly spaced hues of the turbo map (no colour repeats)."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        cmap = plt.get_cmap("tab20")
        return [cmap((2 * i) % 20 + (2 * i) // 20) for i in range(n)]  # strong hues first
    cmap = plt.get_cmap("turbo")
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


def _integer_ticks(ax, axis: str = "x", n: int | None = None) -> None:
    """Integer ticks (every one for a short axis 1..n, with some room at the ends)."""
    if n is not None and n <= 12:
        getattr(ax, f"set_{axis}ticks")(range(1, n + 1))
        getattr(ax, f"set_{axis}lim")(0.5, n + 0.5)
        return
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))


def _finish(ax, xlabel: str, ylabel: str, legend: bool = True) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def bound_history(steps, bounds, *, xlabel: str, ylabel: str, label: str, final=None,
                  exact: bool = False, title: str = ""):
    """The bound per iteration (or sweep); ``final``: the bound of the returned parameters.

    Parameters
    ----------
    steps : array (n,) of int
        Iteration numbers (from 1).
    bounds : array (n,)
    """
    fig, ax = plt.subplots(figsize=(HALF, 3.6))
    ax.plot(steps, bounds, marker="o", ms=3, lw=1.5, color=BLUE, label=label)
    if exact:
        ax.plot(steps, bounds, ls="none", marker="x", ms=6, color=RED,
                label="log p(x) (exact: the KL gap is 0)")
    n = len(steps)
    if final is not None:
        ax.plot([n + 1], [final], ls="none", marker="*", ms=10, color="#2e7d32",
                label="returned parameters")
    ticks = [int(t) for t in MaxNLocator(integer=True, nbins=8).tick_values(1, max(n, 1))
             if 1 <= t <= n]
    if final is not None:
        ticks = [t for t in ticks if t <= n - max(1, n // 10)] + [n, n + 1] if n > 1 else [1, 2]
        ax.set_xticks(sorted(set(ticks)))
        ax.set_xticklabels([("final" if t == n + 1 else str(t)) for t in sorted(set(ticks))])
    else:
        _integer_ticks(ax, n=n)
    if title:
        ax.set_title(title, fontsize=10)
    _finish(ax, xlabel, ylabel)
    return fig


def clusters_2d(points, labels, centres, covariances, palette, *, names=None,
                xlabel="principal component 1", ylabel="principal component 2", title=""):
    """Samples on a 2-D projection coloured by category, with 2-sigma ellipses.

    Parameters
    ----------
    points : array (n, 2)
    labels : array (n,) of int
        Category code of each point (index into ``palette``).
    centres : array (K, 2) or None
        Projected component means (ellipses drawn when given).
    covariances : array (K, 2, 2) or None
        Projected component covariances.
    names : list of str, optional
        Legend names of the categories (given labels); default: no legend.
    """
    fig, ax = plt.subplots(figsize=(HALF, 5))
    labels = np.asarray(labels)
    ax.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6, linewidths=0,
               c=[palette[k] for k in labels])
    if centres is not None:
        for k in range(len(centres)):
            vals, vecs = np.linalg.eigh(covariances[k])
            vals = np.clip(vals, 1e-12, None)
            angle = np.degrees(np.arctan2(vecs[1, -1], vecs[0, -1]))
            ax.add_patch(Ellipse(centres[k], 4 * np.sqrt(vals[-1]), 4 * np.sqrt(vals[0]),
                                 angle=angle, fill=False, lw=1.8, color=palette[k]))
            ax.annotate(str(k), centres[k], fontsize=9, weight="bold", ha="center", va="center")
    if names is not None:
        for k, name in enumerate(names):
            ax.scatter([], [], s=20, color=palette[k], label=str(name))
        ax.legend(fontsize=7, markerscale=1, ncol=max(1, len(names) // 12 + 1),
                  loc="best", framealpha=0.8)
    if title:
        ax.set_title(title, fontsize=10)
    _finish(ax, xlabel, ylabel, legend=False)
    return fig


def criterion_curves(table, chosen: tuple):
    """BIC and AIC against K, one line per covariance type; the fitted model marked.

    Parameters
    ----------
    table : Table with columns covariance_type, K, BIC, AIC
    chosen : (covariance_type, K) of the fitted model
    """
    fig, axes = plt.subplots(1, 2, figsize=(FULL, 3.8), sharex=True)
    types = list(dict.fromkeys(table.column("covariance_type")))
    palette = colours(len(types))
    rows = table.rows
    for ax, criterion in zip(axes, ("BIC", "AIC")):
        j = table.header.index(criterion)
        for t, colour in zip(types, palette):
            pts = sorted((r[1], r[j]) for r in rows if r[0] == t and np.isfinite(r[j]))
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=4, color=colour, label=t)
        hit = [r[j] for r in rows if (r[0], r[1]) == tuple(chosen)]
        if hit:
            ax.plot([chosen[1]], hit, ls="none", marker="*", ms=14, color=RED,
                    label=f"fitted: {chosen[0]}, K={chosen[1]}")
        _integer_ticks(ax)
        ax.set_title(f"{criterion} (lower is better)", fontsize=10)
        _finish(ax, "number of components K", criterion)
    return fig


def heatmap(matrix, row_names, col_names, *, xlabel: str, ylabel: str, cbar: str,
            cmap: str = "viridis", centre: bool = False, annotate: bool = True, width=HALF):
    """A labelled heatmap (values annotated when the matrix is small)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n_rows, n_cols = matrix.shape
    height = min(9.0, max(2.6, 0.32 * n_rows + 1.6))
    fig, ax = plt.subplots(figsize=(max(width, 0.3 * n_cols + 2) if width == FULL else width, height))
    if centre:
        lim = float(np.nanmax(np.abs(matrix))) or 1.0
        im = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=-lim, vmax=lim, interpolation="nearest")
    else:
        im = ax.imshow(matrix, aspect="auto", cmap=cmap, interpolation="nearest")
    ax.set_xticks(range(n_cols))
    ax.set_xticklabels([str(c) for c in col_names], rotation=90 if n_cols > 8 else 0,
                       fontsize=7 if n_cols > 15 else 8)
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels([str(r) for r in row_names], fontsize=7 if n_rows > 15 else 8)
    if annotate and n_rows * n_cols <= 150:
        for i in range(n_rows):
            for j in range(n_cols):
                v = matrix[i, j]
                r, g, b, _ = im.cmap(im.norm(v))
                dark = 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.5  # relative luminance
                text = f"{v:.0f}" if float(v).is_integer() and abs(v) >= 1 else f"{v:.2g}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label=cbar, fraction=0.05)
    return fig


def silhouette(values, labels, palette, mean: float):
    """The silhouette of each sample, grouped by cluster (Rousseeuw 1987)."""
    fig, ax = plt.subplots(figsize=(HALF, 4.2))
    y = 0
    for k in range(len(palette)):
        v = np.sort(values[labels == k])
        if v.size == 0:
            continue
        ax.fill_betweenx(np.arange(y, y + v.size), 0, v, color=palette[k], alpha=0.8, lw=0)
        ax.text(-0.02, y + v.size / 2, str(k), ha="right", va="center", fontsize=8)
        y += v.size + max(2, len(values) // 100)
    ax.axvline(mean, color=RED, ls="--", lw=1.2, label=f"mean {mean:.3f}")
    ax.set_yticks([])
    _finish(ax, "silhouette (-1 .. 1; higher: better separated)", "samples, by cluster")
    return fig


def log_density_histogram(counts, edges, threshold, n_flagged: int, *, xlabel="log p(x)"):
    """Histogram (counts per bin between ``edges``) of log p(x), the anomaly threshold marked."""
    fig, ax = plt.subplots(figsize=(HALF, 3.6))
    ax.stairs(counts, edges, fill=True, color="#5b8cc0", alpha=0.85)
    ax.axvline(threshold, color=RED, ls="--", lw=1.5, label=f"anomaly threshold ({threshold:.2f})")
    ax.set_title(f"{n_flagged} of {int(np.sum(counts))} rows flagged", fontsize=10)
    _finish(ax, xlabel, "rows")
    return fig


def image_grid(images, image_shape, n_cols: int = 10, titles=None):
    """Images in a grid (rows of ``images`` reshaped to ``image_shape`` (h, w)), drawn as one
    mosaic: exactly as many cells as images, one row when they fit."""
    images = np.asarray(images, dtype=np.float64)
    n = len(images)
    n_cols = min(n_cols, n)
    n_rows = int(np.ceil(n / n_cols))
    h, w = image_shape
    pad = max(1, h // 10)
    label = 0 if titles is None else max(4, h // 3)
    cell_h, cell_w = h + pad + label, w + pad
    mosaic = np.full((n_rows * cell_h, n_cols * cell_w), np.nan)
    for i in range(n):
        r, c = divmod(i, n_cols)
        top = r * cell_h + label
        mosaic[top:top + h, c * cell_w:c * cell_w + w] = images[i].reshape(image_shape)
    fig, ax = plt.subplots(figsize=(n_cols * 0.75, n_rows * 0.75 * cell_h / cell_w))
    cmap = plt.get_cmap("gray_r").with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    if titles is not None:
        for i in range(n):
            r, c = divmod(i, n_cols)
            ax.text(c * cell_w + w / 2, r * cell_h + label * 0.55, str(titles[i]), fontsize=6,
                    ha="center", va="center")
    ax.axis("off")
    return fig


def latent_scatter(points, codes=None, names=None, *, xlabel: str, ylabel: str):
    """Codes in 2-D, coloured by label category (a legend names them) if given."""
    fig, ax = plt.subplots(figsize=(HALF, 5))
    if codes is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, color=BLUE, linewidths=0)
    else:
        palette = colours(len(names))
        for k, name in enumerate(names):
            sel = codes == k
            ax.scatter(points[sel, 0], points[sel, 1], s=6, alpha=0.7, color=palette[k],
                       linewidths=0, label=str(name))
        ax.legend(fontsize=7, markerscale=2.5, ncol=max(1, len(names) // 12 + 1), framealpha=0.8)
    _finish(ax, xlabel, ylabel, legend=False)
    return fig


def kl_per_dimension(kl, active, threshold: float):
    """Mean KL(q(z_j|x) || p(z_j)) per latent dimension, active units highlighted."""
    L = len(kl)
    fig, ax = plt.subplots(figsize=(HALF, 3.4))
    from matplotlib.patches import Patch

    ax.bar(np.arange(1, L + 1), kl, color=[BLUE if a else GREY for a in active])
    ax.set_ylim(0, 1.3 * max(float(np.max(kl)), 1e-3))  # room for the legend
    ax.legend(handles=[Patch(color=BLUE, label="active"),
                       Patch(color=GREY, label=f"inactive (Cov_x E[z_j|x] <= {threshold:g})")],
              fontsize=8)
    _integer_ticks(ax, n=L)
    _finish(ax, "latent dimension j", "mean KL per sample (nats)", legend=False)
    return fig


def train_validation_history(train, validation):
    fig, ax = plt.subplots(figsize=(HALF, 3.6))
    epochs = np.arange(1, len(train) + 1)
    ax.plot(epochs, train, marker="o", ms=3, color=BLUE, label="training bound (mean per sample)")
    if len(validation):
        ax.plot(epochs[: len(validation)], validation, marker="s", ms=3, color=RED,
                label="validation ELBO")
    _integer_ticks(ax, n=len(train))
    _finish(ax, "epoch", "nats per sample")
    return fig


def topic_word_bars(words, within, overall, palette, n_cols: int = 4):
    """Small multiples, one per topic, on one shared scale: each chosen word's expected
    count in the topic (coloured) over its count in the whole corpus (grey), as pyLDAvis.

    Parameters
    ----------
    words : list of K lists of str
    within, overall : list of K arrays
        Expected tokens of each word in the topic, and in the corpus.
    """
    n = len(words)
    n_cols = min(n_cols, n)
    n_rows = int(np.ceil(n / n_cols))
    n_words = max(len(w) for w in words)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(FULL, n_rows * (0.17 * n_words + 0.9)),
                             sharex=True, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.set_visible(False)
            continue
        y = np.arange(len(words[k]))[::-1]
        ax.barh(y, overall[k], color="#d5dbe1", label="whole corpus")
        ax.barh(y, within[k], color=palette[k], label="in this topic")
        ax.set_yticks(y)
        ax.set_yticklabels(words[k], fontsize=7)
        ax.set_title(f"topic {k}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.tick_params(axis="x", labelsize=7)
    for ax in axes[-1]:
        if ax.get_visible():
            ax.set_xlabel("tokens (expected)", fontsize=8)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.legend(handles[::-1], names[::-1], loc="upper right", ncol=2, fontsize=8, frameon=False)
    return fig


def intertopic_map(xy, prevalence, palette):
    """Topics on the 2-D principal coordinates of their Jensen-Shannon distances,
    circle area proportional to prevalence (as pyLDAvis)."""
    fig, ax = plt.subplots(figsize=(HALF, 5))
    prevalence = np.asarray(prevalence)
    sizes = 3000 * prevalence / prevalence.max()
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=palette, alpha=0.45, edgecolors="#333", linewidths=0.8)
    for k, (x, y) in enumerate(xy):
        ax.annotate(str(k), (x, y), ha="center", va="center", fontsize=9, weight="bold")
    pad = 0.15 * (np.ptp(xy, axis=0).max() or 1.0)
    ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
    ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
    ax.set_aspect("equal", adjustable="box")
    _finish(ax, "PC1", "PC2", legend=False)
    return fig


def topic_bars(values, palette, *, ylabel: str, reference=None, reference_label: str = ""):
    """One bar per topic (prevalence, coherence, ...)."""
    K = len(values)
    fig, ax = plt.subplots(figsize=(HALF, 3.4))
    ax.bar(np.arange(K), values, color=palette)
    if reference is not None:
        ax.axhline(reference, color=RED, ls="--", lw=1.2, label=reference_label)
    ax.set_xticks(np.arange(K))
    ax.set_xticklabels([str(k) for k in range(K)], fontsize=7 if K > 20 else 8,
                       rotation=90 if K > 30 else 0)
    ax.axhline(0, color="#333", lw=0.6)
    _finish(ax, "topic", ylabel)
    return fig
