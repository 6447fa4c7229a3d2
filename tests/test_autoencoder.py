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
    (np.full((10, 64), 0.5), dict(binarize=None), "binarize='dynamic' or 'auto'"),
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


# ------------------------------------------------------------------ VampPrior, conditional VAE
MODELS = {
    "vampprior": (dict(prior="vamp", prior_components=20), False),
    "conditional": (dict(), True),
}


def _fit_model(name, X, y, **kw):
    options, conditional = MODELS[name]
    return small(binarize="dynamic", **options, **kw).fit(X, y if conditional else None), \
        (y if conditional else None)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_elbo_is_a_bound_on_the_importance_sampled_log_px(name, digits):
    X, y = digits
    vae, c = _fit_model(name, X, y, epochs=6)
    rows = slice(0, 300)
    elbo = vae.elbo(X[rows], c[rows] if c is not None else None).mean()
    log_px = vae.score_samples(X[rows], c[rows] if c is not None else None, n_samples=200).mean()
    assert np.isfinite(elbo) and log_px > elbo
    assert vae.sample(5, **({"y": 3} if c is not None else {})).shape == (5, 64)


@pytest.mark.parametrize("name", list(MODELS))
def test_save_load_and_resume(name, digits, tmp_path):
    X, y = digits
    X, y = X[:400], y[:400]
    full, c = _fit_model(name, X, y, epochs=4, checkpoint_dir=str(tmp_path / "a"))
    _fit_model(name, X, y, epochs=2, checkpoint_dir=str(tmp_path / "b"))
    options, conditional = MODELS[name]
    resumed = small(binarize="dynamic", epochs=4, checkpoint_dir=str(tmp_path / "b"),
                    **options).fit(X, c, resume=tmp_path / "b")
    for k, v in full.state_dict_.items():
        torch.testing.assert_close(resumed.state_dict_[k], v, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(resumed.history_["mutual_information"],
                               full.history_["mutual_information"], rtol=1e-5)
    full.save(tmp_path / "m")
    back = elbokit.load(tmp_path / "m")
    np.testing.assert_allclose(back.transform(X[:20], c[:20] if conditional else None),
                               full.transform(X[:20], c[:20] if conditional else None), rtol=1e-6)
    np.testing.assert_allclose(back.score_samples(X[:20], c[:20] if conditional else None, n_samples=10),
                               full.score_samples(X[:20], c[:20] if conditional else None, n_samples=10),
                               rtol=1e-5)
    if name == "vampprior":
        assert back.pseudo_inputs_.shape == (20, 64)
    else:
        assert back.classes_ == list(range(10)) and back.n_covariates_ == 10


def test_conditional_vae_uses_its_labels(digits):
    X, y = digits
    vae = small(binarize="dynamic", epochs=10, latent_dim=2, lr=3e-3).fit(X, y)
    # a conditional decoder draws the class it is given: samples of class c resemble the c's
    means = np.stack([X[y == c].mean(0) for c in range(10)])
    nearest = [np.argmin(((means - vae.sample(50, y=c).mean(0)) ** 2).sum(1)) for c in range(10)]
    assert nearest == list(range(10))
    with pytest.raises(ValueError, match="pass y"):
        vae.transform(X[:5])
    with pytest.raises(ValueError, match="unseen in fit"):
        vae.transform(X[:2], np.array([3, 11]))
    with pytest.raises(ValueError, match="2 rows but X has 3"):
        vae.transform(X[:3], y[:2])
    assert vae.reconstruct(X[:4], y[:4]).shape == (4, 64)
    assert vae.decode(np.zeros((3, 2), np.float32), y[:3]).shape == (3, 64)
    assert vae.interpolate(X[0], X[1], steps=3, y=y[0]).shape == (3, 64)


def test_continuous_covariates(digits):
    X, y = digits
    cov = np.stack([y / 9.0, (y % 2).astype(float)], 1)
    vae = small(likelihood="continuous_bernoulli", epochs=2).fit(X, cov)
    assert vae.classes_ is None and vae.n_covariates_ == 2
    assert vae.transform(X[:5], cov[:5]).shape == (5, 3)
    assert vae.sample(4, y=cov[:4]).shape == (4, 64)
    np.testing.assert_allclose(vae.sample(3, y=cov[7]), vae.sample(3, y=np.tile(cov[7], (3, 1))))
    with pytest.raises(ValueError, match="fitted without covariates"):
        small(likelihood="continuous_bernoulli", epochs=1).fit(X).transform(X[:2], cov[:2])


def test_image_arrays_are_accepted(digits):
    X, _ = digits
    images = X.reshape(-1, 8, 8)
    vae = small(likelihood="continuous_bernoulli", epochs=1).fit(images)
    assert vae.input_shape_ == (8, 8) and vae.n_features_in_ == 64
    assert vae.reconstruct(images[:3]).shape == (3, 8, 8)
    assert vae.reconstruct(X[:3]).shape == (3, 64)
    assert vae.sample(2).shape == (2, 8, 8)
    np.testing.assert_allclose(vae.transform(images[:5]), vae.transform(X[:5]), rtol=1e-6)
    conv = small(likelihood="continuous_bernoulli", architecture="conv", epochs=1).fit(images)
    assert conv.module_.encoder.net.image_shape == (1, 8, 8)


def test_history_records_the_collapse_diagnostics(digits):
    X, _ = digits
    vae = small(binarize="dynamic", epochs=3, kl_cycles=1, latent_dim=4).fit(X)
    h = vae.history_
    assert len(h["kl_per_dimension"]) == 3 and len(h["kl_per_dimension"][0]) == 4
    assert all(0 <= a <= 4 for a in h["active_units"])
    assert all(0 <= mi <= np.log(min(1024, len(X) * 0.1)) + 1e-6 for mi in h["mutual_information"])
    w = h["kl_weight"]  # one cycle over the 3 epochs, rising over its first half
    assert 0 < w[0] < w[1] < w[2] == 1.0 and w[0] == pytest.approx(1 / 3, abs=0.02)
    d = vae.collapse_diagnostics(X)
    assert d["active_units"] == sum(v > 0.01 for v in d["unit_variance"])


def test_the_default_takes_grey_levels_and_binary_data(digits):
    """One default (likelihood='bernoulli', binarize='auto'): grey levels such as
    load_idx_images' are binarised dynamically, binary data are taken as they are."""
    X, _ = digits
    grey = small(epochs=1).fit(X)
    assert grey.binarize_ == "dynamic" and grey.likelihood == "bernoulli"
    binary = small(epochs=1).fit((X > 0.5).astype(np.float32))
    assert binary.binarize_ is None
    assert np.isfinite(binary.score_samples(X[:5] > 0.5, n_samples=5)).all()
    with pytest.raises(ValueError, match="binarize=None"):
        binary.score_samples(X[:5])  # fitted on binary data: grey levels are refused


@pytest.mark.skipif(not __import__("os").environ.get("ELBOKIT_SLOW_TESTS"),
                    reason="torch.compile takes minutes on a CPU: set ELBOKIT_SLOW_TESTS=1")
def test_compiled_training_equals_eager(digits):
    X, _ = digits
    eager = small(likelihood="continuous_bernoulli", epochs=2).fit(X[:256])
    compiled = small(likelihood="continuous_bernoulli", epochs=2, compile=True).fit(X[:256])
    np.testing.assert_allclose(compiled.lower_bounds_, eager.lower_bounds_, rtol=1e-4)


def test_a_path_setting_is_saved(digits, tmp_path):
    X, _ = digits
    vae = small(epochs=1, checkpoint_dir=tmp_path / "ckpt").fit(X[:200])
    vae.save(tmp_path / "m")
    assert elbokit.load(tmp_path / "m").checkpoint_dir == str(tmp_path / "ckpt")


def test_load_idx_images_output_fits_with_the_defaults(tmp_path):
    """The README's path: an IDX file of grey images, flat or (n, 28, 28), the default VAE."""
    from elbokit.data.idx import load_idx_images

    from .data.test_idx import write_idx

    images = np.random.default_rng(0).integers(0, 256, size=(120, 8, 8), dtype=np.uint8)
    write_idx(tmp_path / "images-idx3-ubyte.gz", images)
    for flatten in (True, False):
        X = load_idx_images(tmp_path / "images-idx3-ubyte.gz", flatten=flatten)
        vae = VAE(2, hidden_sizes=(16,), epochs=1, random_state=0).fit(X)
        assert vae.binarize_ == "dynamic" and vae.reconstruct(X[:2]).shape == X[:2].shape
