"""Report of a fitted hidden Markov model: the bound, the transition matrix as a heat map,
decoded state sequences over the data, and the emission parameters."""

from __future__ import annotations

import html

import numpy as np

from elbokit.report import plots
from elbokit.report.common import em_training
from elbokit.report.html import Page, Table

STAGES = 4
MAX_SEQUENCES = 40
MAX_STEPS = 400
MAX_TEXTS = 12


def sequences_for_report(data, metrics: dict):
    """(X, lengths, metrics with the texts) of the data recorded at fit time (or given)."""
    from pathlib import Path

    from elbokit.data.sequences import LETTERS, read_text
    from elbokit.report import load_rows

    if metrics.get("text"):
        mode = metrics.get("alphabet_mode", "letters")
        X, lengths, _, lines = read_text(data, LETTERS if mode == "letters" else None)
        return X, lengths, dict(metrics, _texts=lines)
    if isinstance(data, (str, Path)) and Path(data).is_dir():
        seqs = [np.load(f) for f in sorted(Path(data).glob("*.npy"))]
        seqs = [s.reshape(-1, 1) if s.ndim == 1 else s for s in seqs]
        return np.concatenate(seqs).astype(np.float64), np.array([len(s) for s in seqs]), metrics
    X = load_rows(data)
    lengths = metrics.get("lengths")
    if isinstance(lengths, str):
        p = Path(lengths)
        lengths = np.load(p) if p.suffix.lower() == ".npy" else np.loadtxt(p, dtype=np.int64)
    lengths = np.atleast_1d(np.asarray([len(X)] if lengths is None else lengths, dtype=np.int64))
    return X, lengths, metrics


def transition_heatmap(transmat):
    K = transmat.shape[0]
    return plots.heatmap(transmat, list(range(K)), list(range(K)), xlabel="to state",
                         ylabel="from state", cbar="p(z_t+1 | z_t)")


def state_raster(states, lengths, K):
    """Decoded states of the first sequences: one row per sequence, colour = state."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    n = min(len(lengths), MAX_SEQUENCES)
    T = min(int(max(lengths[:n])), MAX_STEPS)
    grid = np.full((n, T), np.nan)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    for i in range(n):
        seq = states[starts[i]:starts[i + 1]][:T]
        grid[i, :len(seq)] = seq
    cmap = ListedColormap(plots.colours(K)).with_extremes(bad="white")
    fig, ax = plt.subplots(figsize=(plots.FULL, min(6.0, max(2.0, 0.12 * n + 1))))
    ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest",
              vmin=-0.5, vmax=K - 0.5)
    ax.set_xlabel("time step")
    ax.set_ylabel("sequence")
    return fig


def _emissions(model, alphabet, names):
    """(matrix (rows, columns), row names, column names, what) of the emission parameters."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in model.params_.items()}
    K = model.n_components
    if "probs" in params:
        probs = params["probs"]
        L = probs.shape[2]
        symbols = ["␣" if c == " " else c for c in alphabet][:L] if alphabet else list(range(L))
        cols = symbols if probs.shape[1] == 1 else [f"{j}:{s}" for j in range(probs.shape[1])
                                                     for s in symbols]
        return probs.reshape(K, -1), list(range(K)), cols, "p(symbol | state)"
    if "rate" in params:
        return params["rate"], list(range(K)), names, "Poisson rate"
    if type(model).__name__ == "GMMHMM":
        means = np.asarray(model.means_, dtype=np.float64)
        M = means.shape[1]
        rows = [f"{k}.{m}" for k in range(K) for m in range(M)]
        return means.reshape(K * M, -1), rows, names, "mean (state.component)"
    loc = params.get("loc")
    return (None, None, None, "") if loc is None else (loc, list(range(K)), names, "mean")


def coloured_text(texts, states, K):
    """The first sequences of a text, each character coloured by its decoded state."""
    from matplotlib.colors import to_hex

    palette = [to_hex(c) for c in plots.colours(K)]
    legend = " ".join(f'<span style="color:{c};font-weight:bold">state {k}</span>'
                      for k, c in enumerate(palette))
    lines = ["".join(f'<span style="color:{palette[s]}">{html.escape(c)}</span>'
                     for c, s in zip(text, path)) for text, path in zip(texts, states)]
    return ("<figure><div>" + legend + "</div>"
            + "".join(f"<div style='font-family:monospace'>{line}</div>" for line in lines)
            + "<figcaption>The first sequences, each character coloured by its Viterbi state."
            "</figcaption></figure>")


def hmm_page(model, X, lengths, metrics: dict, progress=None) -> Page:
    """Report of a fitted HMM (any of elbokit's) on sequences X (rows) with ``lengths``."""
    step = progress or (lambda stage: None)
    K = model.n_components
    lengths = np.asarray(lengths, dtype=np.int64)
    alphabet = metrics.get("alphabet")
    names = [str(n) for n in getattr(model, "feature_names_in_", [])] or list(range(model.n_features_in_))
    n_rows = int(lengths.sum())
    page = Page(f"{type(model).__name__}: {K} states",
                f"Fitted by Baum-Welch (exact EM; the E-step is forward-backward) on {len(lengths)} "
                f"sequences, {n_rows} steps; {model.n_iter_} iterations, "
                f"{'converged' if model.converged_ else 'not converged'}.")
    page.headline.update({"sequences": f"{len(lengths)}", "steps": f"{n_rows}", "states": f"{K}",
                          "log p(x) per step (nats)": f"{model.lower_bound_:.4f}",
                          "EM iterations": f"{model.n_iter_}"})
    em_training(page, model, unit="nats per step", label="log p(x) per step",
                why="The posterior over state paths is exact (forward-backward), so the bound is "
                    "log p(x) itself (the KL gap is 0)")
    step("the transitions")
    transmat = np.asarray(model.transmat_, dtype=np.float64)
    startprob = np.asarray(model.startprob_, dtype=np.float64)
    occupancy = np.asarray(model.occupancy_, dtype=np.float64)
    stationary = model.get_stationary_distribution()
    trans = Table("transitions", ["from state"] + [f"to {k}" for k in range(K)],
                  [[k] + transmat[k].tolist() for k in range(K)], [None] + ["{:.3f}"] * K)
    states_table = Table("states", ["state", "start", "stay", "mean dwell (steps)", "occupancy",
                                    "stationary"],
                         [[k, float(startprob[k]), float(transmat[k, k]),
                           float(1 / max(1 - transmat[k, k], 1e-12)), float(occupancy[k]),
                           float(stationary[k])] for k in range(K)],
                         [None, "{:.3f}", "{:.3f}", "{:.1f}", "{:.3f}", "{:.3f}"])
    page.add("States and transitions",
             page.figure(transition_heatmap(transmat),
                         "Transition probabilities p(z_t+1 | z_t); rows sum to 1.", trans),
             page.table(states_table, "Start and stay probabilities, the mean time spent in a "
                                      "state per visit, its share of the steps (occupancy on the "
                                      "training data) and of the stationary chain."))
    step("decoding")
    n_show = min(len(lengths), MAX_SEQUENCES)
    rows = int(lengths[:n_show].sum())
    states = np.asarray(model.predict(X[:rows], lengths[:n_show]))
    blocks = [page.figure(state_raster(states, lengths[:n_show], K),
                          f"Viterbi state paths of the first {n_show} sequences (the first "
                          f"{MAX_STEPS} steps of each).")]
    texts = metrics.get("_texts")
    if texts is not None:
        starts = np.concatenate([[0], np.cumsum(lengths)])
        k = min(MAX_TEXTS, n_show)
        blocks.append(coloured_text(texts[:k], [states[starts[i]:starts[i + 1]] for i in range(k)], K))
    page.add("Decoded state sequences", *blocks, grid=False)
    step("the emissions")
    values, row_names, cols, what = _emissions(model, alphabet, names)
    if values is not None:
        table = Table("emissions", ["row"] + [str(c) for c in cols],
                      [[r] + v.tolist() for r, v in zip(row_names, values)],
                      [None] + ["{:.3g}"] * len(cols))
        blocks = [page.figure(plots.heatmap(values, row_names, cols, xlabel="", ylabel="state",
                                            cbar=what, cmap="magma", width=plots.FULL,
                                            annotate=values.size <= 60),
                              f"Emission parameters: {what}.", table)]
        if alphabet and "probs" in model.params_:
            probs = values
            top = Table("top-symbols", ["state", "most probable symbols"],
                        [[k, " ".join(f"{cols[i]} {probs[k, i]:.3f}" for i in np.argsort(-probs[k])[:10])]
                         for k in range(K)])
            blocks.append(page.table(top, "Each state's ten most probable symbols.",
                                     text_columns=["most probable symbols"]))
        page.add("Emission parameters", *blocks, grid=False)
    return page
