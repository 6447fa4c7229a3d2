"""Report of a fitted hidden Markov model: the bound, the transition matrix as a heat map,
decoded state sequences over the data, and the emission parameters."""

from __future__ import annotations

import html

import numpy as np

from elbokit.report.html import Page

MAX_SEQUENCES = 40
MAX_STEPS = 400


def transition_heatmap(transmat, startprob):
    import matplotlib.pyplot as plt

    K = len(startprob)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(7.2, 4.2), gridspec_kw={"width_ratios": [K, 1.6]})
    im = ax.imshow(transmat, cmap="viridis", vmin=0, vmax=1)
    for i in range(K):
        for j in range(K):
            if K <= 12:
                ax.text(j, i, f"{transmat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if transmat[i, j] < 0.6 else "black")
    ax.set_xlabel("to state")
    ax.set_ylabel("from state")
    ax.set_xticks(range(K))
    ax.set_yticks(range(K))
    ax.set_title("transmat_", fontsize=9)
    bx.barh(range(K), startprob, color="#5b8cc0")
    bx.set_ylim(K - 0.5, -0.5)
    bx.set_yticks(range(K))
    bx.set_title("startprob_", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def state_raster(states, lengths):
    """Decoded states of the first sequences: one row per sequence, colour = state."""
    import matplotlib.pyplot as plt

    from elbokit.report.plots import COLOURS

    n = min(len(lengths), MAX_SEQUENCES)
    T = min(int(max(lengths[:n])), MAX_STEPS)
    grid = np.full((n, T), np.nan)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(n):
        seq = states[starts[i]:starts[i + 1]][:T]
        grid[i, :len(seq)] = seq
    K = int(np.nanmax(grid)) + 1 if np.isfinite(grid).any() else 1
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap([COLOURS(k % 10) for k in range(max(K, 1))])
    cmap = cmap.with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(7, max(2.0, 0.16 * n + 1)))
    ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest",
              vmin=-0.5, vmax=K - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("sequence")
    return fig


def emission_heatmap(values, row_label, col_labels, title):
    import matplotlib.pyplot as plt

    K, D = values.shape
    fig, ax = plt.subplots(figsize=(min(12, 1.2 + 0.32 * D + 2), 1.0 + 0.35 * K))
    im = ax.imshow(values, aspect="auto", cmap="magma")
    ax.set_yticks(range(K))
    ax.set_ylabel(row_label)
    if col_labels is not None and D <= 60:
        ax.set_xticks(range(D))
        ax.set_xticklabels(col_labels, fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def _emissions(model, alphabet, feature_names):
    """(matrix (K, columns), column labels, title, table rows) of the emission parameters."""
    name = type(model).__name__
    params = {k: np.asarray(v, dtype=np.float64) for k, v in model.params_.items()}
    if "probs" in params:
        probs = params["probs"]
        L = probs.shape[2]
        labels = [("␣" if c == " " else c) for c in alphabet][:L] if alphabet else [str(i) for i in range(L)]
        values = probs.reshape(probs.shape[0], -1)
        cols = labels if probs.shape[1] == 1 else [f"{j}:{s}" for j in range(probs.shape[1]) for s in labels]
        return values, cols, "emission probabilities p(symbol | state)", None
    if "rate" in params:
        return params["rate"], feature_names, "Poisson rates per state", None
    if name == "GMMHMM":
        means = np.asarray(model.means_, dtype=np.float64)
        K, M, D = means.shape
        w = np.asarray(model.weights_, dtype=np.float64)
        return (means.reshape(K * M, D), feature_names,
                f"means of the {M} mixture components of each state (rows: state x component)",
                [[k, m, f"{w[k, m]:.3f}"] for k in range(K) for m in range(M)])
    loc = params.get("loc", params.get("c.loc"))
    if loc is None:
        return None, None, "", None
    return loc, feature_names, "state means (loc)", None


def coloured_text(text_rows, states_rows, K):
    """The first sequences of a text, each character coloured by its decoded state."""
    from matplotlib.colors import to_hex

    from elbokit.report.plots import COLOURS

    colours = [to_hex(COLOURS(k % 10)) for k in range(K)]
    out = []
    for text, states in zip(text_rows, states_rows):
        spans = "".join(f'<span style="color:{colours[s]}">{html.escape(c)}</span>'
                        for c, s in zip(text, states))
        out.append(f"<div style='font-family:monospace;font-size:.95rem'>{spans}</div>")
    legend = " ".join(f'<span style="color:{c};font-weight:bold">state {k}</span>'
                      for k, c in enumerate(colours))
    return f"<div>{legend}</div>" + "".join(out)


def sequences_for_report(data, metrics: dict):
    """(X, lengths, metrics with the texts) of the data recorded at fit time (or given)."""
    from pathlib import Path

    from elbokit.data.sequences import LETTERS, read_text
    from elbokit.report import load_rows

    if metrics.get("text"):
        mode = metrics.get("alphabet_mode", "letters")
        X, lengths, _, lines = read_text(data, LETTERS if mode == "letters" else None)
        return X, lengths, dict(metrics, _texts=lines)
    path = Path(data)
    if path.is_dir():
        seqs = [np.load(f) for f in sorted(path.glob("*.npy"))]
        seqs = [s.reshape(-1, 1) if s.ndim == 1 else s for s in seqs]
        return np.concatenate(seqs).astype(np.float64), np.array([len(s) for s in seqs]), metrics
    X = load_rows(data)
    lengths = metrics.get("lengths")
    if isinstance(lengths, str):
        p = Path(lengths)
        lengths = np.load(p) if p.suffix.lower() == ".npy" else np.loadtxt(p, dtype=np.int64)
    lengths = np.atleast_1d(np.asarray([len(X)] if lengths is None else lengths, dtype=np.int64))
    return X, lengths, metrics


def hmm_page(model, X, lengths, metrics: dict) -> Page:
    """Report of a fitted HMM (any of elbokit's) on sequences X (rows) with ``lengths``."""
    from elbokit.report import plots

    K = model.n_components
    lengths = np.asarray(lengths, dtype=np.int64)
    alphabet = metrics.get("alphabet")
    names = metrics.get("feature_names") or [str(j) for j in range(model.n_features_in_)]
    page = Page(
        f"{type(model).__name__}: {K} states",
        f"Fitted by Baum-Welch (exact EM: the E-step is forward-backward) on "
        f"{metrics.get('n_sequences', len(lengths))} sequences, {metrics.get('n_samples', len(X))} "
        f"steps; {model.n_iter_} iterations, {'converged' if model.converged_ else 'not converged'}; "
        f"log p(x) per step = {model.lower_bound_:.4f} nats.",
    )
    bounds = np.asarray(model.lower_bounds_)
    page.add(
        "Training: the bound per iteration",
        page.figure(plots.bound_history(bounds, exact=True, label="log p(x) per step"),
                    "The E-step's posterior over state paths is exact (forward-backward), so the "
                    "bound equals log p(x) and never decreases."),
        page.table(["iteration", "log p(x) per step", "change"],
                   [[i, f"{b:.6f}", "" if i == 0 else f"{b - bounds[i - 1]:.2e}"]
                    for i, b in enumerate(bounds)][-12:]),
    )
    transmat = np.asarray(model.transmat_, dtype=np.float64)
    startprob = np.asarray(model.startprob_, dtype=np.float64)
    occupancy = np.asarray(model.occupancy_, dtype=np.float64)
    stationary = model.get_stationary_distribution()
    page.add(
        "States and transitions",
        page.figure(transition_heatmap(transmat, startprob),
                    "Transition probabilities p(z_{t+1} | z_t) (rows sum to 1) and the start "
                    "probabilities."),
        page.table(["state", "start", "stay (A[k, k])", "mean dwell (steps)", "occupancy",
                    "stationary"],
                   [[k, f"{startprob[k]:.3f}", f"{transmat[k, k]:.3f}",
                     f"{1 / max(1 - transmat[k, k], 1e-12):.1f}", f"{occupancy[k]:.3f}",
                     f"{stationary[k]:.3f}"] for k in range(K)]),
    )
    n_show = min(len(lengths), MAX_SEQUENCES)
    rows = int(lengths[:n_show].sum())
    Xs, ls = X[:rows], lengths[:n_show]
    states = np.asarray(model.predict(Xs, ls))
    blocks = [page.figure(state_raster(states, ls),
                          f"Viterbi state paths of the first {n_show} sequences "
                          f"(the first {MAX_STEPS} steps of each).")]
    texts = metrics.get("_texts")
    if texts is not None:
        starts = np.concatenate([[0], np.cumsum(ls)])
        k = min(12, n_show)
        blocks.append(coloured_text(texts[:k], [states[starts[i]:starts[i + 1]] for i in range(k)], K))
    page.add("Decoded state sequences", *blocks, grid=texts is None)
    values, cols, title, extra = _emissions(model, alphabet, names)
    if values is not None:
        emission_blocks = [page.figure(emission_heatmap(values, "state", cols, title), title)]
        if alphabet and "probs" in model.params_:
            probs = np.asarray(model.params_["probs"], dtype=np.float64)[:, 0]
            top = [[k, " ".join(f"{'␣' if alphabet[i] == ' ' else alphabet[i]} {probs[k, i]:.3f}"
                                for i in np.argsort(-probs[k])[:10])] for k in range(K)]
            emission_blocks.append(page.table(["state", "most probable symbols"], top))
        elif extra is not None:
            emission_blocks.append(page.table(["state", "component", "weight"], extra))
        else:
            emission_blocks.append(page.table(["state", *cols[:12]],
                                              [[k, *[f"{v:.3g}" for v in values[k][:12]]]
                                               for k in range(values.shape[0])]))
        page.add("Emission parameters", *emission_blocks)
    return page
