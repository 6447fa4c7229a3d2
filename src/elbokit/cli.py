"""The ``elbokit`` command."""

from __future__ import annotations

import sys
import time

import click
import numpy as np

DATASETS = ("wine", "iris", "digits", "breast_cancer")


def _load_bundled(name: str):
    """A dataset bundled with scikit-learn, standardised: (X, y, description)."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    bunch = getattr(datasets, f"load_{name}")()
    X = StandardScaler().fit_transform(bunch.data)
    return X, bunch.target, f"{name} ({X.shape[0]} samples x {X.shape[1]} features)"


def _cluster_table(labels, y, weights) -> str:
    """One line per cluster: size, weight, majority class and purity."""
    rows = [f"  {'cluster':>7} {'size':>6} {'weight':>7} {'majority class':>15} {'purity':>7}"]
    for k in range(len(weights)):
        members = y[labels == k]
        if members.size == 0:
            rows.append(f"  {k:>7} {0:>6} {weights[k]:>7.3f} {'-':>15} {'-':>7}")
            continue
        counts = np.bincount(members)
        rows.append(
            f"  {k:>7} {members.size:>6} {weights[k]:>7.3f} {int(counts.argmax()):>15} "
            f"{counts.max() / members.size:>7.2f}"
        )
    return "\n".join(rows)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="elbokit")
def main():
    """elbokit: latent variable models fitted by EM, variational inference and Monte Carlo."""


@main.command()
@click.option("--dataset", type=click.Choice(DATASETS), default="wine", show_default=True,
              help="scikit-learn bundled dataset to cluster.")
@click.option("--components", "-k", type=click.IntRange(min=1), default=None,
              help="Mixture components (default: the number of known classes).")
@click.option("--covariance-type", type=click.Choice(["full", "tied", "diag", "spherical"]),
              default="diag", show_default=True)
@click.option("--n-init", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def tour(dataset, components, covariance_type, n_init, seed):
    """Fit a Gaussian mixture by EM on bundled data and compare its clusters with the labels."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from elbokit import GaussianMixture

    X, y, description = _load_bundled(dataset)
    k = components or int(np.unique(y).size)
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
    click.echo(_cluster_table(labels, y, gm.weights_))
    click.echo(f"\nAgreement with the known labels: adjusted Rand index "
               f"{adjusted_rand_score(y, labels):.3f}, normalised mutual information "
               f"{normalized_mutual_info_score(y, labels):.3f}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
