"""Sections every report shares: the bound's history, agreement with given labels,
anomalies; and the progress of a report being written."""

from __future__ import annotations

import sys

import numpy as np

from elbokit.report import plots
from elbokit.report.html import Page, Table


class Progress:
    """A progress bar over a report's stages (silent unless ``enabled``)."""

    def __init__(self, enabled: bool, total: int, desc: str = "report"):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, disable=None,
                            bar_format="{desc}: {n_fmt}/{total_fmt} {postfix} [{elapsed}]")

    def __call__(self, stage: str) -> None:
        """One more stage done; ``stage`` names the next."""
        if self.bar is not None:
            self.bar.set_postfix_str(stage)
            self.bar.update(1)

    def grow(self, n: int) -> None:
        if self.bar is not None:
            self.bar.total += n
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def bound_table_and_plot(page: Page, bounds, n_iter: int, *, what: str, unit: str, label: str,
                         exact: bool, caption: str) -> list[str]:
    """The history of the bound, numbered as the console numbers it: iteration (or sweep)
    1..n_iter, then, when recorded, the bound of the returned parameters ("final")."""
    bounds = np.asarray(bounds, dtype=np.float64)
    has_final = len(bounds) == n_iter + 1
    steps = np.arange(1, n_iter + 1)
    values = bounds[:n_iter]
    rows = [[int(i), float(b), "" if i == 1 else float(b - values[i - 2])]
            for i, b in zip(steps, values)]
    if has_final:
        rows.append(["final", float(bounds[-1]), float(bounds[-1] - values[-1]) if n_iter else ""])
    formats = [None, "{:.6f}", "{:.2e}"]
    table = Table("bound", [what, label, "change"], rows, formats)
    fig = plots.bound_history(steps, values, xlabel=what, ylabel=unit, label=label,
                              final=bounds[-1] if has_final else None, exact=exact)
    shown = Table("bound-last", table.header, rows[-12:], formats)
    return [page.figure(fig, caption, table),
            page.table(shown, f"The last {len(shown.rows)} of {len(rows)} values.", csv=table)]


def decreases(bounds, rtol: float = 1e-6) -> int:
    """How many steps lowered the bound by more than ``rtol`` of its size."""
    b = np.asarray(bounds, dtype=np.float64)
    return int((np.diff(b) < -rtol * np.maximum(np.abs(b[:-1]), 1.0)).sum()) if len(b) > 1 else 0


def em_training(page: Page, model, *, unit: str, label: str, why: str) -> None:
    """The "Training" section of an exact-EM model: its bound history, and whether it ever
    decreased (``why``: the caption's reason that the bound is log p(x) itself)."""
    down = decreases(model.lower_bounds_)
    truth = "it never decreased" if down == 0 else f"it decreased at {down} iterations (rounding)"
    page.add("Training: the bound per iteration", *bound_table_and_plot(
        page, model.lower_bounds_, int(model.n_iter_), what="iteration", unit=unit, label=label,
        exact=True, caption=f"{why}; {truth}."))


def agreement(page: Page, found, labels, *, found_name: str, name: str) -> tuple[list[str], dict]:
    """Confusion table of ``found`` (cluster or dominant topic per row) against given
    labels, with the adjusted Rand index and normalised mutual information."""
    from elbokit.report.data import categories

    names, codes = categories(labels)
    K = int(np.max(found)) + 1 if len(found) else 0
    confusion = np.zeros((K, len(names)), dtype=np.int64)
    np.add.at(confusion, (np.asarray(found), codes), 1)
    scores = agreement_scores(found, labels)
    ari, nmi = scores["adjusted Rand index"], scores["normalised mutual information"]
    table = Table(f"{name}-vs-labels", [found_name] + [f"label {n}" for n in names],
                  [[k] + confusion[k].tolist() for k in range(K)])
    fig = plots.heatmap(confusion, list(range(K)), names, xlabel="given label", ylabel=found_name,
                        cbar="rows", cmap="Blues",
                        width=plots.FULL if len(names) > 14 else plots.HALF)
    blocks = [page.figure(fig, f"Rows by {found_name} and given label; adjusted Rand index "
                          f"{ari:.3f}, normalised mutual information {nmi:.3f} (1 = the same "
                          "partition, 0 = chance).", table)]
    return blocks, scores


def agreement_scores(found, labels) -> dict:
    """Adjusted Rand index and normalised mutual information of two partitions."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    return {"adjusted Rand index": float(adjusted_rand_score(labels, found)),
            "normalised mutual information": float(normalized_mutual_info_score(labels, found))}


def anomaly_rows(log_px, quantile: float, n: int = 10):
    """The ``n`` lowest rows and the threshold at ``quantile`` of log p(x)."""
    log_px = np.asarray(log_px, dtype=np.float64)
    return np.argsort(log_px, kind="stable")[:n], float(np.quantile(log_px, quantile))


def log_px_histogram(page: Page, log_px, threshold: float, caption: str, xlabel="log p(x)") -> str:
    """The histogram of log p(x) with the threshold; its CSV holds the bins."""
    counts, edges = np.histogram(np.asarray(log_px, dtype=np.float64), bins=60)
    table = Table("log-px-histogram", ["bin from", "bin to", "rows"],
                  [[float(a), float(b), int(c)] for a, b, c in zip(edges[:-1], edges[1:], counts)])
    flagged = int((np.asarray(log_px) < threshold).sum())
    return page.figure(plots.log_density_histogram(counts, edges, threshold, flagged, xlabel=xlabel),
                       caption, table)
