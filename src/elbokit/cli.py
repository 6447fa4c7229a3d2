"""The ``elbokit`` command: fit, inspect and use models from the shell.

Exit codes: 0 success, 1 a failure while running (e.g. a fit that broke
down), 2 bad input or usage (missing file, wrong format, bad option).  Errors
print one line; ``--debug`` adds the traceback (the exit code is the same).
Every output is claimed before the work starts and written through
:mod:`elbokit.files`: nothing that exists is replaced without ``--force``
(and then only elbokit's own output), an interrupted command leaves the old
or the new version, complete, and nothing half-written.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import click
import numpy as np

DATASETS = ("wine", "iris", "digits", "breast_cancer")
OUTPUT_FORMATS = (".csv", ".npy", ".parquet")


class UserError(click.ClickException):
    """Bad input: one line, exit code 2."""

    exit_code = 2


# ------------------------------------------------------------------ helpers
def _load_bundled(name: str):
    """A dataset bundled with scikit-learn, standardised: (X, y, description)."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    bunch = getattr(datasets, f"load_{name}")()
    X = StandardScaler().fit_transform(bunch.data)
    return X, bunch.target, f"{name} ({X.shape[0]} samples x {X.shape[1]} features)"


def _claim(path: Path, force: bool, what: str = "output", *, kind: str = "file",
           replaceable=None, protect=()):
    """Claim an output before the work starts; held until the command ends (elbokit.files)."""
    from elbokit import files

    try:
        held = files.claim(path, kind=kind, overwrite=force, what=what, replaceable=replaceable,
                           protect=[p for p in protect if p is not None])
    except files.OutputExistsError as err:
        raise UserError(err.for_cli()) from None
    except files.OutputError as err:
        raise UserError(str(err)) from None
    return click.get_current_context().with_resource(held)


def _claim_model(out: str, force: bool, inputs, distributed):
    """The model directory, claimed by the process that will save it (under torchrun: rank 0)."""
    import os

    from elbokit import io

    distributed = _under_torchrun() if distributed is None else distributed
    if distributed and int(os.environ.get("RANK", "0")) != 0:
        return None
    return _claim(Path(out), force, "model directory", kind="dir",
                  replaceable=io.replaceable_model, protect=inputs)


def _claim_output(out: str, force: bool, protect=()):
    """An output file (.csv, .npy or .parquet), claimed before the work."""
    path = Path(out)
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise UserError(f"--out {path}: use a {', '.join(OUTPUT_FORMATS)} file name.")
    return _claim(path, force, "output", protect=protect)


def _model_files(model_dir) -> list[Path]:
    from elbokit.io import CONFIG_NAME, TENSORS_NAME

    return [Path(model_dir) / CONFIG_NAME, Path(model_dir) / TENSORS_NAME]


def _is_idx(path: Path) -> bool:
    from elbokit.data.idx import is_idx_path

    return is_idx_path(path)


def _check_data_path(data: str) -> str:
    from elbokit import files
    from elbokit.data.sources import TABLE_SUFFIXES, table_suffix

    path = Path(data)
    try:
        files.check_input(path, what="data file")
    except FileNotFoundError:
        raise UserError(f"no data file at {path}.") from None
    except ValueError as err:
        raise UserError(str(err)) from None
    suffix = table_suffix(path)
    if suffix not in (*TABLE_SUFFIXES, ".npy") and not _is_idx(path):
        raise UserError(f"{path}: unknown data format {path.suffix!r}; use .csv, .tsv (also "
                        ".gz), .npy, .parquet or an IDX image file.")
    if suffix in (".csv", ".tsv"):
        from elbokit.data.sources import describe_header

        click.echo(f"note: {describe_header(path)}", err=True)
    return str(path)


def _data_options(f):
    """--columns, --drop and --standardize: which columns a model uses and their scaling,
    saved with the model (preprocessing.json) and applied alike by every later command."""
    f = click.option("--standardize", is_flag=True,
                     help="Scale each column to mean 0 and standard deviation 1 (computed on "
                          "DATA, saved with the model, applied to later data).")(f)
    f = click.option("--drop", default=None, metavar="COLS",
                     help="Columns to leave out (e.g. a target column): names or 0-based "
                          "positions, comma-separated.")(f)
    f = click.option("--columns", default=None, metavar="COLS",
                     help="Columns to use, in this order: names or 0-based positions, "
                          "comma-separated (default: all).")(f)
    return f


def _preprocessing(data: str, columns, drop, standardize):
    """The Preprocessing that --columns/--drop/--standardize ask for (None: none)."""
    from elbokit.data.preprocess import preprocessing

    def split(text):
        return None if text is None else [c.strip() for c in text.split(",") if c.strip()]

    return preprocessing(data, split(columns), split(drop), standardize)


def _model_data(model_dir, data: str):
    """DATA as the model in ``model_dir`` sees it (its saved preprocessing applied)."""
    from elbokit.data.preprocess import load_preprocessing
    from elbokit.report import Data

    return Data(_check_data_path(data), load_preprocessing(model_dir))


def _saved_data(data: str, prep, metrics: dict) -> dict:
    """metrics.json entries and extra files recording DATA and its preprocessing."""
    from elbokit.data.preprocess import PREPROCESSING_FILE, feature_names

    names = feature_names(data, prep)
    if names is not None:
        metrics["feature_names"] = names
    files = {"metrics.json": json.dumps(metrics, indent=2)}
    if prep is not None:
        files[PREPROCESSING_FILE] = prep.to_json()
    return files


def _in_memory(data: str, prep=None) -> np.ndarray:
    """The whole data file as an array (for models that take arrays, like the VAE)."""
    from elbokit.report import Data

    return Data(data, prep).array().astype(np.float32)


def write_array(target, values, columns: list[str], force: bool = False) -> None:
    """Write a 1-D or 2-D array as CSV, .npy or Parquet, by the file's extension.

    ``target`` is a path, or the claim on it that the command took before its work.
    """
    from elbokit import files

    held = target if isinstance(target, files.Claim) else _claim_output(target, force)
    suffix = held.path.suffix.lower()
    arr = np.asarray(values)
    arr2 = arr.reshape(len(arr), -1)

    def write(tmp):
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, arr)
        elif suffix == ".csv":
            fmt = "%d" if arr.dtype.kind in "iu" else "%.8g"
            np.savetxt(tmp, arr2, delimiter=",", header=",".join(columns), comments="", fmt=fmt)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({c: arr2[:, i] for i, c in enumerate(columns)}), tmp)

    held.commit(write)


def _model(model_dir: str):
    import elbokit

    return elbokit.load(model_dir)


def _echo_table(header: list[str], rows: list[list]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(header)]
    click.echo("  ".join(str(h).rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        click.echo("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))


def _under_torchrun() -> bool:
    """True when torchrun (or another launcher) started several processes."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _launch(distributed, device) -> tuple[bool, int]:
    """Whether this fit runs across processes (by default: under torchrun), and this rank."""
    distributed = _under_torchrun() if distributed is None else distributed
    return distributed, (_init_distributed(device) if distributed else 0)


def _distributed_option(f):
    return click.option(
        "--distributed/--no-distributed", default=None,
        help="Under torchrun (the default there): each process trains on its block of the "
             "data, in step with the others; rank 0 saves the model.")(f)


def _init_distributed(device) -> int:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); the rank."""
    import os
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise UserError("--distributed needs the torchrun environment: "
                        "torchrun --nproc-per-node N -m elbokit.cli fit ...")
    if not dist.is_initialized():
        from elbokit._validation import resolve_device

        cuda = device is not None and resolve_device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=10))
        _OWN_GROUP.append(True)
    return dist.get_rank()


_OWN_GROUP: list = []  # non-empty once this command has opened the process group


def _close_distributed(ok: bool) -> None:
    """Close the process group this command opened (its threads must not outlive the
    interpreter: that aborts the process). After a success the ranks first meet, so
    that none exits while rank 0 still saves."""
    if not _OWN_GROUP:
        return
    import torch.distributed as dist

    _OWN_GROUP.clear()
    if dist.is_initialized():
        if ok:
            dist.barrier()
        dist.destroy_process_group()


def _fit_timed(estimator, data, distributed: bool) -> float:
    """Fit on ``data`` (under torchrun: on this rank's block of its rows); seconds taken."""
    start = time.perf_counter()
    estimator.fit(_shard(data) if distributed else data)
    return time.perf_counter() - start


def _shard(data) -> np.ndarray:
    """This rank's contiguous block of rows (a .npy file is read for that block only)."""
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    if isinstance(data, str) and data.lower().endswith(".npy"):
        rows = np.load(data, mmap_mode="r")
    elif isinstance(data, str):
        from elbokit.report import load_rows

        rows = load_rows(data)
    elif callable(data):  # batches of a file read through --columns/--standardize
        rows = np.concatenate(list(data()))
    else:
        rows = data
    bounds = np.linspace(0, rows.shape[0], world + 1).astype(int)
    block = rows[bounds[rank]:bounds[rank + 1]]
    return block if hasattr(block, "tocsr") else np.array(block)


# ------------------------------------------------------------------ the group
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="elbokit")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """elbokit: latent variable models fitted by EM, variational inference and Monte Carlo."""
    ctx.obj = {"debug": debug}


# ------------------------------------------------------------------ fit
@cli.group()
def fit():
    """Fit a model to DATA and save it in a model directory."""


@fit.command("gmm")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--components", "-k", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--covariance-type", type=click.Choice(["full", "tied", "diag", "spherical"]),
              default="full", show_default=True)
@click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--tol", type=click.FloatRange(min=0), default=1e-3, show_default=True)
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--reg-covar", type=click.FloatRange(min=0), default=1e-6, show_default=True)
@click.option("--algorithm", type=click.Choice(["em", "stepwise"]), default="em", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
@click.option("--seed", type=int, default=0, show_default=True)
@_data_options
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_gmm(data, out, components, covariance_type, max_iter, tol, n_init, reg_covar, algorithm,
            batch_size, dtype, device, seed, columns, drop, standardize, distributed, force):
    """Fit a Gaussian mixture by EM to DATA (.csv, .tsv, .npy or .parquet, streamed in chunks)."""
    from elbokit import GaussianMixture
    from elbokit.report import Data

    data = _check_data_path(data)
    out_dir = _claim_model(out, force, [data], distributed)
    prep = _preprocessing(data, columns, drop, standardize)
    inputs = Data(data, prep).model_input()
    distributed, rank = _launch(distributed, device)
    gm = GaussianMixture(components, covariance_type=covariance_type, max_iter=max_iter, tol=tol,
                         n_init=n_init, reg_covar=reg_covar, algorithm=algorithm,
                         batch_size=batch_size, dtype=dtype, device=device, random_state=seed,
                         verbose=1 if rank == 0 else 0, distributed=distributed)
    seconds = _fit_timed(gm, inputs, distributed)
    if rank != 0:
        return
    n = int(np.asarray(gm.predict(inputs)).shape[0])
    metrics = {
        "model": "gmm", "data": str(Path(data).resolve()), "n_samples": n,
        "n_features": gm.n_features_in_, "fit_seconds": seconds,
        "lower_bounds": [float(b) for b in gm.lower_bounds_],
        "log_likelihood_per_sample": gm.lower_bound_, "converged": gm.converged_,
        "n_iter": gm.n_iter_, "bic": gm.bic(inputs), "aic": gm.aic(inputs),
    }
    gm.save(out_dir, extra_files=_saved_data(data, prep, metrics))
    click.echo(f"fitted K={components} {covariance_type} on {n} x {gm.n_features_in_} in "
               f"{seconds:.2f} s: mean log p(x) {gm.lower_bound_:.4f}, {gm.n_iter_} iterations, "
               f"{'converged' if gm.converged_ else 'NOT converged'}; saved to {out}")


FAMILY_NAMES = ("auto", "gaussian", "bernoulli", "categorical", "multinomial", "poisson",
                "student_t", "von_mises_fisher", "factor_analyzer")


def _rows_with_missing(data: str) -> np.ndarray:
    """A data file as a float64 array, empty cells as NaN (missing values)."""
    from elbokit.report.families import load_rows_with_missing

    return _in_memory(data).astype(np.float64) if _is_idx(Path(data)) else load_rows_with_missing(data)


def _family_from_options(family, covariance_type, n_factors):
    """The family a `fit mixture` command line names."""
    from elbokit.families import FactorAnalyzer, Gaussian, StudentT

    if family == "gaussian":
        return Gaussian(covariance_type)
    if family == "student_t":
        return StudentT("diag" if covariance_type == "diag" else "full")
    if family == "factor_analyzer":
        return FactorAnalyzer(n_factors)
    return family


def _save_em_fit(model, out_dir, out, data, seconds, what: str) -> None:
    """Save a fitted family-EM model with its metrics; one line of summary."""
    n = int(np.asarray(model.score_samples(data)).shape[0])
    metrics = {"model": what, "data": str(Path(data).resolve()), "n_samples": n,
               "n_features": model.n_features_in_, "fit_seconds": seconds,
               "lower_bounds": [float(b) for b in model.lower_bounds_],
               "log_likelihood_per_sample": model.lower_bound_, "converged": model.converged_,
               "n_iter": model.n_iter_, "bic": model.bic(data), "aic": model.aic(data)}
    model.save(out_dir, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
    click.echo(f"fitted {what} on {n} x {model.n_features_in_} in {seconds:.2f} s: mean log p(x) "
               f"{model.lower_bound_:.4f}, {model.n_iter_} iterations, "
               f"{'converged' if model.converged_ else 'NOT converged'}; saved to {out}")


@fit.command("mixture")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--components", "-k", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--family", type=click.Choice(FAMILY_NAMES), default="auto", show_default=True,
              help="Component family; 'auto': one per column type of a CSV/Parquet file (floats "
                   "Gaussian, integers Poisson, booleans Bernoulli, strings Categorical).")
@click.option("--covariance-type", type=click.Choice(["full", "tied", "diag", "spherical"]),
              default="full", show_default=True, help="For gaussian (and student_t: full/diag).")
@click.option("--n-factors", type=click.IntRange(min=1), default=2, show_default=True,
              help="For factor_analyzer.")
@click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--tol", type=click.FloatRange(min=0), default=1e-3, show_default=True)
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
@click.option("--seed", type=int, default=0, show_default=True)
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_mixture(data, out, components, family, covariance_type, n_factors, max_iter, tol, n_init,
                dtype, device, seed, distributed, force):
    """Fit a mixture of any component family by EM to DATA (.csv, .npy or .parquet; empty
    cells are missing values, marginalised inside EM)."""
    from elbokit import Mixture

    data = _check_data_path(data)
    out_dir = _claim_model(out, force, [data], distributed)
    distributed, rank = _launch(distributed, device)
    model = Mixture(components, family=_family_from_options(family, covariance_type, n_factors),
                    max_iter=max_iter, tol=tol, n_init=n_init, dtype=dtype, device=device,
                    random_state=seed, verbose=1 if rank == 0 else 0, distributed=distributed or None)
    seconds = _fit_timed(model, data, distributed)
    if rank == 0:
        _save_em_fit(model, out_dir, out, data, seconds, f"mixture K={components} ({family})")


@fit.command("factor")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--components", "-k", type=click.IntRange(min=1), default=2, show_default=True,
              help="Latent dimension.")
@click.option("--noise", type=click.Choice(["diag", "spherical"]), default="diag", show_default=True,
              help="diag: factor analysis; spherical: probabilistic PCA.")
@click.option("--max-iter", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--tol", type=click.FloatRange(min=0), default=1e-6, show_default=True)
@click.option("--device", default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_factor(data, out, components, noise, max_iter, tol, device, seed, distributed, force):
    """Fit factor analysis (or, with --noise spherical, probabilistic PCA) to DATA."""
    from elbokit import PPCA, FactorAnalysis

    data = _check_data_path(data)
    out_dir = _claim_model(out, force, [data], distributed)
    distributed, rank = _launch(distributed, device)
    cls = PPCA if noise == "spherical" else FactorAnalysis
    model = cls(components, max_iter=max_iter, tol=tol, device=device, random_state=seed,
                verbose=1 if rank == 0 else 0, distributed=distributed or None)
    seconds = _fit_timed(model, _rows_with_missing(data), distributed)
    if rank == 0:
        _save_em_fit(model, out_dir, out, data, seconds, f"{cls.__name__} q={components}")


def _read_corpus(data: str, *, field="text", encoding="utf-8", decode_error="strict",
                 **kwargs):
    """A Corpus from one-document-per-line text, a folder of .txt files, or JSONL."""
    from elbokit import Corpus

    from elbokit import files

    path = Path(data)
    try:
        files.check_input(path, what="corpus", allow_dir=True)
    except FileNotFoundError:
        raise UserError(f"no corpus at {path}.") from None
    except ValueError as err:
        raise UserError(str(err)) from None
    return Corpus.from_path(path, field=field, encoding=encoding, decode_error=decode_error,
                            **kwargs)


_FIELD = click.option("--field", default=None,
                      help="JSONL: the key holding the text (default: text, or as at fit).")


def _text_options(f):
    """How text files are decoded (the commands that read documents)."""
    f = click.option("--decode-error", type=click.Choice(["strict", "replace", "ignore"]),
                     default=None,
                     help="Bytes that do not decode: an error naming the file (strict, the "
                          "default or as at fit), replaced, or dropped (scikit-learn's "
                          "decode_error).")(f)
    return click.option("--encoding", default=None,
                        help="The text files' encoding, say latin-1 (default: utf-8, or as "
                             "at fit).")(f)


def _recorded_reading(model_dir) -> dict:
    """The reading options a topic model was fitted with, from its metrics.json."""
    from elbokit.data.text import recorded_reading
    from elbokit.report import read_metrics

    return recorded_reading(read_metrics(model_dir))


def _reading(recorded=None, **given) -> dict:
    """How to read documents: the options given, else those the model was fitted with
    (``recorded``, from its metrics.json), else the reader's defaults."""
    from elbokit.data.text import READ_DEFAULTS

    out = dict(READ_DEFAULTS, **(recorded or {}))
    out.update({k: v for k, v in given.items() if v is not None})
    return out


def _vectorizer_options(min_df, max_df, max_features, stop_words) -> dict:
    """The Corpus settings the --min-df, --max-df, --max-features and --stop-words ask for."""
    if stop_words == "none":
        stop_words = None
    elif stop_words != "english":
        path = Path(stop_words)
        if not path.is_file():
            raise UserError(f"--stop-words {stop_words!r}: use 'english', 'none' or a file with "
                            "one word per line.")
        stop_words = [w.strip() for w in path.read_text().split() if w.strip()]
    return {"min_df": int(min_df) if min_df >= 1 else min_df, "max_df": max_df,
            "max_features": max_features, "stop_words": stop_words}


def _read_documents(data: str, **kwargs) -> list[str]:
    """Raw documents for a fitted topic model (it keeps its own vocabulary); ``kwargs``:
    :func:`~elbokit.data.text.read_texts`' field, encoding and decode_error."""
    from elbokit import files
    from elbokit.data.text import read_documents

    try:
        files.check_input(data, what="documents file", allow_dir=True)
    except ValueError as err:
        raise UserError(str(err)) from None
    return read_documents(data, **kwargs)  # an error, if it holds none


def _lda_options(f):
    """The topic model's and the vocabulary's options (fit lda and select lda)."""
    for option in reversed([
        click.option("--method", type=click.Choice(["auto", "batch", "online", "gibbs"]),
                     default="auto", show_default=True,
                     help="auto: Gibbs sampling for word counts, batch VI for weights "
                          "(LDA's default)."),
        click.option("--init", type=click.Choice(["random", "batch"]), default=None,
                     help="Gibbs: start from random topics or from 10 batch-VI iterations "
                          "(default: batch for long documents, random for short; see LDA)."),
        click.option("--max-iter", type=click.IntRange(min=1), default=None,
                     help="Iterations / passes / most sweeps (default: the method's, see LDA)."),
        click.option("--min-df", type=float, default=2, show_default=True),
        click.option("--max-df", type=float, default=0.5, show_default=True),
        click.option("--max-features", type=click.IntRange(min=1), default=None),
        click.option("--stop-words", default="english", show_default=True,
                     help="'english', 'none', or a file with one word per line."),
        click.option("--device", default=None),
        click.option("--seed", type=int, default=0, show_default=True),
    ]):
        f = option(f)
    return f


@fit.command("lda")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--topics", "-k", "n_topics", type=click.IntRange(min=1), default=10, show_default=True)
@_lda_options
@_FIELD
@_text_options
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_lda(data, out, n_topics, method, init, max_iter, min_df, max_df, max_features,
            stop_words, field, encoding, decode_error, device, seed, distributed, force):
    """Fit LDA to a text corpus: one document per line, a folder of .txt files, or JSONL."""
    from elbokit import LDA

    out_dir = _claim_model(out, force, [data], distributed)
    reading = _reading(field=field, encoding=encoding, decode_error=decode_error)
    corpus = _read_corpus(data, **_vectorizer_options(min_df, max_df, max_features, stop_words),
                          **reading)
    distributed, rank = _launch(distributed, device)
    lda = LDA(n_topics, method=method, init=init, max_iter=max_iter, device=device,
              random_state=seed, verbose=1 if rank == 0 else 0, distributed=distributed)
    # under torchrun: the same vocabulary everywhere, each rank its block of documents
    seconds = _fit_timed(lda, corpus.counts if distributed else corpus, distributed)
    if distributed:
        lda.vocabulary_, lda.vectorizer_params_ = list(corpus.vocabulary), dict(corpus.vectorizer_params)
    if rank != 0:
        return
    n_docs = corpus.counts.shape[0]
    metrics = {"model": "lda", "data": str(Path(data).resolve()), "n_documents": n_docs,
               "reading": reading, "vocabulary_size": len(lda.vocabulary_),
               "fit_seconds": seconds, "lower_bounds": [float(b) for b in lda.lower_bounds_]}
    lda.save(out_dir, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
    click.echo(f"fitted {n_topics} topics ({lda.method_}) on {n_docs} documents, "
               f"{len(lda.vocabulary_)} words, in {seconds:.2f} s; saved to {out}")


def _vae_options(f):
    """The VAE's network and training options (fit vae and select vae)."""
    for option in reversed([
        click.option("--hidden", default="512,256", show_default=True, help="Hidden layer sizes."),
        click.option("--architecture", type=click.Choice(["mlp", "conv"]), default="mlp",
                     show_default=True, help="conv: a small convolutional network for images."),
        click.option("--image-shape", default=None, metavar="C,H,W",
                     help="For --architecture conv (default: from the IDX file, or square "
                          "one-channel images)."),
        click.option("--likelihood", type=click.Choice(["bernoulli", "continuous_bernoulli",
                                                       "gaussian"]),
                     default="bernoulli", show_default=True,
                     help="The Python default, chosen by measurement (see the VAE's docstring)."),
        click.option("--binarize", type=click.Choice(["auto", "dynamic", "none"]), default="auto",
                     show_default=True,
                     help="auto: grey levels are binarised dynamically (Bernoulli likelihood)."),
        click.option("--beta", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="Weight of the KL term (beta-VAE; 1: the ELBO)."),
        click.option("--kl-warmup", type=click.IntRange(min=0), default=0, show_default=True,
                     help="Epochs over which the KL weight rises from 0 to --beta."),
        click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True),
        click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3,
                     show_default=True),
        click.option("--patience", type=click.IntRange(min=1), default=None,
                     help="Stop after this many epochs without a better validation ELBO."),
        click.option("--max-rows", type=click.IntRange(min=1), default=None,
                     help="Use the first N rows."),
        click.option("--device", default=None),
        click.option("--seed", type=int, default=0, show_default=True),
    ]):
        f = option(f)
    return _data_options(f)


def _vae_params(data: str, n_features: int, *, hidden, architecture, image_shape, likelihood,
                binarize, beta, kl_warmup, epochs, batch_size, lr, patience, device, seed,
                **_) -> dict:
    """VAE keyword arguments from the command line's options."""
    try:
        hidden_sizes = tuple(int(h) for h in hidden.split(",") if h.strip())
    except ValueError:
        raise UserError(f"--hidden {hidden!r}: give sizes like 512,256.") from None
    shape = None
    if architecture == "conv":
        shape = _image_shape(data, n_features, image_shape)
    return dict(hidden_sizes=hidden_sizes, architecture=architecture, image_shape=shape,
                likelihood=likelihood, binarize=None if binarize == "none" else binarize,
                beta=beta, kl_warmup=kl_warmup, epochs=epochs, batch_size=batch_size, lr=lr,
                patience=patience, device=device, random_state=seed)


def _image_shape(data: str, n_features: int, given) -> tuple:
    """(channels, height, width) for a convolutional VAE: --image-shape, the IDX file's, or a
    square one-channel image."""
    if given is not None:
        try:
            shape = tuple(int(v) for v in given.split(","))
        except ValueError:
            shape = ()
        if len(shape) != 3 or int(np.prod(shape)) != n_features:
            raise UserError(f"--image-shape {given!r}: give C,H,W with C*H*W = {n_features}, the "
                            "number of columns, e.g. 1,28,28.")
        return shape
    if _is_idx(Path(data)):
        from elbokit.data.idx import read_idx

        images = read_idx(data)
        if images.ndim == 3 and images.shape[1] * images.shape[2] == n_features:
            return (1, int(images.shape[1]), int(images.shape[2]))
    side = int(round(n_features ** 0.5))
    if side * side != n_features:
        raise UserError(f"--architecture conv: {n_features} columns are not a square image; "
                        "give --image-shape C,H,W.")
    return (1, side, side)


@fit.command("vae")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--latent-dim", type=click.IntRange(min=1), default=2, show_default=True)
@_vae_options
@click.option("--checkpoint-dir", type=click.Path(), default=None,
              help="Write a checkpoint there after every epoch.")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue the run checkpointed in this directory (same options and data); "
                   "checkpoints go on there unless --checkpoint-dir says otherwise.")
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_vae(data, out, latent_dim, checkpoint_dir, resume, distributed, force, max_rows, columns,
            drop, standardize, **options):
    """Train a variational autoencoder on DATA (IDX images, .npy, .csv or .parquet)."""
    from elbokit import VAE

    data = _check_data_path(data)
    out_dir = _claim_model(out, force, [data], distributed)
    from elbokit.inference.amortized import CHECKPOINT_NAME

    if resume is not None and not (Path(resume) / CHECKPOINT_NAME).is_file():
        raise UserError(f"--resume {resume}: no checkpoint there (written by --checkpoint-dir).")
    prep = _preprocessing(data, columns, drop, standardize)
    X = _in_memory(data, prep)[:max_rows]
    distributed, rank = _launch(distributed, options["device"])
    vae = VAE(latent_dim, **_vae_params(data, X.shape[1], **options),
              checkpoint_dir=checkpoint_dir or resume, verbose=1 if rank == 0 else 0,
              distributed=distributed)
    start = time.perf_counter()
    vae.fit(_shard(X) if distributed else X, resume=resume)
    seconds = time.perf_counter() - start
    if rank != 0:
        return
    metrics = {"model": "vae", "data": str(Path(data).resolve()), "n_samples": len(X),
               "n_features": int(X.shape[1]), "fit_seconds": seconds,
               "train_bounds": vae.history_["train"], "validation_elbo": vae.history_["validation"]}
    vae.save(out_dir, extra_files=_saved_data(data, prep, metrics))
    stopped = (f" (stopped early: no better validation ELBO in {options['patience']} epochs)"
               if vae.n_epochs_ < options["epochs"] else "")
    click.echo(f"trained a VAE (latent {latent_dim}) on {X.shape[0]} x {X.shape[1]} for "
               f"{vae.n_epochs_} epoch{'' if vae.n_epochs_ == 1 else 's'}{stopped} in "
               f"{seconds:.1f} s: training bound "
               f"{vae.history_['train'][-1]:.4f}; saved to {out}")


def _read_lengths(lengths: str | None):
    """Sequence lengths from a .npy file or a text file of integers (None: one sequence)."""
    if lengths is None:
        return None
    path = Path(lengths)
    if not path.is_file():
        raise UserError(f"--lengths {lengths}: no such file (a .npy or a text file of integers).")
    try:
        values = np.load(path) if path.suffix.lower() == ".npy" else np.loadtxt(path, dtype=np.int64)
    except ValueError as err:
        raise UserError(f"--lengths {lengths}: {err}") from None
    return np.atleast_1d(np.asarray(values)).astype(np.int64)


def _read_sequences(data: str, lengths: str | None, text: bool, alphabet: str):
    """(X: array or streamed path, lengths, metrics entries) for ``fit hmm`` and its report."""
    from elbokit.data.sequences import LETTERS, read_text

    path = Path(data)
    if not path.exists():
        raise UserError(f"no data at {path}.")
    if text:
        mode = alphabet
        X, lens, alphabet, _ = read_text(path, LETTERS if mode == "letters" else None)
        return X, lens, {"text": True, "alphabet": alphabet, "alphabet_mode": mode}
    if path.is_dir():
        return str(path), None, {}
    return _check_data_path(data), _read_lengths(lengths), {"lengths": lengths and str(
        Path(lengths).resolve())}


def _shard_sequences(X, lengths):
    """This rank's contiguous block of whole sequences."""
    import torch.distributed as dist

    if isinstance(X, str):
        X = np.load(X) if X.lower().endswith(".npy") else _in_memory(X)
    lengths = np.asarray([len(X)] if lengths is None else lengths)
    rank, world = dist.get_rank(), dist.get_world_size()
    cut = np.linspace(0, len(lengths), world + 1).astype(int)
    rows = np.concatenate([[0], np.cumsum(lengths)])
    return X[rows[cut[rank]]:rows[cut[rank + 1]]], lengths[cut[rank]:cut[rank + 1]]


@fit.command("hmm")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--states", "-k", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--emission", type=click.Choice(["gaussian", "categorical", "poisson", "gmm"]),
              default="gaussian", show_default=True, help="Emission family (categorical with --text).")
@click.option("--covariance-type", type=click.Choice(["diag", "full", "tied", "spherical"]),
              default="diag", show_default=True)
@click.option("--n-mix", type=click.IntRange(min=1), default=2, show_default=True,
              help="Gaussian components per state (--emission gmm).")
@click.option("--lengths", default=None,
              help="Sequence lengths (.npy or a text file of integers); default: one sequence. "
                   "A directory DATA holds one .npy file per sequence.")
@click.option("--text", is_flag=True, help="DATA is text: one sequence of characters per line.")
@click.option("--alphabet", type=click.Choice(["letters", "all"]), default="letters",
              show_default=True, help="--text: a-z and space (lower-cased), or every character.")
@click.option("--n-iter", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--tol", type=click.FloatRange(min=0), default=1e-5, show_default=True,
              help="Stop when log p(x) per step changes by less.")
@click.option("--n-init", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--algorithm", type=click.Choice(["em", "stepwise"]), default="em", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Rows per batch.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")
@click.option("--seed", type=int, default=0, show_default=True)
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_hmm(data, out, states, emission, covariance_type, n_mix, lengths, text, alphabet, n_iter,
            tol, n_init, algorithm, batch_size, dtype, device, seed, distributed, force):
    """Fit a hidden Markov model by Baum-Welch to sequences in DATA (.npy, .csv, .parquet rows
    with --lengths; a directory of .npy files, one sequence each; or --text)."""
    import elbokit

    out_dir = _claim_model(out, force, [data, lengths], distributed)
    X, lens, extra = _read_sequences(data, lengths, text, alphabet)
    common = dict(n_iter=n_iter, tol=tol, n_init=n_init, algorithm=algorithm, batch_size=batch_size,
                  dtype=dtype, device=device, random_state=seed)
    if text or emission == "categorical":
        model = elbokit.CategoricalHMM(states, n_features=len(extra["alphabet"]) if text else None,
                                       **common)
    elif emission == "poisson":
        model = elbokit.PoissonHMM(states, **common)
    elif emission == "gmm":
        model = elbokit.GMMHMM(states, n_mix=n_mix, covariance_type=covariance_type, **common)
    else:
        model = elbokit.GaussianHMM(states, covariance_type, **common)
    distributed, rank = _launch(distributed, device)
    model.set_params(verbose=1 if rank == 0 else 0, distributed=distributed)
    start = time.perf_counter()
    model.fit(*(_shard_sequences(X, lens) if distributed else (X, lens)))
    seconds = time.perf_counter() - start
    if rank != 0:
        return
    n_rows = int(np.sum(lens)) if lens is not None else None
    metrics = {"model": "hmm", "data": str(Path(data).resolve()), "n_sequences":
               None if lens is None else int(len(lens)), "n_samples": n_rows,
               "n_features": model.n_features_in_, "fit_seconds": seconds,
               "lower_bounds": [float(b) for b in model.lower_bounds_],
               "log_likelihood_per_step": model.lower_bound_, "converged": model.converged_,
               "n_iter": model.n_iter_, **extra}
    if n_rows is not None:
        metrics["bic"] = model.bic(X, lens)
    model.save(out_dir, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
    what = f"{len(lens)} sequences, {n_rows} steps" if lens is not None else str(data)
    click.echo(f"fitted a {states}-state {type(model).__name__} on {what} in {seconds:.2f} s: "
               f"log p(x) per step {model.lower_bound_:.4f}, {model.n_iter_} iterations, "
               f"{'converged' if model.converged_ else 'NOT converged'}; saved to {out}")


# ------------------------------------------------------------------ use a model
# what to use instead, when a model lacks a command's method
_INSTEAD = {
    ("LDA", "predict"): "use `elbokit transform MODEL DOCS --out theta.npy` for each document's "
                        "topic mixture (its largest column is the dominant topic)",
    ("LDA", "predict_proba"): "use `elbokit transform MODEL DOCS --out theta.npy` for each "
                              "document's topic mixture",
    ("VAE", "predict"): "use `elbokit transform MODEL DATA --out codes.npy` for the latent codes",
    ("VAE", "predict_proba"): "use `elbokit transform MODEL DATA --out codes.npy` for the latent "
                              "codes",
}


def _apply(model_dir, data, out, force, method: str, column: str, text=None, **kwargs):
    """``model.method(DATA)`` saved to ``out``; ``text``: how an LDA model's documents are
    read (--field, --encoding, --decode-error), their defaults for any other model."""
    claim = _claim_output(out, force, protect=[data, *_model_files(model_dir)])
    model = _model(model_dir)
    name = type(model).__name__
    text = {k: v for k, v in (text or {}).items() if v is not None}
    if name != "LDA" and text:
        raise UserError(f"--field, --encoding and --decode-error read text documents (LDA "
                        f"models); {model_dir} holds a {name}.")
    if not hasattr(model, method):
        command = {"predict_proba": "predict --proba", "score_samples": "score"}.get(method, method)
        instead = _INSTEAD.get((name, method), "see `elbokit --help` for what it offers")
        article = "an" if name[0] in "AEIOLMNRSFHX" else "a"
        raise UserError(f"{article} {name} has no `{command}`: {instead}.")
    if name == "LDA":
        inputs = _read_documents(data, **_reading(_recorded_reading(model_dir), **text))
    elif name in ("Mixture", "PPCA", "FactorAnalysis"):
        inputs = _check_data_path(data)  # read by the model: missing cells, typed tables, streams
    else:
        source = _model_data(model_dir, data)
        inputs = source.model_input() if name == "GaussianMixture" else \
            source.array().astype(np.float32)
    if name == "VAE" and method == "score_samples":
        model.set_params(verbose=1)  # a progress bar over the rows
    values = np.asarray(getattr(model, method)(inputs, **kwargs))
    columns = [column] if values.ndim == 1 else [f"{column}_{j}" for j in range(values.shape[1])]
    write_array(claim, values, columns)
    click.echo(f"wrote {values.shape} to {out}")


_OUT = click.option("--out", required=True, type=click.Path(), help="Output .csv, .npy or .parquet.")
_FORCE = click.option("--force", is_flag=True, help="Replace an existing output file.")


@cli.command()
@click.argument("model_dir")
@click.argument("data")
@_OUT
@_FORCE
@click.option("--proba", is_flag=True, help="Posterior probabilities instead of labels.")
def predict(model_dir, data, out, force, proba):
    """Cluster labels (or, with --proba, posterior probabilities) for DATA."""
    _apply(model_dir, data, out, force, "predict_proba" if proba else "predict",
           "p" if proba else "label")


@cli.command()
@click.argument("model_dir")
@click.argument("data")
@_OUT
@_FORCE
@_FIELD
@_text_options
def transform(model_dir, data, out, force, field, encoding, decode_error):
    """Latent representation of DATA (mixtures: posterior probabilities p(z|x); LDA:
    topic proportions of documents)."""
    model = _model(model_dir)
    method = "transform" if hasattr(model, "transform") else "predict_proba"
    _apply(model_dir, data, out, force, method, "z",
           text=dict(field=field, encoding=encoding, decode_error=decode_error))


@cli.command()
@click.argument("model_dir")
@click.argument("data")
@_OUT
@_FORCE
@click.option("--n-samples", type=click.IntRange(min=1), default=None,
              help="VAE: importance samples per row (default 100; more: a tighter estimate).")
@_FIELD
@_text_options
def score(model_dir, data, out, force, n_samples, field, encoding, decode_error):
    """log p(x) per row of DATA (lower: more anomalous)."""
    kwargs = {}
    if n_samples is not None:
        if type(_model(model_dir)).__name__ != "VAE":
            raise UserError("--n-samples is for a VAE (its log p(x) is importance-sampled); this "
                            "model's log p(x) is exact or a bound.")
        kwargs["n_samples"] = n_samples
    _apply(model_dir, data, out, force, "score_samples", "log_px",
           text=dict(field=field, encoding=encoding, decode_error=decode_error), **kwargs)


@cli.command()
@click.argument("model_dir")
@_OUT
@_FORCE
@click.option("-n", "--n-samples", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (default: the model's).")
def sample(model_dir, out, force, n_samples, seed):
    """Generate samples from the model (mixtures: with their component in the last column)."""
    claim = _claim_output(out, force, protect=_model_files(model_dir))
    model = _model(model_dir)
    if not hasattr(model, "sample"):
        raise UserError(f"a {type(model).__name__} does not generate samples here: "
                        "use a Gaussian mixture or a VAE.")
    if seed is not None:
        model.set_params(random_state=seed)
    drawn = model.sample(n_samples)
    X = np.asarray(drawn[0] if isinstance(drawn, tuple) else drawn)
    names = getattr(model, "feature_names_in_", None)  # the columns it was fitted on
    columns = [str(c) for c in names] if names is not None else [f"x{j}" for j in range(X.shape[1])]
    values = X
    if isinstance(drawn, tuple):
        values = np.concatenate([X, np.asarray(drawn[1])[:, None]], 1)
        columns.append("component" if "component" not in columns else "component_")
    write_array(claim, values, columns)
    click.echo(f"wrote {values.shape[0]} samples to {out}")


@cli.command()
@click.argument("model_dir")
@click.option("-n", "--n-words", type=click.IntRange(min=1), default=10, show_default=True,
              help="Words per topic.")
@click.option("--out", type=click.Path(), default=None,
              help="Also write them to this .csv: topic, rank, word, p(word | topic).")
@_FORCE
def topics(model_dir, n_words, out, force):
    """Top words per topic (topic models)."""
    claim = None
    if out is not None:
        if Path(out).suffix.lower() != ".csv":
            raise UserError(f"--out {out}: give a .csv file name.")
        claim = _claim(Path(out), force, "output", protect=_model_files(model_dir))
    model = _model(model_dir)
    if not hasattr(model, "top_words"):
        raise UserError(f"{model_dir} holds a {type(model).__name__}, not a topic model.")
    words = model.top_words(n_words)
    for k, row in enumerate(words):
        click.echo(f"topic {k:3d}: {' '.join(map(str, row))}")
    if claim is not None:
        import csv
        import io

        phi = np.asarray(model.topic_word_, dtype=np.float64)
        top = np.argsort(-np.asarray(model.components_, dtype=np.float64), 1, kind="stable")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["topic", "rank", "word", "p(word|topic)"])
        for k, row in enumerate(words):
            for rank, (word, j) in enumerate(zip(row, top[k]), 1):
                writer.writerow([k, rank, word, repr(float(phi[k, j]))])
        claim.commit(lambda tmp: Path(tmp).write_text(buf.getvalue(), encoding="utf-8"))
        click.echo(f"wrote {len(words)} topics x {n_words} words to {out}")


# ------------------------------------------------------------------ model selection
def _parse_range(text: str, option: str = "--k") -> list[int]:
    try:
        if ".." in text:
            lo, hi = (int(v) for v in text.split(".."))
            values = list(range(lo, hi + 1))
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"{option} {text!r}: give a range like 2..20 or a list like 2,4,8 "
                        "(each >= 1).")
    return values


def _covariance_types(text: str) -> list[str]:
    from elbokit._sweep import COVARIANCE_TYPES

    types = list(COVARIANCE_TYPES) if text == "all" else [t.strip() for t in text.split(",")]
    bad = [t for t in types if t not in COVARIANCE_TYPES]
    if bad or not types:
        raise UserError(f"--covariance-type {text!r}: give 'all' or some of "
                        f"{', '.join(COVARIANCE_TYPES)}, comma-separated.")
    return types


def _selection_options(f):
    for option in reversed([
        click.option("--holdout", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True,
                     help="Fraction of the rows (documents) held out for scoring."),
        click.option("--out", type=click.Path(), default=None,
                     help="Save the chosen model (as fitted on the training rows) here."),
        click.option("--force", is_flag=True, help="Replace an existing --out directory."),
    ]):
        f = option(f)
    return f


class _SweepProgress:
    """A progress bar over a sweep's candidates (stderr)."""

    def __init__(self, total: int, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, disable=None)

    def __call__(self, setting: str) -> None:
        self.bar.set_postfix_str(setting)
        self.bar.update(1)

    def close(self):
        self.bar.close()


def _run_sweep(run, total: int, desc: str):
    progress = _SweepProgress(total, desc)
    try:
        return run(progress)
    finally:
        progress.close()


def _show_sweep(result, n_train: int, n_test: int, what: str = "rows") -> None:
    def cell(v):
        if isinstance(v, float):
            return "-" if not np.isfinite(v) else f"{v:.1f}" if abs(v) >= 100 else f"{v:.4f}"
        return str(v)

    keep = [j for j, h in enumerate(result.header) if h not in ("seconds", "note")]
    notes = any(r[-1] for r in result.rows)
    header = [result.header[j] for j in keep] + [""] + (["note"] if notes else [])
    rows = [[cell(r[j]) for j in keep] + ["<- chosen" if i == result.best else ""]
            + ([r[-1]] if notes else []) for i, r in enumerate(result.rows)]
    _echo_table(header, rows)
    chosen = ", ".join(f"{k} = {v}" for k, v in result.best_settings.items())
    direction = "lowest" if result.criterion.lower_is_better else "highest"
    click.echo(f"chosen {chosen}: the {direction} {result.criterion.column} ({n_train} training, "
               f"{n_test} held-out {what})")


def _save_selected(result, out, claim, metrics: dict, extra: dict | None = None) -> None:
    """The chosen model, with the sweep in metrics.json (the report shows it), into the
    model directory claimed before the sweep."""
    if claim is None:
        return
    rows = [[None if isinstance(v, float) and not np.isfinite(v) else v for v in r]
            for r in result.rows]
    metrics["selection"] = {"header": result.header, "rows": rows,
                            "criterion": result.criterion.column, "chosen": result.best_settings,
                            "n_train": metrics.get("n_samples", metrics.get("n_documents"))}
    files = dict(extra or {})
    files["metrics.json"] = json.dumps(metrics, indent=2)
    model, names = result.best_model, metrics.get("feature_names")
    if names is not None and getattr(model, "n_features_in_", None) == len(names):
        # the sweep fitted arrays read from DATA: the model keeps DATA's column
        # names, as `fit` does, so that predict/report check them
        model.feature_names_in_ = np.asarray(names, dtype=object)
    model.save(claim, extra_files=files)
    click.echo(f"saved the chosen model to {out}")


@cli.group()
def select():
    """Choose a model's size by fitting several and scoring each: K and the covariance type
    for mixtures, K for topic models, the latent size for a VAE."""


@select.command("gmm")
@click.argument("data")
@click.option("--k", "k_range", default="1..10", show_default=True, help="Range a..b or list.")
@click.option("--covariance-type", "covariance_type", default="full", show_default=True,
              help="One type, several (full,diag) or 'all'.")
@click.option("--criterion", type=click.Choice(["bic", "aic", "icl", "heldout"]), default="bic",
              show_default=True)
@click.option("--prior", type=click.Choice(["none", "default"]), default="none", show_default=True,
              help="'default': MAP-EM with mclust's conjugate prior (BIC at the MAP estimate).")
@click.option("--n-init", type=click.IntRange(min=1), default=2, show_default=True,
              help="k-means starts per K (besides the Ward tree's), shared by the types.")
@click.option("--reg-covar", type=click.FloatRange(min=0), default=1e-6, show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--tol", type=click.FloatRange(min=0), default=1e-3, show_default=True)
@click.option("--device", default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@_data_options
@_selection_options
def select_gmm(data, k_range, covariance_type, criterion, prior, n_init, reg_covar, dtype, max_iter,
               tol, device, seed, columns, drop, standardize, holdout, out, force):
    """Fit each K (and covariance type) from shared starts; print BIC, AIC, held-out log p(x)
    and ICL; pick one."""
    from elbokit._sweep import gmm_sweep, holdout_split

    ks = _parse_range(k_range)
    types = _covariance_types(covariance_type)
    data = _check_data_path(data)
    claim = None if out is None else _claim_model(out, force, [data], False)
    prep = _preprocessing(data, columns, drop, standardize)
    X = _in_memory(data, prep).astype(np.float64)
    train, test = holdout_split(len(X), holdout, seed)
    result = _run_sweep(lambda progress: gmm_sweep(
        X[train], X[test], ks, types, criterion=criterion, progress=progress, n_init=n_init,
        prior=None if prior == "none" else prior,
        reg_covar=reg_covar, dtype=dtype, max_iter=max_iter, tol=tol, device=device,
        random_state=seed), len(ks) * len(types), "select gmm")
    _show_sweep(result, len(train), len(test))
    metrics = {"model": "gmm", "data": str(Path(data).resolve()), "n_samples": len(train),
               "n_features": int(X.shape[1]), "train_rows": "all but the held-out rows"}
    if out is not None:
        files = _saved_data(data, prep, metrics)
        _save_selected(result, out, claim, json.loads(files.pop("metrics.json")), files)


@select.command("lda")
@click.argument("data")
@click.option("--k", "k_range", default="5,10,20", show_default=True, help="Range a..b or list.")
@click.option("--criterion", type=click.Choice(["perplexity", "coherence"]), default="perplexity",
              show_default=True, help="Held-out perplexity (lower) or NPMI coherence (higher).")
@_lda_options
@_FIELD
@_text_options
@_selection_options
def select_lda(data, k_range, criterion, method, init, max_iter, min_df, max_df,
               max_features, stop_words, field, encoding, decode_error, device, seed, holdout,
               out, force):
    """Fit LDA for each K on most documents; score the held-out ones (perplexity by document
    completion, NPMI coherence of each topic's top words); pick K."""
    from elbokit import Corpus
    from elbokit._sweep import holdout_split, lda_sweep

    ks = _parse_range(k_range)
    claim = None if out is None else _claim_model(out, force, [data], False)
    reading = _reading(field=field, encoding=encoding, decode_error=decode_error)
    documents = _read_documents(data, **reading)
    train, test = holdout_split(len(documents), holdout, seed)
    corpus = Corpus([documents[i] for i in train],
                    **_vectorizer_options(min_df, max_df, max_features, stop_words))
    heldout = [documents[i] for i in test]
    result = _run_sweep(lambda progress: lda_sweep(
        corpus, heldout, ks, criterion=criterion, progress=progress, method=method,
        init=init, max_iter=max_iter, device=device, random_state=seed), len(ks), "select lda")
    _show_sweep(result, len(train), len(test), "documents")
    metrics = {"model": "lda", "data": str(Path(data).resolve()), "n_documents": len(train),
               "reading": reading, "vocabulary_size": len(corpus.vocabulary)}
    _save_selected(result, out, claim, metrics)


@select.command("vae")
@click.argument("data")
@click.option("--latent-dim", "latent_dims", default="2,8,16", show_default=True,
              help="Latent sizes: range a..b or list.")
@click.option("--criterion", type=click.Choice(["heldout", "elbo"]), default="heldout",
              show_default=True, help="Held-out importance-sampled log p(x), or held-out ELBO.")
@click.option("--n-samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Importance samples per held-out row.")
@_vae_options
@_selection_options
def select_vae(data, latent_dims, criterion, n_samples, max_rows, columns, drop, standardize,
               holdout, out, force, **options):
    """Train a VAE for each latent size; score the held-out rows; pick one."""
    from elbokit._sweep import holdout_split, vae_sweep

    dims = _parse_range(latent_dims, "--latent-dim")
    data = _check_data_path(data)
    claim = None if out is None else _claim_model(out, force, [data], False)
    prep = _preprocessing(data, columns, drop, standardize)
    X = _in_memory(data, prep)[:max_rows]
    train, test = holdout_split(len(X), holdout, options["seed"])
    params = _vae_params(data, X.shape[1], **options)
    result = _run_sweep(lambda progress: vae_sweep(
        X[train], X[test], dims, n_samples=n_samples, criterion=criterion, progress=progress,
        **params), len(dims), "select vae")
    _show_sweep(result, len(train), len(test))
    metrics = {"model": "vae", "data": str(Path(data).resolve()), "n_samples": len(train),
               "n_features": int(X.shape[1])}
    if out is not None:
        files = _saved_data(data, prep, metrics)
        _save_selected(result, out, claim, json.loads(files.pop("metrics.json")), files)


# ------------------------------------------------------------------ report
@cli.command()
@click.argument("model_dir")
@click.option("--data", default=None, help="Data to show (default: the data it was fitted on).")
@click.option("--out", type=click.Path(), default=None, help="HTML file (default MODEL_DIR/report.html).")
@click.option("--labels", default=None, metavar="FILE[:COLUMN]",
              help="One label per row of the data shown (per document for LDA): .npy, IDX, or "
                   "text/CSV (one label per line, optional header; FILE:COLUMN names a column). "
                   "Clusters and topics are compared with them, latent codes coloured by them.")
@click.option("--heldout", default=None, help="LDA: held-out documents for the perplexity.")
@click.option("--force", is_flag=True, help="Replace an existing report.")
@_FIELD
@_text_options
def report(model_dir, data, out, labels, heldout, force, field, encoding, decode_error):
    """Write a self-contained HTML report of a fitted model (and its tables as CSV files)."""
    from elbokit.report import build_report

    text = {k: v for k, v in dict(field=field, encoding=encoding,
                                  decode_error=decode_error).items() if v is not None}

    target = Path(out) if out else Path(model_dir) / "report.html"
    claim = _claim(target, force, "report file", protect=[data, *_model_files(model_dir)])
    start = time.perf_counter()
    info = build_report(model_dir, data=data, out=claim, labels=labels, heldout=heldout,
                        progress=True, reading=text)
    click.echo(f"wrote {info.path} (tables in {info.path.parent / (info.path.stem + '-data')}) "
               f"in {time.perf_counter() - start:.1f} s")


# ------------------------------------------------------------------ tour
@cli.command()
@click.option("--dataset", type=click.Choice(DATASETS), default="wine", show_default=True,
              help="scikit-learn bundled dataset to cluster.")
@click.option("--components", "-k", type=click.IntRange(min=1), default=None,
              help="Mixture components (default: the number of known classes).")
@click.option("--covariance-type", type=click.Choice(["full", "tied", "diag", "spherical"]),
              default="diag", show_default=True)
@click.option("--n-init", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lda-sweeps", type=click.IntRange(min=2), default=200, show_default=True,
              help="Gibbs sweeps of the topic model.")
@click.option("--vae-epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--out", type=click.Path(), default=None,
              help="Also save the models, their HTML reports and an index page in this directory.")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
def tour(dataset, components, covariance_type, n_init, seed, lda_sweeps, vae_epochs, out, force):
    """The main job: a Gaussian mixture by EM (clusters against the known labels), LDA by
    Gibbs sampling on the KJV gospels, and a small VAE by amortised VI on the digits,
    all on data shipped with elbokit or scikit-learn; models and reports with --out."""
    from elbokit import GaussianMixture
    from elbokit.report.common import agreement_scores

    began = time.perf_counter()
    X, y, description = _load_bundled(dataset)
    k = components or int(np.unique(y).size)
    claim = None if out is None else _claim(Path(out), force, "tour directory", kind="dir",
                                            replaceable=_replaceable_tour)
    click.echo(f"Gaussian mixture, K={k}, covariance_type={covariance_type!r}, on {description}, "
               f"best of {n_init} EM restarts")
    start = time.perf_counter()
    gm = GaussianMixture(k, covariance_type=covariance_type, n_init=n_init,
                         random_state=seed).fit(X)
    seconds = time.perf_counter() - start
    labels = gm.predict(X)
    click.echo("EM's bound is the mean log p(x) per sample (E-step: q = the posterior, KL = 0); "
               "the kept restart's:")
    _echo_bounds(gm.lower_bounds_, gm.n_iter_)
    click.echo(f"{gm.n_iter_} iterations, {'converged' if gm.converged_ else 'NOT converged'}, "
               f"fitted in {seconds:.2f} s: mean log p(x) = {gm.score(X):.4f} nats, "
               f"BIC = {gm.bic(X):.1f}")
    click.echo("\nClusters found, against the known classes:")
    rows = []
    for c in range(k):
        members = y[labels == c]
        counts = np.bincount(members) if members.size else np.zeros(1, int)
        rows.append([c, members.size, f"{gm.weights_[c]:.3f}",
                     int(counts.argmax()) if members.size else "-",
                     f"{counts.max() / members.size:.2f}" if members.size else "-"])
    _echo_table(["cluster", "size", "weight", "majority class", "purity"], rows)
    scores = agreement_scores(labels, y)
    click.echo(f"Agreement with the known labels: adjusted Rand index "
               f"{scores['adjusted Rand index']:.3f}, normalised mutual information "
               f"{scores['normalised mutual information']:.3f}")
    lda, verses = _tour_lda(seed, lda_sweeps)
    vae, digits, digit_labels = _tour_vae(seed, epochs=vae_epochs)
    if claim is not None:
        from sklearn import datasets

        _write_tour(claim, {"gmm": (gm, X, y), "lda": (lda, verses, None),
                            "vae": (vae, digits, digit_labels)}, dataset,
                    getattr(datasets, f"load_{dataset}")().feature_names)
    click.echo(f"\nThe tour took {time.perf_counter() - began:.0f} s.")


def _echo_bounds(bounds, n_iter: int, head: int = 4, tail: int = 3) -> None:
    """The bound per iteration (the first few and the last few), then the final one."""
    shown = list(range(1, n_iter + 1))
    if n_iter > head + tail + 1:
        shown = shown[:head] + [None] + shown[-tail:]
    for i in shown:
        if i is None:
            click.echo("  ...")
        else:
            change = "" if i == 1 else f"  change {bounds[i - 1] - bounds[i - 2]: .2e}"
            click.echo(f"  iteration {i:3d}  bound {bounds[i - 1]: .6f}{change}")
    if len(bounds) == n_iter + 1:
        click.echo(f"  final          bound {bounds[-1]: .6f}  (the returned parameters)")


def _tour_lda(seed: int, sweeps: int):
    """LDA by a collapsed Gibbs sampler on the KJV gospels shipped with elbokit."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from elbokit import LDA, Corpus
    from elbokit.datasets import ARCHAIC_STOP_WORDS, kjv_gospels
    from elbokit.report.lda import lda_summary

    verses = kjv_gospels()
    train, held_out = verses[:3400], verses[3400:]
    corpus = Corpus(train, stop_words=sorted(ENGLISH_STOP_WORDS | set(ARCHAIC_STOP_WORDS)),
                    min_df=4, max_df=0.05)
    click.echo(f"\nLDA (Monte Carlo: Gibbs sampling) on the KJV gospels: {len(train)} verses, "
               f"{len(corpus.vocabulary)} words, 8 topics, {sweeps} sweeps")
    start = time.perf_counter()
    lda = LDA(8, method="gibbs", max_iter=sweeps, random_state=seed,
              verbose=int(sys.stderr.isatty())).fit(corpus)  # a progress bar on a terminal
    seconds = time.perf_counter() - start
    for k, words in enumerate(lda.top_words(8)):
        click.echo(f"  topic {k}: {' '.join(words)}")
    summary = lda_summary(lda, train, held_out)
    click.echo(f"sampled in {seconds:.1f} s; held-out perplexity {summary['perplexity']:.1f} "
               f"(document completion on {len(held_out)} verses), mean NPMI "
               f"{summary['npmi_mean']:.3f}")
    return lda, (train, held_out)


def _tour_vae(seed: int, epochs: int):
    """A small VAE on scikit-learn's 8x8 digits: bound, importance-sampled log p(x), KL gap."""
    from sklearn.datasets import load_digits

    from elbokit import VAE
    from elbokit.report.vae import IS_SAMPLES, vae_summary

    data = load_digits()
    X = (data.data / 16.0).astype(np.float32)
    click.echo(f"\nVariational autoencoder (amortised VI) on digits ({X.shape[0]} x {X.shape[1]} "
               f"grey levels), latent 2, continuous Bernoulli likelihood, {epochs} epochs")
    start = time.perf_counter()
    vae = VAE(2, hidden_sizes=(128, 64), likelihood="continuous_bernoulli", epochs=epochs,
              batch_size=64, random_state=seed, verbose=int(sys.stderr.isatty())).fit(X)
    seconds = time.perf_counter() - start
    s = vae_summary(vae, X)
    click.echo(f"trained in {seconds:.1f} s: ELBO {s['elbo']:.3f}, importance-sampled log p(x) "
               f"{s['log_px']:.3f} (k={IS_SAMPLES}) nats per image, KL gap {s['kl_gap']:.3f}")
    return vae, X, data.target


def _write_tour(claim, models: dict, dataset: str, feature_names=None) -> None:
    """Each model with its data and report, and an index page with their headline figures,
    in one atomic step."""
    final = claim.path.resolve()
    click.echo("\nWriting the models and their reports ...")
    claim.commit(lambda tmp: _fill_tour(tmp, final, models, dataset, feature_names),
                 manifest="tour")
    click.echo(f"Open {claim.path / 'index.html'}")


def _fill_tour(out_dir: Path, final: Path, models: dict, dataset: str, feature_names) -> None:
    """Write the tour into ``out_dir``, which becomes ``final`` (the paths recorded point
    there; the reports read the files written here)."""
    from elbokit.report import build_report, write_index

    described = {"gmm": f"scikit-learn's {dataset} data", "lda": "the KJV gospels (verses)",
                 "vae": "scikit-learn's 8x8 digits"}
    entries = []
    for name, (model, X, labels) in models.items():
        metrics, here = {"model": name}, {}
        if name == "lda":  # the verses it was fitted on, and the held-out ones
            train, held_out = X
            for part, docs in (("data", train), ("heldout", held_out)):
                file_name = f"lda-{'documents' if part == 'data' else 'heldout'}.txt"
                (out_dir / file_name).write_text("\n".join(docs) + "\n")
                metrics[part], here[part] = str(final / file_name), str(out_dir / file_name)
            metrics["n_documents"] = len(train)
        else:
            np.save(out_dir / f"{name}-data.npy", X)
            metrics.update(data=str(final / f"{name}-data.npy"), n_samples=len(X))
            here["data"] = str(out_dir / f"{name}-data.npy")
        if labels is not None:
            np.save(out_dir / f"{name}-labels.npy", labels)
            metrics["labels"] = str(final / f"{name}-labels.npy")
            here["labels"] = str(out_dir / f"{name}-labels.npy")
        if name == "gmm" and feature_names is not None:
            metrics["feature_names"] = list(feature_names)
        model.save(out_dir / name, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
        start = time.perf_counter()
        info = build_report(out_dir / name, progress=True, **here)
        click.echo(f"  {name}: {final / name / info.path.name} ({time.perf_counter() - start:.1f} s)")
        entries.append((name, info, described[name]))
    write_index(out_dir / "index.html", entries, title="elbokit tour",
                intro="Each model is a joint p(x, z) fitted by maximising log p(x) = "
                      "ELBO(q) + KL(q || p(z|x)).")


_TOUR_FILES_0_1 = {"index.html", "gmm-data.npy", "lda-documents.txt", "vae-data.npy", "vae-labels.npy"}


def _replaceable_tour(path: Path):
    """None if ``path`` is tour output that ``tour --force`` may replace, else why not."""
    from elbokit import files, io

    return files.replaceable_output("tour", legacy=_tour_0_1, check_dir=io.replaceable_model)(path)


def _tour_0_1(path: Path):
    """Tour output of elbokit 0.1 (no manifest): its index page, data files and model directories."""
    from elbokit import files, io

    try:
        index = files.read_regular(path / "index.html", max_bytes=1 << 20)
    except ValueError:
        index = b""
    if b"<title>elbokit tour</title>" not in index:
        return "is not an elbokit tour directory"
    foreign = files.foreign_entries(path, lambda n: n in _TOUR_FILES_0_1, lambda p: None if (
        p.name in ("gmm", "lda", "vae") and io.replaceable_model(p) is None) else "foreign")
    return f"holds files elbokit did not write ({', '.join(foreign[:5])})" if foreign else None


# ------------------------------------------------------------------ entry point
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, TypeError, KeyError)
_PYTHON_TO_CLI = {"overwrite=True": "--force",
                  "every column must be numeric.": "every column must be numeric: leave text "
                                                   "columns out with --drop NAME."}
_BARE = {"tol"}  # parameter names without "_" that are no English word
_KEYWORD = re.compile(r"""
    (?<![\w.-])([a-z][a-z0-9]*(?:_[a-z0-9]+)*)      # a Python name ...
    (?:=('[^']*'|"[^"]*"|\.\.\.|[^\s,;:)]*[^\s,;:).]))?  # ... maybe with =value
    (?=[\s,;:.)]|$)""", re.VERBOSE)


def _cli_options() -> set:
    """Every long option of every command."""
    found = set()

    def walk(command):
        for param in command.params:
            found.update(o for o in param.opts if o.startswith("--"))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(cli)
    return found


def in_cli_words(message: str) -> str:
    """A library message as a command line user reads it: Python keyword advice
    (``pass stop_words=None``, ``increase reg_covar``) becomes the option
    (``pass --stop-words none``, ``increase --reg-covar``)."""
    options = _cli_options()
    for python, option in _PYTHON_TO_CLI.items():
        message = message.replace(python, option)

    def keyword(match):
        name, value = match.group(1), match.group(2)
        option = "--" + name.replace("_", "-")
        if option not in options:
            return match.group(0)
        if value is None:
            return option
        value = value.strip("'\"")
        value = {"None": "none", "True": "", "False": "", "...": "NAME"}.get(value, value)
        return f"{option} {value}".rstrip()

    def replace(match):
        if "_" not in match.group(1) and match.group(2) is None and match.group(1) not in _BARE:
            return match.group(0)  # a plain word
        return keyword(match)

    return _KEYWORD.sub(replace, message)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings as one line in the command line's words (no Python source line)."""
    text = in_cli_words(str(message))
    click.echo(f"Warning: {text}", err=True)


def _error_line(err: BaseException, debug: bool, internal: bool) -> None:
    """The one-line message (after the traceback with --debug; the exit code is the same)."""
    from elbokit import files

    if debug:
        import traceback

        traceback.print_exception(err)
    if isinstance(err, files.OutputExistsError):
        text = err.for_cli()
    elif internal and not isinstance(err, files.OutputError):
        text = f"{type(err).__name__}: {err}"
    else:
        text = str(err)
    click.echo(f"Error: {in_cli_words(text)}", err=True)


def main(argv=None) -> int:
    """Run the command; map errors to one line ("Error: ...") and an exit code (1 or 2), with or
    without --debug."""
    import warnings

    from elbokit import files

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    ok = False
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="elbokit", standalone_mode=False)
        ok = True
        return 0
    except click.exceptions.Abort:
        click.echo("Error: aborted", err=True)
        return 1
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except files.OutputWriteError as err:  # the place was fine, writing failed (a full disk)
        _error_line(err, debug, internal=True)
        return 1
    except (*_USER_ERRORS, files.OutputError) as err:
        _error_line(err, debug, internal=False)
        return 2
    except Exception as err:  # a failure while running, not the user's input
        _error_line(err, debug, internal=True)
        return 1
    finally:
        warnings.showwarning = previous
        _close_distributed(ok)


def run() -> None:  # the console script
    sys.exit(main())


if __name__ == "__main__":  # python -m elbokit.cli (e.g. under torchrun)
    run()
