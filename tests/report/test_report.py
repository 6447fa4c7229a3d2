"""The HTML reports: what they show is checked against the data, and every page renders in
a real browser (every image decoded, no script error), with a screenshot under build/."""

import csv
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import elbokit
from elbokit.report import write_index, write_report
from elbokit.report.gmm import MAX_PLOT_ROWS as GMM_PLOT_ROWS
from elbokit.report.vae import IS_SAMPLES, MAX_PLOT_ROWS as VAE_PLOT_ROWS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BUILD = Path(__file__).resolve().parents[2] / "build"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="needs Debian's chromium (.ci/run installs it)")


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def column(path, name, kind=float):
    header, rows = read_csv(path)
    j = header.index(name)
    return np.array([kind(r[j]) for r in rows])


# ------------------------------------------------------------------ fits larger than the plots' sample
@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """A mixture on more rows than its plots sample, and a VAE on more rows than it scores,
    each with labels; their reports written."""
    from sklearn.datasets import load_digits

    from tests.conftest import make_blobs_data

    tmp = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(0)
    X = make_blobs_data(n=GMM_PLOT_ROWS + 1200, d=3, k=3, seed=1)
    y = np.array(["north", "south", "east"])[rng.integers(0, 3, len(X))]
    np.save(tmp / "blobs.npy", X)
    np.savetxt(tmp / "blobs-labels.csv", y, fmt="%s", header="region", comments="")
    gm = elbokit.GaussianMixture(3, covariance_type="full", random_state=0).fit(X)
    gm.save(tmp / "gmm", extra_files={"metrics.json": f'{{"data": "{tmp / "blobs.npy"}"}}'})
    write_report(tmp / "gmm", labels=str(tmp / "blobs-labels.csv"))

    digits = load_digits()
    base = (digits.data / 16.0).astype(np.float32)
    D = np.concatenate([base, np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1)]).astype(np.float32)
    d_labels = np.concatenate([digits.target, digits.target])
    assert len(D) > VAE_PLOT_ROWS
    np.save(tmp / "digits.npy", D)
    np.save(tmp / "digits-labels.npy", d_labels)
    vae = elbokit.VAE(3, hidden_sizes=(32,), likelihood="continuous_bernoulli", epochs=1,
                      random_state=0).fit(D)
    vae.save(tmp / "vae", extra_files={"metrics.json": f'{{"data": "{tmp / "digits.npy"}"}}'})
    write_report(tmp / "vae", labels=str(tmp / "digits-labels.npy"))
    return {"dir": tmp, "X": X, "y": y, "gm": gm, "D": D, "d_labels": d_labels, "vae": vae}


def test_gmm_report_names_rows_of_the_file_and_their_labels(large):
    data, gm, X, y = large["dir"] / "gmm" / "report-data", large["gm"], large["X"], large["y"]
    rows = column(data / "clusters-scatter.csv", "row", int)
    assert len(rows) == GMM_PLOT_ROWS and rows.max() >= GMM_PLOT_ROWS  # a sample of all the rows
    # the colours: each plotted point's label and cluster are those of its row of the file
    assert (column(data / "clusters-scatter.csv", "label", str) == y[rows]).all()
    assert (column(data / "clusters-scatter.csv", "cluster", int) == gm.predict(X[rows])).all()
    # anomalies: the rows of the file with the lowest log p(x), over every row
    log_px = gm.score_samples(X)
    worst = column(data / "anomalies.csv", "row", int)
    np.testing.assert_array_equal(worst, np.argsort(log_px, kind="stable")[:10])
    np.testing.assert_allclose(column(data / "anomalies.csv", "log p(x)"), log_px[worst], rtol=1e-6)
    np.testing.assert_allclose(column(data / "anomalies.csv", "x0"), X[worst, 0])
    assert (column(data / "anomalies.csv", "label", str) == y[worst]).all()
    # the confusion table counts every row
    header, table = read_csv(data / "clusters-vs-labels.csv")
    assert sum(int(v) for r in table for v in r[1:]) == len(X)


def test_vae_report_colours_codes_by_their_own_rows(large):
    data, vae, D, labels = large["dir"] / "vae" / "report-data", large["vae"], large["D"], large["d_labels"]
    rows = column(data / "latent-codes.csv", "row", int)
    assert len(rows) == VAE_PLOT_ROWS and rows.max() >= VAE_PLOT_ROWS
    assert (column(data / "latent-codes.csv", "label", int) == labels[rows]).all()
    codes = np.asarray(vae.transform(D[rows]))
    for j in range(3):
        np.testing.assert_allclose(column(data / "latent-codes.csv", f"z{j + 1}"), codes[:, j],
                                   rtol=1e-5, atol=1e-6)
    # the anomaly rows are rows of the file: the lowest log p(x) of the rows scored
    log_px = np.asarray(vae.score_samples(D[rows], n_samples=IS_SAMPLES))
    worst = column(data / "anomalies.csv", "row", int)
    np.testing.assert_array_equal(worst, rows[np.argsort(log_px, kind="stable")[:10]])
    assert (column(data / "anomalies.csv", "label", int) == labels[worst]).all()
    kl = column(data / "latent-dimensions.csv", "mean KL (nats)")
    assert kl.shape == (3,) and (kl >= 0).all()


def test_labels_must_belong_to_the_rows_shown(large):
    np.save(large["dir"] / "short.npy", large["d_labels"][:100])
    with pytest.raises(ValueError, match=r"100 entries but digits.npy has 3594 rows"):
        write_report(large["dir"] / "vae", labels=str(large["dir"] / "short.npy"),
                     out=large["dir"] / "x.html")
    assert not (large["dir"] / "x.html").exists()


# ------------------------------------------------------------------ the tour's reports
def test_tour_reports_and_console_agree(tour):
    out, output = tour
    lda_page = (out / "lda" / "report.html").read_text()
    assert "Fitted on 3400 documents" in lda_page  # the verses fitted on, not all 3779
    perplexity = re.search(r"held-out perplexity (\d+\.\d)", output).group(1)
    npmi = re.search(r"mean NPMI (-?\d\.\d+)", output).group(1)
    assert f">{perplexity}<" in lda_page and f">{npmi}<" in lda_page
    elbo, log_px, gap = re.search(r"ELBO (-?\d+\.\d+), importance-sampled log p\(x\) (-?\d+\.\d+) "
                                  r"\(k=\d+\) nats per image, KL gap (-?\d+\.\d+)", output).groups()
    vae_page = (out / "vae" / "report.html").read_text()
    for value in (elbo, log_px, gap):
        assert f">{value}<" in vae_page
    # iterations are numbered from 1 in the console and the report alike
    first = re.search(r"iteration\s+1\s+bound\s+(-?\d+\.\d+)", output).group(1)
    _, bound_rows = read_csv(out / "gmm" / "report-data" / "bound.csv")
    assert bound_rows[0][0] == "1" and float(bound_rows[0][1]) == pytest.approx(float(first), abs=1e-6)
    index = (out / "index.html").read_text()
    for name in ("gmm", "lda", "vae"):
        assert f"href='{name}/report.html'" in index
    assert "held-out perplexity" in index and "adjusted Rand index" in index


def render(page: Path, shot: Path, profile: Path) -> str:
    """The page's DOM after load (its self-check attributes), and a screenshot."""
    url = page.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
    subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--window-size=1280,6000",
                    f"--screenshot={shot}", url], capture_output=True, timeout=180)
    return re.search(r"<body([^>]*)>", dom).group(1)


@needs_chromium
def test_every_report_renders_in_headless_chromium(tour, large, tmp_path):
    out, _ = tour
    pages = {"tour-index": out / "index.html", "tour-gmm": out / "gmm" / "report.html",
             "tour-lda": out / "lda" / "report.html", "tour-vae": out / "vae" / "report.html",
             "large-gmm": large["dir"] / "gmm" / "report.html",
             "large-vae": large["dir"] / "vae" / "report.html"}
    BUILD.mkdir(exist_ok=True)
    with ThreadPoolExecutor(2) as pool:
        bodies = dict(zip(pages, pool.map(
            lambda item: render(item[1], BUILD / f"report-{item[0]}.png", tmp_path / item[0]),
            pages.items())))
    for name, page in pages.items():
        images = page.read_text().count("<img")
        assert name == "tour-index" or images >= 5, (name, images)
        assert f'data-images-loaded="{images}/{images}"' in bodies[name], (name, bodies[name])
        assert "data-errors" not in bodies[name], (name, bodies[name])
        shot = BUILD / f"report-{name}.png"
        assert shot.is_file() and shot.stat().st_size > 20_000, name


def test_every_figure_links_its_table(tour):
    out, _ = tour
    for name in ("gmm", "lda", "vae"):
        page = (out / name / "report.html").read_text()
        links = set(re.findall(r'href="report-data/([\w-]+\.csv)"', page))
        assert links and all((out / name / "report-data" / f).is_file() for f in links), name
        assert page.count("data (CSV)") >= page.count("<img") - 4  # image grids have no table


def test_index_lists_headline_figures(tmp_path):
    from elbokit.report import ReportInfo

    (tmp_path / "m").mkdir()
    info = ReportInfo(tmp_path / "m" / "report.html", "Gaussian mixture: K=3",
                      {"mean log p(x) (nats)": "-1.2345", "BIC": "678.9"})
    text = write_index(tmp_path / "index.html", [("gmm", info, "blobs")]).read_text()
    assert "href='m/report.html'" in text and ">-1.2345<" in text and ">678.9<" in text
