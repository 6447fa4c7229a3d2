"""The ``elbokit`` command: fit, inspect and use models from the shell.

Exit codes: 0 success, 1 a failure while running (e.g. a fit that broke
down), 2 bad input or usage (missing file, wrong format, bad option).  Errors
print one line; ``--debug`` shows the traceback.  Nothing that exists is
overwritten without ``--force``, and an interrupted ``fit`` leaves no model
directory behind (models are written to a temporary directory and renamed).
"""

from __future__ import annotations

import json
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


def _check_new(path: Path, force: bool, what: str = "output") -> None:
    if path.exists() and not force:
        raise UserError(f"{path} already exists: choose another {what} or pass --force.")


def _is_idx(path: Path) -> bool:
    return "idx" in path.name and (path.suffix in ("", ".gz") or "ubyte" in path.name)


def _check_data_path(data: str) -> str:
    path = Path(data)
    if not path.exists():
        raise UserError(f"no data file at {path}.")
    if path.suffix.lower() not in (".csv", ".tsv", ".npy", ".parquet", ".pq") and not _is_idx(path):
        raise UserError(f"{path}: unknown data format {path.suffix!r}; use .csv, .npy, .parquet "
                        "or an IDX image file.")
    return str(path)


def _in_memory(data: str) -> np.ndarray:
    """The whole data file as an array (for models that take arrays, like the VAE)."""
    from elbokit.report import load_rows

    return load_rows(data).astype(np.float32)


def write_array(path: Path, values, columns: list[str], force: bool) -> None:
    """Write a 1-D or 2-D array as CSV, .npy or Parquet, by the file's extension."""
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise UserError(f"--out {path}: use a {', '.join(OUTPUT_FORMATS)} file name.")
    _check_new(path, force)
    arr = np.asarray(values)
    arr2 = arr.reshape(len(arr), -1)
    tmp = path.with_name(f".{path.name}.partial")
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
    tmp.replace(path)


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
        cuda = device is not None and str(device).startswith("cuda")
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
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_gmm(data, out, components, covariance_type, max_iter, tol, n_init, reg_covar, algorithm,
            batch_size, dtype, device, seed, distributed, force):
    """Fit a Gaussian mixture by EM to DATA (.csv, .npy or .parquet, streamed in chunks)."""
    from elbokit import GaussianMixture

    data = _check_data_path(data)
    out_dir = Path(out)
    _check_new(out_dir, force, "model directory")
    distributed, rank = _launch(distributed, device)
    gm = GaussianMixture(components, covariance_type=covariance_type, max_iter=max_iter, tol=tol,
                         n_init=n_init, reg_covar=reg_covar, algorithm=algorithm,
                         batch_size=batch_size, dtype=dtype, device=device, random_state=seed,
                         verbose=1 if rank == 0 else 0, distributed=distributed or None)
    seconds = _fit_timed(gm, data, distributed)
    if rank != 0:
        return
    n = int(np.asarray(gm.predict(data)).shape[0])
    metrics = {
        "model": "gmm", "data": str(Path(data).resolve()), "n_samples": n,
        "n_features": gm.n_features_in_, "fit_seconds": seconds,
        "lower_bounds": [float(b) for b in gm.lower_bounds_],
        "log_likelihood_per_sample": gm.lower_bound_, "converged": gm.converged_,
        "n_iter": gm.n_iter_, "bic": gm.bic(data), "aic": gm.aic(data),
    }
    gm.save(out_dir, overwrite=force, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
    click.echo(f"fitted K={components} {covariance_type} on {n} x {gm.n_features_in_} in "
               f"{seconds:.2f} s: mean log p(x) {gm.lower_bound_:.4f}, {gm.n_iter_} iterations, "
               f"{'converged' if gm.converged_ else 'NOT converged'}; saved to {out_dir}")


def _read_corpus(data: str, **kwargs):
    """A Corpus from one-document-per-line text, a folder of .txt files, or JSONL."""
    from elbokit import Corpus

    path = Path(data)
    if not path.exists():
        raise UserError(f"no corpus at {path}.")
    if path.is_dir():
        return Corpus.from_folder(path, **kwargs)
    if path.suffix.lower() in (".jsonl", ".json"):
        return Corpus.from_jsonl(path, **kwargs)
    return Corpus.from_lines(path, **kwargs)


def _read_documents(data: str) -> list[str]:
    """Raw documents for a fitted topic model (it keeps its own vocabulary)."""
    from elbokit.data.text import read_documents

    return read_documents(data)


@fit.command("lda")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--topics", "-k", "n_topics", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--method", type=click.Choice(["batch", "online", "gibbs"]), default="batch",
              show_default=True)
@click.option("--max-iter", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--min-df", type=float, default=2, show_default=True)
@click.option("--max-df", type=float, default=0.5, show_default=True)
@click.option("--max-features", type=click.IntRange(min=1), default=None)
@click.option("--stop-words", default="english", show_default=True,
              help="'english', 'none', or a file with one word per line.")
@click.option("--device", default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_lda(data, out, n_topics, method, max_iter, min_df, max_df, max_features, stop_words,
            device, seed, distributed, force):
    """Fit LDA to a text corpus: one document per line, a folder of .txt files, or JSONL."""
    from elbokit import LDA

    out_dir = Path(out)
    _check_new(out_dir, force, "model directory")
    if stop_words == "none":
        stop_words = None
    elif stop_words != "english":
        stop_words = [w.strip() for w in Path(stop_words).read_text().split() if w.strip()]
    min_df = int(min_df) if min_df >= 1 else min_df
    corpus = _read_corpus(data, min_df=min_df, max_df=max_df, max_features=max_features,
                          stop_words=stop_words)
    distributed, rank = _launch(distributed, device)
    lda = LDA(n_topics, method=method, max_iter=max_iter, device=device, random_state=seed,
              verbose=1 if rank == 0 else 0, distributed=distributed or None)
    # under torchrun: the same vocabulary everywhere, each rank its block of documents
    seconds = _fit_timed(lda, corpus.counts if distributed else corpus, distributed)
    if distributed:
        lda.vocabulary_, lda.vectorizer_params_ = list(corpus.vocabulary), dict(corpus.vectorizer_params)
    if rank != 0:
        return
    n_docs = corpus.counts.shape[0]
    metrics = {"model": "lda", "data": str(Path(data).resolve()), "n_documents": n_docs,
               "vocabulary_size": len(lda.vocabulary_), "fit_seconds": seconds,
               "lower_bounds": [float(b) for b in lda.lower_bounds_]}
    lda.save(out_dir, overwrite=force, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
    click.echo(f"fitted {n_topics} topics ({method}) on {n_docs} documents, "
               f"{len(lda.vocabulary_)} words, in {seconds:.2f} s; saved to {out_dir}")


@fit.command("vae")
@click.argument("data")
@click.option("--out", "out", required=True, type=click.Path(), help="Model directory to create.")
@click.option("--latent-dim", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--hidden", default="512,256", show_default=True, help="Hidden layer sizes.")
@click.option("--likelihood", type=click.Choice(["bernoulli", "continuous_bernoulli", "gaussian"]),
              default="continuous_bernoulli", show_default=True)
@click.option("--binarize", type=click.Choice(["none", "dynamic"]), default="none", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True)
@click.option("--max-rows", type=click.IntRange(min=1), default=None, help="Use the first N rows.")
@click.option("--device", default=None)
@click.option("--seed", type=int, default=0, show_default=True)
@_distributed_option
@click.option("--force", is_flag=True, help="Replace an existing model directory.")
def fit_vae(data, out, latent_dim, hidden, likelihood, binarize, epochs, batch_size, lr, max_rows,
            device, seed, distributed, force):
    """Train a variational autoencoder on DATA (IDX images, .npy, .csv or .parquet)."""
    from elbokit import VAE

    data = _check_data_path(data)
    out_dir = Path(out)
    _check_new(out_dir, force, "model directory")
    try:
        hidden_sizes = tuple(int(h) for h in hidden.split(",") if h.strip())
    except ValueError:
        raise UserError(f"--hidden {hidden!r}: give sizes like 512,256.") from None
    X = _in_memory(data)[:max_rows]
    distributed, rank = _launch(distributed, device)
    vae = VAE(latent_dim, hidden_sizes=hidden_sizes, likelihood=likelihood,
              binarize=None if binarize == "none" else binarize, epochs=epochs,
              batch_size=batch_size, lr=lr, device=device, random_state=seed,
              verbose=1 if rank == 0 else 0, distributed=distributed or None)
    seconds = _fit_timed(vae, X, distributed)
    if rank != 0:
        return
    metrics = {"model": "vae", "data": str(Path(data).resolve()), "n_samples": len(X),
               "n_features": int(X.shape[1]), "fit_seconds": seconds,
               "train_bounds": vae.history_["train"], "validation_elbo": vae.history_["validation"]}
    vae.save(out_dir, overwrite=force, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
    click.echo(f"trained a VAE (latent {latent_dim}) on {X.shape[0]} x {X.shape[1]} for {epochs} "
               f"epochs in {seconds:.1f} s: training bound {vae.history_['train'][-1]:.4f}; "
               f"saved to {out_dir}")


# ------------------------------------------------------------------ use a model
def _apply(model_dir, data, out, force, method: str, column: str):
    model = _model(model_dir)
    if not hasattr(model, method):
        raise UserError(f"a {type(model).__name__} has no {method}.")
    name = type(model).__name__
    if name == "LDA":
        inputs = _read_documents(data)
    else:
        data = _check_data_path(data)
        streams = name == "GaussianMixture" and not _is_idx(Path(data))
        inputs = data if streams else _in_memory(data)
    values = np.asarray(getattr(model, method)(inputs))
    columns = [column] if values.ndim == 1 else [f"{column}_{j}" for j in range(values.shape[1])]
    write_array(Path(out), values, columns, force)
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
def transform(model_dir, data, out, force):
    """Latent representation of DATA (mixtures: posterior probabilities p(z|x))."""
    model = _model(model_dir)
    method = "transform" if hasattr(model, "transform") else "predict_proba"
    _apply(model_dir, data, out, force, method, "z")


@cli.command()
@click.argument("model_dir")
@click.argument("data")
@_OUT
@_FORCE
def score(model_dir, data, out, force):
    """log p(x) per row of DATA (lower: more anomalous)."""
    _apply(model_dir, data, out, force, "score_samples", "log_px")


@cli.command()
@click.argument("model_dir")
@_OUT
@_FORCE
@click.option("-n", "--n-samples", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (default: the model's).")
def sample(model_dir, out, force, n_samples, seed):
    """Generate samples from the model (mixtures: with their component in the last column)."""
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
    write_array(Path(out), values, columns, force)
    click.echo(f"wrote {values.shape[0]} samples to {out}")


@cli.command()
@click.argument("model_dir")
def topics(model_dir):
    """Top words per topic (topic models)."""
    model = _model(model_dir)
    if not hasattr(model, "top_words"):
        raise UserError(f"{model_dir} holds a {type(model).__name__}, not a topic model.")
    for k, words in enumerate(model.top_words(10)):
        click.echo(f"topic {k:3d}: {' '.join(words)}")


# ------------------------------------------------------------------ model selection
def _parse_range(text: str) -> list[int]:
    try:
        if ".." in text:
            lo, hi = (int(v) for v in text.split(".."))
            values = list(range(lo, hi + 1))
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"--k {text!r}: give a range like 2..20 or a list like 2,4,8 (K >= 1).")
    return values


@cli.group()
def select():
    """Choose the number of components by BIC, AIC and held-out log-likelihood."""


@select.command("gmm")
@click.argument("data")
@click.option("--k", "k_range", default="1..10", show_default=True, help="Range a..b or list.")
@click.option("--covariance-type", type=click.Choice(["full", "tied", "diag", "spherical"]),
              default="full", show_default=True)
@click.option("--criterion", type=click.Choice(["bic", "aic", "heldout"]), default="bic",
              show_default=True)
@click.option("--holdout", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True)
@click.option("--n-init", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def select_gmm(data, k_range, covariance_type, criterion, holdout, n_init, seed):
    """Fit K components for each K; print BIC, AIC and held-out log p(x); pick K."""
    from elbokit import GaussianMixture
    from elbokit.report import load_rows

    ks = _parse_range(k_range)
    X = load_rows(_check_data_path(data))
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = max(1, int(round(holdout * len(X))))
    test, train = X[order[:n_test]], X[order[n_test:]]
    rows, scores = [], {}
    for k in ks:
        if k > len(train):
            raise UserError(f"K={k} exceeds the {len(train)} training rows: lower --k.")
        gm = GaussianMixture(k, covariance_type=covariance_type, n_init=n_init,
                             random_state=seed).fit(train)
        bic, aic, held = gm.bic(train), gm.aic(train), gm.score(test)
        scores[k] = {"bic": bic, "aic": aic, "heldout": -held}
        rows.append([k, f"{bic:.1f}", f"{aic:.1f}", f"{held:.4f}"])
    best = min(ks, key=lambda k: scores[k][criterion])
    _echo_table(["K", "BIC", "AIC", "held-out log p(x)"], rows)
    click.echo(f"chosen K = {best} (by {criterion}; {len(train)} training, {len(test)} held-out rows)")


# ------------------------------------------------------------------ report
@cli.command()
@click.argument("model_dir")
@click.option("--data", default=None, help="Data to show (default: the data it was fitted on).")
@click.option("--out", type=click.Path(), default=None, help="HTML file (default MODEL_DIR/report.html).")
@click.option("--labels", default=None, help="Labels (.npy or IDX) to colour latent codes by.")
@click.option("--force", is_flag=True, help="Replace an existing report.")
def report(model_dir, data, out, labels, force):
    """Write a self-contained HTML report of a fitted model."""
    from elbokit.report import write_report

    target = Path(out) if out else Path(model_dir) / "report.html"
    _check_new(target, force, "report file")
    if labels is not None:
        from elbokit.data.idx import load_idx_labels

        labels = load_idx_labels(labels) if _is_idx(Path(labels)) else np.load(labels)
    path = write_report(model_dir, data=data, out=target, labels=labels)
    click.echo(f"wrote {path}")


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
@click.option("--vae-epochs", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--out", type=click.Path(), default=None,
              help="Also save the models, their HTML reports and an index page in this directory.")
@click.option("--force", is_flag=True, help="Replace an existing --out directory.")
def tour(dataset, components, covariance_type, n_init, seed, vae_epochs, out, force):
    """The main job: a Gaussian mixture by EM (clusters against the known labels), LDA by
    Gibbs sampling on the KJV gospels, and a small VAE by amortised VI on the digits,
    all on data shipped with elbokit or scikit-learn; models and reports with --out."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from elbokit import GaussianMixture

    X, y, description = _load_bundled(dataset)
    k = components or int(np.unique(y).size)
    if out is not None:
        _check_new(Path(out), force, "tour directory")
    click.echo(f"Gaussian mixture, K={k}, covariance_type={covariance_type!r}, on {description}")
    click.echo("EM: the bound is the mean log p(x) per sample (E-step: q = posterior, KL = 0)")
    start = time.perf_counter()
    gm = GaussianMixture(k, covariance_type=covariance_type, n_init=n_init, random_state=seed,
                         verbose=2).fit(X)
    seconds = time.perf_counter() - start
    labels = gm.predict(X)
    click.echo(f"\nKept the best of {n_init} restarts: {gm.n_iter_} iterations, "
               f"{'converged' if gm.converged_ else 'NOT converged'}, fitted in {seconds:.2f} s")
    click.echo(f"mean log p(x) = {gm.score(X):.4f} nats,  BIC = {gm.bic(X):.1f}")
    click.echo("\nClusters found, against the known classes:")
    rows = []
    for c in range(k):
        members = y[labels == c]
        counts = np.bincount(members) if members.size else np.zeros(1, int)
        rows.append([c, members.size, f"{gm.weights_[c]:.3f}",
                     int(counts.argmax()) if members.size else "-",
                     f"{counts.max() / members.size:.2f}" if members.size else "-"])
    _echo_table(["cluster", "size", "weight", "majority class", "purity"], rows)
    click.echo(f"\nAgreement with the known labels: adjusted Rand index "
               f"{adjusted_rand_score(y, labels):.3f}, normalised mutual information "
               f"{normalized_mutual_info_score(y, labels):.3f}")
    lda, verses = _tour_lda(seed)
    vae, digits, digit_labels = _tour_vae(seed, epochs=vae_epochs)
    if out is not None:
        _write_tour(Path(out), {"gmm": (gm, X, None), "lda": (lda, verses, None),
                                "vae": (vae, digits, digit_labels)}, dataset)


def _tour_lda(seed: int):
    """LDA by a collapsed Gibbs sampler on the KJV gospels shipped with elbokit."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    from elbokit import LDA, Corpus
    from elbokit.datasets import ARCHAIC_STOP_WORDS, kjv_gospels

    verses = kjv_gospels()
    train, held_out = verses[:3400], verses[3400:]
    corpus = Corpus(train, stop_words=sorted(ENGLISH_STOP_WORDS | set(ARCHAIC_STOP_WORDS)),
                    min_df=4, max_df=0.05)
    click.echo(f"\nLDA (Monte Carlo: Gibbs sampling) on the KJV gospels: {len(train)} verses, "
               f"{len(corpus.vocabulary)} words, 8 topics")
    start = time.perf_counter()
    lda = LDA(8, method="gibbs", max_iter=200, random_state=seed).fit(corpus)
    seconds = time.perf_counter() - start
    for k, words in enumerate(lda.top_words(8)):
        click.echo(f"  topic {k}: {' '.join(words)}")
    click.echo(f"fitted in {seconds:.1f} s; held-out perplexity {lda.perplexity(held_out):.1f} "
               f"(document completion on {len(held_out)} verses), NPMI "
               f"{float(np.mean(lda.coherence(corpus))):.3f}")
    return lda, verses


def _tour_vae(seed: int, epochs: int):
    """A small VAE on scikit-learn's 8x8 digits: bound, importance-sampled log p(x), KL gap."""
    from sklearn.datasets import load_digits

    from elbokit import VAE

    data = load_digits()
    X = (data.data / 16.0).astype(np.float32)
    click.echo(f"\nVariational autoencoder (amortised VI) on digits ({X.shape[0]} x {X.shape[1]} "
               f"grey levels), latent 2, continuous Bernoulli likelihood, {epochs} epochs")
    start = time.perf_counter()
    vae = VAE(2, hidden_sizes=(128, 64), likelihood="continuous_bernoulli", epochs=epochs,
              batch_size=64, random_state=seed).fit(X)
    seconds = time.perf_counter() - start
    elbo, log_px = float(np.mean(vae.elbo(X))), vae.score(X, n_samples=100)
    click.echo(f"trained in {seconds:.1f} s: ELBO {elbo:.3f}, importance-sampled log p(x) "
               f"{log_px:.3f} nats per image, KL gap {log_px - elbo:.3f}")
    return vae, X, data.target


def _write_tour(out_dir: Path, models: dict, dataset: str) -> None:
    """Each model with its data and report, and an index page linking them."""
    import html
    import shutil

    from elbokit.report import write_report

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    links = []
    for name, (model, X, labels) in models.items():
        if isinstance(X, list):  # documents
            data_path = out_dir / f"{name}-documents.txt"
            data_path.write_text("\n".join(X) + "\n")
        else:
            data_path = out_dir / f"{name}-data.npy"
            np.save(data_path, X)
        metrics = {"model": name, "data": str(data_path.resolve()), "n_samples": len(X),
                   "n_documents": len(X)}
        if labels is not None:
            np.save(out_dir / f"{name}-labels.npy", labels)
            metrics["labels"] = str((out_dir / f"{name}-labels.npy").resolve())
        model.save(out_dir / name, extra_files={"metrics.json": json.dumps(metrics, indent=2)})
        write_report(out_dir / name)
        links.append(f'<li><a href="{name}/report.html">{html.escape(type(model).__name__)}</a> '
                     f"on {html.escape({'gmm': dataset, 'lda': 'the KJV gospels'}.get(name, 'digits'))}"
                     "</li>")
    (out_dir / "index.html").write_text(
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>elbokit tour</title>"
        "</head><body style='font-family:system-ui;max-width:40rem;margin:2rem auto'>"
        "<h1>elbokit tour</h1><p>Each model is a joint p(x, z) fitted by maximising "
        "log p(x) = ELBO(q) + KL(q || p(z|x)).</p><ul>" + "".join(links) + "</ul></body></html>")
    click.echo(f"\nModels and reports written: {out_dir / 'index.html'}")


# ------------------------------------------------------------------ entry point
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, TypeError, KeyError)


def main(argv=None) -> int:
    """Run the command; map errors to one line and an exit code (1 or 2)."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    ok = False
    try:
        cli.main(args=argv, prog_name="elbokit", standalone_mode=False)
        ok = True
        return 0
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as err:
        err.show()
        return err.exit_code
    except click.exceptions.Exit as err:
        return err.exit_code
    except _USER_ERRORS as err:
        if debug:
            raise
        click.echo(f"error: {err}", err=True)
        return 2
    except Exception as err:  # a failure while running, not the user's input
        if debug:
            raise
        click.echo(f"error: {type(err).__name__}: {err}", err=True)
        return 1
    finally:
        _close_distributed(ok)


def run() -> None:  # the console script
    sys.exit(main())


if __name__ == "__main__":  # python -m elbokit.cli (e.g. under torchrun)
    run()
