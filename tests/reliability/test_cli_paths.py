"""The command line's error paths: one line, the right exit code, nothing lost, no hang;
and the input cases of issue 13 (CSV headers, IDX headers, FIFOs, torchrun without a group)."""

import json
import os

import numpy as np
import pytest
import torch

import elbokit
from elbokit import files
from elbokit.cli import _replaceable_tour, _write_tour, main

from .conftest import fork_child, leftovers, read_signal, wait_child


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if not line.startswith("note:")]


@pytest.fixture
def csv(tmp_path, X):
    path = tmp_path / "x.csv"
    np.savetxt(path, X, delimiter=",", header="a,b,c", comments="", fmt="%.6f")
    return path


@pytest.fixture
def model_dir(tmp_path, csv, capsys):
    code, err = run_cli(["fit", "gmm", csv, "--out", tmp_path / "model", "-k", "3"], capsys)
    assert code == 0, err
    return tmp_path / "model"


# ------------------------------------------------------------------ FIFOs never block
@pytest.mark.parametrize("what", ["data", "labels"])
def test_report_does_not_hang_on_a_fifo_named_in_metrics(model_dir, tmp_path, capsys, no_hang, what):
    metrics = json.loads((model_dir / "metrics.json").read_text())
    os.mkfifo(tmp_path / "fifo")
    metrics[what] = str(tmp_path / "fifo")
    (model_dir / "metrics.json").write_text(json.dumps(metrics))
    code, err = run_cli(["report", model_dir], capsys)
    assert code == 2 and "is a FIFO" in err and len(error_lines(err)) == 1
    assert not (model_dir / "report.html").exists()


def test_report_does_not_hang_when_metrics_json_is_a_fifo(model_dir, capsys, no_hang):
    (model_dir / "metrics.json").unlink()
    os.mkfifo(model_dir / "metrics.json")
    code, err = run_cli(["report", model_dir], capsys)
    assert code == 2 and "FIFO" in err


def test_data_that_is_a_fifo_is_refused_without_blocking(tmp_path, capsys, no_hang):
    os.mkfifo(tmp_path / "x.csv")
    code, err = run_cli(["fit", "gmm", tmp_path / "x.csv", "--out", tmp_path / "m"], capsys)
    assert code == 2 and "FIFO" in err and not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="FIFO"):
        elbokit.GaussianMixture(2).fit(str(tmp_path / "x.csv"))


# ------------------------------------------------------------------ CSV headers
def test_a_csv_without_header_keeps_its_first_row_and_says_so(tmp_path, X, capsys):
    np.savetxt(tmp_path / "nh.csv", X, delimiter=",", fmt="%.6f")
    code, err = run_cli(["fit", "gmm", tmp_path / "nh.csv", "--out", tmp_path / "m"], capsys)
    assert code == 0 and "no header row (detected)" in err
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["n_samples"] == len(X)
    gm = elbokit.GaussianMixture(2, random_state=0).fit(str(tmp_path / "nh.csv"))
    assert gm.score_samples(str(tmp_path / "nh.csv")).shape == (len(X),)
    np.testing.assert_allclose(gm.score_samples(str(tmp_path / "nh.csv")),
                               gm.score_samples(np.loadtxt(tmp_path / "nh.csv", delimiter=",")),
                               rtol=1e-5)


def test_a_csv_with_header_says_its_first_row_holds_names(csv, tmp_path, X, capsys):
    code, err = run_cli(["fit", "gmm", csv, "--out", tmp_path / "m"], capsys)
    assert code == 0 and "the first row (a, b, c) is read as column names (detected)" in err
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["n_samples"] == len(X)


def test_the_header_can_be_stated_in_python(tmp_path):
    from elbokit.data.sources import TableSource, describe_header

    (tmp_path / "n.csv").write_text("1,2\n3,4\n")
    rows = [b for b, _ in TableSource(tmp_path / "n.csv", 10, torch.float64, torch.device("cpu"),
                                      header=True)]
    assert sum(len(b) for b in rows) == 1
    assert "read as column names (as told)" in describe_header(tmp_path / "n.csv", header=True)


# ------------------------------------------------------------------ IDX
def write_idx(path, header_dims, payload=b"", type_code=0x08):
    path.write_bytes(bytes([0, 0, type_code, len(header_dims)])
                     + np.array(header_dims, dtype=">u4").tobytes() + payload)


@pytest.mark.parametrize("dims, payload, match", [
    ([2**31, 2**31, 2**31], b"\0" * 16, "header promises"),   # the product overflows int64
    ([2, 2, 2], b"\0" * 16, "more data than its header"),
    ([5, 2, 2], b"\0" * 8, "truncated"),
])
def test_idx_headers_that_disagree_with_the_data_are_clear_errors(tmp_path, capsys, dims, payload,
                                                                  match):
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(path, dims, payload)
    code, err = run_cli(["fit", "vae", path, "--out", tmp_path / "v"], capsys)
    assert code == 2 and match in err and not (tmp_path / "v").exists()


def test_an_idx_header_cut_short_is_a_clear_error(tmp_path):
    from elbokit.data.idx import read_idx

    (tmp_path / "x-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ValueError, match="header ends early"):
        read_idx(tmp_path / "x-idx3-ubyte")


@pytest.mark.parametrize("name", ["idx.csv", "train-idx3.csv", "my_idx_data.csv"])
def test_a_csv_whose_name_contains_idx_is_read_as_csv(tmp_path, X, capsys, name):
    from elbokit.report import load_rows

    np.savetxt(tmp_path / name, X, delimiter=",", header="a,b,c", comments="", fmt="%.6f")
    np.testing.assert_allclose(load_rows(tmp_path / name), X, atol=1e-6)
    code, err = run_cli(["fit", "vae", tmp_path / name, "--out", tmp_path / "v", "--epochs", "1",
                         "--hidden", "4", "--likelihood", "gaussian"], capsys)
    assert code == 0, err


# ------------------------------------------------------------------ other error paths
def test_transform_of_an_empty_documents_file_is_a_clear_error(tmp_path, capsys):
    from elbokit.datasets import kjv_gospels

    lda = elbokit.LDA(2, method="gibbs", max_iter=3, random_state=0).fit(
        elbokit.Corpus(kjv_gospels()[:100], min_df=2))
    lda.save(tmp_path / "l")
    (tmp_path / "empty.txt").write_text("")
    code, err = run_cli(["transform", tmp_path / "l", tmp_path / "empty.txt", "--out",
                         tmp_path / "t.npy"], capsys)
    assert code == 2 and "no documents to read" in err and len(error_lines(err)) == 1
    assert not (tmp_path / "t.npy").exists() and leftovers(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_bad_input(csv, tmp_path, capsys):
    code, err = run_cli(["fit", "gmm", csv, "--out", tmp_path / "m", "--device", "cuda"], capsys)
    assert code == 2 and "CUDA device" in err and "--device cpu" in err  # in the command line's words
    assert not (tmp_path / "m").exists() and leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="CUDA"):
        elbokit.GaussianMixture(2, device="cuda:0").fit(np.ones((4, 2)))


@pytest.mark.parametrize("broken, code", [("input", 2), ("internal", 1)])
def test_debug_shows_the_traceback_but_keeps_the_exit_code(csv, tmp_path, capsys, monkeypatch,
                                                           broken, code):
    if broken == "input":
        args = ["fit", "gmm", tmp_path / "none.csv", "--out", tmp_path / "m"]
    else:
        def fail(self, *a, **k):
            raise RuntimeError("boom")

        monkeypatch.setattr(elbokit.GaussianMixture, "fit", fail)
        args = ["fit", "gmm", csv, "--out", tmp_path / "m"]
    plain, err = run_cli(args, capsys)
    debug, debug_err = run_cli(["--debug", *args], capsys)
    assert plain == debug == code
    assert "Traceback" not in err and ("Traceback" in debug_err or broken == "input")
    assert error_lines(err)[-1] == error_lines(debug_err)[-1]


# ------------------------------------------------------------------ what --force may replace
def test_force_never_deletes_the_directory_holding_the_input(tmp_path, X, capsys):
    exp = tmp_path / "exp"
    exp.mkdir()
    np.save(exp / "data.npy", X)
    code, err = run_cli(["fit", "gmm", exp / "data.npy", "--out", exp, "--force"], capsys)
    assert code == 2 and "--force" in err and "data.npy" in err
    np.testing.assert_array_equal(np.load(exp / "data.npy"), X)


def test_force_never_empties_the_working_directory(tmp_path, X, capsys, monkeypatch):
    np.save(tmp_path / "data.npy", X)
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(["fit", "gmm", "data.npy", "--out", ".", "--force"], capsys)
    assert code == 2 and "working directory" in err
    assert sorted(os.listdir(tmp_path)) == ["data.npy", "notes.txt"]


def test_an_output_never_replaces_its_own_input(model_dir, tmp_path, X, capsys):
    np.save(tmp_path / "d.npy", X)
    code, err = run_cli(["score", model_dir, tmp_path / "d.npy", "--out", tmp_path / "d.npy",
                         "--force"], capsys)
    assert code == 2 and "never replaces" in err
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), X)


def test_tour_force_replaces_tour_output_only(tmp_path, gmms, X, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    code, err = run_cli(["tour", "--out", other, "--force"], capsys)
    assert code == 2 and "not an elbokit tour" in err and (other / "keep.txt").exists()
    with files.claim(tmp_path / "tour", kind="dir", replaceable=_replaceable_tour) as claim:
        _write_tour(claim, {"gmm": (gmms[2], X, None)}, "blobs")
    assert _replaceable_tour(tmp_path / "tour") is None
    metrics = json.loads((tmp_path / "tour" / "gmm" / "metrics.json").read_text())
    assert metrics["data"] == str((tmp_path / "tour" / "gmm-data.npy").resolve())  # not the temporary
    (tmp_path / "tour" / "notes.txt").write_text("mine")
    assert "did not write (notes.txt)" in _replaceable_tour(tmp_path / "tour")


def test_tour_output_of_elbokit_0_1_is_recognised(tmp_path, gmms):
    old = tmp_path / "tour"
    old.mkdir()
    (old / "index.html").write_text("<html><head><title>elbokit tour</title></head></html>")
    np.save(old / "gmm-data.npy", np.ones(2))
    gmms[2].save(old / "gmm")
    assert _replaceable_tour(old) is None
    (old / "mine.npy").write_bytes(b"")
    assert "mine.npy" in _replaceable_tour(old)


# ------------------------------------------------------------------ concurrent runs
def test_concurrent_fits_to_one_out_cannot_both_succeed(csv, tmp_path, capsys):
    """A fit holding its --out (paused right after claiming it); a second fit to the same --out."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def first_run():
        def reached(step):
            if step == "claimed":
                os.write(ready_w, b"1")
                os.read(go_r, 1)

        files._reached = reached
        if main(["fit", "gmm", str(csv), "--out", str(tmp_path / "m"), "-k", "2"]) != 0:
            raise SystemExit(1)

    pid = fork_child(first_run)
    read_signal(ready_r, pid)
    code, err = run_cli(["fit", "gmm", csv, "--out", tmp_path / "m", "-k", "3", "--force"], capsys)
    assert code == 2 and "being written by another elbokit process" in err and "--force" in err
    assert "overwrite=True" not in err
    os.write(go_w, b"1")
    status = wait_child(pid, 120)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert elbokit.load(tmp_path / "m").n_components == 2  # the first run's model, complete
    code, err = run_cli(["fit", "gmm", csv, "--out", tmp_path / "m", "-k", "3"], capsys)
    assert code == 2 and "already exists" in err and "--force" in err
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


# ------------------------------------------------------------------ torchrun without a group
def test_fit_under_torchrun_without_a_process_group_refuses_to_fit_alone(X, monkeypatch, csv,
                                                                       tmp_path, capsys):
    from sklearn.datasets import load_digits

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="torch.distributed.init_process_group"):
        elbokit.GaussianMixture(2).fit(X)
    with pytest.raises(ValueError, match="init_process_group"):
        elbokit.LDA(2, max_iter=2).fit(np.ones((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="init_process_group"):
        elbokit.VAE(2, hidden_sizes=(4,), epochs=1, likelihood="gaussian").fit(
            load_digits().data[:20] / 16)
    assert elbokit.GaussianMixture(2, distributed=False, random_state=0).fit(X).converged_
    code, err = run_cli(["fit", "gmm", csv, "--out", tmp_path / "m", "--no-distributed"], capsys)
    assert code == 0, err
