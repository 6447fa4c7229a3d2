"""VAE, the estimator: training, codes, generation, scores, persistence, bad input."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import elbokit
from elbokit import VAE


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


def small(**kw):
    base = dict(latent_dim=3, hidden_sizes=(32,), epochs=4, batch_size=64, random_state=0)
    base.update(kw)
    return VAE(**base)


def test_training_raises_the_bound(digits):
    X, _ = digits
    vae = small(likelihood="continuous_bernoulli", epochs=8).fit(X)
    assert len(vae.lower_bounds_) == 8 == vae.n_epochs_
    assert vae.lower_bounds_[-1] > vae.lower_bounds_[0]
    assert len(vae.history_["validation"]) == 8


def test_methods_shapes_and_types(digits):
    X, _ = digits
    vae = small(likelihood="continuous_bernoulli").fit(X)
    assert vae.transform(X[:5]).shape == (5, 3)
    assert isinstance(vae.transform(torch.as_tensor(X[:5])), torch.Tensor)
    assert vae.decode(np.zeros((2, 3), np.float32)).shape == (2, 64)
    assert vae.reconstruct(X[:4]).shape == (4, 64)
    assert vae.sample(6).shape == (6, 64)
    assert vae.interpolate(X[0], X[1], steps=5).shape == (5, 64)
    np.testing.assert_array_equal(vae.transform(X[:3], sample=True), vae.transform(X[:3], sample=True))


def test_importance_sampled_score_exceeds_the_elbo(digits):
    X, _ = digits
    vae = small(likelihood="continuous_bernoulli").fit(X)
    elbo = vae.elbo(X[:200]).mean()
    iwae = [vae.score_samples(X[:200], n_samples=k).mean() for k in (1, 50)]
    assert iwae[1] > iwae[0] and iwae[1] > elbo


def test_anomalies_from_held_out_classes_score_lower(digits):
    X, y = digits
    vae = small(binarize="dynamic", epochs=15).fit(X[y < 5])
    seen, unseen = X[y < 5][:300], X[y >= 5][:300]
    assert vae.score(seen, n_samples=20) > vae.score(unseen, n_samples=20)


def test_save_load_reproduces_codes_and_scores(digits, tmp_path):
    X, _ = digits
    vae = small(likelihood="continuous_bernoulli", prior="mog", prior_components=3).fit(X)
    vae.save(tmp_path / "vae")
    back = elbokit.load(tmp_path / "vae")
    np.testing.assert_allclose(back.transform(X[:20]), vae.transform(X[:20]), rtol=1e-6)
    np.testing.assert_allclose(back.score_samples(X[:20], n_samples=10),
                               vae.score_samples(X[:20], n_samples=10), rtol=1e-5)


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(digits, tmp_path):
    X, _ = digits
    X = X[:400]
    full = small(binarize="dynamic", epochs=4, checkpoint_dir=tmp_path / "a").fit(X)
    small(binarize="dynamic", epochs=2, checkpoint_dir=tmp_path / "b").fit(X)
    resumed = small(binarize="dynamic", epochs=4, checkpoint_dir=tmp_path / "b").fit(
        X, resume=tmp_path / "b")
    for k, v in full.state_dict_.items():
        torch.testing.assert_close(resumed.state_dict_[k], v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed.lower_bounds_, full.lower_bounds_, rtol=1e-6)


@pytest.mark.parametrize("kw", [
    dict(likelihood="gaussian"),
    dict(likelihood="bernoulli", binarize="dynamic", objective="iwae", k=3),
    dict(likelihood="continuous_bernoulli", kl_warmup=2, free_bits=0.1, beta=0.5),
    dict(likelihood="continuous_bernoulli", architecture="conv", image_shape=(1, 8, 8)),
])
def test_every_configuration_trains(kw, digits):
    X, _ = digits
    vae = small(epochs=2, **kw).fit(X[:300])
    assert np.isfinite(vae.lower_bounds_).all()
    assert np.isfinite(vae.score_samples(X[:10], n_samples=5)).all()


def test_categorical_likelihood():
    X = np.random.default_rng(0).integers(0, 4, size=(300, 6)).astype(np.float32)
    vae = small(likelihood="categorical", n_categories=4, epochs=2).fit(X)
    assert vae.sample(3).shape == (3, 6)
    with pytest.raises(ValueError, match="integer codes 0..3"):
        vae.score_samples(X[:2] + 0.5)


def test_user_given_modules_save_weights_only(digits, tmp_path):
    X, _ = digits
    enc, dec = torch.nn.Linear(64, 4), torch.nn.Linear(2, 64)
    vae = small(latent_dim=2, likelihood="continuous_bernoulli", encoder=enc, decoder=dec).fit(X)
    with pytest.raises(ValueError, match="save_weights"):
        vae.save(tmp_path / "m")
    vae.save_weights(tmp_path / "w.safetensors")
    other = small(latent_dim=2, likelihood="continuous_bernoulli", encoder=torch.nn.Linear(64, 4),
                  decoder=torch.nn.Linear(2, 64)).load_weights(tmp_path / "w.safetensors", 64)
    np.testing.assert_allclose(other.transform(X[:5]), vae.transform(X[:5]), rtol=1e-6)


@pytest.mark.parametrize("bad, kw, match", [
    (np.full((10, 64), 2.0), {}, "outside \\[0, 1\\]"),
    (np.full((10, 64), 0.5), {}, "binarize='dynamic'"),
    (np.full((10, 64), np.nan), {}, "NaN"),
    (np.ones((10, 64)), dict(likelihood="poisson"), "likelihood='poisson'"),
    (np.ones((10, 64)), dict(architecture="conv"), "image_shape"),
])
def test_bad_input_is_a_clear_error(bad, kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw).fit(bad)


def test_wrong_feature_count_at_transform(digits):
    X, _ = digits
    vae = small(likelihood="continuous_bernoulli", epochs=1).fit(X)
    with pytest.raises(ValueError, match="expecting 64 features"):
        vae.transform(X[:, :10])
