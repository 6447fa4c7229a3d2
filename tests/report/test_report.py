"""The HTML report renders in a real browser: every image loads, no script errors."""

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from elbokit import GaussianMixture
from elbokit.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BUILD = Path(__file__).resolve().parents[2] / "build"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory, ):
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    tmp = tmp_path_factory.mktemp("report")
    X = StandardScaler().fit_transform(load_wine().data)
    np.save(tmp / "wine.npy", X)
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(X)
    gm.save(tmp / "model", extra_files={"metrics.json": f'{{"data": "{tmp / "wine.npy"}"}}'})
    return write_report(tmp / "model")


def test_report_embeds_every_plot(report):
    html = report.read_text()
    assert html.count("<img") == 4 and html.count("data:image/png;base64,") == 4
    assert "KL gap is 0" in html and "flagged" in html


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    url = report.resolve().as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([CHROMIUM, *FLAGS, *profile, "--virtual-time-budget=5000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-images-loaded="4/4"' in body, body
    assert "data-errors" not in body, body
    BUILD.mkdir(exist_ok=True)
    shot = BUILD / "report-screenshot.png"
    subprocess.run([CHROMIUM, *FLAGS, *profile, "--window-size=1200,2400",
                    f"--screenshot={shot}", url], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_every_tour_report_renders(tmp_path):
    from click.testing import CliRunner

    from elbokit.cli import cli

    result = CliRunner().invoke(cli, ["tour", "--n-init", "1", "--vae-epochs", "2", "--out",
                                      str(tmp_path / "tour")])
    assert result.exit_code == 0, result.output
    index = (tmp_path / "tour" / "index.html").read_text()
    for name, images in (("gmm", 4), ("lda", 3), ("vae", 6)):
        assert f'href="{name}/report.html"' in index
        page = tmp_path / "tour" / name / "report.html"
        dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / name}",
                              "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        body = re.search(r"<body([^>]*)>", dom).group(1)
        assert f'data-images-loaded="{images}/{images}"' in body, (name, body)
        assert "data-errors" not in body
