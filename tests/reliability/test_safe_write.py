"""Nothing the user saved is lost: kills between the steps of a save, stale temporaries,
what an overwrite may replace, concurrent writers, the umask."""

import os
import signal

import numpy as np
import pytest

import elbokit
from elbokit import files, io

from .conftest import fork_child, kill_at, killed, leftovers, read_signal, run_in_child, wait_child


# ------------------------------------------------------------------ kills at every step
# (target existed?, swap by RENAME_EXCHANGE?, the step the process is killed at)
KILLS = [
    (False, True, "claimed"), (False, True, "written"),
    (True, True, "claimed"), (True, True, "written"), (True, True, "swapped"),
    (True, False, "claimed"), (True, False, "written"), (True, False, "aside"),
    (True, False, "swapped"),
]


@pytest.mark.parametrize("existing, exchange, step", KILLS)
def test_a_kill_at_any_step_of_a_save_leaves_the_old_or_the_new_model(
        gmms, X, tmp_path, existing, exchange, step):
    target = tmp_path / "m"
    if existing:
        gmms[2].save(target)

    def save_and_get_killed():
        files._reached = kill_at(step)
        if not exchange:
            files._exchange = lambda a, b: False
        gmms[3].save(target, overwrite=True)

    assert killed(run_in_child(save_and_get_killed))
    if not existing:  # nothing half-written appears at the target
        assert not os.path.lexists(target)
    else:  # the old model, or (once swapped) the new one, complete
        expected = 3 if step == "swapped" else 2
        if exchange or step != "aside":  # at this very instant, before any recovery
            assert os.path.isdir(target)
        back = elbokit.load(target)  # an interrupted fallback swap is undone here
        assert back.n_components == expected
        np.testing.assert_array_equal(back.predict(X), gmms[expected].predict(X))
    # the next save recognises what the killed one left and removes it
    gmms[3].save(target, overwrite=True)
    assert leftovers(tmp_path) == [] and elbokit.load(target).n_components == 3


def test_exchange_is_used_where_the_file_system_has_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x").write_text("a")
    if not files._exchange(tmp_path / "a", tmp_path / "b"):
        pytest.skip("no renameat2(RENAME_EXCHANGE) here: the fallback swap is tested above")
    assert (tmp_path / "b" / "x").read_text() == "a" and not (tmp_path / "a" / "x").exists()


def test_a_killed_writer_leaves_a_stale_lock_that_the_next_claim_takes(gmms, tmp_path):
    def claim_and_die():
        files._reached = kill_at("claimed")
        gmms[2].save(tmp_path / "m")

    assert killed(run_in_child(claim_and_die))
    assert leftovers(tmp_path) == [".m.elbokit-lock"]
    gmms[2].save(tmp_path / "m")
    assert leftovers(tmp_path) == []


def test_stale_temporaries_of_elbokit_0_1_are_recognised_and_only_they(gmms, tmp_path):
    (tmp_path / ".m.partial").write_bytes(b"half a file")
    old_tmp = tmp_path / ".m.k2j4_9az"  # tempfile.mkdtemp's name for a model in 0.1
    old_tmp.mkdir()
    (old_tmp / "model.safetensors").write_bytes(b"partial")
    mine = tmp_path / ".m.notes123"  # same pattern, but a user's directory
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    other = tmp_path / ".mm.elbokit-tmp-0000"  # another target's temporary
    other.mkdir()
    gmms[2].save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.notes123", ".mm.elbokit-tmp-0000", "m"]


def test_a_failed_save_leaves_nothing(gmms, tmp_path, monkeypatch):
    def fail(step):
        if step == "written":
            raise RuntimeError("interrupted")

    monkeypatch.setattr(files, "_reached", fail)
    with pytest.raises(RuntimeError):
        gmms[2].save(tmp_path / "deep" / "er" / "m")
    assert list(tmp_path.iterdir()) == []  # the parents it made went too


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_saved_files_respect_the_umask(gmms, tmp_path, umask, dir_mode, file_mode):
    old = os.umask(umask)
    try:
        gmms[2].save(tmp_path / "m")
        files.write_bytes(tmp_path / "out.csv", "1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == dir_mode
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "m" / f).stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == file_mode


# ------------------------------------------------------------------ what an overwrite may replace
def test_overwrite_never_replaces_a_directory_that_is_not_a_model(gmms, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    np.save(exp / "data.npy", np.ones((3, 2)))
    with pytest.raises(FileExistsError, match="not an elbokit model.*not even with overwrite=True"):
        gmms[2].save(exp, overwrite=True)
    assert np.load(exp / "data.npy").shape == (3, 2)


def test_overwrite_never_replaces_a_model_holding_files_elbokit_did_not_write(gmms, tmp_path):
    gmms[2].save(tmp_path / "m", extra_files={"metrics.json": "{}"})
    (tmp_path / "m" / "report.html").write_text("<html>")  # elbokit's own, written later
    gmms[3].save(tmp_path / "m", overwrite=True)
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"did not write \(notes.txt\)"):
        gmms[2].save(tmp_path / "m", overwrite=True)
    assert elbokit.load(tmp_path / "m").n_components == 3


def test_the_working_directory_and_the_inputs_are_never_replaced(gmms, X, tmp_path, monkeypatch):
    gmms[2].save(tmp_path / "m")
    monkeypatch.chdir(tmp_path / "m")
    for target in (".", tmp_path, tmp_path / "m"):
        with pytest.raises(FileExistsError, match="working directory"):
            gmms[3].save(target, overwrite=True)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "m" / "data.npy"
    np.save(data, X)
    with pytest.raises(FileExistsError, match="holds .*data.npy"):
        io.claim_model(tmp_path / "m", overwrite=True, protect=[data])
    with pytest.raises(FileExistsError, match="is .*x.csv"):
        files.claim(tmp_path / "x.csv", overwrite=True, protect=[tmp_path / "x.csv"])
    assert elbokit.load(tmp_path / "m").n_components == 2


@pytest.mark.parametrize("make", ["file", "symlink", "fifo"])
def test_a_model_path_holding_something_else_is_never_replaced(gmms, tmp_path, make):
    target = tmp_path / "m"
    if make == "file":
        target.write_text("data")
    elif make == "symlink":
        gmms[2].save(tmp_path / "real")
        target.symlink_to(tmp_path / "real")
    else:
        os.mkfifo(target)
    with pytest.raises(FileExistsError, match="not even with overwrite=True"):
        gmms[3].save(target, overwrite=True)
    assert os.path.lexists(target)


@pytest.mark.parametrize("make", ["dir", "fifo"])
def test_an_output_file_replaces_only_a_regular_file(tmp_path, make):
    target = tmp_path / "out.csv"
    target.mkdir() if make == "dir" else os.mkfifo(target)
    with pytest.raises(FileExistsError, match="not even with overwrite=True"):
        files.write_bytes(target, "1\n", overwrite=True)


# ------------------------------------------------------------------ concurrent writers
def test_two_writers_cannot_both_claim_a_target(gmms, tmp_path):
    tmp_path = tmp_path / "{odd} name"  # braces in paths do not upset the messages
    first = io.claim_model(tmp_path / "m")
    with pytest.raises(files.OutputBusyError) as err:
        io.claim_model(tmp_path / "m", overwrite=True)
    assert "overwrite=True does not override" in str(err.value)
    assert "--force does not override" in err.value.for_cli()
    gmms[2].save(first)  # the holder commits
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        gmms[3].save(tmp_path / "m")
    assert elbokit.load(tmp_path / "m").n_components == 2 and leftovers(tmp_path) == []


def test_a_writer_in_another_process_holds_its_claim_until_it_is_done(gmms, tmp_path):
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()

    def slow_writer():
        def reached(step):
            if step == "claimed":
                os.write(ready_w, b"1")
                os.read(go_r, 1)  # hold the claim until the parent has tried

        files._reached = reached
        gmms[2].save(tmp_path / "m")

    pid = fork_child(slow_writer)
    read_signal(ready_r, pid)
    busy = r"another elbokit process \(pid \d+, lock .*\.m\.elbokit-lock\)"
    with pytest.raises(files.OutputBusyError, match=busy):
        gmms[3].save(tmp_path / "m", overwrite=True)
    os.write(go_w, b"1")
    status = wait_child(pid, 120)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert elbokit.load(tmp_path / "m").n_components == 2 and leftovers(tmp_path) == []
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)


def test_a_claim_released_without_commit_leaves_nothing(tmp_path):
    with files.claim(tmp_path / "a" / "out.npy") as c:
        assert c.lock_path.exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError, match="claim it again"):
        c.commit(lambda tmp: None)


def test_signal_other_than_kill_during_a_commit_cleans_up(gmms, tmp_path):
    def interrupted():
        def reached(step):
            if step == "written":
                os.kill(os.getpid(), signal.SIGINT)  # KeyboardInterrupt in the child

        files._reached = reached
        gmms[3].save(tmp_path / "m")

    status = run_in_child(interrupted)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert list(tmp_path.iterdir()) == []
