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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elbokit.report.data import Data, Rows  # noqa: F401  (public: the report's data)
from elbokit.report.html import Page

__all__ = ["write_report", "write_index", "ReportInfo", "read_metrics", "Data", "Rows"]


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


def _check_paths(*paths) -> None:
    """The data files named (in metrics.json or by the caller) are files elbokit may open."""
    from elbokit import files

    for what, path in paths:
        if isinstance(path, (str, Path)):
            files.check_input(path, what=what, allow_dir=what != "labels file")


@dataclass
class ReportInfo:
    """A written report: where it is, what it shows, its headline figures."""

    path: Path
    title: str
    headline: dict


def _documents(spec, reading: dict) -> list[str]:
    """The documents of a path (read as the model's were: ``reading``, its recorded
    field, encoding and decode_error) or of a list."""
    if isinstance(spec, (list, tuple)):
        return list(spec)
    from elbokit.data.text import read_documents

    return read_documents(spec, **reading)  # an error, if it holds none


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
    out : path or elbokit.files.Claim, optional
        Where to write (replacing a report there); by default ``model_dir/report.html``.
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
                 progress: bool = False, reading: dict | None = None) -> ReportInfo:
    """:func:`write_report`, returning the title and headline figures too; ``reading``:
    how a topic model's documents are read (field, encoding, decode_error), over what
    its fit recorded."""
    import elbokit
    from elbokit import files

    model = elbokit.load(model_dir)
    model.set_params(verbose=0)  # the report has its own progress bar
    metrics = read_metrics(model_dir)
    from elbokit.data.text import recorded_reading

    reading = dict(recorded_reading(metrics), **(reading or {}))
    if reading and type(model).__name__ != "LDA":
        given_keys = ", ".join(sorted(reading))
        raise ValueError(f"{given_keys} read text documents (LDA models); {model_dir} holds a "
                         f"{type(model).__name__}.")
    given = data is not None
    data = data if given else metrics.get("data")
    if data is None:
        raise ValueError(f"{model_dir} records no data: give the data to report on.")
    if labels is None and not given:
        labels = metrics.get("labels")
    if heldout is None and not given:
        heldout = metrics.get("heldout")
    from elbokit.report.data import label_file

    _check_paths(("data file", data), ("labels file", label_file(labels)),
                 ("documents file", heldout))
    target = out if isinstance(out, files.Claim) else Path(
        out if out is not None else Path(model_dir) / "report.html")
    path = target.path if isinstance(target, files.Claim) else target
    tables = files.claim(path.parent / f"{path.stem}-data", kind="dir", overwrite=True,
                         what="report tables", replaceable=files.replaceable_output("report-data"))
    try:
        page = _page(model, data, given, metrics, labels, heldout, progress, model_dir,
                     reading)
        page.write(target, tables)
    finally:
        tables.release()  # (after a commit: nothing left to release)
    return ReportInfo(path, page.title, dict(page.headline))


def _page(model, data, given: bool, metrics: dict, labels, heldout, progress: bool, model_dir,
          reading: dict):
    """The report page of ``model`` (one builder per model family)."""
    import elbokit
    from elbokit.data.preprocess import load_preprocessing
    from elbokit.report.common import Progress

    name = type(model).__name__
    import warnings

    with warnings.catch_warnings():  # auxiliary fits report non-convergence in the page itself
        warnings.simplefilter("ignore", category=elbokit.ConvergenceWarning)
        # the page reads the data with its own reader, in the model's columns (the
        # file's header is checked against feature_names_in_ where it is streamed
        # whole): its in-memory row samples carry no names, and need none
        warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                category=UserWarning)
        if name == "LDA":
            from elbokit.report.lda import STAGES, lda_page

            bar = Progress(progress, STAGES)
            page = lda_page(model, _documents(data, reading), metrics,
                            heldout=_documents(heldout, reading) if heldout is not None else None,
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
        elif name.endswith("HMM"):
            from elbokit.report.hmm import STAGES, hmm_page, sequences_for_report

            bar = Progress(progress, STAGES)
            bar("reading the sequences")
            page = hmm_page(model, *sequences_for_report(data, metrics), progress=bar)
        elif name in ("Mixture", "PPCA", "FactorAnalysis"):
            from elbokit.report.families import STAGES, factor_page, mixture_page, rows_for

            bar = Progress(progress, STAGES)
            bar("scoring every row")
            build = mixture_page if name == "Mixture" else factor_page
            page = build(model, rows_for(model, data), metrics)
        else:
            raise ValueError(f"no report for {name} yet.")
    bar("writing")
    bar.close()
    return page


def write_index(path, entries: list[tuple[str, ReportInfo, str]], title: str = "elbokit",
                intro: str = "") -> Path:
    """A page listing reports with their headline figures.

    Parameters
    ----------
    path : path
        The index page to write.
    entries : list of (name, ReportInfo, data description)
    """
    from elbokit import files

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
    return files.write_bytes(path, text, overwrite=True, what="index page")


def load_rows(data, max_rows: int | None = None, seed: int = 0) -> np.ndarray:
    """A data file (or array) as a float64 array, optionally a random ``max_rows`` of it."""
    source = Data(data)
    return source.array() if max_rows is None else source.sample(max_rows, seed).X
