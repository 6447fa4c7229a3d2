"""Save / load: safetensors + JSON, never pickle; corrupted or foreign files are clear errors."""

import json

import numpy as np
import pytest
import torch

import elbokit
from elbokit import GaussianMixture, ModelFormatError
from elbokit.io import CONFIG_NAME, TENSORS_NAME

from .conftest import COVARIANCE_TYPES


@pytest.fixture
def fitted(blobs):
    return GaussianMixture(3, covariance_type="full", random_state=0).fit(blobs)


@pytest.mark.parametrize("ct", COVARIANCE_TYPES)
def test_round_trip_reproduces_predictions(ct, blobs, tmp_path):
    gm = GaussianMixture(3, covariance_type=ct, random_state=0,
                         means_init=blobs[:3]).fit(blobs)
    gm.save(tmp_path / "m")
    back = elbokit.load(tmp_path / "m")
    assert type(back) is GaussianMixture
    assert back.get_params()["covariance_type"] == ct
    np.testing.assert_array_equal(back.means_init, blobs[:3])
    np.testing.assert_array_equal(back.predict(blobs), gm.predict(blobs))
    np.testing.assert_array_equal(back.score_samples(blobs), gm.score_samples(blobs))
    np.testing.assert_array_equal(back.lower_bounds_, gm.lower_bounds_)
    assert back.converged_ == gm.converged_ and back.n_iter_ == gm.n_iter_


def test_torch_fitted_model_comes_back_as_tensors(blobs, tmp_path):
    gm = GaussianMixture(2, random_state=0).fit(torch.as_tensor(blobs))
    gm.save(tmp_path / "m")
    back = elbokit.load(tmp_path / "m")
    assert isinstance(back.means_, torch.Tensor)
    torch.testing.assert_close(back.means_, gm.means_)


def test_files_are_safetensors_and_json_only(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [CONFIG_NAME, TENSORS_NAME]
    config = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert config["format"] == "elbokit-model" and config["estimator"] == "GaussianMixture"


def test_existing_directory_is_never_overwritten_silently(fitted, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fitted.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="not an elbokit model"):  # only models are replaced
        fitted.save(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "precious.txt").read_text() == "keep me"
    fitted.save(tmp_path / "m2")
    GaussianMixture(2, random_state=0).fit(fitted.means_).save(tmp_path / "m2", overwrite=True)
    assert elbokit.load(tmp_path / "m2").n_components == 2


def test_truncated_tensor_file_is_a_clear_error(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    f = tmp_path / "m" / TENSORS_NAME
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ModelFormatError, match="truncated or corrupted"):
        elbokit.load(tmp_path / "m")


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / CONFIG_NAME).write_text("{not json"), "corrupted"),
    (lambda d: (d / CONFIG_NAME).unlink(), "no config.json"),
    (lambda d: (d / TENSORS_NAME).unlink(), "no model.safetensors"),
    (lambda d: (d / CONFIG_NAME).write_text(json.dumps({"format": "other"})), "not an elbokit model"),
    (lambda d: (d / CONFIG_NAME).write_text(
        json.dumps({"format": "elbokit-model", "format_version": 99})), "upgrade elbokit"),
])
def test_damaged_or_foreign_directories_are_clear_errors(damage, match, fitted, tmp_path):
    fitted.save(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(ModelFormatError, match=match):
        elbokit.load(tmp_path / "m")


def test_unknown_estimator_class_is_refused(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    cfg["estimator"] = "os.system"
    (tmp_path / "m" / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="unknown estimator"):
        elbokit.load(tmp_path / "m")


def test_missing_path_and_unfitted_model(tmp_path):
    with pytest.raises(ModelFormatError, match="not a model directory"):
        elbokit.load(tmp_path / "nothing")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        GaussianMixture(2).save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_json_fitted_values_lists_of_str_and_dicts_round_trip(tmp_path):
    from elbokit.io import _is_json, _plain

    value = {"stop_words": ["a", "b"], "ngram_range": (1, 2), "max_df": 1.0, "n": None}
    assert _is_json(value) and _plain(value)["ngram_range"] == [1, 2]
    assert not _is_json({"x": object()}) and not _is_json({1: "a"})
    with pytest.raises(TypeError, match="__tensor__"):
        _plain({"__tensor__": "x"})
