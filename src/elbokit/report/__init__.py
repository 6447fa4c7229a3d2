"""HTML reports: what a fitted model learned, as plots a person can read.

``write_report(model_dir)`` loads a saved model (and the data it was fitted
on, recorded in ``metrics.json``) and writes ``report.html`` beside it, with
the tables behind its figures as CSV files in ``report-data/``. Pages are
self-contained (inline CSS, PNG data URIs). Every row a report names is
numbered as in the data (from 0), and labels are checked against the rows
they describe. ``write_index`` writes a page listing several reports with
their headline figures.
"""

from __future__ import annotations

import html as _html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elbokit.report.data import Data, Rows  # noqa: F401  (public: the report's data)
from elbokit.report.html import Page

__all__ = ["write_report", "write_index", "ReportInfo", "read_metrics", "Data", "Rows"]


def read_metrics(model_dir) -> dict:
    path = Path(model_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclass
class ReportInfo:
    """A written report: where it is, what it shows, its headline figures."""

    path: Path
    title: str
    headline: dict


def _documents(spec) -> list[str]:
    if isinstance(spec, (list, tuple)):
        return list(spec)
    from elbokit.data.text import read_documents

    return read_documents(spec)


def write_report(model_dir, data=None, out=None, labels=None, heldout=None,
                 progress: bool = False) -> Path:
    """Write ``report.html`` (and ``report-data/*.csv``) for the model saved in ``model_dir``.

    Parameters
    ----------
    model_dir : path
        A directory written by ``save`` (with ``metrics.json`` from the command line).
    data : path or array, optional
        The data to show; by default the data recorded at fit time. A file is
        read with the columns and scaling the model was fitted with (the
        command line's ``preprocessing.json``); an array is taken as it is.
        For LDA: a documents file or a list of str.
    out : path, optional
        Where to write; by default ``model_dir/report.html``.
    labels : path or array, optional
        One label per row of ``data`` (per document for LDA): clusters and
        topics are compared with them and latent codes coloured by them. A
        file: ``.npy``, IDX, or text/CSV (``FILE:COLUMN`` for a column).
    heldout : path or list of str, optional
        LDA: held-out documents for the perplexity (default: those recorded).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    Path of the page written.
    """
    return build_report(model_dir, data, out, labels, heldout, progress).path


def build_report(model_dir, data=None, out=None, labels=None, heldout=None,
                 progress: bool = False) -> ReportInfo:
    """:func:`write_report`, returning the title and headline figures too."""
    import elbokit
    from elbokit.data.preprocess import load_preprocessing
    from elbokit.report.common import Progress

    model = elbokit.load(model_dir)
    model.set_params(verbose=0)  # the report has its own progress bar
    metrics = read_metrics(model_dir)
    given = data is not None
    data = data if given else metrics.get("data")
    if data is None:
        raise ValueError(f"{model_dir} records no data: give the data to report on.")
    if labels is None and not given:
        labels = metrics.get("labels")
    out = Path(out) if out is not None else Path(model_dir) / "report.html"
    name = type(model).__name__
    import warnings

    with warnings.catch_warnings():  # auxiliary fits report non-convergence in the page itself
        warnings.simplefilter("ignore", category=elbokit.ConvergenceWarning)
        if name == "LDA":
            from elbokit.report.lda import STAGES, lda_page

            bar = Progress(progress, STAGES)
            heldout = heldout if heldout is not None else (None if given else metrics.get("heldout"))
            page = lda_page(model, _documents(data), metrics,
                            heldout=_documents(heldout) if heldout is not None else None,
                            labels=labels, progress=bar,
                            description=Path(data).name if isinstance(data, (str, Path))
                            else "the documents given")
        elif name in ("GaussianMixture", "VAE"):
            source = Data(data, load_preprocessing(model_dir) if isinstance(data, (str, Path))
                          else None)
            if name == "GaussianMixture":
                from elbokit.report.gmm import STAGES, gaussian_mixture_page as build
            else:
                from elbokit.report.vae import STAGES, vae_page as build
            bar = Progress(progress, STAGES)
            page = build(model, source, metrics, labels=labels, progress=bar)
        else:
            raise ValueError(f"no report for {name} yet.")
    bar("writing")
    page.write(out)
    bar.close()
    return ReportInfo(out, page.title, dict(page.headline))


def write_index(path, entries: list[tuple[str, ReportInfo, str]], title: str = "elbokit",
                intro: str = "") -> Path:
    """A page listing reports with their headline figures.

    Parameters
    ----------
    path : path
        The index page to write.
    entries : list of (name, ReportInfo, data description)
    """
    from elbokit.report.files import write_text

    path = Path(path)
    rows = []
    for name, info, described in entries:
        href = Path(info.path).resolve().relative_to(path.parent.resolve()).as_posix()
        figures = "".join(f"<div><b>{_html.escape(str(v))}</b><span>{_html.escape(k)}</span></div>"
                          for k, v in info.headline.items())
        rows.append(f"<section><h2><a href='{_html.escape(href)}'>{_html.escape(info.title)}</a></h2>"
                    f"<p class='sub'>{_html.escape(name)} on {_html.escape(described)}</p>"
                    f"<div class='headline'>{figures}</div></section>")
    page = Page(title, intro)
    text = page.render().replace("</body>", "".join(rows) + "</body>")
    return write_text(path, text)


def load_rows(data, max_rows: int | None = None, seed: int = 0) -> np.ndarray:
    """A data file (or array) as a float64 array, optionally a random ``max_rows`` of it."""
    source = Data(data)
    return source.array() if max_rows is None else source.sample(max_rows, seed).X
