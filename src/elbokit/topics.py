"""``LDA``: latent Dirichlet allocation behind the scikit-learn estimator API."""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from elbokit import io
from elbokit._validation import (
    check_nonneg_float,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from elbokit.base import ElbokitEstimator
from elbokit.data.text import Corpus, CountBatches, SparseCounts, as_counts, vectorize
from elbokit.inference import distributed
from elbokit.inference.sampling import run_gibbs, standard_gamma
from elbokit.inference.vi import online_bound, online_step, run_batch_vi, run_online_vi
from elbokit.models import lda_gibbs
from elbokit.models.lda import (
    GammaTable,
    LDADraw,
    LDAModel,
    LDAParams,
    completion_log_likelihood,
    split_counts,
    topic_coherence,
    topic_diversity,
)

METHODS = ("auto", "batch", "online", "gibbs")
# max_iter=None: iterations (batch), passes (online), most sweeps (gibbs)
DEFAULT_MAX_ITER = {"batch": 100, "online": 10, "gibbs": 200}
# tol=None: batch VI stops once the per-word bound gains less than 3e-4 an iteration (1e-4
# took 1.6-2.3x the iterations on the licences, man pages and changelogs for held-out
# log-likelihoods within 0.003 nats per token; see the README)
DEFAULT_TOL = {"batch": 3e-4, "online": 1e-4, "gibbs": 1e-4}
# eta=None with Gibbs sampling: held-out log-likelihood per token was better with eta=0.05
# than with eta learned (Minka, ~0.015-0.03 at K=50) on all six corpus/K pairs measured
# (KJV and fortunes at K=20 and 50, man pages and changelogs at K=50), NPMI mixed
GIBBS_ETA = 0.05
# eta=None with Gibbs sampling from batch VI's topics (init="batch"): 0.02 (1/K at K=50) gave
# a higher NPMI than 0.05 on the licences, man pages, changelogs, Python's standard library and
# Debian READMEs (+0.003 to +0.071, seeds 0-2) at a held-out log-likelihood within 0.01
# (higher on the licences); 0.01 lost more. From random topics 0.02 lost up to 0.06 nats per
# token (changelogs), so that start keeps GIBBS_ETA (README)
GIBBS_WARM_ETA = 0.02
# eta=None with batch VI on documents that repeat their words (more than AUTO_REPEAT tokens
# per non-zero count): 1/K (0.02 at K=50) left more dead and incoherent topics; 0.002 gave
# a higher NPMI on the changelogs, licences and man pages and a higher held-out
# log-likelihood on the changelogs and man pages (within the seed spread on the licences),
# at K=20, 50 and 100 (README); on short documents it lowered the log-likelihood (KJV,
# fortunes), so they keep 1/K
REPEAT_ETA = 0.002
MIN_ALPHA = 0.05  # alpha=None for Gibbs and batch VI: max(1/K, MIN_ALPHA), fixed (README)
AUTO_REPEAT = 2.0  # more tokens per non-zero count than this: "long documents" (README)
INITS = ("random", "batch")
# init="batch" (the default for long documents): this many batch-VI iterations, then at most
# WARM_SWEEPS Gibbs sweeps from its topics. On the licences, man pages, changelogs, Python's
# standard library and Debian READMEs (K=50, seeds 0-2) the held-out log-likelihood rose with
# the sweeps from there (60, 100, 150, 200: +0.003 to +0.010 nats/token from 60 to 100 on every
# corpus) while NPMI drifted down by up to 0.016; 100 keeps the man pages ahead of tomotopy's
# 1000 iterations at 1.3-1.45x the time of 60 (README). 5 batch-VI iterations instead of 10
# lost 0.004-0.010 nats/token on three of those five corpora (lda-init-iters-session12.txt)
INIT_ITERS = 10
WARM_SWEEPS = 100
_CHUNK_ELEMENTS = 1 << 23  # elements of one (nnz, K) work tensor in batch mode


def _is_text(X) -> bool:
    if isinstance(X, str):
        return True
    if isinstance(X, (list, tuple)) and len(X) > 0:
        return isinstance(X[0], str)
    return False


@io.register
class LDA(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ElbokitEstimator):
    """Latent Dirichlet allocation, by variational inference or Gibbs sampling.

    Documents are mixtures of ``n_topics`` topics, each topic a distribution
    over words (see :mod:`elbokit.models.lda` for the model and the map from
    the literature's symbols: lambda is ``components_``, gamma the
    unnormalised output of ``transform``, alpha/eta the priors).

    Parameters
    ----------
    n_topics : int, default=10
        Number of topics K.
    n_components : int, optional
        scikit-learn's name for ``n_topics``; when given it wins.
    alpha : float, array of shape (K,), "symmetric", "asymmetric" or "auto", optional
        Document-topic prior. "symmetric": 1/K for every topic; a float: that
        value for every topic; an array: one value per topic; "asymmetric":
        proportional to 1 / (k + sqrt(K)), summing to 1 (as gensim); "auto":
        start at 1/K and learn an asymmetric alpha by empirical Bayes in every
        global update (VI: Newton's method on the bound; Gibbs: Minka's fixed
        point on the sampled counts, as Mallet and tomotopy, from the 5th
        sweep). None (default): max(1/K, 0.05) for every topic, fixed, for Gibbs
        sampling and batch VI (on short documents the learned alpha settles far
        lower, and held-out log-likelihood fell with it, by 0.1-0.35 nats/token
        at K=100; on long documents it made no difference), "auto" for online
        VI (where learning it did better); see the README.
    eta : float, array of shape (V,), "symmetric" or "auto", optional
        Topic-word prior; "symmetric": 1/K; "auto": start at 1/K and learn a
        symmetric eta alike. None (default): 0.05 for Gibbs sampling from
        random topics (a better held-out log-likelihood than learning eta,
        which settles at a smaller value, on every corpus measured), 0.02 from
        batch VI's topics (``init="batch"``: a higher NPMI on every long-
        document corpus measured, log-likelihood within 0.01; its batch-VI
        start takes batch VI's eta); for batch VI 0.002 on documents that
        repeat their words (more than ``AUTO_REPEAT`` = 2 tokens per non-zero
        count: licence texts, man pages, changelogs, where 1/K left more dead
        and incoherent topics) and "symmetric" on others (short documents,
        where a smaller eta lowered the held-out log-likelihood, and real-valued
        weights); "symmetric" for online VI. See the README.
    method : {"auto", "batch", "online", "gibbs"}, default="auto"
        ``batch``: variational EM (Blei et al. 2003): every iteration
        continues each document's local updates from its previous state and,
        on a per-document schedule (at once again while it pays, at doubling
        intervals of up to 16 iterations when it does not), also solves it
        afresh, keeping whichever optimum scores higher, so the bound never
        decreases; ``online``: stochastic VI (Hoffman et al. 2010)
        over shuffled mini-batches of ``batch_size`` documents, step
        (tau0 + t)^-kappa (in ``fit``, a document's local updates start from
        its gamma of the previous pass; ``partial_fit`` streams and starts
        afresh); ``gibbs``: a sparse blocked Gibbs sampler (theta collapsed,
        the topics drawn once per sweep), ``components_`` being eta plus the
        topic-word counts averaged after the burn-in; ``auto``: ``gibbs``
        for integer counts (from batch VI's topics on long documents, see
        ``init``), ``batch`` for real-valued weights (such as tf-idf), which
        a sampler cannot take. ``method_`` is the one used.
    init : {None, "random", "batch"}, default=None
        Where the Gibbs sampler starts. ``random``: topics drawn about uniform
        (Gamma(100, 1/100) weights); ``batch``: the topics after
        ``INIT_ITERS`` = 10 iterations of batch VI (its priors, start and
        ``tol``; the same as ``method="batch", max_iter=10``), from which
        ``max_iter`` defaults to 100 sweeps. None: ``batch`` for long
        documents (more than ``AUTO_REPEAT`` = 2 tokens per non-zero count on
        average: licences, man pages, changelogs), where the sampler from
        random topics needed about 200 sweeps to overtake batch VI and 100
        sweeps from batch VI's topics did better than either on most
        corpora measured; ``random`` for short ones (verses, fortunes,
        posts). VI ignores it.
    max_iter : int, optional
        Iterations (batch, default 100), passes over the data (online,
        default 10) or most sweeps (gibbs, default 200; 100 from
        ``init="batch"``).
    batch_size : int, optional
        Documents per mini-batch (online; default 256), or per chunk of the
        local updates (batch and gibbs; default: chosen to bound memory). A
        batch-VI fit does not depend on it beyond rounding, nor does the
        sampler's chain on CPU (its random numbers are keyed by each
        document's row); on other devices the sampler draws each chunk's
        apart, so another ``batch_size`` there gives another chain (as another
        seed does).
    tol : float, optional
        Stop when the per-word bound changes by less than ``tol`` between
        iterations (batch; default 3e-4) or passes (online; default 1e-4);
        gibbs (default 1e-4): the burn-in ends when the per-word
        log-likelihood of two consecutive windows of 10 sweeps differs by
        less than ``tol`` or two standard errors, and the sampler then
        averages as many sweeps as the burn-in took. 0 runs ``max_iter``.
    local_max_iter : int, default=100
        Most local (per-document) iterations of the variational updates, in
        fitting and in ``transform``.
    local_tol : float, default=1e-3
        A document's local updates stop when the mean absolute change of its
        gamma falls below ``local_tol``.
    tau0 : float, default=10.0
        Online: delay of the step size, which down-weights early updates.
    kappa : float, default=0.7
        Online: forgetting rate, in (0.5, 1].
    total_docs : int, optional
        ``partial_fit``: the number of documents D in the whole stream, scaling
        each mini-batch's statistics by D / batch size (default: the documents
        seen so far). ``fit`` uses the data's own size and ignores it.
    burn_in : int, optional
        Gibbs: sweeps discarded before averaging; a fixed schedule of
        ``max_iter`` sweeps. Default: adaptive (see ``tol``).
    random_state : int, RandomState or None
        Seed of the initial topics, the shuffling and the sampler: the same
        seed gives the same initial topics for every method.
    device : str or torch.device, optional
        Where to compute; by default where the data is.
    dtype : {"float32", "float64"}, default="float32"
        Compute dtype of the local updates; statistics and bounds
        accumulate in float64, global parameters are float64.
    verbose : int, default=0
        0 silent, 1 a progress bar, 2 one line per iteration.
    distributed : None, True or False, default=None
        Fit across the ranks of a ``torch.distributed`` process group, each
        rank passing its own documents (possibly none; the same vocabulary
        everywhere; rank r's documents come after rank r-1's in the global
        order). Every method: rank 0's seed is used everywhere, so the
        initial topics are the same. ``batch``: the statistics are summed
        with one all_reduce per iteration; ``online``: the mini-batches are
        cut from one global shuffle and each rank works on its documents of
        each (``batch_size`` is the global mini-batch), so batch and online
        fits do the single-process arithmetic in another order (equal to
        rounding with float64 and ``local_tol=0``; a per-document stopping
        test can flip on a rounding difference);
        ``gibbs``: each rank samples its documents' assignments, the counts
        are summed and the topics drawn alike on every rank (the same
        blocked Gibbs chain, and on CPU the one-process draws: each document's
        random numbers are keyed by its corpus row, a rank's rows following
        the ranks' before it; on GPUs each rank draws its own).
        ``partial_fit``: each call is one step on the union of the ranks'
        ``X``. None detects an initialised group of several ranks.

    Attributes
    ----------
    components_ : array of shape (K, V)
        lambda, the Dirichlet parameters of q(beta_k) (for ``gibbs``: eta
        plus the averaged topic-word counts).
    topic_word_ : array of shape (K, V)
        E[beta]: ``components_`` normalised per topic.
    exp_dirichlet_component_ : array of shape (K, V)
        exp(E[log beta]) (scikit-learn's name).
    alpha_ : array of shape (K,)
        The document-topic prior (learned when ``alpha="auto"``, and by default for
        online VI).
    eta_ : array of shape (V,)
    method_ : str
        The method used (``method="auto"`` resolved).
    init_ : str or None
        Where the sampler started (``init=None`` resolved): ``random`` or
        ``batch``; None for VI.
    lower_bounds_ : array
        Per-word bound history: ELBO per word at each batch iteration (and
        last under the fitted parameters); for online, the per-pass mean of
        the mini-batch estimates (one entry per pass, or per ``partial_fit``
        call); for gibbs, the mean over tokens of log p(w_i | z_-i, beta),
        each token's predictive probability at its draw, per sweep.
    lower_bound_ : float
    converged_ : bool
        Whether the bound settled within ``tol`` (batch, online) or the chain
        settled and stopped before ``max_iter`` (gibbs): a run that used all
        of ``max_iter`` is not converged.
    n_iter_ : int
    n_batch_iter_ : int
        Global updates made (the online step counter t).
    n_docs_seen_ : int
        Documents fitted on (by ``partial_fit``: over all calls).
    n_features_in_ : int
        Vocabulary size V.
    vocabulary_ : list of str or None
        The words, when fitted on a :class:`~elbokit.Corpus`; then
        ``transform``, ``score`` and friends also accept raw text.
    vectorizer_params_ : dict or None
        The Corpus's CountVectorizer settings, to vectorise raw text alike.

    Fitted arrays are NumPy arrays, or float64 tensors when fitted on tensors.

    Notes
    -----
    ``score_samples(X)`` is, per document, the bound
    E_q[log p(w_d, theta_d, z_d | alpha, beta)] - E_q[log q(theta_d, z_d)]
    with E[log beta] under the fitted q(beta): a lower bound on the
    document's log-probability. ``score`` is its mean over documents and
    ``perplexity(X, estimate="bound")`` is exp(-sum of score_samples / number
    of words) -- the same quantity, normalised per word. Unlike
    scikit-learn's, neither adds the topics' prior term, which belongs to the
    training corpus and not to the documents scored (see :meth:`perplexity`
    for how the scales compare).
    """

    _fitted_attributes = (
        "components_", "alpha_", "eta_", "lower_bounds_", "lower_bound_", "converged_",
        "n_iter_", "n_batch_iter_", "n_features_in_", "vocabulary_", "vectorizer_params_",
        "method_", "init_", "n_docs_seen_",
    )
    _fitted_schema = {
        "components_": io.array("n_topics", "n_features_in_", low=0),
        "alpha_": io.array("n_topics", positive=True), "eta_": io.array("n_features_in_", positive=True),
        "lower_bounds_": io.array(None), "lower_bound_": io.real(), "converged_": io.flag(),
        "n_iter_": io.integer(low=0), "n_batch_iter_": io.integer(low=0),
        "n_features_in_": io.integer(low=1),
        "vocabulary_": io.strings(length="n_features_in_", nullable=True),
        "vectorizer_params_": io.json_value(nullable=True),
        "method_": io.Field("str", optional=True,
                            check=lambda model, v: None if v in ("batch", "online", "gibbs")
                            else f"method_={v!r} is not batch, online or gibbs"),
        "init_": io.Field("str", optional=True, nullable=True,
                          check=lambda model, v: None if v is None or v in INITS
                          else f"init_={v!r} is not random or batch"),
        "n_docs_seen_": io.integer(low=0, optional=True),
    }

    def __init__(
        self,
        n_topics=10,
        *,
        n_components=None,
        alpha=None,
        eta=None,
        method="auto",
        init=None,
        max_iter=None,
        batch_size=None,
        tol=None,
        local_max_iter=100,
        local_tol=1e-3,
        tau0=10.0,
        kappa=0.7,
        total_docs=None,
        burn_in=None,
        random_state=None,
        device=None,
        dtype="float32",
        verbose=0,
        distributed=None,
    ):
        self.n_topics = n_topics
        self.n_components = n_components
        self.alpha = alpha
        self.eta = eta
        self.method = method
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.local_max_iter = local_max_iter
        self.local_tol = local_tol
        self.tau0 = tau0
        self.kappa = kappa
        self.total_docs = total_docs
        self.burn_in = burn_in
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.distributed = distributed

    # ------------------------------------------------------------ scikit-learn
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True
        return tags

    @property
    def _n_features_out(self):
        """Number of output features of ``transform`` (one per topic)."""
        return int(self.components_.shape[0])

    # ------------------------------------------------------------ validation
    def _k(self) -> int:
        """K: ``n_components`` when given, else ``n_topics``."""
        if self.n_components is not None:
            return check_positive_int(self.n_components, "n_components")
        return check_positive_int(self.n_topics, "n_topics")

    def _tol(self, method: str) -> float:
        return DEFAULT_TOL[method] if self.tol is None else float(self.tol)

    def _max_iter(self, method: str, init: str = "random") -> int:
        if self.max_iter is None:
            return WARM_SWEEPS if method == "gibbs" and init == "batch" else \
                DEFAULT_MAX_ITER[method]
        return check_positive_int(self.max_iter, "max_iter")

    @staticmethod
    def _shape(counts: SparseCounts, reducer) -> tuple[bool, bool]:
        """``(fractional, repeated)`` of the counts (over every rank): real-valued
        weights anywhere; integer counts with more than AUTO_REPEAT tokens per non-zero
        (long documents, which use their words many times each)."""
        d = counts.data.to(torch.float64)
        sums = [float((d != d.round()).sum()), float(d.sum()), float(d.numel())]
        if reducer is not None:
            sums = [reducer.sum(v) for v in sums]
        fractional, tokens, nnz = sums
        return fractional > 0, fractional == 0 and tokens > AUTO_REPEAT * max(nnz, 1.0)

    def _resolve_method(self, shape: tuple[bool, bool]) -> str:
        """``auto``: Gibbs for integer counts (started from batch VI on long documents,
        :meth:`_resolve_init`), batch VI for real-valued weights, which a sampler
        cannot take. ``shape``: :meth:`_shape` of the counts."""
        if self.method != "auto":
            return self.method
        return "batch" if shape[0] else "gibbs"

    def _resolve_init(self, method: str, shape: tuple[bool, bool]) -> str:
        """The sampler's start: ``init`` as given, else ``batch`` for long documents
        (``shape[1]``, :meth:`_shape`) and ``random`` for short ones; VI: ``random``."""
        if method != "gibbs":
            return "random"
        if self.init is not None:
            return self.init
        return "batch" if shape[1] else "random"

    def _check_hyperparameters(self):
        self._k()
        if self.max_iter is not None:
            check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.local_max_iter, "local_max_iter")
        if not isinstance(self.verbose, bool):  # True/False: 1/0, as scikit-learn allows
            check_positive_int(self.verbose, "verbose", minimum=0)
        if self.tol is not None:
            check_nonneg_float(self.tol, "tol")
        check_nonneg_float(self.local_tol, "local_tol")
        check_nonneg_float(self.tau0, "tau0")
        if self.batch_size is not None:
            check_positive_int(self.batch_size, "batch_size")
        if self.total_docs is not None:
            check_positive_int(self.total_docs, "total_docs")
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise ValueError(
                f"method={self.method!r} is not supported: use one of "
                f"{', '.join(map(repr, METHODS))}."
            )
        if self.init is not None and (not isinstance(self.init, str) or self.init not in INITS):
            raise ValueError(
                f"init={self.init!r} is not supported: use None (the default), "
                f"{', '.join(map(repr, INITS))}."
            )
        kappa = check_nonneg_float(self.kappa, "kappa")
        if not 0.5 < kappa <= 1.0:
            raise ValueError(
                f"kappa={self.kappa!r} must be in (0.5, 1] for the online steps to converge."
            )
        if self.burn_in is not None:
            check_positive_int(self.burn_in, "burn_in", minimum=0)
            if self.max_iter is not None and self.burn_in >= self.max_iter:
                raise ValueError(
                    f"burn_in={self.burn_in} must be < max_iter={self.max_iter}: "
                    "some sweeps must be kept."
                )

    def _learned(self, value) -> bool:
        return isinstance(value, str) and value == "auto"

    def _eta_setting(self, method: str, repeated: bool = False, init: str = "random"):
        """eta as given, else the default of ``method`` (``repeated``: the counts repeat
        their words, :meth:`_shape`; ``init``: where the sampler starts)."""
        if self.eta is not None:
            return self.eta
        if method == "gibbs":
            return GIBBS_WARM_ETA if init == "batch" else GIBBS_ETA
        return REPEAT_ETA if method == "batch" and repeated else "symmetric"

    def _alpha_setting(self, method: str):
        if self.alpha is not None:
            return self.alpha
        return "auto" if method == "online" else max(1.0 / self._k(), MIN_ALPHA)

    def _prior(self, value, name, size, device, choices):
        K = self._k()
        if value is None or (isinstance(value, str) and value in ("symmetric", "auto")):
            return torch.full((size,), 1.0 / K, dtype=torch.float64, device=device)
        if isinstance(value, str):
            if value == "asymmetric" and "asymmetric" in choices:
                p = 1.0 / (torch.arange(size, dtype=torch.float64, device=device) + math.sqrt(K))
                return p / p.sum()
            options = ("symmetric", "auto") + tuple(choices)
            raise ValueError(
                f"{name}={value!r} is not supported: use a positive float, an array of shape "
                f"({size},), {', '.join(map(repr, options))} or None."
            )
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            v = check_nonneg_float(value, name, strict=True)
            return torch.full((size,), v, dtype=torch.float64, device=device)
        t = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
        t = t.to(device=device, dtype=torch.float64)
        if tuple(t.shape) != (size,):
            raise ValueError(f"{name} must be a float or an array of shape ({size},); "
                             f"got shape {tuple(t.shape)}.")
        if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
            raise ValueError(f"{name} must hold finite values > 0.")
        return t

    def _counts(self, X, name="X", reset=False, allow_empty=False) -> SparseCounts:
        dtype = resolve_dtype(self.dtype)
        if not reset:
            check_is_fitted(self)
        if _is_text(X):
            if reset or getattr(self, "vocabulary_", None) is None:
                how = ("this LDA was fitted on a count matrix, which carries no words"
                       if not reset else "a model fitted on it would have no vocabulary")
                raise TypeError(
                    f"{name} is raw text, but {how}: vectorise the text with the vectorizer "
                    "that made the counts (vectorizer.transform(texts)), or fit on an "
                    "elbokit.Corpus, which keeps its vocabulary so that raw text works."
                )
            X = vectorize([X] if isinstance(X, str) else X, self.vocabulary_,
                          self.vectorizer_params_)
        device = resolve_device(self.device, X if isinstance(X, torch.Tensor) else None)
        n_features = None if reset else self.n_features_in_
        return as_counts(X, name=name, dtype=dtype, device=device, n_features=n_features,
                         allow_empty=allow_empty, estimator=type(self).__name__)

    def _model(self, method: str) -> LDAModel:
        return LDAModel(resolve_dtype(self.dtype), int(self.local_max_iter),
                        float(self.local_tol),
                        learn_alpha=self._learned(self._alpha_setting(method)),
                        learn_eta=self._learned(self._eta_setting(method)))

    def _chunk_rows(self, counts: SparseCounts, model: LDAModel | None = None) -> int:
        """Documents per chunk: ``batch_size``, else all of them for the compiled CPU
        kernels (which keep no (nnz, K) work tensor, while every chunk costs passes over
        the K x V tables: a third of a man-page corpus's Gibbs sweep in three chunks),
        else as many as keep a (nnz, K) tensor within ``_CHUNK_ELEMENTS``."""
        if self.batch_size is not None:
            return int(self.batch_size)
        if model is not None and model._compiled(counts.device):
            return max(1, counts.n_docs)
        nnz_per_doc = max(1.0, counts.indices.shape[0] / max(1, counts.n_docs))
        return max(64, int(_CHUNK_ELEMENTS / (nnz_per_doc * self._k())))

    # ------------------------------------------------------------ state
    def _params(self, device) -> LDAParams:
        check_is_fitted(self)

        def t(a):
            return torch.as_tensor(a).to(device=device, dtype=torch.float64)

        return LDAParams(t(self.components_), t(self.alpha_), t(self.eta_))

    def _priors(self, method: str, repeated: bool, counts: SparseCounts,
                init: str = "random"):
        """The initial alpha, shape (K,), and eta, shape (V,), of ``method``."""
        alpha = self._prior(self._alpha_setting(method), "alpha", self._k(), counts.device,
                            ("asymmetric",))
        eta = self._prior(self._eta_setting(method, repeated, init), "eta", counts.n_features,
                          counts.device, ())
        return alpha, eta

    def _initial_params(self, counts: SparseCounts, gen, reducer=None,
                        seeded: bool = False, method: str = "batch",
                        repeated: bool = False) -> LDAParams:
        """Priors and initial topics: lambda ~ Gamma(100, 1/100) (Hoffman et al., as
        scikit-learn and gensim), plus, when ``seeded``, the counts of one random
        document per topic (Blei et al.'s "seeded" start), scaled down to the
        median document length when longer (a long document would otherwise make
        its topic a copy of itself), the same on every rank."""
        K, V = self._k(), counts.n_features
        device = counts.device
        alpha, eta = self._priors(method, repeated, counts)
        lam = standard_gamma(torch.full((K, V), 100.0, dtype=torch.float64, device=device),
                             gen) / 100.0
        if seeded:
            offset, n_total = 0, counts.n_docs
            if reducer is not None:
                sizes = reducer.sizes(counts.n_docs)
                offset, n_total = sum(sizes[:reducer.rank]), sum(sizes)
            picks = torch.randperm(n_total, generator=gen, device=gen.device)[:K].to(device)
            seed = torch.zeros(K, V, dtype=torch.float64, device=device)
            mine = (picks >= offset) & (picks < offset + counts.n_docs)
            if bool(mine.any()):
                part = counts.take(picks[mine] - offset)
                rows = part.row_ids()
                topics = torch.nonzero(mine).squeeze(1)[rows]
                seed.index_put_((topics, part.indices), part.data.to(torch.float64),
                                accumulate=True)
            if reducer is not None:
                seed = reducer({"seed": seed})["seed"]
            total = seed.sum(1, keepdim=True)
            median = self._median_length(counts, reducer)
            lam = lam + seed * torch.clamp(median / total.clamp_min(1e-300), max=1.0)
        return LDAParams(lam, alpha, eta)

    @staticmethod
    def _median_length(counts: SparseCounts, reducer=None) -> float:
        """Median length of the non-empty documents (over every rank's)."""
        lengths = counts.doc_lengths().round().to(torch.int64)
        longest = int(lengths.max()) if lengths.numel() else 0
        if reducer is not None:
            longest = max(reducer.sizes(longest))
        hist = torch.bincount(lengths, minlength=longest + 1).to(torch.float64)[:longest + 1]
        if reducer is not None:
            hist = reducer({"lengths": hist})["lengths"]
        hist[0] = 0.0
        cum = torch.cumsum(hist, 0)
        if float(cum[-1]) <= 0:
            return 1.0
        return float(torch.searchsorted(cum, cum[-1] / 2))

    def _store(self, params, *, is_torch, vocabulary=None, vectorizer_params=None,
               bounds=(), converged=False, n_iter=0, n_batch_iter=0, n_features=None,
               method=None, n_docs=0, init=None):
        out = (lambda t: t) if is_torch else (lambda t: t.detach().cpu().numpy())
        self.components_ = out(params.concentration)
        self.alpha_ = out(params.alpha)
        self.eta_ = out(params.eta)
        self.lower_bounds_ = np.asarray(bounds, dtype=np.float64)
        self.lower_bound_ = float(bounds[-1]) if len(bounds) else float("nan")
        self.converged_ = bool(converged)
        self.n_iter_ = int(n_iter)
        self.n_batch_iter_ = int(n_batch_iter)
        self.n_features_in_ = int(n_features)
        self.vocabulary_ = vocabulary
        self.vectorizer_params_ = vectorizer_params
        self.method_ = method
        self.init_ = init
        self.n_docs_seen_ = int(n_docs)

    def _set_fitted_state(self, state: dict) -> None:
        # models saved before these attributes existed
        state.setdefault("method_", self.method if self.method != "auto" else "batch")
        state.setdefault("n_docs_seen_", 0)
        state.setdefault("init_", "random" if state["method_"] == "gibbs" else None)
        super()._set_fitted_state(state)

    @property
    def topic_word_(self):
        """E[beta] under q: ``components_`` normalised per topic, shape (K, V)."""
        check_is_fitted(self)
        c = self.components_
        return c / c.sum(1, keepdims=True) if not isinstance(c, torch.Tensor) \
            else c / c.sum(1, keepdim=True)

    @property
    def exp_dirichlet_component_(self):
        """exp(E[log beta]) under q(beta), shape (K, V) (scikit-learn's attribute)."""
        from elbokit.models.lda import dirichlet_expectation

        check_is_fitted(self)
        c = torch.as_tensor(self.components_).to(torch.float64)
        e = torch.exp(dirichlet_expectation(c))
        return e if isinstance(self.components_, torch.Tensor) else e.numpy()

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Fit the topics.

        Parameters
        ----------
        X : scipy.sparse matrix, torch sparse tensor, array or Corpus, shape (n_docs, V)
            Word counts. Empty documents are allowed (they do not move the
            topics); a matrix without any word is an error.
        y : ignored

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        vocabulary = vec_params = None
        if isinstance(X, Corpus):
            vocabulary, vec_params = list(X.vocabulary), dict(X.vectorizer_params)
        reducer = distributed.resolve(self.distributed)
        counts = distributed.checked(
            reducer, lambda: self._counts(X, reset=True, allow_empty=reducer is not None))
        n_words = counts.n_words if reducer is None else reducer.sum(counts.n_words)
        if n_words <= 0:
            raise ValueError("X has no words (every count is 0): there is nothing to fit.")
        shape = self._shape(counts, reducer)
        method = self._resolve_method(shape)
        init = self._resolve_init(method, shape)
        if method == "gibbs":
            distributed.checked(reducer, lambda: self._check_integer(counts))
        max_iter = self._max_iter(method, init)
        if self.burn_in is not None and self.burn_in >= max_iter:
            raise ValueError(f"burn_in={self.burn_in} must be < max_iter={max_iter}: "
                             "some sweeps must be kept.")
        gen = make_generator(self.random_state, counts.device)
        shard = None
        if reducer is not None:  # one seed: the same initial topics and global draws everywhere
            gen.manual_seed(reducer.same_seed(gen.initial_seed()))
            sizes = reducer.sizes(counts.n_docs)
            shard = (sum(sizes[:reducer.rank]), sum(sizes))
        if init == "batch":  # batch VI's start and INIT_ITERS iterations, as method="batch"
            start = self._initial_params(counts, gen, reducer, seeded=True, method="batch",
                                         repeated=shape[1])
            start = self._fit_batch(counts, start, reducer, INIT_ITERS, start=True,
                                    desc="LDA batch VI (the sampler's start)").params
            alpha, eta = self._priors(method, shape[1], counts, init)
            params = LDAParams(start.concentration, alpha, eta)
        else:
            params = self._initial_params(counts, gen, reducer, seeded=method != "gibbs",
                                          method=method, repeated=shape[1])
        if method == "batch":
            run = self._fit_batch(counts, params, reducer, max_iter)
        elif method == "online":
            model = self._model(method)
            source = CountBatches(counts, self.batch_size or 256, shuffle=True, generator=gen,
                                  shard=shard)
            total = counts.n_docs if shard is None else shard[1]
            table = GammaTable(counts.n_docs, self._k(), model.dtype, counts.device)
            run = run_online_vi(model, params, source, total=total, tau0=float(self.tau0),
                                kappa=float(self.kappa), max_iter=max_iter,
                                tol=self._tol("online"), verbose=int(self.verbose),
                                desc="LDA online VI", local=table, reduce=reducer)
        if method != "gibbs":
            params, bounds = run.params, run.lower_bounds
            converged, n_iter, n_updates = run.converged, run.n_iter, run.n_updates
        else:
            params, bounds, converged, n_iter = self._fit_gibbs(
                counts, params, gen, reducer, max_iter, first_row=0 if shard is None else shard[0])
            n_updates = n_iter
        self._store(params, is_torch=counts.is_torch, vocabulary=vocabulary,
                    vectorizer_params=vec_params, bounds=bounds, converged=converged,
                    n_iter=n_iter, n_batch_iter=n_updates, n_features=counts.n_features,
                    method=method, n_docs=counts.n_docs if shard is None else shard[1],
                    init=init if method == "gibbs" else None)
        return self

    def _fit_batch(self, counts, params, reducer, max_iter, desc="LDA batch VI", start=False):
        """Batch VI; ``start``: only the sampler's starting topics are wanted (no warning
        at ``max_iter``, no last pass for the bound)."""
        model = self._model("batch")
        source = CountBatches(counts, self._chunk_rows(counts, model))
        return run_batch_vi(model, params, source, tol=self._tol("batch"), max_iter=max_iter,
                            verbose=int(self.verbose), desc=desc, reduce=reducer,
                            capped=start)

    @staticmethod
    def _check_integer(counts: SparseCounts):
        d = counts.data.to(torch.float64)
        if bool((d != d.round()).any()):
            raise ValueError(
                "X has non-integer counts, which the Gibbs sampler cannot use: pass word "
                "counts, or use method='batch' or 'online'."
            )

    def _fit_gibbs(self, counts, params, gen, reducer, max_iter, first_row=0):
        """The sampler from ``params``' topics; ``first_row``: this rank's first document."""
        model = self._model("gibbs")
        # the chunks built once, not every sweep (their document index is as long as the
        # non-zeros, under each chunk's tokens kept anyway: 4% of a sweep of the fortunes)
        source = list(CountBatches(counts, self._chunk_rows(counts, model)))
        draw = LDADraw(params.concentration / params.concentration.sum(1, keepdim=True),
                       params.alpha, params.eta)
        # the globals' draws from gen (alike on every rank); the locals' counters from one
        # seed keyed by each document's corpus row (the compiled sweep: the same chain in
        # any batch size, on any number of ranks), the torch sweep's from each rank's own
        local_seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
        model.chain_seed, model.first_row = local_seed, int(first_row)
        rank = 0 if reducer is None else reducer.rank
        local_gen = torch.Generator(device=counts.device).manual_seed(
            (local_seed + 7919 * rank) % 2**63)
        burn_in = None if self.burn_in is None else int(self.burn_in)
        learned = []
        if model.learn_alpha:
            learned.append(lambda d: torch.log(d.alpha))
        if model.learn_eta:
            learned.append(lambda d: torch.log(d.eta[:1]))
        monitor = (lambda d: torch.cat([f(d) for f in learned])) if learned else None
        threads = lda_gibbs.cpu_threads() if counts.device.type == "cpu" else \
            contextlib.nullcontext()
        with threads:
            run = run_gibbs(model, draw, source, n_sweeps=max_iter, burn_in=burn_in,
                            generator=gen, local_generator=local_gen,
                            verbose=int(self.verbose), tol=self._tol("gibbs"), desc="LDA Gibbs",
                            reduce=reducer, monitor=monitor)
        eta = run.params.eta
        lam = eta[None, :] + run.mean_stats["topic_word"]
        return (LDAParams(lam, run.params.alpha, eta), run.log_likelihoods, run.converged,
                run.n_iter)

    def partial_fit(self, X, y=None):
        """One online (stochastic VI) update per mini-batch of ``X``.

        The first call initialises the topics from ``random_state``; later
        calls continue the step counter ``n_batch_iter_``. Each mini-batch's
        statistics are scaled to ``total_docs`` documents (the size D of the
        whole stream), or, when it is not set, to the documents seen so far
        (``n_docs_seen_``, this call's included).

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        first = not self.__sklearn_is_fitted__()
        vocabulary = vec_params = None
        if isinstance(X, Corpus):
            if not first and self.vocabulary_ is not None and X.vocabulary != self.vocabulary_:
                raise ValueError(
                    "X is a Corpus with its own vocabulary, unlike the model's: build later "
                    "mini-batches with Corpus(texts, vocabulary=lda.vocabulary_), or pass the "
                    "raw texts."
                )
            vocabulary, vec_params = list(X.vocabulary), dict(X.vectorizer_params)
            X = X.counts
        reducer = distributed.resolve(self.distributed)
        counts = distributed.checked(
            reducer, lambda: self._counts(X, reset=first, allow_empty=reducer is not None))
        gen = make_generator(self.random_state, counts.device)
        if reducer is not None:  # rank 0's seed: the same initial topics everywhere
            gen.manual_seed(reducer.same_seed(gen.initial_seed()))
        if first:
            params, t, bounds = self._initial_params(counts, gen, reducer, seeded=True,
                                                     method="online"), 0, []
        else:
            params, t, bounds = self._params(counts.device), self.n_batch_iter_, \
                list(self.lower_bounds_)
            vocabulary, vec_params = self.vocabulary_, self.vectorizer_params_
        seen = (0 if first else int(getattr(self, "n_docs_seen_", 0))) + (
            counts.n_docs if reducer is None else int(reducer.sum(counts.n_docs)))
        total = float(self.total_docs) if self.total_docs is not None else float(max(1, seen))
        model = self._model("online")
        local_bounds, units = [], []
        if reducer is None:
            batches = CountBatches(counts, self.batch_size or counts.n_docs)
        else:  # one step per call, every rank's X (possibly empty) part of one mini-batch
            batches = CountBatches(counts, shard=(0, max(1, counts.n_docs)))
        for batch in batches:
            params, b, u = online_step(model, params, batch, total=total, t=t,
                                       tau0=float(self.tau0), kappa=float(self.kappa),
                                       reduce=reducer)
            t += 1
            local_bounds.append(b)
            units.append(u)
        bounds.append(online_bound(model, params, local_bounds, units))
        self._store(params, is_torch=counts.is_torch, vocabulary=vocabulary,
                    vectorizer_params=vec_params, bounds=bounds, converged=False,
                    n_iter=getattr(self, "n_iter_", 0) + 1, n_batch_iter=t,
                    n_features=counts.n_features, method="online")
        self.n_docs_seen_ = seen
        return self

    def fit_transform(self, X, y=None):
        """Fit, then return the training documents' topic mixtures, shape (n_docs, K).

        Equal to ``fit(X).transform(X)``: the mixtures are inferred afresh
        under the fitted topics, as for any other documents.
        """
        return self.fit(X).transform(X if not isinstance(X, Corpus) else X.counts)

    # ------------------------------------------------------------ inference
    def _infer(self, counts: SparseCounts, max_iter=None, tol=None):
        """gamma (n_docs, K) and per-document bounds (float64) for ``counts``."""
        model = self._model("batch")
        params = self._params(counts.device)
        gammas, bounds = [], []
        for batch in CountBatches(counts, self._chunk_rows(counts, model)):
            sol = model.infer(params, batch, max_iter=max_iter, tol=tol)
            gammas.append(sol.gamma)
            bounds.append(sol.bound)
        gamma, bound = torch.cat(gammas), torch.cat(bounds)
        if not bool(torch.isfinite(bound).all()) or not bool(torch.isfinite(gamma).all()):
            raise FloatingPointError(
                "the local updates produced NaN or inf: use dtype='float64' or larger priors."
            )
        return gamma, bound

    def _output(self, t, is_torch):
        return t.to(torch.float64) if is_torch else t.detach().cpu().to(torch.float64).numpy()

    def transform(self, X, *, max_iter=None, tol=None, normalize=True):
        """Topic mixtures of documents under the fitted topics.

        Parameters
        ----------
        X : count matrix, Corpus, or (when fitted on a Corpus) list of str
        max_iter : int, optional
            Local iterations (default ``local_max_iter``); with ``tol=0``
            exactly this many are run.
        tol : float, optional
            Local tolerance (default ``local_tol``).
        normalize : bool, default=True
            Return E[theta] (rows sum to 1); False returns gamma, the
            Dirichlet parameters of q(theta).

        Returns
        -------
        array of shape (n_docs, K)
            An empty document gets the prior mean alpha / sum(alpha).
        """
        if max_iter is not None:
            check_positive_int(max_iter, "max_iter")
        if tol is not None:
            check_nonneg_float(tol, "tol")
        counts = self._counts(X)
        gamma, _ = self._infer(counts, max_iter, tol)
        if normalize:
            gamma = gamma / gamma.sum(1, keepdim=True)
        return self._output(gamma, counts.is_torch)

    def score_samples(self, X):
        """Per-document ELBO: a lower bound on log p(w_d) under the fitted topics, shape (n,).

        See the class Notes for the exact quantity.
        """
        counts = self._counts(X)
        _, bound = self._infer(counts)
        return self._output(bound, counts.is_torch)

    def score(self, X, y=None):
        """Mean over documents of :meth:`score_samples` (float)."""
        counts = self._counts(X)
        _, bound = self._infer(counts)
        return float(bound.mean())

    def perplexity(self, X, *, estimate="completion", X_heldout=None, fraction=0.5,
                   random_state=0, sub_sampling=False):
        """Per-word perplexity exp(-log-likelihood per word), lower is better.

        Comparing with scikit-learn: ``LatentDirichletAllocation.perplexity``
        is exp(-bound / words), its bound being the ELBO of the documents *plus*
        the topics' prior term E_q[log p(beta) - log q(beta)] of the whole
        model (a negative number the size of the vocabulary times K), charged
        to whatever documents are scored. On a held-out set of N words that
        term is divided by N, so scikit-learn's figure grows as N shrinks and
        is not a per-word quantity: on the same model and documents it is
        exp(-(sum of our ``score_samples`` + global term) / N), the global term
        being ``elbokit.models.lda.LDAModel().global_bound(...)`` (checked in
        the tests against scikit-learn on the same topics).
        ``estimate="bound"`` here is the per-word bound of the documents alone,
        and the default, document completion, is a log-likelihood estimate
        (not a bound), comparable across methods and libraries.

        Parameters
        ----------
        X : count matrix, Corpus or list of str
            Held-out documents.
        estimate : {"completion", "bound"}, default="completion"
            ``bound``: exp(-sum(score_samples(X)) / words in X), from the
            ELBO (an upper bound on the true perplexity). ``completion``:
            document completion -- theta is inferred from one part of each
            document and the other part is scored with
            log sum_k E[theta_dk] E[beta_kw]; computed the same way for every
            method, so methods (and other libraries) compare.
        X_heldout : same kind as X, optional
            For ``completion``: the part to score, X being the part theta
            is inferred from. By default X is split by binomial thinning,
            each word copy going to the inference part with probability
            ``fraction``, seeded by ``random_state``.
        sub_sampling : bool
            Accepted for scikit-learn compatibility; no effect (every
            document of ``X`` is scored).

        Returns
        -------
        float
        """
        counts = self._counts(X)
        if estimate == "bound":
            n = counts.n_words
            if n <= 0:
                raise ValueError("X has no words: perplexity is undefined.")
            _, bound = self._infer(counts)
            return float(math.exp(-float(bound.sum()) / n))
        if estimate != "completion":
            raise ValueError(f"estimate={estimate!r} is not supported: use 'completion' or "
                             "'bound'.")
        if X_heldout is None:
            if not 0.0 < fraction < 1.0:
                raise ValueError(f"fraction={fraction!r} must be in (0, 1).")
            gen = make_generator(random_state, torch.device("cpu"))
            observed, heldout = split_counts(counts, float(fraction), gen)
        else:
            observed, heldout = counts, self._counts(X_heldout, name="X_heldout")
            if heldout.n_docs != observed.n_docs:
                raise ValueError(
                    f"X_heldout has {heldout.n_docs} documents but X has {observed.n_docs}: "
                    "they must be two parts of the same documents."
                )
        n = heldout.n_words
        if n <= 0:
            raise ValueError("the held-out part has no words: perplexity is undefined.")
        ll = self.completion_log_likelihood(observed, heldout)
        return float(math.exp(-float(ll.sum()) / n))

    def completion_log_likelihood(self, observed, heldout):
        """log p(heldout words | theta from observed words) per document (float64 tensor)."""
        observed = observed if isinstance(observed, SparseCounts) else self._counts(observed)
        heldout = heldout if isinstance(heldout, SparseCounts) else \
            self._counts(heldout, name="heldout")
        gamma, _ = self._infer(observed)
        theta = gamma / gamma.sum(1, keepdim=True)
        beta = torch.as_tensor(self.topic_word_).to(device=theta.device, dtype=torch.float64)
        return completion_log_likelihood(theta, beta, heldout)

    # ------------------------------------------------------------ topics
    def _top_indices(self, n):
        c = np.asarray(torch.as_tensor(self.components_).cpu().numpy())
        return np.argsort(-c, axis=1, kind="stable")[:, :n]

    def top_words(self, n=10, vocabulary=None):
        """Each topic's ``n`` most probable words, most probable first.

        Parameters
        ----------
        n : int
        vocabulary : list of str, optional
            Words by column; default ``vocabulary_`` (kept when fitted on a
            :class:`~elbokit.Corpus`). Without either, column indices are
            returned, with a warning that says so.

        Returns
        -------
        list of K lists of str (or of int)
        """
        check_is_fitted(self)
        n = check_positive_int(n, "n")
        vocabulary = self.vocabulary_ if vocabulary is None else list(vocabulary)
        if vocabulary is not None and len(vocabulary) != self.n_features_in_:
            raise ValueError(
                f"vocabulary has {len(vocabulary)} words but the model has "
                f"{self.n_features_in_}: pass the vocabulary the model was fitted with."
            )
        top = self._top_indices(n)
        if vocabulary is None:
            warnings.warn(
                "top_words returns column indices: this LDA was fitted on a count matrix, "
                "which carries no words. Pass vocabulary=vectorizer.get_feature_names_out() "
                "(the vectorizer that made the counts), or fit on an elbokit.Corpus.",
                UserWarning, stacklevel=2)
            return [[int(i) for i in row] for row in top]
        return [[vocabulary[i] for i in row] for row in top]

    def coherence(self, X, measure="npmi", top_n=10, window_size=None):
        """Topic coherence of each topic's ``top_n`` words, shape (K,). Higher is better.

        Parameters
        ----------
        X : count matrix, Corpus, list of str, or list of token lists
            Reference documents. Counts (or a Corpus) make every document one
            window; raw text (with the model's vocabulary) or token lists keep
            the word order, for sliding windows.
        measure : {"npmi", "c_v", "umass"}
            See :func:`elbokit.models.lda.topic_coherence`: ``npmi`` and ``c_v``
            are gensim's ``c_npmi`` and ``c_v`` (``CoherenceModel``), ``umass``
            Mimno et al.'s.
        top_n : int, default=10
        window_size : int, optional
            Sliding window over the token sequences (gensim's default: 110 for
            c_v, 10 for npmi). Default: for c_v on texts 110, otherwise whole
            documents.
        """
        if measure not in ("npmi", "c_v", "umass"):
            raise ValueError(f"measure={measure!r} is not supported: use 'npmi', 'c_v' or "
                             "'umass'.")
        top_n = check_positive_int(top_n, "top_n", minimum=2)
        check_is_fitted(self)
        top = self._top_indices(top_n)
        if isinstance(X, (list, tuple)) and X and (_is_text(X) or isinstance(X[0], (list, tuple))):
            if measure == "umass":
                raise ValueError("measure='umass' counts documents: pass counts or a Corpus.")
            sequences = self._sequences(X)
            if window_size is None:
                window_size = 110 if measure == "c_v" else None
            if window_size is not None:
                window_size = check_positive_int(window_size, "window_size")
            return topic_coherence(top, measure=measure, sequences=sequences,
                                   window_size=window_size)
        if window_size is not None:
            raise ValueError("window_size needs the word order: pass raw texts or token lists, "
                             "not counts.")
        counts = self._counts(X)
        return topic_coherence(top, counts.to_scipy(), measure)

    def _sequences(self, X):
        """Word-index sequences (-1 outside the vocabulary) of texts or token lists."""
        if getattr(self, "vocabulary_", None) is None:
            raise TypeError(
                "X holds texts, but this LDA was fitted on a count matrix, which carries no "
                "words: pass reference counts made by the same vectorizer, or fit on an "
                "elbokit.Corpus.")
        where = {w: i for i, w in enumerate(self.vocabulary_)}
        if _is_text(X):
            from elbokit.data.text import analyzer

            analyze = analyzer(self.vectorizer_params_)
            X = [analyze(t) for t in ([X] if isinstance(X, str) else X)]
        return [np.array([where.get(w, -1) for w in tokens], dtype=np.int64) for tokens in X]

    def diversity(self, top_n=25):
        """Topic diversity: the fraction of distinct words among all topics' ``top_n`` words
        (Dieng, Ruiz & Blei 2020; 25 words as there). 1 when no two topics share a top word."""
        top_n = check_positive_int(top_n, "top_n")
        check_is_fitted(self)
        return topic_diversity(self._top_indices(top_n))
