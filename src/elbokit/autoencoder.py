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
from elbokit.inference import distributed
from elbokit.inference.amortized import (
    ELBOObjective,
    IWAEObjective,
    RowIndex,
    Rows,
    binarize,
    collapse_diagnostics,
    train,
)
from elbokit.neural import NetworkEstimator
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
    VampPrior,
    mlp,
)

COVARIATES = ("auto", "onehot", "continuous")
_DEFAULT_COMPONENTS = {"mog": 10, "vamp": 500}


@io.register
class VAE(NetworkEstimator):
    """Variational autoencoder: amortised variational inference with q(z|x).

    The decoder p_theta(x | z) and the encoder q_phi(z | x) =
    N(mu_phi(x), diag sigma_phi(x)^2) are trained jointly by maximising the
    ELBO (or the IWAE bound) with the reparameterisation trick and Adam.
    Given covariates ``y`` in ``fit(X, y)`` it is a conditional VAE: both
    networks also see y (labels one-hot encoded, or real columns as they
    are), and every method then takes the rows' ``y``.

    Parameters
    ----------
    latent_dim : int, default=2
        Dimension of z.
    hidden_sizes : tuple of int, default=(512, 256)
        MLP hidden layers of the encoder (the decoder mirrors them); each >= 1.
    architecture : {"mlp", "conv"}, default="mlp"
        "conv": a small convolutional encoder/decoder for images of
        ``image_shape`` (channels, height, width; height and width divisible by 4).
    image_shape : tuple of int, optional
        For "conv"; e.g. (1, 28, 28). Inferred from image arrays (n, height,
        width) or (n, channels, height, width) given to ``fit``.
    likelihood : {"bernoulli", "continuous_bernoulli", "gaussian", "categorical"}
        p(x | z): binary data (grey levels binarised, see ``binarize``); grey
        levels in [0, 1]; real values (learned per-feature variance); integer
        codes 0..n_categories-1. The default, "bernoulli" with
        ``binarize="auto"``, was chosen by measurement (``bench/vae.py
        defaults``): on images (Fashion-MNIST, the 8x8 digits) it gave the
        lower reconstruction error and the better codes (kNN accuracy);
        on min-max scaled tables (wine, breast cancer) "continuous_bernoulli"
        did better, and for real values "gaussian" is the likelihood.
    n_categories : int, optional
        Number of categories for "categorical".
    prior : {"normal", "mog", "vamp"}, default="normal"
        N(0, I) (analytic KL); a learned mixture of ``prior_components``
        Gaussians; or the VampPrior (Tomczak & Welling 2018), the mixture of
        the encoder's posteriors at ``prior_components`` learned
        pseudo-inputs (``pseudo_inputs_``), which start at random training
        rows. For both mixtures the KL is the unbiased one-draw estimate.
    prior_components : int, optional
        Mixture components (default 10) or pseudo-inputs (default 500, as
        Tomczak & Welling on MNIST).
    objective : {"elbo", "iwae"}, default="elbo"
    k : int, default=5
        Importance samples of the IWAE objective.
    dreg : bool, default=False
        With ``objective="iwae"``: the doubly reparameterised gradient
        estimator for the encoder (Tucker et al. 2019), unbiased with a lower
        variance than the plain one (which degrades as k grows).
    beta : float, default=1.0
        KL weight (beta-VAE).
    kl_warmup : int, default=0
        Epochs over which the KL weight rises linearly from 0 to ``beta``.
    kl_cycles : int, default=0
        Cyclical KL annealing (Fu et al. 2019) instead of the warm-up: the
        ``epochs`` are cut into this many cycles, in each of which the weight
        rises linearly from 0 to ``beta`` over the first ``kl_cycle_ratio``
        and stays there.
    kl_cycle_ratio : float, default=0.5
    free_bits : float, default=0.0
        Nats per latent dimension not penalised (N(0, I) prior only).
    binarize : {"auto", "dynamic", None}, default="auto"
        With the Bernoulli likelihood: "dynamic" redraws each mini-batch as
        x ~ Bernoulli(x) (Burda et al. 2016's protocol for grey-level
        images); None takes the data as binary; "auto": "dynamic" when X
        has values strictly between 0 and 1, else None (``binarize_`` says
        which). Scores of a binarised model are of one seeded binarised draw.
    covariates : {"auto", "onehot", "continuous"}, default="auto"
        How ``y`` is given to the networks: "onehot" one column per class
        (``classes_``), "continuous" its values as columns; "auto": one-hot
        for 1-D integer, boolean or string labels, continuous otherwise.
    epochs, batch_size, lr
        Adam's schedule.
    validation_fraction : float, default=0.1
        Held out for the validation bound (0 disables it).
    patience : int, optional
        Early stopping: epochs without a better validation ELBO.
    checkpoint_dir : path, optional
        Checkpoint written every epoch (one file, replaced atomically);
        ``fit(X, resume=checkpoint_dir)`` continues it with the same result
        as an uninterrupted run.
    encoder, decoder : nn.Module, optional
        Your own networks: the encoder maps x (with the covariates appended
        as columns) to 2 * latent_dim outputs (location and pre-softplus
        scale), the decoder maps z (with the covariates appended) to the
        likelihood's parameters.
    compile : bool, default=False
        Run the networks through ``torch.compile`` while training.
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
    history_ : dict of lists, one entry per epoch
        "train": mean training bound; "validation": validation ELBO;
        "kl_weight": the epoch's mean KL weight; posterior-collapse
        diagnostics (on the validation rows, or training rows without a
        validation split; see :meth:`collapse_diagnostics`):
        "kl_per_dimension", "unit_variance", "active_units",
        "mutual_information".
    lower_bounds_ : array
        The training bound per epoch.
    n_epochs_ : int
    n_features_in_ : int
    input_shape_ : tuple
        Shape of one sample as given to ``fit`` ((n_features,), or an image's
        shape); outputs in data space come back in it.
    classes_ : list or None
        Labels of one-hot covariates.
    n_covariates_ : int
        Columns of the covariates given to the networks (0 without ``y``).
    binarize_ : "dynamic" or None
        The binarisation used (``binarize`` with "auto" resolved).
    pseudo_inputs_ : array (prior_components, n_features)
        The VampPrior's pseudo-inputs (``prior="vamp"``).
    """

    _fitted_attributes = ("state_dict_", "history_", "lower_bounds_", "n_epochs_", "n_features_in_",
                          "input_shape_", "classes_", "n_covariates_", "binarize_")
    _fitted_schema = {  # beside NetworkEstimator's; added with the conditional VAE and image inputs: optional, for models saved before
        "input_shape_": io.json_value(optional=True, check=lambda vae, s: _check_input_shape(vae, s)),
        "classes_": io.json_value(optional=True, nullable=True, check=lambda vae, c: None
                                  if isinstance(c, list) and len(c) >= 2 else "must list 2+ labels"),
        "n_covariates_": io.integer(low=0, optional=True),
        "binarize_": io.json_value(optional=True, nullable=True, check=lambda vae, b: None
                                   if b == "dynamic" else "must be 'dynamic' or null"),
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
        prior_components=None,
        objective="elbo",
        k=5,
        dreg=False,
        beta=1.0,
        kl_warmup=0,
        kl_cycles=0,
        kl_cycle_ratio=0.5,
        free_bits=0.0,
        binarize="auto",
        covariates="auto",
        epochs=10,
        batch_size=128,
        lr=1e-3,
        validation_fraction=0.1,
        patience=None,
        checkpoint_dir=None,
        encoder=None,
        decoder=None,
        compile=False,
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
        self.dreg = dreg
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.kl_cycles = kl_cycles
        self.kl_cycle_ratio = kl_cycle_ratio
        self.free_bits = free_bits
        self.binarize = binarize
        self.covariates = covariates
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.checkpoint_dir = checkpoint_dir
        self.encoder = encoder
        self.decoder = decoder
        self.compile = compile
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
        check_positive_int(self.kl_cycles, "kl_cycles", minimum=0)
        check_nonneg_float(self.lr, "lr", strict=True)
        check_nonneg_float(self.beta, "beta")
        check_nonneg_float(self.free_bits, "free_bits")
        if self.prior_components is not None:
            check_positive_int(self.prior_components, "prior_components")
        if self.patience is not None:
            check_positive_int(self.patience, "patience")
        for name, value, allowed in [
            ("likelihood", self.likelihood, LIKELIHOODS), ("prior", self.prior, PRIORS),
            ("objective", self.objective, ("elbo", "iwae")),
            ("architecture", self.architecture, ("mlp", "conv")),
            ("binarize", self.binarize, ("auto", "dynamic", None)),
            ("covariates", self.covariates, COVARIATES),
            ("dreg", self.dreg, (False, True)), ("compile", self.compile, (False, True)),
        ]:
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported: use one of {allowed}.")
        self._check_hidden_sizes()
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be in [0, 1).")
        ratio = self.kl_cycle_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ValueError(f"kl_cycle_ratio={ratio!r} must be in (0, 1].")
        if self.kl_cycles and self.kl_warmup:
            raise ValueError("kl_warmup (a linear warm-up) and kl_cycles (cyclical annealing) "
                             "are two KL schedules: set one of them to 0.")
        if self.dreg and self.objective != "iwae":
            raise ValueError("dreg=True is a gradient estimator of the IWAE bound: "
                             "use it with objective='iwae'.")
        if self.likelihood == "categorical" and not self.n_categories:
            raise ValueError("likelihood='categorical' needs n_categories (the number of codes).")
        if self.binarize == "dynamic" and self.likelihood != "bernoulli":
            raise ValueError("binarize='dynamic' goes with likelihood='bernoulli'.")
        if self.free_bits > 0 and self.prior != "normal":
            raise ValueError("free_bits needs the per-dimension KL of prior='normal'.")
        if self.architecture == "conv" and self.encoder is None and self.image_shape is not None:
            _check_image_shape(self.image_shape)

    def _check_hidden_sizes(self):
        sizes = self.hidden_sizes
        try:
            sizes = list(sizes)
        except TypeError:
            raise ValueError(f"hidden_sizes={sizes!r} must be a sequence of layer sizes, "
                             "e.g. (512, 256).") from None
        bad = [h for h in sizes if isinstance(h, bool) or not isinstance(h, (int, np.integer))
               or h < 1]
        if bad:
            raise ValueError(
                f"hidden_sizes={tuple(self.hidden_sizes)!r} holds {bad[0]!r}: every hidden layer "
                "needs at least 1 unit (a layer of 0 units would give every input the same "
                "code); e.g. hidden_sizes=(512, 256), or () for no hidden layer.")

    def _binarization(self, X: torch.Tensor, reducer=None):
        """``binarize`` resolved for the data X: "dynamic" or None."""
        if self.likelihood != "bernoulli" or self.binarize is None:
            return None
        if self.binarize == "dynamic":
            return "dynamic"
        grey = float(bool(((X != 0) & (X != 1)).any()))
        if reducer is not None:  # every rank decides alike
            grey = reducer.sum(grey)
        return "dynamic" if grey > 0 else None

    def _check_support(self, X: torch.Tensor, name: str = "X") -> None:
        lik = self.likelihood
        if lik in ("bernoulli", "continuous_bernoulli"):
            if bool((X < 0).any()) or bool((X > 1).any()):
                raise ValueError(
                    f"{name} has values outside [0, 1], the support of likelihood={lik!r}: scale "
                    "the data to [0, 1] (e.g. X / 255) or use likelihood='gaussian'."
                )
            if lik == "bernoulli" and self._binarize_mode() is None \
                    and bool(((X != 0) & (X != 1)).any()):
                raise ValueError(
                    f"{name} has values strictly between 0 and 1, but this Bernoulli VAE takes "
                    "binary data (binarize=None): pass binarize='dynamic' or 'auto', or use "
                    "likelihood='continuous_bernoulli' for grey levels."
                )
        elif lik == "categorical":
            if bool((X != X.round()).any()) or bool((X < 0).any()) or bool((X >= self.n_categories).any()):
                raise ValueError(
                    f"{name} must hold integer codes 0..{self.n_categories - 1} for "
                    "likelihood='categorical'."
                )

    def _validate(self, X, name="X", reset=False, min_samples=1):
        """X as a 2-D tensor (image stacks flattened), and how it came."""
        dtype = resolve_dtype(self.dtype)
        device = resolve_device(self.device, X)
        X = _flatten_images(X, name)
        X, kind = as_2d_tensor(X, name=name, dtype=dtype, device=device, min_samples=min_samples)
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

    # ------------------------------------------------------------ covariates
    def _covariate_kind(self, y) -> str:
        if self.covariates != "auto":
            return self.covariates
        arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        return "onehot" if arr.ndim == 1 and arr.dtype.kind in "biuOUS" else "continuous"

    def _covariate_tensor(self, y, n: int, *, reset=False, classes=None, name="y"):
        """y as the (n, C) tensor the networks see; ``classes`` for one-hot (fit sets them)."""
        dtype, device = resolve_dtype(self.dtype), resolve_device(self.device, y)
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        arr = np.asarray(y)
        if arr.ndim == 0:
            arr = np.full(n, arr.item())
        elif (not reset and self.classes_ is None and arr.ndim == 1 and self.n_covariates_ > 1
              and arr.shape[0] == self.n_covariates_):
            arr = np.tile(arr, (n, 1))  # one row of covariates for every row
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} rows but X has {n}: give one row of "
                             "covariates (or one label) per row of X.")
        kind = self._covariate_kind(arr) if reset else ("onehot" if self.classes_ is not None
                                                       else "continuous")
        if kind == "onehot":
            if arr.ndim != 1:
                raise ValueError(f"{name} must be 1-D labels for covariates='onehot'; got shape "
                                 f"{arr.shape}.")
            classes = classes if classes is not None else self.classes_
            lookup = {c: i for i, c in enumerate(classes)}
            try:
                codes = np.array([lookup[_plain(v)] for v in arr], dtype=np.int64)
            except KeyError as err:
                raise ValueError(f"{name} holds the label {err.args[0]!r}, unseen in fit "
                                 f"(classes_ = {list(classes)[:20]}).") from None
            C = torch.nn.functional.one_hot(torch.from_numpy(codes), len(classes))
            return C.to(device=device, dtype=dtype)
        C, _ = as_2d_tensor(arr.reshape(-1, 1) if arr.ndim == 1 else arr, name=name,
                            dtype=dtype, device=device, min_samples=0)
        if not reset and C.shape[1] != self.n_covariates_:
            raise ValueError(f"{name} has {C.shape[1]} covariate columns; this VAE was fitted "
                             f"with {self.n_covariates_}.")
        return C

    def _covariates(self, y, n: int, name="y"):
        """The fitted model's covariates for n rows (None for an unconditional VAE)."""
        check_is_fitted(self)
        if self.n_covariates_ == 0:
            if y is not None:
                raise ValueError(f"this VAE was fitted without covariates: do not pass {name}.")
            return None
        if y is None:
            raise ValueError(f"this VAE was fitted with covariates y (a conditional VAE): pass "
                             f"{name}, one row per row of the data.")
        return self._covariate_tensor(y, n, name=name)

    def _fit_classes(self, y, reducer):
        """Sorted labels of one-hot covariates over all ranks (None for continuous ones)."""
        if self._covariate_kind(y) != "onehot":
            return None
        arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        labels = sorted({_plain(v) for v in arr.reshape(-1)}, key=_sort_key)
        if reducer is not None:
            gathered = [None] * reducer.world_size
            torch.distributed.all_gather_object(gathered, labels)
            labels = sorted({v for part in gathered for v in part}, key=_sort_key)
        if len(labels) < 2 and reducer is None:
            raise ValueError(f"y has {len(labels)} distinct label(s): a conditional VAE needs "
                             "at least 2 (or covariates='continuous').")
        return labels

    # ------------------------------------------------------------ networks
    def _components(self) -> int:
        if self.prior_components is not None:
            return int(self.prior_components)
        return _DEFAULT_COMPONENTS.get(self.prior, 10)

    def _image_shape(self, n_features: int):
        shape = self.image_shape
        if shape is None and len(getattr(self, "input_shape_", ())) in (2, 3):
            shape = (1, *self.input_shape_) if len(self.input_shape_) == 2 else self.input_shape_
        if shape is None:
            raise ValueError(
                "architecture='conv' needs image_shape=(channels, height, width) with height "
                "and width divisible by 4, e.g. (1, 28, 28) (or image arrays (n, height, width)).")
        shape = _check_image_shape(shape)
        if math.prod(shape) != n_features:
            raise ValueError(
                f"image_shape={shape} holds {math.prod(shape)} values, but X has {n_features} "
                "features: give the shape of one image of X (channels, height, width), e.g. "
                f"(1, {int(math.isqrt(n_features))}, {int(math.isqrt(n_features))}) for square "
                "grey images.")
        return shape

    def _build(self, n_features: int, n_covariates: int, device, dtype, generator=None) -> VAEModule:
        L, C = int(self.latent_dim), int(n_covariates)
        outputs = n_features * (self.n_categories if self.likelihood == "categorical" else 1)
        hidden = [int(h) for h in self.hidden_sizes]
        if self.encoder is not None or self.decoder is not None:
            if self.encoder is None or self.decoder is None:
                raise ValueError("give both encoder and decoder modules, or neither.")
            enc_net, dec_net = self.encoder, self.decoder
        elif self.architecture == "conv":
            shape = self._image_shape(n_features)
            enc_net = ConvEncoderNet(shape, 2 * L, C)
            dec_net = ConvDecoderNet(shape, L + C, outputs // (shape[1] * shape[2]))
        else:
            enc_net = mlp([n_features + C, *hidden, 2 * L])
            dec_net = mlp([L + C, *hidden[::-1], outputs])
        if self.prior == "normal":
            prior = StandardNormalPrior(L)
        elif self.prior == "mog":
            prior = MixturePrior(L, self._components(), generator)
        else:
            prior = VampPrior(L, self._components(), n_features + C)
        module = VAEModule(GaussianEncoder(enc_net),
                           Decoder(dec_net, self.likelihood, n_features, self.n_categories),
                           prior, C)
        return module.to(device=device, dtype=dtype)

    def _new_module(self, device, dtype) -> VAEModule:
        return self._build(int(self.n_features_in_), int(getattr(self, "n_covariates_", 0)),
                           device, dtype)

    def _objective(self):
        if self.objective == "iwae":
            return IWAEObjective(int(self.k), bool(self.dreg))
        return ELBOObjective(float(self.beta), int(self.kl_warmup), float(self.free_bits),
                             int(self.kl_cycles), float(self.kl_cycle_ratio), int(self.epochs))

    def _binarize_mode(self):
        """The binarisation in force: the fitted one, else what ``binarize`` says (auto: any)."""
        if hasattr(self, "binarize_"):
            return self.binarize_
        return None if self.binarize is None or self.likelihood != "bernoulli" else self.binarize

    def _prepare(self):
        return binarize if self._binarize_mode() == "dynamic" else None

    def _fingerprint(self, n_features: int, n_covariates: int) -> dict:
        """What a checkpoint must have been written with to be resumed by this fit."""
        return {"n_features": int(n_features), "n_covariates": int(n_covariates),
                "latent_dim": int(self.latent_dim), "likelihood": self.likelihood,
                "prior": self.prior, "prior_components": self._components(),
                "architecture": "custom" if self.encoder is not None else self.architecture,
                "hidden_sizes": [int(h) for h in self.hidden_sizes]}

    @property
    def pseudo_inputs_(self):
        """The VampPrior's pseudo-inputs, (prior_components, n_features) (prior='vamp')."""
        check_is_fitted(self)
        if self.prior != "vamp":
            raise AttributeError("pseudo_inputs_ belongs to prior='vamp'.")
        u = self.state_dict_["prior.pseudo_inputs"].detach().cpu().numpy()
        return u.reshape(len(u), *self.input_shape_)

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, resume=None):
        """Train the encoder and decoder on X.

        Parameters
        ----------
        X : array-like or Tensor, shape (n_samples, n_features), or image arrays
            (n_samples, height, width) / (n_samples, channels, height, width)
        y : array-like, optional
            Covariates (a conditional VAE): labels (n_samples,) or real
            columns (n_samples, n_covariates); see ``covariates``.
        resume : path, optional
            A ``checkpoint_dir`` of an earlier (interrupted) run with the same
            settings: training continues from it.

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        if y is not None and self.prior == "vamp":
            raise ValueError("prior='vamp' takes its pseudo-inputs from X alone and is not "
                             "defined for a conditional VAE: use prior='normal' or 'mog' with y.")
        reducer = distributed.resolve(self.distributed)
        self.__dict__.pop("binarize_", None)  # decided afresh from this data
        input_shape = _sample_shape(X)
        if reducer is None:
            Xt, _ = self._validate(X, reset=True)
            n_features = int(Xt.shape[1])
            sizes, rank = [Xt.shape[0]], 0
        else:
            Xt = distributed.checked(
                reducer, lambda: self._validate(X, reset=True, min_samples=0)[0])
            n_features = int(reducer.broadcast(torch.tensor([Xt.shape[1]]),
                                               reducer.largest(Xt.shape[0])))
            if Xt.shape[0] == 0:
                Xt = Xt.reshape(0, n_features)
            distributed.checked(reducer, lambda: self._check_width(Xt, n_features))
            sizes, rank = reducer.sizes(Xt.shape[0]), reducer.rank
        classes, Ct = None, None
        if y is not None:
            classes = distributed.checked(reducer, lambda: self._fit_classes(y, reducer))
            Ct = distributed.checked(reducer, lambda: self._covariate_tensor(
                y, Xt.shape[0], reset=True, classes=classes))
            if reducer is not None:
                C = int(reducer.broadcast(torch.tensor([Ct.shape[1]]), reducer.largest(Xt.shape[0])))
                Ct = Ct.reshape(-1, C) if Ct.numel() else Ct.new_zeros(Xt.shape[0], C)
        n_covariates = 0 if Ct is None else int(Ct.shape[1])
        self.binarize_ = self._binarization(Xt, reducer)
        self.input_shape_ = input_shape if math.prod(input_shape) == n_features else (n_features,)
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
            train_rows = Rows(Xt, Ct, split.train_index, select=split.train_rows)
            val_rows = Rows(Xt, Ct, split.val_index, select=split.val_rows) if n_val else None
            module = self._build(n_features, n_covariates, Xt.device, Xt.dtype)
            if self.prior == "vamp" and resume is None:
                module.prior.init_pseudo_inputs(
                    _first_rows(train_rows, self._components(), reducer))
            state = train(
                module, self._objective(), train_rows, val_rows,
                epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                prepare=self._prepare(), patience=self.patience,
                checkpoint_dir=self.checkpoint_dir, resume=resume,
                verbose=int(self.verbose) if rank == 0 else 0, reducer=reducer,
                fingerprint=self._fingerprint(n_features, n_covariates),
                compile=bool(self.compile),
            )
        self._store_training(module, state)
        self.n_features_in_ = n_features
        self.classes_ = classes
        self.n_covariates_ = n_covariates
        return self

    @staticmethod
    def _check_width(Xt, n_features):
        if Xt.shape[0] and Xt.shape[1] != n_features:
            raise ValueError(f"X has {Xt.shape[1]} features on this rank, but {n_features} on "
                             "the others: every rank's shard needs the same columns.")

    def _set_fitted_state(self, state: dict) -> None:
        state.setdefault("input_shape_", (state.get("n_features_in_"),))
        state.setdefault("classes_", None)
        state.setdefault("n_covariates_", 0)
        state.setdefault("binarize_", self.binarize if self.binarize != "auto" else None)
        state["input_shape_"] = tuple(state["input_shape_"])
        super()._set_fitted_state(state)

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

    def load_weights(self, path, n_features: int, n_covariates: int = 0):
        """Load weights written by :meth:`save_weights` into this (unfitted) VAE."""
        raw = files.read_regular(path, max_bytes=io.MAX_TENSOR_BYTES, what="weights file",
                                 error=io.ModelFormatError)
        try:
            self.state_dict_ = load_tensor_bytes(raw)
        except Exception as err:  # SafetensorError and whatever a damaged header provokes
            raise io.ModelFormatError(f"{path} is not a safetensors weights file: {err}.") from err
        self.n_features_in_ = int(n_features)
        self.input_shape_ = (int(n_features),)
        self.classes_ = None
        self.n_covariates_ = int(n_covariates)
        self.binarize_ = "dynamic" if self.binarize == "dynamic" else None
        self.history_ = {"train": [], "validation": []}
        self.lower_bounds_ = np.zeros(0)
        self.n_epochs_ = 0
        self._module = None
        return self

    # ------------------------------------------------------------ inference
    def _batched(self, fn, *tensors, batch_size=1024, desc=None):
        """``fn`` over row blocks of ``tensors`` (None passes through), without gradients,
        with draws seeded by ``random_state`` (so scores and sampled codes are repeatable);
        with ``desc`` and ``verbose`` 1, a progress bar over the rows."""
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        first = tensors[0]
        devices = [first.device] if first.is_cuda else []
        starts = range(0, first.shape[0], batch_size)
        if desc is not None and self.verbose == 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, leave=False, file=sys.stderr, unit="block",
                          disable=None)
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed + 2)
            return torch.cat([fn(*(None if t is None else t[s:s + batch_size] for t in tensors))
                              for s in starts])

    def _data_shape(self, t: torch.Tensor, like_images: bool) -> torch.Tensor:
        """Rows in data space back in the fitted sample shape (for image inputs)."""
        if like_images and len(self.input_shape_) > 1:
            return t.reshape(t.shape[0], *self.input_shape_)
        return t

    def transform(self, X, y=None, sample: bool = False):
        """Latent codes: posterior means E_q[z | x] (or a draw with ``sample=True``), (n, latent)."""
        Xt, kind = self._validate(X)
        C = self._covariates(y, Xt.shape[0])
        m = self.module_

        def codes(x, c):
            loc, scale = m.encode(x, c)
            return loc + scale * torch.randn_like(loc) if sample else loc

        return to_output(self._batched(codes, Xt, C), kind)

    def decode(self, Z, y=None):
        """E[x | z] for latent codes Z of shape (n, latent_dim) (and their covariates y)."""
        dtype = resolve_dtype(self.dtype)
        Zt, kind = as_2d_tensor(Z, name="Z", dtype=dtype, device=resolve_device(self.device, Z))
        if Zt.shape[1] != self.latent_dim:
            raise ValueError(f"Z has {Zt.shape[1]} columns; this VAE has latent_dim={self.latent_dim}.")
        C = self._covariates(y, Zt.shape[0])
        out = self._batched(self.module_.mean, Zt, C)
        return to_output(self._data_shape(out, True), kind)

    inverse_transform = decode

    def reconstruct(self, X, y=None):
        """E[x | z = E_q[z | x]]: the input passed through the code, in X's shape."""
        Xt, kind = self._validate(X)
        C = self._covariates(y, Xt.shape[0])
        m = self.module_
        out = self._batched(lambda x, c: m.mean(m.encode(x, c)[0], c), Xt, C)
        return to_output(self._data_shape(out, _is_image_stack(X)), kind)

    def sample(self, n_samples=1, *, y=None, mean: bool = True):
        """Generate: z ~ p(z), then E[x | z] (or a draw x ~ p(x | z) with ``mean=False``).

        ``y``: the covariates of the samples (one label for all, or one per
        sample), required for a conditional VAE.
        """
        check_positive_int(n_samples, "n_samples")
        m = self.module_
        C = self._covariates(y, int(n_samples))
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            z = m.prior_distribution().sample((int(n_samples),))
            x = m.mean(z, C) if mean else m.likelihood(z, C).sample()
        return self._data_shape(x, True).cpu().numpy()

    def interpolate(self, x1, x2, steps: int = 8, y=None):
        """Decoded points on the straight line between the codes of x1 and x2, (steps, *sample shape).

        ``y``: one label (or covariate row) for both ends, for a conditional VAE.
        """
        check_positive_int(steps, "steps", minimum=2)
        pair = (torch.stack([x1, x2]) if isinstance(x1, torch.Tensor)
                else np.stack([np.asarray(x1), np.asarray(x2)]))
        X, kind = self._validate(pair)
        C = self._covariates(None if y is None else _repeat(y, 2), 2)
        m = self.module_
        with torch.no_grad():
            z = m.encode(X, C)[0]
            t = torch.linspace(0, 1, steps, dtype=z.dtype, device=z.device)[:, None]
            Cs = None if C is None else C[:1].expand(steps, -1)
            out = m.mean((1 - t) * z[0] + t * z[1], Cs)
            return to_output(self._data_shape(out, True), kind)

    def _evaluation_data(self, Xt):
        """With dynamic binarisation, scores are of one binarised draw of X
        (seeded by ``random_state``, so repeatable)."""
        if self._binarize_mode() != "dynamic":
            return Xt
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        g = torch.Generator(device=Xt.device)
        g.manual_seed(seed + 1)
        return torch.bernoulli(Xt, generator=g)

    def elbo(self, X, y=None):
        """One-sample ELBO per sample (a stochastic lower bound on log p(x)), shape (n,).

        With ``binarize="dynamic"``, of a binarised draw of X (see score_samples).
        """
        Xt, kind = self._validate(X)
        C = self._covariates(y, Xt.shape[0])
        Xt = self._evaluation_data(Xt)
        m = self.module_

        def one(x, c):
            reconstruction, kl, _ = m.elbo_terms(x, c=c)
            return reconstruction - kl

        return to_output(self._batched(one, Xt, C), kind)

    def score_samples(self, X, y=None, n_samples: int = 100):
        """Importance-sampled estimate of log p(x) per sample (IWAE with n_samples), shape (n,).

        A stochastic lower bound that tightens as ``n_samples`` grows; lower
        is more anomalous.  Batched over samples and importance draws.  With
        ``binarize="dynamic"`` it scores one binarised draw of X, seeded by
        ``random_state`` (the usual protocol for binarised image data).
        For a conditional VAE, log p(x | y).
        """
        check_positive_int(n_samples, "n_samples")
        Xt, kind = self._validate(X)
        C = self._covariates(y, Xt.shape[0])
        Xt = self._evaluation_data(Xt)
        m = self.module_
        rows = max(1, 2 ** 22 // max(1, n_samples * Xt.shape[1]))
        return to_output(self._batched(lambda x, c: m.iwae(x, n_samples, c=c), Xt, C,
                                       batch_size=rows, desc="importance sampling"), kind)

    def score(self, X, y=None, n_samples: int = 100):
        """Mean importance-sampled log p(x) per sample."""
        return float(np.mean(np.asarray(torch.as_tensor(self.score_samples(X, y, n_samples)).cpu())))

    def collapse_diagnostics(self, X, y=None, max_rows: int = 2048, mi_rows: int = 1024) -> dict:
        """Posterior-collapse diagnostics of the fitted model on (up to ``max_rows`` of) X.

        Returns a dict: "kl_per_dimension" (L,) mean KL(q(z_j | x) || p(z_j));
        "unit_variance" (L,) Cov_x(E_q[z_j | x]) and "active_units", the
        number of dimensions where it exceeds 0.01 (Burda et al. 2016);
        "mutual_information", an estimate of I(x; z) under q from the first
        ``mi_rows`` rows (at most log(mi_rows)). The same quantities
        ``history_`` records per epoch.
        """
        Xt, _ = self._validate(X)
        C = self._covariates(y, Xt.shape[0])
        Xt = self._evaluation_data(Xt)
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        with torch.random.fork_rng(devices=[Xt.device] if Xt.is_cuda else []):
            torch.manual_seed(seed + 3)
            return collapse_diagnostics(self.module_, Rows(Xt, C), max_rows=int(max_rows),
                                        mi_rows=int(mi_rows))


# ---------------------------------------------------------------- helpers
def _check_input_shape(vae, shape) -> str | None:
    """The load validator's test of ``input_shape_``: positive ints holding n_features_in_ values."""
    if not isinstance(shape, (list, tuple)) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        return "must be a list of positive sizes"
    if math.prod(shape) != vae.n_features_in_:
        return f"holds {math.prod(shape)} values, not n_features_in_={vae.n_features_in_}"
    return None


def _check_image_shape(shape) -> tuple:
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(
            f"image_shape={shape!r}: architecture='conv' needs (channels, height, width) with "
            "height and width divisible by 4, e.g. (1, 28, 28).")
    return shape


def _is_image_stack(X) -> bool:
    return getattr(X, "ndim", np.ndim(X) if isinstance(X, (list, tuple)) else 2) in (3, 4)


def _sample_shape(X) -> tuple:
    """Shape of one sample of X (an image's shape for image stacks)."""
    shape = tuple(getattr(X, "shape", np.shape(X)))
    return tuple(int(s) for s in shape[1:]) if len(shape) >= 2 else (1,)


def _flatten_images(X, name: str):
    """Image stacks (n, height, width) or (n, channels, height, width) as rows (n, pixels)."""
    if not _is_image_stack(X):
        return X
    if isinstance(X, torch.Tensor):
        return X.reshape(X.shape[0], -1)
    arr = np.asarray(X)
    return arr.reshape(arr.shape[0], -1)


def _plain(value):
    """A label as a plain Python value (JSON-able, hashable)."""
    return value.item() if isinstance(value, np.generic) else value


def _sort_key(value):
    return (str(type(value)), value)


def _repeat(y, n: int):
    arr = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return np.repeat(arr[None], n, axis=0) if arr.ndim >= 1 else np.full(n, arr.item())


def _first_rows(rows: Rows, count: int, reducer) -> torch.Tensor:
    """The data at global positions 0..count-1 of a split (cycling when it is shorter),
    on every rank: the training split is already in random order, so these are random
    training rows."""
    n = rows.n_global
    positions = torch.arange(count) % n
    stop = min(count, n)
    local, offsets = rows.index.span(0, stop)
    x, _ = rows[local]
    if reducer is not None:
        full = x.new_zeros(stop, x.shape[1])
        full[offsets.to(full.device)] = x
        x = reducer({"x": full})["x"]
    return x[positions.to(x.device)]


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
