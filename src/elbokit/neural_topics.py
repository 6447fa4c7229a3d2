"""``ProdLDA``: a neural topic model (Srivastava & Sutton 2017) behind the LDA estimator's API."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from elbokit import io
from elbokit._validation import (
    check_nonneg_float,
    check_positive_int,
    make_generator,
    resolve_device,
    resolve_dtype,
)
from elbokit.data.text import Corpus, SparseCounts, as_counts, vectorize
from elbokit.inference.amortized import ELBOObjective, Rows, train
from elbokit.models.prodlda import build_prodlda, word_log_probs
from elbokit.neural import NetworkEstimator
from elbokit.topics import LDA

_CHUNK = 512  # documents densified at a time outside training


class CountRows:
    """Rows of a sparse count matrix, densified on demand: ``rows[idx]`` is (len(idx), V)."""

    def __init__(self, counts: SparseCounts):
        self.counts = counts
        self.shape = (counts.n_docs, counts.n_features)
        self.dtype = counts.data.dtype
        self.device = counts.device

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, slice):
            rows = torch.arange(self.shape[0], device=self.device)[rows]
        part = self.counts.take(rows)
        dense = torch.zeros(part.n_docs, part.n_features, dtype=self.dtype, device=self.device)
        dense.index_put_((part.row_ids(), part.indices), part.data, accumulate=True)
        return dense


@io.register
class ProdLDA(NetworkEstimator):
    """ProdLDA: topics by amortised variational inference with a product-of-experts decoder.

    Takes what :class:`elbokit.LDA` takes (a count matrix or a
    :class:`~elbokit.Corpus`) and answers the same questions (``transform``,
    ``top_words``, ``perplexity`` by the same document completion,
    ``coherence``), so the two compare directly. See
    :mod:`elbokit.models.prodlda` for the model: a logistic-normal prior
    (the Laplace approximation of Dirichlet(alpha)), an encoder network
    q(z | w), topic proportions theta = softmax(z), and word logits
    BN(beta^T theta) -- topics combined as a product of experts.

    Parameters
    ----------
    n_topics : int, default=10
    alpha : float, default=1.0
        The Dirichlet prior approximated (the paper's 1 per topic).
    hidden_sizes : tuple of int, default=(100, 100)
        Encoder layers (softplus units), as in the paper.
    dropout : float, default=0.2
        On the encoder's last layer and on theta.
    epochs : int, default=50
    batch_size : int, default=200
    lr : float, default=2e-3
        Adam with the paper's betas (0.99, 0.999).
    validation_fraction : float, default=0.0
        Documents held out for the validation ELBO (and ``patience``).
    patience : int, optional
    checkpoint_dir : path, optional
        As for the VAE (``fit(X, resume=checkpoint_dir)``).
    random_state, device, dtype, verbose
        As for every elbokit estimator.

    Attributes
    ----------
    components_, topic_word_ : array (K, V)
        p(w | topic k): the word distribution of a document of topic k alone;
        a topic's top words are its largest entries (chosen by measurement over
        the largest entries of ``beta_``, which favour rare words).
    beta_ : array (K, V)
        The decoder's weights, the log-space experts.
    history_, lower_bounds_, n_epochs_
        As for the VAE: per-epoch training ELBO (per document), diagnostics.
    n_features_in_ : int
        Vocabulary size V.
    vocabulary_, vectorizer_params_
        As for LDA, when fitted on a Corpus (then raw text is accepted too).
    """

    _fitted_attributes = ("state_dict_", "history_", "lower_bounds_", "n_epochs_",
                          "n_features_in_", "vocabulary_", "vectorizer_params_")
    _fitted_schema = {  # beside NetworkEstimator's
        "vocabulary_": io.strings(length="n_features_in_", nullable=True),
        "vectorizer_params_": io.json_value(nullable=True),
    }

    def __init__(self, n_topics=10, *, alpha=1.0, hidden_sizes=(100, 100), dropout=0.2, epochs=50,
                 batch_size=200, lr=2e-3, validation_fraction=0.0, patience=None,
                 checkpoint_dir=None, random_state=None, device=None, dtype="float32", verbose=0):
        self.n_topics = n_topics
        self.alpha = alpha
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose

    # ------------------------------------------------------------ checks
    def _check_hyperparameters(self):
        check_positive_int(self.n_topics, "n_topics", minimum=2)
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size", minimum=2)
        check_nonneg_float(self.alpha, "alpha", strict=True)
        check_nonneg_float(self.lr, "lr", strict=True)
        if not 0 <= check_nonneg_float(self.dropout, "dropout") < 1:
            raise ValueError(f"dropout={self.dropout!r} must be in [0, 1).")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be in [0, 1).")
        sizes = list(self.hidden_sizes)
        if not sizes or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1
                            for h in sizes):
            raise ValueError(f"hidden_sizes={tuple(sizes)!r} must be one or more positive layer "
                             "sizes, e.g. (100, 100).")
        if self.patience is not None:
            check_positive_int(self.patience, "patience")

    def _counts(self, X, name="X", reset=False) -> SparseCounts:
        if isinstance(X, str) or (isinstance(X, (list, tuple)) and X and isinstance(X[0], str)):
            if reset or getattr(self, "vocabulary_", None) is None:
                raise TypeError(f"{name} is raw text, but this model has no vocabulary: fit it on "
                                "an elbokit.Corpus, or pass a count matrix.")
            X = vectorize([X] if isinstance(X, str) else X, self.vocabulary_, self.vectorizer_params_)
        if not reset:
            check_is_fitted(self)
        device = resolve_device(self.device, X if isinstance(X, torch.Tensor) else None)
        return as_counts(X, name=name, dtype=resolve_dtype(self.dtype), device=device,
                         n_features=None if reset else self.n_features_in_)

    def _build(self, n_words: int):
        return build_prodlda(n_words, int(self.n_topics), hidden_sizes=tuple(self.hidden_sizes),
                             dropout=float(self.dropout), alpha=float(self.alpha))

    def _new_module(self, device, dtype):
        return self._build(int(self.n_features_in_)).to(device=device, dtype=dtype)

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, resume=None):
        """Fit the topics to the counts X (a count matrix or a Corpus), shape (n_docs, V).

        Returns
        -------
        self
        """
        self._check_hyperparameters()
        vocabulary = vec_params = None
        if isinstance(X, Corpus):
            vocabulary, vec_params = list(X.vocabulary), dict(X.vectorizer_params)
        counts = self._counts(X, reset=True)
        n = counts.n_docs
        n_val = int(math.floor(self.validation_fraction * n))
        if n - n_val < 2:
            raise ValueError(f"X has {n} documents: too few to train (batch normalisation needs "
                             "at least 2 per batch).")
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        dtype = resolve_dtype(self.dtype)
        with torch.random.fork_rng(devices=[counts.device] if counts.device.type == "cuda" else []):
            torch.manual_seed(seed)
            order = torch.randperm(n)
            rows = CountRows(counts)
            module = self._build(counts.n_features).to(device=counts.device, dtype=dtype)
            state = train(
                module, ELBOObjective(), Rows(rows, select=order[n_val:]),
                Rows(rows, select=order[:n_val]) if n_val else None,
                epochs=int(self.epochs), batch_size=int(self.batch_size), lr=float(self.lr),
                patience=self.patience, checkpoint_dir=self.checkpoint_dir, resume=resume,
                verbose=int(self.verbose), min_batch=2,
                optimizer_options={"betas": (0.99, 0.999)},
                fingerprint={"model": "ProdLDA", "n_words": counts.n_features,
                             "n_topics": int(self.n_topics),
                             "hidden_sizes": [int(h) for h in self.hidden_sizes]},
            )
        self._store_training(module, state)
        self.n_features_in_ = counts.n_features
        self.vocabulary_ = vocabulary
        self.vectorizer_params_ = vec_params
        return self

    # ------------------------------------------------------------ topics
    @property
    def beta_(self) -> np.ndarray:
        """beta (K, V): the decoder's weights (the log-space experts the paper reads as topics)."""
        return self.state_dict_["decoder.net.beta.weight"].detach().cpu().double().numpy().T.copy()

    @property
    @torch.no_grad()
    def components_(self) -> np.ndarray:
        """p(w | topic k) (K, V): the word distribution of a document of topic k alone.

        The decoder at theta = e_k (batch norm with its running statistics and
        learned shift included). A topic's top words are its largest entries:
        by measurement (``bench/prodlda.py``) they are far more coherent than
        the largest entries of ``beta_`` (mean NPMI 0.056 against -0.577 on the
        KJV verses, -0.100 against -0.542 on the fortunes), which favour rare
        words.
        """
        net = self.module_.decoder.net
        eye = torch.eye(int(self.n_topics), dtype=net.beta.weight.dtype, device=net.beta.weight.device)
        return torch.softmax(net.bn(net.beta(eye)), -1).double().cpu().numpy()

    @property
    def topic_word_(self) -> np.ndarray:
        """p(w | topic k) (K, V), as LDA's ``topic_word_`` (the same as ``components_``)."""
        return self.components_

    # read and scored as LDA: topics are the rows of ``components_`` (largest first);
    # perplexity by the same document completion (the same split, seeded), or from the bound
    _top_indices = LDA._top_indices
    top_words = LDA.top_words
    coherence = LDA.coherence
    perplexity = LDA.perplexity

    # ------------------------------------------------------------ inference
    def _blocks(self, counts: SparseCounts):
        rows = CountRows(counts)
        for start in range(0, counts.n_docs, _CHUNK):
            yield rows[slice(start, min(counts.n_docs, start + _CHUNK))]

    def _output(self, t, counts):
        return t.to(torch.float64) if counts.is_torch else t.detach().cpu().to(torch.float64).numpy()

    def transform(self, X):
        """Topic proportions theta = softmax(E_q[z | w]) per document, (n_docs, K)."""
        counts = self._counts(X)
        return self._output(self._infer(counts)[0], counts)

    @torch.no_grad()
    def _infer(self, counts: SparseCounts):
        """Topic proportions (n_docs, K) and the one-draw ELBO per document (seeded), float64."""
        m = self.module_
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        thetas, bounds = [], []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            for x in self._blocks(counts):
                reconstruction, kl, (loc, _) = m.elbo_terms(x)
                thetas.append(torch.softmax(loc, -1))
                bounds.append((reconstruction - kl).to(torch.float64))
        return torch.cat(thetas), torch.cat(bounds)

    @torch.no_grad()
    def score_samples(self, X, n_samples: int = 100):
        """Importance-sampled log p(w_d) per document (IWAE with n_samples draws), (n_docs,)."""
        check_positive_int(n_samples, "n_samples")
        counts = self._counts(X)
        m = self.module_
        seed = int(make_generator(self.random_state, torch.device("cpu")).initial_seed())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            out = torch.cat([m.iwae(x, n_samples) for x in self._blocks(counts)])
        return self._output(out, counts)

    def score(self, X, y=None, n_samples: int = 100):
        """Mean of :meth:`score_samples`."""
        return float(np.mean(np.asarray(torch.as_tensor(self.score_samples(X, n_samples)).cpu())))

    @torch.no_grad()
    def completion_log_likelihood(self, observed, heldout):
        """log p(held-out words | z from the observed words) per document (float64 tensor).

        ``sum_w n_dw log p(w | d)``, with p(. | d) the decoder's word
        distribution at the posterior mean of z given the observed part: the
        document completion LDA uses, with ProdLDA's word distribution.
        """
        observed = observed if isinstance(observed, SparseCounts) else self._counts(observed)
        heldout = heldout if isinstance(heldout, SparseCounts) else self._counts(heldout, "heldout")
        m = self.module_
        out = []
        for start in range(0, observed.n_docs, _CHUNK):
            rows = torch.arange(start, min(observed.n_docs, start + _CHUNK), device=observed.device)
            logp = word_log_probs(m, CountRows(observed)[rows]).to(torch.float64)
            held = heldout.take(rows)
            ll = held.data.to(torch.float64) * logp[held.row_ids(), held.indices]
            out.append(torch.zeros(len(rows), dtype=torch.float64, device=ll.device)
                       .index_add_(0, held.row_ids(), ll))
        return torch.cat(out)
