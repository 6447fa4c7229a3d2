"""The VAE report: bound per epoch, samples, reconstructions, the latent space (coloured by
given labels; first two dimensions and a PCA of all), KL per latent dimension and active
units, anomalies with their images."""

from __future__ import annotations

import numpy as np

from elbokit.report import plots
from elbokit.report.common import anomaly_rows, log_px_histogram
from elbokit.report.data import Data, categories, read_labels
from elbokit.report.html import Page, Table

MAX_PLOT_ROWS = 2000     # rows scored by importance sampling and plotted
IS_SAMPLES = 100         # importance samples per row for log p(x) (report and tour alike)
ACTIVE_THRESHOLD = 0.01  # Burda et al. (2016): a unit is active if Cov_x(E_q[z_j | x]) > 0.01
STAGES = 5


def vae_summary(vae, X) -> dict:
    """The figures the tour prints and the report shows, from one computation: per-row
    ELBO and importance-sampled log p(x) (``IS_SAMPLES`` draws), their means and the gap."""
    X = np.asarray(X, dtype=np.float32)
    elbo = np.asarray(vae.elbo(X), dtype=np.float64)
    log_px = np.asarray(vae.score_samples(X, n_samples=IS_SAMPLES), dtype=np.float64)
    return {"elbo_rows": elbo, "log_px_rows": log_px, "elbo": float(elbo.mean()),
            "log_px": float(log_px.mean()), "kl_gap": float(log_px.mean() - elbo.mean())}


def latent_diagnostics(vae, X) -> dict:
    """Per latent dimension: mean KL(q(z_j | x) || N(0, 1)) (N(0, I) prior only; from
    ``history_`` when training recorded it), Cov_x(E_q[z_j | x]) and whether the unit is
    active."""
    import torch

    codes = np.asarray(vae.transform(np.asarray(X, dtype=np.float32)), dtype=np.float64)
    variance = codes.var(0)
    kl = None
    history = getattr(vae, "history_", {}) or {}
    recorded = history.get("kl_per_dimension")
    if recorded:
        kl = np.asarray(recorded[-1], dtype=np.float64)
    elif vae.prior == "normal":
        from elbokit._validation import resolve_device, resolve_dtype

        module = vae.module_
        Xt = torch.as_tensor(np.asarray(X), dtype=resolve_dtype(vae.dtype),
                             device=resolve_device(vae.device))
        with torch.no_grad():
            total = torch.zeros(codes.shape[1], dtype=torch.float64, device=Xt.device)
            for start in range(0, Xt.shape[0], 1024):
                q = module.encoder(Xt[start:start + 1024])
                total += module.kl_per_dimension(q).sum(0, dtype=torch.float64)
        kl = (total / max(1, Xt.shape[0])).cpu().numpy()
    return {"codes": codes, "variance": variance, "kl": kl, "active": variance > ACTIVE_THRESHOLD}


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _image_shape(vae):
    if vae.image_shape is not None:
        return tuple(vae.image_shape[-2:])
    side = int(round(vae.n_features_in_ ** 0.5))
    return (side, side) if side * side == vae.n_features_in_ else None


def vae_page(vae, data: Data, metrics: dict, labels=None, progress=None,
             anomaly_quantile: float = 0.01) -> Page:
    """Report of a fitted VAE on ``data`` (a random sample of ``MAX_PLOT_ROWS`` rows)."""
    progress = progress or (lambda stage: None)
    rows = data.sample(MAX_PLOT_ROWS)
    if labels is not None:
        labels = read_labels(labels, rows.n_total, data.description)[rows.index]
    X = rows.X.astype(np.float32)
    progress("importance sampling")
    s = vae_summary(vae, X)
    on = (f"a random {len(X)} of its {rows.n_total} rows" if rows.is_sample
          else f"its {rows.n_total} rows")
    page = Page(
        f"Variational autoencoder: latent_dim={vae.latent_dim}, likelihood={vae.likelihood!r}",
        f"Trained by amortised VI for {_count(vae.n_epochs_, 'epoch')}"
        + (f" on {metrics['n_samples']} rows" if "n_samples" in metrics else "")
        + f" x {vae.n_features_in_} features; shown: {data.description}, on {on}.",
    )
    progress("latent space")
    diag = latent_diagnostics(vae, X)
    page.headline.update({
        "rows": f"{rows.n_total}", "latent dimensions": f"{vae.latent_dim}",
        "epochs": f"{vae.n_epochs_}", "mean ELBO (nats)": f"{s['elbo']:.3f}",
        f"log p(x), importance-sampled, k={IS_SAMPLES}": f"{s['log_px']:.3f}",
        "KL gap (estimate)": f"{s['kl_gap']:.3f}",
        "active units": f"{int(diag['active'].sum())} of {vae.latent_dim}"})
    _training(page, vae, s, len(X))
    shape = _image_shape(vae)
    progress("images")
    if shape is not None:
        _images(page, vae, X, rows.index, shape)
    _latent(page, vae, rows, diag, labels)
    progress("anomalies")
    _anomalies(page, rows, s, labels, X, shape, anomaly_quantile)
    return page


def _training(page: Page, vae, s: dict, n: int) -> None:
    train, val = vae.history_["train"], vae.history_["validation"]
    table = Table("bound", ["epoch", "training bound", "validation ELBO"],
                  [[e + 1, float(t), float(val[e]) if e < len(val) else ""]
                   for e, t in enumerate(train)])
    summary = Table("bounds-summary", ["quantity", "nats per sample", "rows"],
                    [["mean ELBO (one draw per row)", s["elbo"], n],
                     [f"importance-sampled log p(x), k={IS_SAMPLES}", s["log_px"], n],
                     ["KL gap = log p(x) - ELBO (estimate)", s["kl_gap"], n]])
    page.add("Training: the bound per epoch",
             page.figure(plots.train_validation_history(train, val),
                         "The ELBO is a lower bound on log p(x); the gap to the importance-sampled "
                         "estimate estimates KL(q(z|x) || p(z|x)).", table),
             page.table(summary, "On the rows shown; the same computation as the tour prints."))


def _images(page: Page, vae, X, index, shape) -> None:
    samples = np.asarray(vae.sample(20))
    pairs = np.concatenate([X[:10], np.asarray(vae.reconstruct(X[:10]))])
    titles = [f"row {int(i)}" for i in index[:10]] + ["recon."] * 10
    inter = np.asarray(vae.interpolate(X[0], X[1], 10))
    page.add(
        "What the model learned",
        page.figure(plots.image_grid(samples, shape), "Samples: z ~ p(z), shown as E[x | z]."),
        page.figure(plots.image_grid(pairs, shape, titles=titles),
                    "Top: rows of the data; bottom: their reconstructions E[x | z = E_q[z | x]]."),
        page.figure(plots.image_grid(inter, shape),
                    f"Decoded points on the line between the codes of rows {int(index[0])} "
                    f"and {int(index[1])}."),
    )


def _latent(page: Page, vae, rows, diag, labels) -> None:
    codes, L = diag["codes"], vae.latent_dim
    names, cats = (None, None) if labels is None else categories(labels)
    header = ["row"] + [f"z{j + 1}" for j in range(L)]
    pcs = None
    if L > 2:
        centred = codes - codes.mean(0)
        _, sv, vt = np.linalg.svd(centred, full_matrices=False)
        pcs = centred @ vt[:2].T
        share = sv ** 2 / max((sv ** 2).sum(), 1e-300)
        header += ["PC1", "PC2"]
    if labels is not None:
        header.append("label")
    table_rows = []
    for i, r in enumerate(rows.index):
        row = [int(r)] + codes[i].tolist() + ([] if pcs is None else pcs[i].tolist())
        table_rows.append(row + ([np.asarray(labels)[i].item()] if labels is not None else []))
    table = Table("latent-codes", header, table_rows)
    coloured = "; coloured by the given labels" if labels is not None else ""
    blocks = []
    if L >= 2:
        blocks.append(page.figure(
            plots.latent_scatter(codes[:, :2], cats, names, xlabel="z1 (posterior mean)",
                                 ylabel="z2 (posterior mean)"),
            f"Posterior means E_q[z | x] of the rows shown, dimensions 1 and 2{coloured}.", table))
    else:
        blocks.append(page.figure(
            plots.latent_scatter(np.stack([codes[:, 0], np.zeros(len(codes))], 1), cats, names,
                                 xlabel="z1 (posterior mean)", ylabel=""),
            f"Posterior means E_q[z | x] of the rows shown{coloured}.", table))
    if pcs is not None:
        blocks.append(page.figure(
            plots.latent_scatter(pcs, cats, names, xlabel=f"PC1 of the codes ({share[0]:.0%})",
                                 ylabel=f"PC2 of the codes ({share[1]:.0%})"),
            f"The same codes projected on their first two principal components (all {L} "
            f"dimensions){coloured}.", table))
    kl, active = diag["kl"], diag["active"]
    dims = Table("latent-dimensions", ["dimension", "mean KL (nats)", "Cov_x E[z_j|x]", "active"],
                 [[j + 1, float(kl[j]) if kl is not None else "", float(diag["variance"][j]),
                   bool(active[j])] for j in range(L)])
    if kl is not None:
        blocks.append(page.figure(
            plots.kl_per_dimension(kl, active, ACTIVE_THRESHOLD),
            f"{int(active.sum())} of {L} latent dimensions are active (Burda et al. 2016: "
            f"Cov_x(E_q[z_j | x]) > {ACTIVE_THRESHOLD}); an inactive one carries no information "
            "about x (posterior collapse) and has a KL near 0.", dims))
    else:
        blocks.append(page.table(dims, f"{int(active.sum())} of {L} latent dimensions are active "
                                       "(the KL of a mixture prior does not split by dimension)."))
    page.add("The latent space", *blocks)


def _anomalies(page: Page, rows, s, labels, X, shape, quantile) -> None:
    log_px = s["log_px_rows"]
    worst, threshold = anomaly_rows(log_px, quantile)
    header = ["row", "log p(x)", "ELBO"] + (["label"] if labels is not None else [])
    table = Table("anomalies", header,
                  [[int(rows.index[i]), float(log_px[i]), float(s["elbo_rows"][i])]
                   + ([np.asarray(labels)[i].item()] if labels is not None else []) for i in worst])
    blocks = [log_px_histogram(page, log_px, threshold,
                               f"Importance-sampled log p(x) (k={IS_SAMPLES}) of the rows shown; "
                               f"rows below the {quantile:.0%} quantile are flagged."),
              page.table(table, "The 10 rows with the lowest log p(x), numbered as in the data "
                                "(from 0).")]
    if shape is not None:
        blocks.append(page.figure(
            plots.image_grid(X[worst], shape, titles=[f"row {int(rows.index[i])}" for i in worst]),
            "The same 10 rows: the least probable images under the model."))
    page.add("Anomalies: importance-sampled log p(x) per row", *blocks)
