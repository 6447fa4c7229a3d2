"""The VAE's faults (issue 13): torn checkpoints, divergence, impossible networks, wrong resumes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from safetensors import safe_open
from sklearn.datasets import load_digits

from elbokit import VAE
from elbokit.inference import amortized
from elbokit.inference.amortized import TrainState, TrainingDivergedError


@pytest.fixture(scope="module")
def digits():
    return (load_digits().data / 16.0).astype(np.float32)[:400]


def small(**kw):
    base = dict(latent_dim=3, hidden_sizes=(32,), epochs=3, batch_size=64, random_state=0,
                likelihood="continuous_bernoulli")
    base.update(kw)
    return VAE(**base)


def _epoch_of(ckpt) -> int:
    with safe_open(str(ckpt / "checkpoint.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["elbokit-checkpoint"])["epoch"]


# ------------------------------------------------------------------ checkpoints
KILLED_FIT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from sklearn.datasets import load_digits
    from elbokit import VAE, files

    written = []
    def reached(step):  # the second checkpoint: killed once its file is written, before the swap
        if step == "written":
            written.append(step)
            if len(written) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
    files._reached = reached
    X = (load_digits().data / 16.0).astype(np.float32)[:400]
    VAE(3, hidden_sizes=(32,), epochs=3, batch_size=64, random_state=0,
        likelihood="continuous_bernoulli", checkpoint_dir=sys.argv[1]).fit(X)
""")


def _temporaries(ckpt):
    return [p for p in ckpt.iterdir() if ".elbokit-tmp-" in p.name]


def test_a_kill_during_a_checkpoint_leaves_the_previous_one_whole(digits, tmp_path):
    """Weights, counter and history are one file replaced by one rename: a kill between the
    write and the rename leaves epoch 1's checkpoint, which resumes to the uninterrupted run."""
    ckpt = tmp_path / "ckpt"
    run = subprocess.run([sys.executable, "-c", KILLED_FIT, str(ckpt)], capture_output=True,
                         timeout=120)
    assert run.returncode == -9, run.stderr.decode()[-2000:]
    assert _epoch_of(ckpt) == 1
    assert _temporaries(ckpt)  # the killed write's temporary file ...
    resumed = small(checkpoint_dir=str(ckpt)).fit(digits, resume=ckpt)
    assert not _temporaries(ckpt)  # ... is removed by the next write
    assert _epoch_of(ckpt) == 3
    full = small().fit(digits)
    for k, v in full.state_dict_.items():
        torch.testing.assert_close(resumed.state_dict_[k], v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed.lower_bounds_, full.lower_bounds_, rtol=1e-6)


def test_a_truncated_checkpoint_is_a_clear_error(digits, tmp_path):
    small(epochs=1, checkpoint_dir=str(tmp_path)).fit(digits)
    file = tmp_path / "checkpoint.safetensors"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        small().fit(digits, resume=tmp_path)


def test_an_old_two_file_checkpoint_is_not_resumed(digits, tmp_path):
    (tmp_path / "checkpoint.json").write_text("{}")
    with pytest.raises(ValueError, match="older elbokit"):
        small().fit(digits, resume=tmp_path)
    with pytest.raises(ValueError, match="holds no checkpoint"):
        small().fit(digits, resume=tmp_path / "nothing")


@pytest.mark.parametrize("other, match", [
    (dict(hidden_sizes=(16,)), "hidden_sizes=\\[32\\] there, \\[16\\] here"),
    (dict(latent_dim=4), "latent_dim=3 there, 4 here"),
    (dict(likelihood="gaussian"), "likelihood='continuous_bernoulli' there"),
    (dict(prior="mog", prior_components=2), "prior='normal' there, 'mog' here"),
])
def test_resume_from_another_architecture_is_a_clear_error(other, match, digits, tmp_path):
    small(epochs=1, checkpoint_dir=str(tmp_path)).fit(digits)
    with pytest.raises(ValueError, match=match):
        small(**other).fit(digits, resume=tmp_path)


def test_resume_with_other_networks_of_the_same_settings_is_a_clear_error(digits, tmp_path):
    """Own modules: the fingerprint says "custom"; the tensor shapes catch the difference."""
    mods = lambda h: dict(encoder=torch.nn.Sequential(torch.nn.Linear(64, h), torch.nn.ReLU(),
                                                      torch.nn.Linear(h, 6)),
                          decoder=torch.nn.Linear(3, 64))
    small(epochs=1, checkpoint_dir=str(tmp_path), **mods(8)).fit(digits)
    with pytest.raises(ValueError, match="another architecture \\(encoder.net.0.weight"):
        small(**mods(9)).fit(digits, resume=tmp_path)


# ------------------------------------------------------------------ divergence
@pytest.mark.parametrize("lr", [10.0, 1e4])
def test_divergence_stops_with_a_clear_message(lr, digits):
    with pytest.raises(TrainingDivergedError, match=f"lower lr \\(now {lr:g}"):
        small(lr=lr, epochs=20, binarize="dynamic", likelihood="bernoulli").fit(digits)


def test_divergence_test_on_the_bound_and_the_gradients():
    state = TrainState(epoch=3, start_bound=-50.0, start_grad=2.0)
    amortized._check_divergence(state, -40.0, 3.0, 1e-3, 64)  # healthy: no error
    amortized._check_divergence(state, -170.0, 3.0, 1e-3, 64)  # worse, not far below
    with pytest.raises(TrainingDivergedError, match="far below its start"):
        amortized._check_divergence(state, -1e4, 3.0, 1e-3, 64)
    with pytest.raises(TrainingDivergedError, match="gradient norm grew to 1e\\+05"):
        amortized._check_divergence(state, -40.0, 1e5, 1e-3, 64)
    with pytest.raises(TrainingDivergedError, match="became nan"):
        amortized._check_divergence(state, float("nan"), 3.0, 1e-3, 64)


def test_a_healthy_run_is_not_stopped(digits):
    vae = small(lr=3e-3, epochs=5).fit(digits)
    assert vae.n_epochs_ == 5


# ------------------------------------------------------------------ impossible networks
@pytest.mark.parametrize("hidden", [(0,), (64, -3), (32, 1.5), "big"])
def test_hidden_sizes_must_be_positive(hidden, digits):
    with pytest.raises(ValueError, match="hidden_sizes"):
        small(hidden_sizes=hidden).fit(digits)


def test_conv_image_shape_must_match_the_features(digits):
    with pytest.raises(ValueError, match="image_shape=\\(1, 28, 28\\) holds 784 values, but X "
                                         "has 64 features"):
        small(architecture="conv", image_shape=(1, 28, 28)).fit(digits)
    with pytest.raises(ValueError, match="divisible by 4"):
        small(architecture="conv", image_shape=(1, 6, 6)).fit(digits)
    with pytest.raises(ValueError, match="needs image_shape"):
        small(architecture="conv").fit(digits)


def test_checkpoints_respect_the_umask(digits, tmp_path):
    old = os.umask(0o022)
    try:
        small(epochs=1, checkpoint_dir=str(tmp_path / "c")).fit(digits)
    finally:
        os.umask(old)
    assert (tmp_path / "c" / "checkpoint.safetensors").stat().st_mode & 0o777 == 0o644
