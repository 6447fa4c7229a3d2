"""The elbokit command: every subcommand through click's runner, on small real data."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_iris

import elbokit
from elbokit.cli import cli, main


@pytest.fixture
def iris_csv(tmp_path):
    X = load_iris().data
    path = tmp_path / "iris.csv"
    np.savetxt(path, X, delimiter=",", header="sl,sw,pl,pw", comments="", fmt="%.2f")
    return path, np.loadtxt(path, delimiter=",", skiprows=1)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def fitted(iris_csv, tmp_path):
    path, _ = iris_csv
    result = invoke("fit", "gmm", path, "--out", tmp_path / "model", "-k", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    return tmp_path / "model"


def test_fit_saves_a_loadable_model_and_metrics(fitted, iris_csv):
    _, X = iris_csv
    metrics = json.loads((fitted / "metrics.json").read_text())
    gm = elbokit.load(fitted)
    assert metrics["n_samples"] == 150 and metrics["n_features"] == 4
    np.testing.assert_allclose(metrics["lower_bounds"], gm.lower_bounds_)
    assert metrics["log_likelihood_per_sample"] == pytest.approx(gm.score(X), rel=1e-5)
    assert metrics["fit_seconds"] > 0


@pytest.mark.parametrize("ext", [".csv", ".npy", ".parquet"])
def test_predict_score_transform_match_the_python_api(fitted, iris_csv, tmp_path, ext):
    path, X = iris_csv
    gm = elbokit.load(fitted)
    for command, method, extra in [("predict", gm.predict, []),
                                   ("predict", gm.predict_proba, ["--proba"]),
                                   ("score", gm.score_samples, []),
                                   ("transform", gm.predict_proba, [])]:
        out = tmp_path / f"{command}{len(extra)}{ext}"
        result = invoke(command, fitted, path, "--out", out, *extra)
        assert result.exit_code == 0, result.output
        got = read(out)
        np.testing.assert_allclose(got.reshape(np.asarray(method(X)).shape), method(X), rtol=1e-5, atol=1e-6)


def read(path):
    if path.suffix == ".npy":
        return np.load(path)
    if path.suffix == ".csv":
        return np.loadtxt(path, delimiter=",", skiprows=1)
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return np.stack([c.to_numpy() for c in table.columns], 1).squeeze()


def test_sample_writes_draws_and_components(fitted, tmp_path):
    result = invoke("sample", fitted, "--out", tmp_path / "s.csv", "-n", "50", "--seed", "3")
    assert result.exit_code == 0, result.output
    s = read(tmp_path / "s.csv")
    assert s.shape == (50, 5) and set(np.unique(s[:, -1])) <= {0, 1, 2}


def test_outputs_and_models_are_never_overwritten_without_force(fitted, iris_csv, tmp_path):
    path, _ = iris_csv
    out = tmp_path / "labels.csv"
    out.write_text("precious")
    result = CliRunner().invoke(cli, ["predict", str(fitted), str(path), "--out", str(out)])
    assert result.exit_code == 2 and "--force" in result.output
    assert out.read_text() == "precious"
    before = (fitted / "config.json").read_text()
    result = CliRunner().invoke(cli, ["fit", "gmm", str(path), "--out", str(fitted)])
    assert result.exit_code == 2 and (fitted / "config.json").read_text() == before
    assert invoke("predict", fitted, path, "--out", out, "--force").exit_code == 0


def test_select_reports_a_table_and_a_choice(iris_csv):
    path, _ = iris_csv
    result = invoke("select", "gmm", path, "--k", "1..4", "--n-init", "1")
    assert result.exit_code == 0, result.output
    assert len(re.findall(r"^\s*full\s+\d+\s+-?\d+\.\d\s+-?\d+\.\d\s+-?\d+\.\d+", result.output,
                          re.M)) == 4
    chosen = int(re.search(r"chosen covariance_type = full, K = (\d+)", result.output).group(1))
    assert 2 <= chosen <= 4  # iris: 3 species, two of them overlapping


def test_report_is_written(fitted):
    result = invoke("report", fitted)
    assert result.exit_code == 0, result.output
    html = (fitted / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 6  # bound, clusters, profiles, BIC/AIC, silhouette, log p(x)


def test_topics_refuses_a_mixture(fitted):
    result = CliRunner().invoke(cli, ["topics", str(fitted)])
    assert result.exit_code == 2 and "not a topic model" in result.output


def test_tour_reports_bounds_clusters_and_agreement(tour):
    out, output = tour
    bounds = [float(b) for b in re.findall(r"iteration\s+\d+\s+bound\s+(-?\d+\.\d+)", output)]
    assert 2 <= len(bounds) <= 8  # the kept restart only, not every iteration of every restart
    assert output.count("iteration   1 ") == 1
    ari = float(re.search(r"adjusted Rand index (\d\.\d+)", output).group(1))
    assert ari > 0.8  # the wine cultivars are recovered
    assert "importance-sampled log p(x)" in output
    assert "held-out perplexity" in output and "topic 7:" in output
    assert re.search(r"The tour took \d+ s", output)
    for name in ("gmm", "lda", "vae"):
        assert (out / name / "report.html").is_file()
    assert "href='vae/report.html'" in (out / "index.html").read_text()


# ------------------------------------------------------------------ bad input: one line, exit 2
def run_main(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err.strip()


def test_missing_file(capsys, tmp_path):
    code, err = run_main(["fit", "gmm", tmp_path / "none.csv", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "no data file" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_wrong_format(capsys, tmp_path):
    (tmp_path / "x.txt").write_text("1,2\n")
    code, err = run_main(["fit", "gmm", tmp_path / "x.txt", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "unknown data format" in err


def test_non_numeric_cell_names_row_and_column(capsys, tmp_path):
    rows = "\n".join(f"{i},{i * 2}" for i in range(3000))
    (tmp_path / "x.csv").write_text("a,b\n" + rows + "\n7,oops\n")
    code, err = run_main(["fit", "gmm", tmp_path / "x.csv", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "row 3001, column 'b'" in err and "'oops'" in err
    assert "first row (a, b) is read as column names" in err  # what was assumed, said
    assert len([line for line in err.splitlines() if not line.startswith("note:")]) == 1
    assert "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_not_a_model_directory(capsys, tmp_path, iris_csv):
    path, _ = iris_csv
    code, err = run_main(["predict", tmp_path, path, "--out", tmp_path / "o.csv"], capsys)
    assert code == 2 and "config.json" in err
    assert not (tmp_path / "o.csv").exists()


def test_bad_option_is_a_usage_error(capsys, iris_csv, tmp_path):
    path, _ = iris_csv
    code, _ = run_main(["fit", "gmm", path, "--out", tmp_path / "m", "--covariance-type", "x"], capsys)
    assert code == 2
    code, err = run_main(["select", "gmm", path, "--k", "abc"], capsys)
    assert code == 2 and "--k" in err


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path, capsys):
    code, err = run_main(["--debug", "report", tmp_path / "nothing"], capsys)
    assert code == 2 and "Traceback" in err and "ModelFormatError" in err
    assert err.splitlines()[-1].startswith("Error: ")


def test_help_on_every_subcommand():
    for args in ([], ["fit"], ["fit", "gmm"], ["predict"], ["transform"], ["score"], ["sample"],
                 ["topics"], ["select", "gmm"], ["select", "lda"], ["select", "vae"], ["report"],
                 ["tour"]):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output


def test_vae_fit_transform_score_sample_report(tmp_path):
    from sklearn.datasets import load_digits

    X = (load_digits().data[:300] / 16.0).astype(np.float32)
    np.save(tmp_path / "d.npy", X)
    result = invoke("fit", "vae", tmp_path / "d.npy", "--out", tmp_path / "v", "--epochs", "2",
                    "--hidden", "32", "--latent-dim", "3")
    assert result.exit_code == 0, result.output
    vae = elbokit.load(tmp_path / "v")
    assert invoke("transform", tmp_path / "v", tmp_path / "d.npy", "--out", tmp_path / "z.npy").exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), vae.transform(X), rtol=1e-5, atol=1e-6)
    assert invoke("score", tmp_path / "v", tmp_path / "d.npy", "--out", tmp_path / "s.npy").exit_code == 0
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), vae.score_samples(X), rtol=1e-4)
    assert invoke("sample", tmp_path / "v", "--out", tmp_path / "x.npy", "-n", "4").exit_code == 0
    assert np.load(tmp_path / "x.npy").shape == (4, 64)
    assert invoke("report", tmp_path / "v").exit_code == 0
    assert (tmp_path / "v" / "report.html").read_text().count("data:image/png") == 9


def test_lda_fit_topics_transform_report(tmp_path):
    from elbokit.datasets import kjv_gospels

    (tmp_path / "verses.txt").write_text("\n".join(kjv_gospels()[:800]) + "\n")
    result = invoke("fit", "lda", tmp_path / "verses.txt", "--out", tmp_path / "l", "-k", "4",
                    "--method", "gibbs", "--max-iter", "20")
    assert result.exit_code == 0, result.output
    lda = elbokit.load(tmp_path / "l")
    result = invoke("topics", tmp_path / "l")
    assert result.exit_code == 0 and result.output.count("topic") == 4
    assert result.output.splitlines()[0].split(": ")[1].split() == lda.top_words(10)[0]
    assert invoke("transform", tmp_path / "l", tmp_path / "verses.txt", "--out",
                  tmp_path / "t.npy").exit_code == 0
    theta = np.load(tmp_path / "t.npy")
    assert theta.shape == (800, 4)
    np.testing.assert_allclose(theta.sum(1), 1.0, rtol=1e-4)
    assert invoke("report", tmp_path / "l").exit_code == 0
    assert (tmp_path / "l" / "report.html").read_text().count("data:image/png") == 5


def test_lda_reads_text_in_the_encoding_asked_for(capsys, tmp_path, fitted):
    """A latin-1 file: a one-line error naming it and the flag, then --encoding reads it;
    transform and report read as the fit did, another --encoding or --decode-error
    overrides; the text flags are refused for a model that reads no text."""
    from elbokit.datasets import kjv_gospels

    folder = tmp_path / "texts"
    folder.mkdir()
    verses = kjv_gospels()[:300]
    for i in range(30):
        extra = " naïve" if i % 3 == 0 else ""  # in a third of the documents: kept
        (folder / f"{i:02d}.txt").write_text(" ".join(verses[10 * i:10 * i + 10]) + extra,
                                             encoding="latin-1")
    code, err = run_main(["fit", "lda", folder, "--out", tmp_path / "m", "-k", "3"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "00.txt is not utf-8 text" in err and "--encoding latin-1" in err
    assert "--decode-error replace" in err and not (tmp_path / "m").exists()
    result = invoke("fit", "lda", folder, "--out", tmp_path / "m", "-k", "3", "--max-iter", "20",
                    "--encoding", "latin-1")
    assert result.exit_code == 0, result.output
    assert "naïve" in elbokit.load(tmp_path / "m").vocabulary_
    # transform and report read as the fit did (its settings are in metrics.json) ...
    result = invoke("transform", tmp_path / "m", folder, "--out", tmp_path / "t.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "t.npy").shape == (30, 3)
    assert invoke("report", tmp_path / "m").exit_code == 0
    # ... unless told otherwise
    code, err = run_main(["transform", tmp_path / "m", folder, "--out", tmp_path / "u.npy",
                          "--encoding", "utf-8"], capsys)
    assert code == 2 and "is not utf-8 text" in err
    result = invoke("score", tmp_path / "m", folder, "--out", tmp_path / "s.npy",
                    "--encoding", "utf-8", "--decode-error", "replace")
    assert result.exit_code == 0, result.output
    code, err = run_main(["transform", fitted, folder, "--out", tmp_path / "g.npy",
                          "--encoding", "latin-1"], capsys)
    assert code == 2 and "read text documents (LDA models)" in err
    assert invoke("report", tmp_path / "m", "--data", folder, "--encoding", "latin-1",
                  "--force").exit_code == 0
    code, err = run_main(["report", fitted, "--encoding", "latin-1"], capsys)
    assert code == 2 and "read text documents (LDA models)" in err


def test_empty_corpus_is_a_clear_error(capsys, tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    code, err = run_main(["fit", "lda", tmp_path / "empty.txt", "--out", tmp_path / "m"], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_fit_under_torchrun_shards_and_saves_once(iris_csv, tmp_path):
    import shutil
    import subprocess
    import sys

    torchrun = shutil.which("torchrun", path=str(__import__("pathlib").Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this Python")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path, X = iris_csv
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(port),
         "-m", "elbokit.cli", "fit", "gmm", str(path), "--out", str(tmp_path / "m"), "-k", "3",
         "--dtype", "float64"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "terminate called" not in proc.stderr  # the process group is closed before exit
    assert proc.stdout.count("saved to") == 1  # rank 0 alone writes
    gm = elbokit.load(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["n_samples"] == 150
    assert gm.score(X) == pytest.approx(gm.lower_bound_, rel=1e-6)  # the bound is global
