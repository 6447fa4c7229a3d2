"""Shared tools of the reliability suite: real kills in forked children, small disks, hang guards.

Every case of issue 13 is reproduced here and asserts the fixed behaviour:
``test_safe_write`` (data loss: kills between the steps of a save, stale
temporaries, what an overwrite may replace, concurrent claims, umask),
``test_hostile_models`` (every malformed model is one ModelFormatError),
``test_faults`` (full and read-only disks, write errors), ``test_cli_paths``
(the command line's error paths and exit codes, FIFOs, CSV headers, IDX,
torchrun without a process group).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import traceback
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import elbokit
from elbokit.io import CONFIG_NAME, TENSORS_NAME


@pytest.fixture(scope="session")
def X():
    centres = np.repeat([[0, 0, 0], [6, 0, 0], [0, 6, 0]], 30, 0)
    return np.random.default_rng(0).normal(size=(90, 3)) + centres


@pytest.fixture(scope="session")
def gmms(X):
    """Small fitted mixtures with 2 and 3 components: the 'old' and the 'new' model."""
    return {k: elbokit.GaussianMixture(k, covariance_type="diag", max_iter=20, random_state=0).fit(X)
            for k in (2, 3)}


def leftovers(directory) -> list[str]:
    """Names elbokit's writes leave beside their target while they run (none when done)."""
    return sorted(n for n in os.listdir(directory) if ".elbokit-" in n or n.endswith(".partial"))


def fork_child(fn) -> int:
    """Fork a child that runs ``fn`` and exits (0, or 1 on an exception); its pid.

    The child first drops to one compute thread: a process forked after
    PyTorch's OpenMP pool has started hangs forever in its next parallel
    region (GNU libgomp is not fork-safe), which is what happened to the
    whole suite under CI's two threads while these tests passed alone.
    """
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            import torch

            torch.set_num_threads(1)
            fn()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


def run_in_child(fn, timeout: float = 60.0) -> int:
    """Run ``fn`` in a forked child; its wait status (a kill inside ``fn`` is a real SIGKILL)."""
    return wait_child(fork_child(fn), timeout)


def wait_child(pid: int, timeout: float) -> int:
    """The child's wait status; kills it and fails if it takes longer than ``timeout`` s."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the child process hung for {timeout} s")
        time.sleep(0.01)


def read_signal(fd: int, pid: int, timeout: float = 60.0) -> None:
    """Wait for one byte on ``fd`` from child ``pid``; kill it and fail after ``timeout`` s."""
    import select

    if not select.select([fd], [], [], timeout)[0]:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"the child process sent nothing for {timeout} s")
    os.read(fd, 1)


def killed(status: int) -> bool:
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def kill_at(step: str):
    """A replacement for elbokit.files._reached that SIGKILLs the process at ``step``."""
    def reached(s):
        if s == step:
            os.kill(os.getpid(), signal.SIGKILL)
    return reached


def rewrite(model_dir: Path, config_fn=None, tensors_fn=None) -> None:
    """Edit a saved model like an attacker would: change it, then recompute the checksum."""
    config = json.loads((model_dir / CONFIG_NAME).read_text())
    if tensors_fn is not None:  # changes the dict of tensors in place
        tensors = load_file(str(model_dir / TENSORS_NAME))
        tensors_fn(tensors)
        save_file(tensors, str(model_dir / TENSORS_NAME))
    if config_fn is not None:  # changes the config in place
        config_fn(config)
    config["tensors_sha256"] = hashlib.sha256((model_dir / TENSORS_NAME).read_bytes()).hexdigest()
    (model_dir / CONFIG_NAME).write_text(json.dumps(config))


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) if the test blocks for 30 s."""
    def on_alarm(signum, frame):
        raise TimeoutError("blocked for 30 s: a hang")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _mount_tmpfs(where: Path, size: str, readonly: bool = False) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system (tmpfs), where the machine lets us mount one; else skipped."""
    where = tmp_path / "disk"
    if not _mount_tmpfs(where, "4m"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount)")
    yield where
    _umount(where)


def fill(directory: Path, leave: int) -> None:
    """Fill the file system of ``directory`` until about ``leave`` bytes are free."""
    free = shutil.disk_usage(directory).free
    with open(directory / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


@pytest.fixture
def readonly_dir(tmp_path):
    """A directory nothing can be written into: read-only tmpfs as root, mode 0555 otherwise."""
    where = tmp_path / "ro"
    if os.geteuid() != 0:
        where.mkdir()
        (where / "keep.txt").write_text("keep")
        where.chmod(0o555)
        yield where
        where.chmod(0o755)
        return
    if not _mount_tmpfs(where, "1m", readonly=True):
        pytest.skip("running as root without mount: cannot make a read-only directory")
    yield where
    _umount(where)
