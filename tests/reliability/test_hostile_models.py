"""Every malformed or forged model directory is one ModelFormatError naming the problem:
never a hang, a RuntimeError/KeyError/AttributeError/RecursionError/SafetensorError, or a
model that loads and predicts something wrong."""

import json
import math
import os
import shutil
import struct

import numpy as np
import pytest
import torch

import elbokit
from elbokit import ModelFormatError, io
from elbokit.io import CONFIG_NAME, TENSORS_NAME

from .conftest import rewrite


@pytest.fixture(scope="module")
def saved(tmp_path_factory, gmms):
    path = tmp_path_factory.mktemp("saved") / "m"
    gmms[2].save(path)
    return path


@pytest.fixture
def model(saved, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(saved, copy)
    return copy


def cfg(fn):
    return lambda d: rewrite(d, config_fn=fn)


def ten(fn):
    return lambda d: rewrite(d, tensors_fn=fn)


def replace_file(name, how):
    def damage(d):
        (d / name).unlink()
        if how == "fifo":
            os.mkfifo(d / name)
        elif how == "devzero":
            (d / name).symlink_to("/dev/zero")
        else:
            (d / name).mkdir()
    return damage


def edit_tensor(name, fn):
    def change(t):
        t[name] = fn(t[name])
    return ten(change)


def set_fitted(key, value):
    def change(c):
        c["fitted"][key] = value
    return cfg(change)


def set_param(key, value):
    def change(c):
        c["params"][key] = value
    return cfg(change)


def forged_header(d):
    """A safetensors header promising a tensor far larger than the file (checksum recomputed)."""
    header = json.dumps({"fitted.means_": {"dtype": "F64", "shape": [2**40, 3],
                                           "data_offsets": [0, 2**40 * 24]}}).encode()
    (d / TENSORS_NAME).write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 48)
    rewrite(d)


def truncated_tensors(d):
    raw = (d / TENSORS_NAME).read_bytes()
    (d / TENSORS_NAME).write_bytes(raw[: len(raw) // 2])
    rewrite(d)


DAMAGE = {
    # hostile files: regular files only, nothing blocks or reads forever
    "config.json is a FIFO": (replace_file(CONFIG_NAME, "fifo"), "FIFO"),
    "model.safetensors is a FIFO": (replace_file(TENSORS_NAME, "fifo"), "FIFO"),
    "config.json -> /dev/zero": (replace_file(CONFIG_NAME, "devzero"), "character device"),
    "model.safetensors -> /dev/zero": (replace_file(TENSORS_NAME, "devzero"), "character device"),
    "config.json is a directory": (replace_file(CONFIG_NAME, "dir"), "a directory"),
    "config 100k deep": (lambda d: (d / CONFIG_NAME).write_text("[" * 100_000 + "]" * 100_000),
                         "nested too deeply"),
    "config 200 deep inside params": (set_param("tol", json.loads("[" * 200 + "]" * 200)),
                                      "nested more than 64"),
    "config not UTF-8": (lambda d: (d / CONFIG_NAME).write_bytes(b"\xff\xfe{}"), "corrupted"),
    "config is a list": (lambda d: (d / CONFIG_NAME).write_text("[1, 2]"), "not an elbokit model"),
    "format_version true": (cfg(lambda c: c.update(format_version=True)), "format_version"),
    "no params": (cfg(lambda c: c.pop("params")), "'params'"),
    "params is a list": (cfg(lambda c: c.update(params=[1])), "'params'"),
    "fitted is a list": (cfg(lambda c: c.update(fitted=[1])), "'fitted'"),
    "no checksum": (lambda d: (d / CONFIG_NAME).write_text(json.dumps(
        {k: v for k, v in json.loads((d / CONFIG_NAME).read_text()).items()
         if k != "tensors_sha256"})), "'tensors_sha256'"),
    "tensor kind 'pickle'": (cfg(lambda c: c["tensor_kinds"].update({"fitted.means_": "pickle"})),
                             "tensor_kinds"),
    # forged files with a recomputed checksum
    "NaN means": (edit_tensor("fitted.means_", lambda t: t.fill_(math.nan)), "NaN"),
    "inf precisions": (edit_tensor("fitted.precisions_cholesky_", lambda t: t.fill_(math.inf)),
                       "NaN or inf"),
    "a row too many": (edit_tensor("fitted.means_", lambda t: torch.cat([t, t[:1]])), "shape"),
    "int64 means": (edit_tensor("fitted.means_", lambda t: t.long()), "dtype"),
    "weights not summing to 1": (edit_tensor("fitted.weights_", lambda t: t * 2), "sum to 1"),
    "negative variances": (edit_tensor("fitted.covariances_", lambda t: -t), "positive diagonal"),
    "n_components disagrees": (set_param("n_components", 3), "shape"),
    "n_features_in_ disagrees": (set_fitted("n_features_in_", 4), "shape"),
    "covariance_type disagrees": (set_param("covariance_type", "spherical"), "shape"),
    "covariance_type unknown": (set_param("covariance_type", "bogus"), "invalid hyperparameters"),
    "n_components not a number": (set_param("n_components", "two"), "invalid hyperparameters"),
    "fitted key 'predict'": (set_fitted("predict", 1), "'predict' is not one GaussianMixture declares"),
    "fitted key '__class__'": (set_fitted("__class__", "x"), "not one GaussianMixture declares"),
    "unknown hyperparameter": (set_param("evil", 1), "not a hyperparameter"),
    "means_ missing (not fitted yet)": (cfg(lambda c: c["fitted"].pop("means_")), "'means_' is missing"),
    "fitted is empty": (cfg(lambda c: c.update(fitted={})), "is missing"),
    "means_ as a JSON list": (set_fitted("means_", [[0.0] * 3] * 2), "must be an array"),
    "means_ points at weights_": (set_fitted("means_", {"__tensor__": "fitted.weights_"}), "refers to"),
    "an undescribed tensor": (ten(lambda t: t.update({"fitted.extra": torch.zeros(1)})),
                              "does not describe"),
    "n_iter_ a string": (set_fitted("n_iter_", "3"), "integer"),
    "n_iter_ negative": (set_fitted("n_iter_", -1), ">= 0"),
    "converged_ = 1": (set_fitted("converged_", 1), "true or false"),
    "lower_bound_ NaN": (set_fitted("lower_bound_", math.nan), "finite"),
    "safetensors header promises 2^40 rows": (forged_header, "cannot be read"),
    "safetensors truncated, checksum recomputed": (truncated_tensors, "cannot be read"),
    "checksum mismatch": (lambda d: (d / TENSORS_NAME).write_bytes(
        (d / TENSORS_NAME).read_bytes()[:-8] + b"\1" * 8), "does not match its checksum"),
    "no tensor file": (lambda d: (d / TENSORS_NAME).unlink(), "no model.safetensors"),
    "empty directory": (lambda d: [p.unlink() for p in d.iterdir()], "no config.json"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_or_forged_model_is_one_clear_error(case, model, no_hang):
    damage, match = DAMAGE[case]
    damage(model)
    with pytest.raises(ModelFormatError, match=match):
        elbokit.load(model)


def test_a_file_above_the_size_limit_is_refused_unread(model, monkeypatch):
    monkeypatch.setattr(io, "MAX_TENSOR_BYTES", 100)
    with pytest.raises(ModelFormatError, match="more than the 100"):
        elbokit.load(model)


def test_a_path_that_is_a_file_is_not_a_model(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelFormatError, match="not a model directory"):
        elbokit.load(tmp_path / "f")


# ------------------------------------------------------------------ LDA and VAE schemas
@pytest.fixture(scope="module")
def lda_dir(tmp_path_factory):
    from elbokit.datasets import kjv_gospels

    corpus = elbokit.Corpus(kjv_gospels()[:200], min_df=2)
    lda = elbokit.LDA(3, method="gibbs", max_iter=5, random_state=0).fit(corpus)
    path = tmp_path_factory.mktemp("lda") / "l"
    lda.save(path)
    return path


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    X = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    vae = elbokit.VAE(2, hidden_sizes=(8,), likelihood="gaussian", epochs=1, random_state=0).fit(X)
    path = tmp_path_factory.mktemp("vae") / "v"
    vae.save(path)
    return path


def _copy(src, tmp_path):
    shutil.copytree(src, tmp_path / src.name)
    return tmp_path / src.name


@pytest.mark.parametrize("damage, match", [
    (set_fitted("vocabulary_", ["a", "b"]), "entries; expected"),
    (set_fitted("vocabulary_", [1] * 3), "list of strings"),
    (set_param("n_topics", 4), "shape"),
    (edit_tensor("fitted.alpha_", lambda t: -t), "must be > 0"),
    (set_fitted("vectorizer_params_", {"__tensor__": "fitted.alpha_"}), "placeholders"),
])
def test_lda_models_are_checked_against_their_schema(lda_dir, tmp_path, damage, match):
    d = _copy(lda_dir, tmp_path)
    damage(d)
    with pytest.raises(ModelFormatError, match=match):
        elbokit.load(d)


@pytest.mark.parametrize("damage, match", [
    (set_param("hidden_sizes", [16]), "the hyperparameters say"),
    (set_param("latent_dim", 3), "the hyperparameters say"),
    (set_param("likelihood", "bernoulli"), "does not match the network"),
    (edit_tensor("fitted.state_dict_.encoder.net.0.weight", lambda t: t[:, :5].contiguous()),
     "has shape"),
    (edit_tensor("fitted.state_dict_.decoder.net.0.bias", lambda t: t.fill_(math.nan)), "NaN"),
    (set_fitted("history_", [1, 2]), "must be a dict"),
])
def test_vae_models_are_checked_against_the_network_their_config_describes(vae_dir, tmp_path,
                                                                          damage, match):
    d = _copy(vae_dir, tmp_path)
    damage(d)
    with pytest.raises(ModelFormatError, match=match):
        elbokit.load(d)


def test_every_registered_estimator_declares_every_fitted_attribute():
    for cls in io._REGISTRY.values():
        schema = io.schema_of(cls)
        assert set(cls._fitted_attributes) <= set(schema), cls.__name__
    with pytest.raises(TypeError, match="declares no schema for its fitted attribute"):
        @io.register
        class Undeclared(elbokit.GaussianMixture):
            _fitted_attributes = (*elbokit.GaussianMixture._fitted_attributes, "secret_")


@pytest.mark.parametrize("ct", ["full", "tied", "diag", "spherical"])
def test_every_valid_model_loads_and_predicts_the_same(X, tmp_path, ct):
    gm = elbokit.GaussianMixture(3, covariance_type=ct, random_state=0).fit(X)
    gm.save(tmp_path / "m")
    np.testing.assert_array_equal(elbokit.load(tmp_path / "m").score_samples(X), gm.score_samples(X))


def test_lda_and_vae_round_trip_through_the_validator(lda_dir, vae_dir):
    assert elbokit.load(lda_dir).vocabulary_ and elbokit.load(vae_dir).module_ is not None


def test_a_model_that_would_not_load_is_not_saved(gmms, tmp_path):
    import copy

    broken = copy.deepcopy(gmms[2])
    broken.means_ = np.full_like(broken.means_, np.nan)
    with pytest.raises(ValueError, match="cannot be saved, it would not load back.*NaN"):
        broken.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_vae_weights_files_are_read_safely_and_never_overwritten_silently(vae_dir, tmp_path, no_hang):
    vae = elbokit.load(vae_dir)
    vae.save_weights(tmp_path / "w.safetensors")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        vae.save_weights(tmp_path / "w.safetensors")
    vae.save_weights(tmp_path / "w.safetensors", overwrite=True)
    fresh = elbokit.VAE(2, hidden_sizes=(8,), likelihood="gaussian")
    assert set(fresh.load_weights(tmp_path / "w.safetensors", 6).state_dict_) == set(vae.state_dict_)
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "junk").write_bytes(b"junk")
    for bad, match in ((tmp_path / "fifo", "FIFO"), (tmp_path / "junk", "not a safetensors")):
        with pytest.raises(ModelFormatError, match=match):
            fresh.load_weights(bad, 6)


def test_a_warm_start_on_other_columns_is_a_clear_error(X):
    gm = elbokit.GaussianMixture(2, warm_start=True, random_state=0).fit(X)
    with pytest.raises(ValueError, match="has 4 features, but GaussianMixture is expecting 3"):
        gm.fit(np.hstack([X, X[:, :1]]))
