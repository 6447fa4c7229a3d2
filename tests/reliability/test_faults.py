"""Full and read-only disks, failing writes: found before a fit where they can be, never a
half-written file or a lost old version, always one clear error."""

import errno
import os
import resource
import signal

import numpy as np
import pytest

import elbokit
from elbokit import files
from elbokit.cli import main

from .conftest import fill, leftovers, run_in_child


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip()


@pytest.fixture
def data_npy(tmp_path, X):
    np.save(tmp_path / "x.npy", X)
    return tmp_path / "x.npy"


@pytest.fixture
def no_fit(monkeypatch):
    """Fail the test if a fit starts: the output must be checked before."""
    def fit(self, *args, **kwargs):
        raise AssertionError("the fit started before the output was checked")

    monkeypatch.setattr(elbokit.GaussianMixture, "fit", fit)


# ------------------------------------------------------------------ injected write errors
@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "file system is full"),
                                         (errno.EIO, "Input/output error"),
                                         (errno.EDQUOT, "quota")])
def test_a_write_error_keeps_the_old_model_and_leaves_nothing(gmms, tmp_path, monkeypatch, code, words):
    gmms[2].save(tmp_path / "m")

    def fail(step):
        if step == "written":
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(files, "_reached", fail)
    with pytest.raises(files.OutputWriteError, match=f"{words}.*left as it was"):
        gmms[3].save(tmp_path / "m", overwrite=True)
    with pytest.raises(files.OutputWriteError, match=words):
        files.write_bytes(tmp_path / "out.csv", "1\n")
    assert elbokit.load(tmp_path / "m").n_components == 2
    assert leftovers(tmp_path) == [] and not (tmp_path / "out.csv").exists()


def test_a_file_size_limit_hit_while_writing_keeps_the_old_model(gmms, X, tmp_path):
    """A real failing write(2) (RLIMIT_FSIZE: EFBIG) in a child process."""
    big = elbokit.GaussianMixture(3, covariance_type="full", max_iter=2, tol=1e9,
                                  random_state=0).fit(
        np.random.default_rng(1).normal(size=(400, 60)))
    gmms[2].save(tmp_path / "m")

    def save_under_a_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
        try:
            big.save(tmp_path / "m", overwrite=True)
        except files.OutputWriteError as err:
            assert "too large" in str(err) and "left as it was" in str(err)
            os._exit(7)

    status = run_in_child(save_under_a_limit)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 7
    assert elbokit.load(tmp_path / "m").n_components == 2 and leftovers(tmp_path) == []


# ------------------------------------------------------------------ a real full disk
def test_a_full_disk_is_found_before_the_fit(small_disk, data_npy, capsys, no_fit):
    fill(small_disk, leave=64 << 10)
    code, err = run_cli(["fit", "gmm", data_npy, "--out", small_disk / "m"], capsys)
    assert code == 2 and "file system is full" in err and "nothing was written" in err
    assert sorted(os.listdir(small_disk)) == ["filler"]


def test_a_disk_that_fills_up_while_writing_keeps_the_old_output(small_disk, gmms, tmp_path,
                                                                 capsys, monkeypatch):
    gmms[3].save(tmp_path / "m")
    code, _ = run_cli(["sample", tmp_path / "m", "-n", "10", "--out", small_disk / "s.npy"], capsys)
    assert code == 0
    before = np.load(small_disk / "s.npy")
    monkeypatch.setattr(files, "MIN_FREE_BYTES", 0)  # let the claim pass: the write must fail
    fill(small_disk, leave=32 << 10)
    code, err = run_cli(["sample", tmp_path / "m", "-n", "100000", "--out", small_disk / "s.npy",
                         "--force"], capsys)
    assert code == 1 and "file system is full" in err and "left as it was" in err
    np.testing.assert_array_equal(np.load(small_disk / "s.npy"), before)
    assert leftovers(small_disk) == []


def test_a_full_disk_under_a_model_keeps_the_old_model(small_disk, gmms, monkeypatch):
    gmms[2].save(small_disk / "m")
    big = elbokit.GaussianMixture(3, covariance_type="full", max_iter=2, tol=1e9,
                                  random_state=0).fit(
        np.random.default_rng(1).normal(size=(400, 120)))
    monkeypatch.setattr(files, "MIN_FREE_BYTES", 0)
    fill(small_disk, leave=200 << 10)
    with pytest.raises(files.OutputWriteError, match="file system is full"):
        big.save(small_disk / "m", overwrite=True)
    assert elbokit.load(small_disk / "m").n_components == 2 and leftovers(small_disk) == []


# ------------------------------------------------------------------ read-only places
def test_a_read_only_output_is_found_before_the_fit(readonly_dir, data_npy, capsys, no_fit):
    before = sorted(os.listdir(readonly_dir))
    code, err = run_cli(["fit", "gmm", data_npy, "--out", readonly_dir / "m"], capsys)
    assert code == 2 and ("read-only" in err or "permission denied" in err)
    assert sorted(os.listdir(readonly_dir)) == before


def test_saving_into_a_read_only_place_is_a_clear_error(readonly_dir, gmms):
    with pytest.raises(files.OutputError, match="read-only|permission denied"):
        gmms[2].save(readonly_dir / "m")
    with pytest.raises(files.OutputError, match="cannot create"):
        gmms[2].save(readonly_dir / "sub" / "m")
