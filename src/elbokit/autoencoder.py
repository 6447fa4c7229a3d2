"""``VAE``: the variational autoencoder as a scikit-learn-style estimator."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load as load_tensor_bytes
from safetensors.torch import save_file
from sklearn.utils.validation import check_is_fitted

from elbokit import files, io
from elbokit._validation import (
    as_2d_tensor,
    check_nonneg_float,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
    to_output,
)
from elbokit.base import ElbokitEstimator
from elbokit.inference import distributed
from elbokit.inference.amortized import ELBOObjective, IWAEObjective, RowIndex, binarize, train
from elbokit.models.vae import (
    LIKELIHOODS,
    PRIORS,
    ConvDecoderNet,
    ConvEncoderNet,
    Decoder,
    GaussianEncoder,
    MixturePrior,
    StandardNormalPrior,
    VAEModule,
    mlp,
)


@io.register
class VAE(ElbokitEstimator):
    """Variational autoencoder: amortised variational inference with q(z|x).

    The decoder p_theta(x | z) and the encoder q_phi(z | x) =
    N(mu_phi(x), diag sigma_phi(x)^2) are trained jointly by maximising the
    ELBO (or the IWAE bound) with the reparameterisation trick and Adam.

    Parameters
    ----------
    latent_dim : int, default=2
        Dimension of z.
    hidden_sizes : tuple of int, default=(512, 256)
        MLP hidden layers of the encoder (the decoder mirrors them).
    architecture : {"mlp", "conv"}, default="mlp"
        "conv": a small convolutional encoder/decoder for images of
        ``image_shape`` (channels, height, width; height and width divisible by 4).
    image_shape : tuple of int, optional
        Required for "conv"; e.g. (1, 28, 28).
    likelihood : {"bernoulli", "continuous_bernoulli", "gaussian", "categorical"}
        p(x | z): binary data; grey levels in [0, 1]; real values (learned
        per-feature variance); integer codes 0..n_categories-1.
    n_categories : int, optional
        Number of categories for "categorical".
    prior : {"normal", "mog"}, default="normal"
        N(0, I), or a learned mixture of ``prior_components`` Gaussians (its KL
        is estimated by Monte Carlo).
    prior_components : int, default=10
    objective : {"elbo", "iwae"}, default="elbo"
    k : int, default=5
        Importance samples of the IWAE objective.
    beta : float, default=1.0
        KL weight (beta-VAE).
    kl_warmup : int, default=0
        Epochs over which the KL weight rises linearly from 0 to ``beta``.
    free_bits : float, default=0.0
        Nats per latent dimension not penalised (N(0, I) prior only).
    binarize : {None, "dynamic"}, default=None
        "dynamic": each mini-batch is redrawn as x ~ Bernoulli(x) (Bernoulli likelihood).
    epochs, batch_size, lr
        Adam's schedule.
    validation_fraction : float, default=0.1
        Held out for the validation bound (0 disables it).
    patience : int, optional
        Early stopping: epochs without a better validation ELBO.
    checkpoint_dir : path, optional
        Checkpoint written every epoch; ``fit(X, resume=checkpoint_dir)``
        continues it with the same result as an uninterrupted run.
    encoder, decoder : nn.Module, optional
        Your own networks: the encoder maps x to 2 * latent_dim outputs
        (location and pre-softplus scale), the decoder maps z to the
        likelihood's parameters.
    random_state, device, dtype, verbose
        As for every elbokit estimator (verbose: 1 progress bar, 2 lines per epoch).
    distributed : None, True or False, default=None
        Train across the ranks of a ``torch.distributed`` process group, each
        passing its own shard (uneven or empty shards are fine; rank r's rows
        come after rank r-1's) to ``fit``. Every rank makes the shuffles and
        random draws of whole mini-batches from rank 0's seed and computes
        its rows' part of the loss; DistributedDataParallel averages the
        gradients into the whole batch's. ``batch_size`` is the global batch
        and the result equals the single-process fit on all rows up to
        rounding. The bounds are summed over ranks, only rank 0 writes
        checkpoints. None detects an initialised group of several ranks.

    Attributes
    ----------
    module_ : VAEModule
    history_ : dict
        Per-epoch mean training bound ("train") and validation ELBO ("validation").
    lower_bounds_ : array
        The training bound per epoch.
    n_epochs_ : int
    n_features_in_ : int
    """

    _fitted_attributes = ("state_dict_", "history_", "lower_bounds_", "n_epochs_", "n_features_in_")
    _fitted_schema = {
        "state_dict_": io.tensor_dict(lambda vae: vae._state_spec()),
        "history_": io.json_value(check=lambda vae, h: None if isinstance(h, dict) else "must be a dict"),
        "lower_bounds_": io.array(None), "n_epochs_": io.integer(low=0),
        "n_features_in_": io.integer(low=1),
    }

    def __init__(
        self,
        latent_dim=2,
        *,
        hidden_sizes=(512, 256),
        architecture="mlp",
        image_shape=None,
        likelihood="bernoulli",
        n_categories=None,
        prior="normal",
        prior_components=10,
        objective="elbo",
        k=5,
        beta=1.0,
        kl_warmup=0,
        free_bits=0.0,
        binarize=None,
        epochs=10,
        batch_size=128,
        lr=1e-3,
        validation_fraction=0.1,
        patience=None,
        checkpoint_dir=None,
        encoder=None,
        decoder=None,
        random_state=None,
        device=None,
        dtype="float32",
        verbose=0,
        distributed=None,
    ):
        self.latent_dim = latent_dim
        self.hidden_sizes = hidden_sizes
        self.architecture = architecture
        self.image_shape = image_shape
        self.likelihood = likelihood
        self.n_categories = n_categories
        self.prior = prior
        self.prior_components = prior_components
        self.objective = objective
        self.k = k
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.free_bits = free_bits
        self.binarize = binarize
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.checkpoint_dir = checkpoint_dir
        self.encoder = encoder
        self.decoder = decoder
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.distributed = distributed

    # ------------------------------------------------------------ checks
    def _check_hyperparameters(self):
        check_positive_int(self.latent_dim, "latent_dim")
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.k, "k")
        check_positive_int(self.kl_warmup, "kl_warmup", minimum=0)
        check_nonneg_float(self.lr, "lr", strict=True)
        check_nonneg_float(self.beta, "beta")
        check_nonneg_float(self.free_bits, "free_bits")
        for name, value, allowed in [
            ("likelihood", self.likelihood, LIKELIHOODS), ("prior", self.prior, PRIORS),
            ("objective", self.objective, ("elbo", "iwae")),
            ("architecture", self.architecture, ("mlp", "conv")),
            ("binarize", self.binarize, (None, "dynamic")),
        ]:
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported: use one of {allowed}.")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be in [0, 1).")
        if self.likelihood == "categorical" and not self.n_categories:
            raise ValueError("likelihood='categorical' needs n_categories (the number of codes).")
        if self.binarize == "dynamic" and self.likelihood != "bernoulli":
            raise ValueError("binarize='dynamic' goes with likelihood='bernoulli'.")
        if self.free_bits > 0 and self.prior != "normal":
            raise ValueError("free_bits needs the per-dimension KL of prior='normal'.")
        if self.architecture == "conv" and self.encoder is None:
            shape = self.image_shape
            if shape is None or len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
                raise ValueError(
                    "architecture='conv' needs image_shape=(channels, height, width) with height "
                    "and width divisible by 4, e.g. (1, 28, 28)."
                )

    def _check_support(self, X: torch.Tensor, name: str = "X") -> None:
        lik = self.likelihood
        if lik in ("bernoulli", "continuous_bernoulli"):
            if bool((X < 0).any()) or bool((X > 1).any()):
                raise ValueError(
                    f"{name} has values outside [0, 1], the support of likelihood={lik!r}: scale "
                    "the data to [0, 1] (e.g. X / 255) or use likelihood='gaussian'."
                )
            if lik == "bernoulli" and self.binarize is None and bool(((X != 0) & (X != 1)).any()):
                raise ValueError(
                    f"{name} has values strictly between 0 and 1, but likelihood='bernoulli' is "
                    "for binary data: pass binarize='dynamic', or use "
                    "likelihood='continuous_bernoulli' for grey levels."
                )
        elif lik == "categorical":
            if bool((X != X.round()).any()) or bool((X < 0).any()) or bool((X >= self.n_categories).any()):
                raise ValueError(
                    f"{name} must hold integer codes 0..{self.n_categories - 1} for "
                    "likelihood='categorical'."
                )

    def _validate(self, X, name="X", reset=False):
        dtype = resolve_dtype(self.dtype)
        device = resolve_device(self.device, X)
        X, kind = as_2d_tensor(X, name=name, dtype=dtype, device=device)
        if not reset:
            check_is_fitted(self)
            if X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"{name} has {X.shape[1]} features, but VAE is expecting "
                    f"{self.n_features_in_} features as input: pass data with "
                    f"{self.n_features_in_} columns."
                )
        self._check_support(X, name)
        return X, kind

    # ------------------------------------------------------------ networks
    def _build(self, n_features: int, device, dtype, generator=None) -> VAEModule:
        L = int(self.latent_dim)
        outputs = n_features * (self.n_categories if self.likelihood == "categorical" else 1)
        hidden = [int(h) for h in self.hidden_sizes]
        if self.encoder is not None or self.decoder is not None:
            if self.encoder is None or self.decoder is None:
                raise ValueError("give both encoder and decoder modules, or neither.")
            enc_net, dec_net = self.encoder, self.decoder
        elif self.architecture == "conv":
            enc_net = ConvEncoderNet(self.image_shape, 2 * L)
            channels = outputs // (self.image_shape[1] * self.image_shape[2])
            dec_net = ConvDecoderNet(self.image_shape, L, channels)
        else:
            enc_net = mlp([n_features, *hidden, 2 * L])
            dec_net = mlp([L, *hidden[::-1], outputs])
        prior = (StandardNormalPrior(L) if self.prior == "normal"
                 else MixturePrior(L, int(self.prior_components), generator))
        module = VAEModule(GaussianEncoder(enc_net),
                           Decoder(dec_net, self.likelihood, n_features, self.n_categories), prior)
        return module.to(device=device, dtype=dtype)

    def _state_spec(self) -> dict:
        """{name: (shape, dtype)} of the networks the hyperparameters describe (built on no memory)."""
        with torch.device("meta"):
            module = self._build(int(self.n_features_in_), torch.device("meta"), resolve_dtype(self.dtype))
        return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}

    def _objective(self):
        if self.objective == "iwae":
            return IWAEObjective(int(self.k))
        return ELBOObjective(float(self.beta), int(self.kl_warmup), float(self.free_bits))

    def _prepare(self):
        return binarize if self.binarize == "dynamic" else None

    @property
    def module_(self) -> VAEModule:
        """The trained networks (built from ``state_dict_``)."""
        check_is_fitted(self)
        cached = getattr(self, "_module", None)
        if cached is None:
            device = resolve_device(self.device)
            cached = self._build(self.n_features_in_, device, resolve_dtype(self.dtype))
            cached.load_state_dict({k: v.to(device) for k, v in self.state_dict_.items()})
            cached.eval()
            self._module = cached
        return cached

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, resume=None):
        """Train the encoder and decoder on X.

        Parameters
        ----------
        X : array-like or Tensor, shape (n_samples, n_features)
        y : ignored
        resume : path, optional
            A ``checkpoint_dir`` of an earlier (interrupted) run with the same
            settings: training continues from it.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        reducer = distributed.resolve(self.distributed)
        if reducer is None:
            Xt, _ = self._validate(X, reset=True)
            n_features = int(Xt.shape[1])
            sizes, rank = [Xt.shape[0]], 0
        else:
            def validate():
                Xt, _ = as_2d_tensor(X, name="X", dtype=resolve_dtype(self.dtype),
                                     device=resolve_device(self.device, X), min_samples=0)
                self._check_support(Xt)
                return Xt

            Xt = distributed.checked(reducer, validate)
            n_features = int(reducer.broadcast(torch.tensor([Xt.shape[1]]),
                                               reducer.largest(Xt.shape[0])))
            if Xt.shape[0] == 0:
                Xt = Xt.reshape(0, n_features)
            distributed.checked(reducer, lambda: self._check_width(Xt, n_features))
            sizes, rank = reducer.sizes(Xt.shape[0]), reducer.rank
        n = sum(sizes)
        n_val = int(math.floor(self.validation_fraction * n))
        if n - n_val < 1:
            raise ValueError(f"X has {n} samples: too few to train with validation_fraction="
                             f"{self.validation_fraction}.")
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        if reducer is not None:  # one seed: the same shuffles and draws on every rank
            seed = reducer.same_seed(seed)
        devices = [Xt.device] if Xt.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            order = torch.randperm(n, device="cpu")
            offset = sum(sizes[:rank])
            split = _split(order, n_val, offset, Xt.shape[0], sharded=reducer is not None)
            X_val, X_train = Xt[split.val_rows], Xt[split.train_rows]
            module = self._build(n_features, Xt.device, Xt.dtype)
            state = train(
                module, self._objective(), X_train, X_val if n_val else None,
                epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                prepare=self._prepare(), patience=self.patience,
                checkpoint_dir=self.checkpoint_dir, resume=resume,
                verbose=int(self.verbose) if rank == 0 else 0, reducer=reducer,
                train_index=split.train_index, val_index=split.val_index,
            )
        self.state_dict_ = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._module = module
        self.history_ = state.history
        self.lower_bounds_ = np.asarray(state.history["train"], dtype=np.float64)
        self.n_epochs_ = int(state.epoch)
        self.n_features_in_ = n_features
        return self

    @staticmethod
    def _check_width(Xt, n_features):
        if Xt.shape[0] and Xt.shape[1] != n_features:
            raise ValueError(f"X has {Xt.shape[1]} features on this rank, but {n_features} on "
                             "the others: every rank's shard needs the same columns.")

    def _set_fitted_state(self, state: dict) -> None:
        super()._set_fitted_state(state)
        self._module = None

    # ------------------------------------------------------------ persistence
    def save(self, path, *, overwrite=False, extra_files=None):
        """Save as safetensors + JSON (see :func:`elbokit.load`).

        A VAE built from your own encoder/decoder modules cannot be rebuilt
        from JSON: save its weights with :meth:`save_weights` instead.
        """
        if self.encoder is not None or self.decoder is not None:
            raise ValueError(
                "this VAE uses your own encoder/decoder modules, which JSON cannot describe: "
                "use vae.save_weights(path), then VAE(encoder=..., decoder=...).load_weights(path)."
            )
        return super().save(path, overwrite=overwrite, extra_files=extra_files)

    def save_weights(self, path, *, overwrite: bool = False):
        """The trained weights alone, as one safetensors file (written safely: elbokit.files)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict_.items()}
        return files.write_output(path, lambda tmp: save_file(state, str(tmp)), overwrite=overwrite,
                                  what="weights file")

    def load_weights(self, path, n_features: int):
        """Load weights written by :meth:`save_weights` into this (unfitted) VAE."""
        raw = files.read_regular(path, max_bytes=io.MAX_TENSOR_BYTES, what="weights file",
                                 error=io.ModelFormatError)
        try:
            self.state_dict_ = load_tensor_bytes(raw)
        except Exception as err:  # SafetensorError and whatever a damaged header provokes
            raise io.ModelFormatError(f"{path} is not a safetensors weights file: {err}.") from err
        self.n_features_in_ = int(n_features)
        self.history_ = {"train": [], "validation": []}
        self.lower_bounds_ = np.zeros(0)
        self.n_epochs_ = 0
        self._module = None
        return self

    # ------------------------------------------------------------ inference
    def _batched(self, X, fn, batch_size=1024, desc=None):
        """``fn`` over row blocks, without gradients, with draws seeded by
        ``random_state`` (so scores and sampled codes are repeatable); with
        ``desc`` and ``verbose`` 1, a progress bar over the rows."""
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        devices = [X.device] if X.is_cuda else []
        starts = range(0, X.shape[0], batch_size)
        if desc is not None and self.verbose == 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, leave=False, file=sys.stderr, unit="block",
                          disable=None)
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + 2)
            return torch.cat([fn(X[s:s + batch_size]) for s in starts])

    def transform(self, X, sample: bool = False):
        """Latent codes: posterior means E_q[z | x] (or a draw with ``sample=True``), (n, latent)."""
        Xt, kind = self._validate(X)
        enc = self.module_.encoder
        return to_output(self._batched(Xt, lambda x: enc(x).rsample() if sample else enc(x).mean), kind)

    def decode(self, Z):
        """E[x | z] for latent codes Z of shape (n, latent_dim)."""
        dtype = resolve_dtype(self.dtype)
        Zt, kind = as_2d_tensor(Z, name="Z", dtype=dtype, device=resolve_device(self.device, Z))
        if Zt.shape[1] != self.latent_dim:
            raise ValueError(f"Z has {Zt.shape[1]} columns; this VAE has latent_dim={self.latent_dim}.")
        return to_output(self._batched(Zt, self.module_.decoder.mean), kind)

    inverse_transform = decode

    def reconstruct(self, X):
        """E[x | z = E_q[z | x]]: the input passed through the code, (n, n_features)."""
        Xt, kind = self._validate(X)
        m = self.module_
        return to_output(self._batched(Xt, lambda x: m.decoder.mean(m.encoder(x).mean)), kind)

    def sample(self, n_samples=1, *, mean: bool = True):
        """Generate: z ~ p(z), then E[x | z] (or a draw x ~ p(x | z) with ``mean=False``)."""
        check_positive_int(n_samples, "n_samples")
        m = self.module_
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = m.prior().sample((int(n_samples),))
            x = m.decoder.mean(z) if mean else m.decoder(z).sample()
        return x.cpu().numpy()

    def interpolate(self, x1, x2, steps: int = 8):
        """Decoded points on the straight line between the codes of x1 and x2, (steps, n_features)."""
        check_positive_int(steps, "steps", minimum=2)
        X, kind = self._validate(np.stack([np.asarray(x1), np.asarray(x2)])
                                 if not isinstance(x1, torch.Tensor) else torch.stack([x1, x2]))
        m = self.module_
        with torch.no_grad():
            z = m.encoder(X).mean
            t = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device)[:, None]
            return to_output(m.decoder.mean((1 - t) * z[0] + t * z[1]), kind)

    def _evaluation_data(self, Xt):
        """With dynamic binarisation, scores are of one binarised draw of X
        (seeded by ``random_state``, so repeatable)."""
        if self.binarize != "dynamic":
            return Xt
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        g = torch.Generator(device=Xt.device)
        g.manual_seed(seed + 1)
        return torch.bernoulli(Xt, generator=g)

    def elbo(self, X):
        """One-sample ELBO per sample (a stochastic lower bound on log p(x)), shape (n,).

        With ``binarize="dynamic"``, of a binarised draw of X (see score_samples).
        """
        Xt, kind = self._validate(X)
        Xt = self._evaluation_data(Xt)
        m = self.module_

        def one(x):
            reconstruction, kl, _ = m.elbo_terms(x)
            return reconstruction - kl

        return to_output(self._batched(Xt, one), kind)

    def score_samples(self, X, n_samples: int = 100):
        """Importance-sampled estimate of log p(x) per sample (IWAE with n_samples), shape (n,).

        A stochastic lower bound that tightens as ``n_samples`` grows; lower
        is more anomalous.  Batched over samples and importance draws.  With
        ``binarize="dynamic"`` it scores one binarised draw of X, seeded by
        ``random_state`` (the usual protocol for binarised image data).
        """
        check_positive_int(n_samples, "n_samples")
        Xt, kind = self._validate(X)
        Xt = self._evaluation_data(Xt)
        m = self.module_
        rows = max(1, 2 ** 22 // max(1, n_samples * Xt.shape[1]))
        return to_output(self._batched(Xt, lambda x: m.iwae(x, n_samples), rows,
                                       desc="importance sampling"), kind)

    def score(self, X, y=None, n_samples: int = 100):
        """Mean importance-sampled log p(x) per sample."""
        return float(np.mean(np.asarray(torch.as_tensor(self.score_samples(X, n_samples)).cpu())))


@dataclass
class _Split:
    """This rank's training and validation rows, and where they sit globally."""

    train_rows: torch.Tensor
    val_rows: torch.Tensor
    train_index: RowIndex | None
    val_index: RowIndex | None


def _split(order: torch.Tensor, n_val: int, offset: int, n_local: int, sharded: bool) -> _Split:
    """Validation = the first ``n_val`` of the global shuffle ``order``; training = the rest.

    In one process the splits are ``order``'s slices. A rank holding global
    rows [offset, offset + n_local) keeps its rows of each split, sorted by
    their position in that split, with a :class:`RowIndex` of those positions.
    """
    if not sharded:
        return _Split(order[n_val:], order[:n_val], None, None)
    where = torch.empty_like(order)
    where[order] = torch.arange(order.numel())  # position of each global row in the shuffle
    pos = where[offset:offset + n_local]
    n = order.numel()
    val = torch.nonzero(pos < n_val).flatten()
    train = torch.nonzero(pos >= n_val).flatten()
    val = val[torch.argsort(pos[val])]
    train = train[torch.argsort(pos[train])]
    return _Split(train, val, RowIndex(n - n_val, pos[train] - n_val), RowIndex(n_val, pos[val]))
