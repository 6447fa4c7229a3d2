"""The command line's options against the Python API: each gives what the API gives."""

import csv
import gzip
import json
import re
import warnings

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.datasets import load_digits, load_iris
from sklearn.preprocessing import StandardScaler

import elbokit
from elbokit._sweep import holdout_split
from elbokit.cli import cli, main


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_main(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.fixture(scope="module")
def iris_gz(tmp_path_factory):
    """iris as .csv.gz with a text target column."""
    path = tmp_path_factory.mktemp("iris") / "iris.csv.gz"
    data = load_iris()
    with gzip.open(path, "wt") as f:
        f.write("sl,sw,pl,pw,species\n")
        for x, t in zip(data.data, data.target):
            f.write(",".join(f"{v:.1f}" for v in x) + f",{data.target_names[t]}\n")
    return path, data.data, data.target_names[data.target]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("digits") / "d.npy"
    X = (load_digits().data[:240] / 16.0).astype(np.float32)
    np.save(path, X)
    return path, X


# ------------------------------------------------------------------ columns, scaling, .csv.gz
def test_columns_drop_standardize_and_csv_gz(iris_gz, tmp_path):
    path, X, species = iris_gz
    out = invoke("fit", "gmm", path, "--out", tmp_path / "m", "-k", "3", "--drop", "species",
                 "--standardize", "--dtype", "float64", "--seed", "2")
    assert "on 150 x 4" in out
    Z = StandardScaler().fit_transform(X)
    gm = elbokit.GaussianMixture(3, dtype="float64", random_state=2).fit(Z)
    saved = elbokit.load(tmp_path / "m")
    np.testing.assert_allclose(saved.means_, gm.means_, rtol=1e-6, atol=1e-8)
    # later commands read the raw file through the same columns and scaling
    invoke("predict", tmp_path / "m", path, "--out", tmp_path / "p.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), gm.predict(Z))
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["feature_names"] == ["sl", "sw", "pl", "pw"]
    # --columns by name, in the order given
    invoke("fit", "gmm", path, "--out", tmp_path / "m2", "-k", "2", "--columns", "pl,sl",
           "--dtype", "float64")
    np.testing.assert_allclose(elbokit.load(tmp_path / "m2").means_,
                               elbokit.GaussianMixture(2, dtype="float64", random_state=0)
                               .fit(X[:, [2, 0]]).means_, rtol=1e-6)


def test_column_errors_name_the_columns(iris_gz, tmp_path, capsys):
    path, _, _ = iris_gz
    code, _, err = run_main(["fit", "gmm", path, "--out", tmp_path / "m", "--columns", "petal"],
                            capsys)
    err = err.splitlines()[-1]  # after the note on the CSV header
    assert code == 2 and err.startswith("Error: --columns: no column 'petal'") and "sl, sw" in err
    code, _, err = run_main(["fit", "gmm", path, "--out", tmp_path / "m"], capsys)
    assert code == 2 and "'species'" in err and "--drop NAME" in err


# ------------------------------------------------------------------ select
def test_select_gmm_sweeps_types_and_saves_the_choice(iris_gz, tmp_path):
    path, X, _ = iris_gz
    out = invoke("select", "gmm", path, "--drop", "species", "--k", "2..3", "--covariance-type",
                 "diag,spherical", "--reg-covar", "1e-4", "--dtype", "float64", "--n-init", "1",
                 "--criterion", "bic", "--out", tmp_path / "best")
    rows = re.findall(r"^\s*(diag|spherical)\s+(\d)\s+(-?\d+\.\d)\s+(-?\d+\.\d)\s+(-?\d+\.\d+)",
                      out, re.M)
    assert len(rows) == 4
    train, test = holdout_split(len(X), 0.2, 0)
    # the CLI's sweep is elbokit.select's (shared starts, the best start per cell)
    sel = elbokit.select(X[train], [2, 3], ["diag", "spherical"], X_validation=X[test],
                         reg_covar=1e-4, dtype="float64", n_init=1, random_state=0, refit=False)
    api = {(r[1], r[2]): m for r, m in zip(sel.rows, sel.models)}
    for cov, k, bic, aic, held in rows:
        gm = api[(cov, int(k))]
        assert float(bic) == pytest.approx(gm.bic(X[train]), abs=0.06)
        assert float(held) == pytest.approx(gm.score(X[test]), abs=6e-5)
    best = min(rows, key=lambda r: float(r[2]))
    chosen = elbokit.load(tmp_path / "best")
    assert (chosen.covariance_type, chosen.n_components) == (best[0], int(best[1]))
    np.testing.assert_allclose(chosen.means_, sel.best_model.means_, rtol=1e-6, atol=1e-8)
    assert list(chosen.feature_names_in_) == ["sl", "sw", "pl", "pw"]  # as `fit gmm` keeps them
    # the report of the chosen model shows the sweep that chose it (and reads DATA by its names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        invoke("report", tmp_path / "best")
    header, table = _csv(tmp_path / "best" / "report-data" / "model-selection.csv")
    assert len(table) == 4 and "BIC" in header


def test_select_gmm_with_mclusts_prior_by_icl(iris_gz):
    path, X, _ = iris_gz
    out = invoke("select", "gmm", path, "--drop", "species", "--k", "1..3", "--prior", "default",
                 "--criterion", "icl", "--dtype", "float64", "--n-init", "1")
    assert "ICL" in out and re.search(r"chosen covariance_type = full, K = \d, prior = default", out)


def test_select_lda_by_heldout_perplexity(tmp_path):
    from elbokit.datasets import kjv_gospels

    docs = kjv_gospels()[:500]
    (tmp_path / "v.txt").write_text("\n".join(docs) + "\n")
    out = invoke("select", "lda", tmp_path / "v.txt", "--k", "2,4", "--max-iter", "10",
                 "--min-df", "3", "--out", tmp_path / "best")
    rows = dict((int(k), float(p)) for k, p in re.findall(r"^\s*(\d)\s+(\d+\.\d)\s", out, re.M))
    train, test = holdout_split(len(docs), 0.2, 0)
    corpus = elbokit.Corpus([docs[i] for i in train], min_df=3, max_df=0.5)
    for k, perplexity in rows.items():
        lda = elbokit.LDA(k, max_iter=10, random_state=0).fit(corpus)
        assert perplexity == pytest.approx(lda.perplexity([docs[i] for i in test]), abs=0.06)
    assert elbokit.load(tmp_path / "best").n_topics == min(rows, key=rows.get)


def test_select_vae_by_heldout_log_px(digits, tmp_path):
    path, X = digits
    out = invoke("select", "vae", path, "--latent-dim", "1,2", "--hidden", "16", "--epochs", "1",
                 "--n-samples", "8", "--out", tmp_path / "best")
    rows = dict((int(d), float(v)) for d, v in re.findall(r"^\s*(\d)\s+(-?\d+\.\d+)", out, re.M))
    assert set(rows) == {1, 2}
    train, test = holdout_split(len(X), 0.2, 0)
    for d, value in rows.items():
        vae = elbokit.VAE(d, hidden_sizes=(16,), epochs=1, random_state=0).fit(X[train])
        assert value == pytest.approx(vae.score(X[test], n_samples=8), abs=1e-3)
    assert elbokit.load(tmp_path / "best").latent_dim == max(rows, key=rows.get)


# ------------------------------------------------------------------ fit vae, score
def test_fit_vae_options_match_the_api_and_resume(digits, tmp_path):
    path, X = digits
    opts = ["--latent-dim", "2", "--architecture", "conv", "--beta", "0.5", "--kl-warmup", "2",
            "--patience", "5", "--batch-size", "64"]
    invoke("fit", "vae", path, "--out", tmp_path / "v2", "--epochs", "2", "--checkpoint-dir",
           tmp_path / "ck", *opts)
    assert (tmp_path / "ck" / "checkpoint.safetensors").is_file()
    invoke("fit", "vae", path, "--out", tmp_path / "v3", "--epochs", "3", "--resume", tmp_path / "ck",
           *opts)
    api = elbokit.VAE(2, architecture="conv", image_shape=(1, 8, 8), beta=0.5, kl_warmup=2,
                      patience=5, batch_size=64, epochs=3, random_state=0).fit(X)
    resumed = elbokit.load(tmp_path / "v3")
    assert resumed.image_shape == (1, 8, 8) or list(resumed.image_shape) == [1, 8, 8]
    np.testing.assert_allclose(resumed.history_["train"], api.history_["train"], rtol=1e-5)
    np.testing.assert_allclose(resumed.transform(X[:20]), api.transform(X[:20]), rtol=1e-4,
                               atol=1e-5)


def test_score_n_samples_and_its_misuse(digits, tmp_path, capsys):
    path, X = digits
    invoke("fit", "vae", path, "--out", tmp_path / "v", "--epochs", "1", "--hidden", "16")
    invoke("score", tmp_path / "v", path, "--out", tmp_path / "s.npy", "--n-samples", "7")
    vae = elbokit.load(tmp_path / "v")
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), vae.score_samples(X, n_samples=7),
                               rtol=1e-5)
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(40, 2)))
    invoke("fit", "gmm", tmp_path / "x.npy", "--out", tmp_path / "g")
    code, _, err = run_main(["score", tmp_path / "g", tmp_path / "x.npy", "--out",
                             tmp_path / "g.npy", "--n-samples", "5"], capsys)
    assert code == 2 and "--n-samples is for a VAE" in err


# ------------------------------------------------------------------ topics, messages
@pytest.fixture(scope="module")
def lda_model(tmp_path_factory):
    from elbokit.datasets import kjv_gospels

    tmp = tmp_path_factory.mktemp("lda")
    (tmp / "v.txt").write_text("\n".join(kjv_gospels()[:400]) + "\n")
    invoke("fit", "lda", tmp / "v.txt", "--out", tmp / "l", "-k", "3", "--max-iter", "5")
    return tmp


def test_fit_lda_init_reaches_the_estimator(lda_model, tmp_path):
    """--init batch on the gospels' verses (short documents, whose default is random
    topics) is LDA(init="batch"): the same topics from the same seed."""
    corpus = elbokit.Corpus((lda_model / "v.txt").read_text().splitlines(), min_df=2, max_df=0.5)
    invoke("fit", "lda", lda_model / "v.txt", "--out", tmp_path / "w", "-k", "3", "--max-iter",
           "5", "--init", "batch")
    fitted = elbokit.load(tmp_path / "w")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", elbokit.ConvergenceWarning)
        same = elbokit.LDA(3, init="batch", max_iter=5, random_state=0).fit(corpus)
        default = elbokit.LDA(3, max_iter=5, random_state=0).fit(corpus)
    np.testing.assert_allclose(fitted.components_, same.components_, rtol=1e-12)
    assert not np.allclose(fitted.components_, default.components_)


def test_topics_n_and_out(lda_model, tmp_path):
    out = invoke("topics", lda_model / "l", "-n", "4", "--out", tmp_path / "t.csv")
    lda = elbokit.load(lda_model / "l")
    assert out.splitlines()[0].split(": ")[1].split() == lda.top_words(4)[0]
    with open(tmp_path / "t.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and [r["word"] for r in rows[:4]] == lda.top_words(4)[0]
    vocab = list(lda.vocabulary_)
    for r in rows:
        assert float(r["p(word|topic)"]) == pytest.approx(
            lda.topic_word_[int(r["topic"]), vocab.index(r["word"])], rel=1e-12)


def test_messages_speak_cli(lda_model, tmp_path, capsys):
    code, _, err = run_main(["predict", lda_model / "l", lda_model / "v.txt", "--out",
                             tmp_path / "p.npy"], capsys)
    assert code == 2 and "elbokit transform" in err and err.startswith("Error: ")
    (tmp_path / "stop.txt").write_text("the and of\n")
    code, _, err = run_main(["fit", "lda", tmp_path / "stop.txt", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "--stop-words none" in err and "stop_words" not in err
    assert len(err.splitlines()) == 1
    (tmp_path / "d.jsonl").write_text('{"body": "a b c"}\n')
    code, _, err = run_main(["fit", "lda", tmp_path / "d.jsonl", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "--field" in err and "field=" not in err
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(size=(60, 2)))
    code, _, err = run_main(["fit", "gmm", tmp_path / "x.npy", "--out", tmp_path / "g", "-k", "3",
                             "--max-iter", "1", "--tol", "0"], capsys)
    warned = [line for line in err.splitlines() if "Warning" in line]
    assert code == 0 and len(warned) == 1 and ".py" not in err
    # scikit-learn's wording (its own test suite matches it), in CLI words
    assert warned[0].startswith("Warning: Best performing initialization did not converge.")
    assert "increase --max-iter, --tol" in warned[0] and "(EM ran --max-iter 1 iterations" in warned[0]
    assert "--tol 0.0" in warned[0] and "max_iter" not in warned[0] and "tol=" not in warned[0]


def test_report_labels_from_csv_for_lda_and_gmm(lda_model, iris_gz, tmp_path, capsys):
    n = len((lda_model / "v.txt").read_text().splitlines())
    (tmp_path / "books.csv").write_text("book\n" + "\n".join(["Matthew"] * (n // 2) + ["Mark"] * (n - n // 2)) + "\n")
    invoke("report", lda_model / "l", "--labels", tmp_path / "books.csv", "--out", tmp_path / "l.html",
           "--heldout", lda_model / "v.txt")
    assert "held-out perplexity (400 documents)" in (tmp_path / "l.html").read_text()
    header, rows = _csv(tmp_path / "l-data" / "topics-by-label.csv")
    assert [r[0] for r in rows] == ["Mark", "Matthew"]
    path, X, species = iris_gz
    invoke("fit", "gmm", path, "--out", tmp_path / "g", "-k", "3", "--drop", "species")
    invoke("report", tmp_path / "g", "--labels", f"{path}:species")
    header, rows = _csv(tmp_path / "g" / "report-data" / "clusters-vs-labels.csv")
    assert header[1:] == ["label setosa", "label versicolor", "label virginica"]
    assert sum(int(v) for r in rows for v in r[1:]) == 150
    # a model with its report, tables and preprocessing is elbokit's own: --force replaces it
    invoke("fit", "gmm", path, "--out", tmp_path / "g", "-k", "2", "--drop", "species",
           "--standardize", "--force")
    invoke("report", tmp_path / "g")
    (tmp_path / "few.csv").write_text("1\n2\n")
    code, _, err = run_main(["report", tmp_path / "g", "--labels", tmp_path / "few.csv", "--force"],
                            capsys)
    assert code == 2 and "2 entries but iris.csv.gz has 150 rows" in err


def _csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]
