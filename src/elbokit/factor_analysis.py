"""``PPCA`` and ``FactorAnalysis``: continuous latents fitted by EM.

z ~ N(0, I_q), x | z ~ N(W z + mu, Psi), so x ~ N(mu, W W^T + Psi): Psi
diagonal is factor analysis, Psi = sigma^2 I probabilistic PCA (Tipping &
Bishop, 1999).  The posterior is Gaussian and exact,
q(z | x) = N(M^-1 W^T Psi^-1 (x - mu), M^-1) with M = I + W^T Psi^-1 W, so
the E-step gives E[z] and E[z z^T] and EM climbs log p(x) itself (the KL
term of log p(x) = ELBO + KL is 0 after each E-step; :meth:`bound` shows it).

Both are one-component mixtures of the :class:`~elbokit.families.FactorAnalyzer`
family and share all of ``Mixture``'s plumbing (streams, sample weights,
stepwise, torch.distributed, save/load, missing values).  For complete data
with up to ``scatter_max_features`` columns they take a shortcut that gives
the same maximum: every statistic of the E-step is linear in the data's
scatter matrix S, so one pass computes the mean and S (float64, centred),
after which no iteration touches the rows; PPCA's maximum-likelihood solution
is closed form (the top eigenvectors of S, sigma^2 the mean of the remaining
eigenvalues), factor analysis iterates ECME steps on S (see ``_ScatterModel``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import TransformerMixin

from elbokit import io
from elbokit._validation import check_positive_int, resolve_device, resolve_dtype, to_output
from elbokit.bounds import BoundDecomposition
from elbokit.em_estimator import FamilyEMEstimator, as_float_tensor
from elbokit.families import FactorAnalyzer
from elbokit.families.base import F64, LOG_2PI
from elbokit.inference import distributed
from elbokit.inference.em import EMRun, fit_em, run_em
from elbokit.models.family_mixture import MixtureParams

SOLVERS = ("auto", "scatter", "em")


class _ScatterModel:
    """One factor analyser fitted on its data summary (n, mean, S), the mean held at
    the sample mean (its maximum-likelihood value).

    Each iteration is one ECME step (Liu & Rubin, 1994): W maximises the
    likelihood itself given Psi, in closed form from the eigendecomposition of
    Psi^-1/2 S Psi^-1/2 (W = Psi^1/2 U (Lambda - I)_+^1/2, as in PPCA), then Psi
    takes EM's update given that W, which at this W reduces to
    diag(S - W W^T) (the update of scikit-learn's FactorAnalysis).  Each step
    raises log p(x); the cost is O(D^3) per iteration, whatever the number of rows.
    An iteration makes three such steps and keeps a SQUAREM extrapolation of them
    when it is better (the plain steps converge linearly, slowly near a Heywood
    case, where a noise variance goes to 0).
    """

    def __init__(self, family: FactorAnalyzer, mean: torch.Tensor):
        self.family = family
        self.mean = mean

    def log_likelihood(self, params, S, n):
        W = params["components"][0]
        psi = self.family._psi(params)[0]
        D, q = W.shape
        Wp = W / psi[:, None]
        L = torch.linalg.cholesky(torch.eye(q, dtype=F64, device=W.device) + W.mT @ Wp)
        # tr(C^-1 S) by Woodbury, log det C by the determinant lemma
        trace = (S.diagonal() / psi).sum() - (Wp.mT @ S @ Wp * torch.cholesky_inverse(L)).sum()
        log_det = psi.log().sum() + 2 * L.diagonal().log().sum()
        return -0.5 * n * (D * LOG_2PI + log_det + trace)

    def expected_statistics(self, p: MixtureParams, S, weight):
        n = weight.sum()
        return {"S": S * n, "n": n.reshape(1)}, self.log_likelihood(p.params, S, float(n))

    def _ecme(self, S, psi):
        """One ECME step from Psi: (W maximising given Psi, Psi's update given that W)."""
        fam = self.family
        q = fam.n_factors
        root = psi.sqrt()
        vals, vecs = torch.linalg.eigh(S / root[:, None] / root[None, :])
        vals, vecs = vals.flip(0)[:q], vecs.flip(1)[:, :q]
        W = root[:, None] * vecs * (vals - 1).clamp_min(0).sqrt()
        psi_new = (S.diagonal() - W.square().sum(1)).clamp_min(0) + fam.reg_covar
        if fam.noise == "spherical":
            psi_new = psi_new.mean().expand_as(psi_new)
        return W, psi_new

    def _params(self, W, psi):
        noise = psi.reshape(1, -1) if self.family.noise == "diag" else psi[:1]
        return {"loc": self.mean[None], "components": W[None], "noise_variance": noise}

    def maximize(self, stats, p: MixtureParams):
        """Three ECME steps, or a SQUAREM extrapolation of them (Varadhan & Roland,
        2008) on log Psi when that reaches a higher likelihood: never lower than the
        plain steps, so the bound still never decreases."""
        S = stats["S"] / stats["n"]
        psi0 = self.family._psi(p.params)[0]
        _, psi1 = self._ecme(S, psi0)
        _, psi2 = self._ecme(S, psi1)
        plain = self._ecme(S, psi2)
        best = self._params(*plain)
        r = psi1.log() - psi0.log()
        v = psi2.log() - psi1.log() - r
        if float(v.square().sum()) > 0:
            alpha = -min(-1.0, -float(r.norm() / v.norm()))
            alpha = -abs(alpha)
            jump = (psi0.log() - 2 * alpha * r + alpha**2 * v).exp().clamp_min(self.family.reg_covar)
            candidate = self._params(*self._ecme(S, jump))
            n = float(stats["n"])
            if float(self.log_likelihood(candidate, S, n)) > float(self.log_likelihood(best, S, n)):
                best = candidate
        return MixtureParams(p.weights, best)


class _FactorModel(TransformerMixin, FamilyEMEstimator):
    """What PPCA and FactorAnalysis share (a one-component FactorAnalyzer mixture)."""

    _noise = "diag"

    def __init__(self, n_components=2, *, tol=1e-6, max_iter=1000, reg_covar=1e-12, solver="auto",
                 scatter_max_features=4096, n_init=1, init_params="kmeans", params_init=None,
                 frozen=None, random_state=None, warm_start=False, verbose=0, device=None,
                 dtype="float64", batch_size=None, algorithm="em", step_offset=2.0, step_decay=0.7,
                 distributed=None):
        self.n_components = n_components
        self.tol = tol
        self.max_iter = max_iter
        self.reg_covar = reg_covar
        self.solver = solver
        self.scatter_max_features = scatter_max_features
        self.n_init = n_init
        self.init_params = init_params
        self.params_init = params_init
        self.frozen = frozen
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.algorithm = algorithm
        self.step_offset = step_offset
        self.step_decay = step_decay
        self.distributed = distributed

    def _n_components(self):
        return 1

    def _make_family(self):
        return FactorAnalyzer(int(self.n_components), self._noise, float(self.reg_covar))

    def _extra_checks(self):
        check_positive_int(self.n_components, "n_components")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r}: use one of {', '.join(map(repr, SOLVERS))}.")

    # ------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Fit by EM (or, for complete in-memory data, on its scatter matrix; see ``solver``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), or a data source
            NaN marks a missing entry.
        y : ignored
        sample_weight : array-like of shape (n_samples,), optional
        """
        self._check_hyperparameters()
        if not self._use_scatter(X):
            super().fit(X, None, sample_weight)
        else:
            self._fit_scatter(X, sample_weight)
        self._store_factors()
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """One stepwise-EM update from the mini-batch X (y is ignored)."""
        super().partial_fit(X, None, sample_weight)
        self._store_factors()
        return self

    def _use_scatter(self, X) -> bool:
        if self.solver == "em" or self.algorithm == "stepwise" or self.warm_start and \
                self.__sklearn_is_fitted__() or getattr(self, "frozen", None):
            return False
        if self.solver == "scatter":
            return True
        from elbokit.data.sources import is_source_like

        if is_source_like(X):
            return False
        shape = getattr(X, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] > self.scatter_max_features:
            return False
        if isinstance(X, torch.Tensor):
            return X.is_complex() or not bool(torch.isnan(X).any())
        if hasattr(X, "toarray"):
            return True  # refused with its message by the validation of the scatter path
        arr = np.asarray(X)
        return arr.dtype.kind not in "biuf" or not bool(np.isnan(arr).any())

    def _summary(self, X, sample_weight, reducer):
        """(n, mean, S): weighted count, mean and scatter (1/n), float64, over all ranks."""
        from elbokit._validation import as_sample_weight

        dtype = resolve_dtype(self.dtype)
        device = resolve_device(self.device, X)
        Xt, kind, names = as_float_tensor(X, "X", dtype, device, min_samples=0 if reducer else 1)
        if bool(torch.isnan(Xt).any()):
            raise ValueError("solver='scatter' needs complete data: use solver='em' with NaN.")
        w = as_sample_weight(sample_weight, Xt.shape[0], dtype=F64, device=Xt.device,
                             allow_empty=reducer is not None)
        w = torch.ones(Xt.shape[0], dtype=F64, device=Xt.device) if w is None else w
        Xd = Xt.to(F64)
        sums = {"n": w.sum().reshape(1), "sx": w @ Xd}
        if reducer is not None:
            sums = reducer(sums)
        n = float(sums["n"])
        mean = sums["sx"] / n
        Xc = Xd - mean
        S = {"S": (Xc * w[:, None]).mT @ Xc}
        if reducer is not None:
            S = reducer(S)
        return n, mean, S["S"] / n, kind, names, Xt.shape[1]

    def _fit_scatter(self, X, sample_weight):
        reducer = distributed.resolve(self.distributed)
        n, mean, S, kind, names, D = distributed.checked(
            reducer, lambda: self._summary(X, sample_weight, reducer))
        if self.n_components > D:
            raise ValueError(f"n_components={self.n_components} must be <= n_features={D}.")
        family = self._make_family()
        start = family._from_scatter(mean[None], S[None])
        start = MixtureParams(torch.ones(1, dtype=F64, device=S.device), start)
        source = [(S, torch.tensor([n], dtype=F64, device=S.device))]
        model = _ScatterModel(family, mean)
        if self._noise == "spherical":  # PPCA: the closed form is the maximum
            ll = model.log_likelihood(start.params, S, n)
            run = EMRun(params=start, lower_bounds=[float(ll) / n], converged=True, n_iter=0)
        else:
            common = dict(tol=float(self.tol), max_iter=int(self.max_iter), verbose=int(self.verbose))
            run = fit_em(lambda p: run_em(model, p, source, **common), lambda i: start, n_init=1, **common)
        self._store(run, family, kind, D, names, n_steps=0)

    def _store_factors(self):
        params = self.params_
        self.mean_ = params["loc"][0]
        self.components_ = params["components"][0].T  # W^T, (q, D)
        noise = params["noise_variance"][0]
        self.noise_variance_ = float(noise) if self._noise == "spherical" else noise

    def _set_fitted_state(self, state):
        super()._set_fitted_state(state)
        self._store_factors()  # views of params_, not saved twice

    # ------------------------------------------------------------ outputs
    def transform(self, X):
        """Posterior means E[z | x] (missing entries marginalised), shape (n, n_components)."""
        return to_output(*self._chunked(
            X, lambda m, p, Xb: m.family.posterior(p.params, Xb)[1][:, 0, :].to(Xb.dtype)))

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def inverse_transform(self, Z):
        """E[x | z] = W z + mu, shape (n, n_features)."""
        is_torch = isinstance(Z, torch.Tensor)
        p = self._params(Z.device if is_torch else "cpu").params
        Zt = torch.as_tensor(Z, dtype=F64, device=p["loc"].device)
        if Zt.ndim != 2 or Zt.shape[1] != self.n_components:
            raise ValueError(f"Z must have shape (n, {self.n_components}); got {tuple(Zt.shape)}.")
        X = Zt @ p["components"][0].mT + p["loc"][0]
        return X if is_torch else X.numpy()

    def get_covariance(self):
        """The model covariance W W^T + Psi, shape (D, D)."""
        cov = self._fitted_family().covariance(self._params("cpu").params)[0]
        return cov if isinstance(self.weights_, torch.Tensor) else cov.numpy()

    def get_precision(self):
        """The inverse of :meth:`get_covariance`."""
        cov = torch.as_tensor(self.get_covariance(), dtype=F64)
        prec = torch.cholesky_inverse(torch.linalg.cholesky(cov))
        return prec if isinstance(self.weights_, torch.Tensor) else prec.numpy()

    def sample(self, n_samples=1):
        """Draw samples x ~ p(x), shape (n_samples, n_features)."""
        X, _ = super().sample(n_samples)
        return X

    def bound(self, X, q_mean=None, q_cov=None) -> BoundDecomposition:
        """log p(x) = ELBO(q) + KL(q || p(z | x)) per complete row, for a Gaussian q.

        With q the exact posterior (the default), KL = 0 and ELBO = log p(x);
        any other q = N(q_mean, q_cov) (shapes (n, q) and (q, q) or (n, q, q))
        gives a smaller ELBO, by exactly its KL.
        """
        from torch.distributions import MultivariateNormal

        from elbokit.kl import kl_divergence

        Xt, _, _ = as_float_tensor(X, "X", F64, torch.device("cpu"))
        self._check_features(Xt.shape[1])
        p = self._params("cpu").params
        family = self._fitted_family()
        log_px, mean_z, cov_z, _ = family.posterior(p, Xt)
        post_mean, post_cov = mean_z[:, 0], cov_z[0].expand(Xt.shape[0], -1, -1)
        m = post_mean if q_mean is None else torch.as_tensor(q_mean, dtype=F64)
        S = post_cov if q_cov is None else torch.as_tensor(q_cov, dtype=F64).expand_as(post_cov)
        W, mu = p["components"][0], p["loc"][0]
        psi = family._psi(p)[0]
        q = W.shape[1]
        resid = Xt - mu - m @ W.mT
        expected_lik = -0.5 * (Xt.shape[1] * LOG_2PI + psi.log().sum()
                               + (resid.square() / psi).sum(1)
                               + torch.einsum("dq,nqr,dr,d->n", W, S, W, 1 / psi))
        expected_prior = -0.5 * (q * LOG_2PI + m.square().sum(1) + S.diagonal(dim1=1, dim2=2).sum(1))
        entropy = 0.5 * q * (1 + LOG_2PI) + 0.5 * torch.logdet(S)
        elbo = expected_lik + expected_prior + entropy
        kl = kl_divergence(MultivariateNormal(m, S), MultivariateNormal(post_mean, post_cov))
        return BoundDecomposition(log_marginal=log_px[:, 0], elbo=elbo, kl=kl)


_COMMON_DOC = """
    Parameters
    ----------
    n_components : int, default=2
        Latent dimension q.
    tol : float, default=1e-6
        EM stops when the per-sample mean log-likelihood changes by less.
    max_iter : int, default=1000
    reg_covar : float, default=1e-12
        Added to the noise variance(s), keeping them positive (scikit-learn's
        floor; a larger value moves the optimum of a Heywood case, where a
        noise variance goes to 0).
    solver : {"auto", "scatter", "em"}, default="auto"
        ``"scatter"``: one pass for the mean and scatter matrix, then EM on it
        (PPCA: the closed-form maximum); ``"em"``: EM over the rows each
        iteration (needed for missing values and streams); ``"auto"``:
        scatter for complete in-memory data with at most
        ``scatter_max_features`` columns, EM otherwise.
    scatter_max_features : int, default=4096
    init_params, random_state, warm_start, verbose, device, dtype, batch_size,
    algorithm, step_offset, step_decay, distributed, frozen, params_init
        As for :class:`~elbokit.Mixture` (``n_init`` restarts only matter with
        missing values).

    Attributes
    ----------
    mean_ : array (D,)
    components_ : array (q, D)
        W^T, scikit-learn's layout.
    noise_variance_ : float (PPCA) or array (D,) (factor analysis)
    lower_bounds_, lower_bound_, converged_, n_iter_, n_features_in_
    params_, weights_
        The one-component FactorAnalyzer mixture underneath.
"""


@io.register
class PPCA(_FactorModel):
    __doc__ = "Probabilistic PCA (Tipping & Bishop, 1999): x ~ N(mu, W W^T + sigma^2 I).\n" + _COMMON_DOC
    _noise = "spherical"


@io.register
class FactorAnalysis(_FactorModel):
    __doc__ = "Factor analysis: z ~ N(0, I), x | z ~ N(W z + mu, Psi), Psi diagonal.\n" + _COMMON_DOC
    _noise = "diag"

