"""Categorical components: each column a categorical variable with its own levels.

A mixture of these is latent class analysis (LCA; Lazarsfeld, Goodman; the
model of poLCA and StepMix).  Column j holds integer codes 0 .. L_j - 1;
given the component, the columns are independent and
log p(x | z=k) = sum_j log probs[k, j, x_j].  ``probs`` has shape
(K, D, L) with L = max_j L_j, padded with zeros past L_j; the levels L_j are
the family's (given, or found in the data by :meth:`prepare`).  The statistics are the weighted level counts per
(k, j, level); the maximiser normalises them over the levels.  A missing
entry contributes to no count.

The likelihood is one GEMM of the one-hot coded chunk, (n, sum_j L_j), with
the stacked log-probabilities.
"""

from __future__ import annotations

import torch

from elbokit.families.base import F64, Family, observed
from elbokit.families.bernoulli import floored_log


class Categorical(Family):
    """Independent categorical columns per component.

    Parameters
    ----------
    n_levels : int, sequence of int, or None
        Levels of each column (one int for all); by default one more than
        the largest code seen when the mixture is initialised.
    """

    name = "categorical"

    def __init__(self, n_levels=None):
        self.n_levels = n_levels

    def get_config(self):
        levels = self.n_levels
        return {"n_levels": list(levels) if isinstance(levels, (list, tuple)) else levels}

    def check(self, X, name="X"):
        super().check(X, name)
        obs = X[~torch.isnan(X)]
        if obs.numel() and not bool(((obs >= 0) & (obs == obs.round())).all()):
            raise ValueError(
                f"{name} must hold integer level codes 0, 1, ... for the 'categorical' family: "
                "encode the columns first (e.g. sklearn.preprocessing.OrdinalEncoder)."
            )
        return X

    def prepare(self, X, reducer=None):
        """A copy with ``n_levels`` resolved: given, or one more than the largest code
        in X (the largest over all ranks under torch.distributed)."""
        D = X.shape[1]
        if self.n_levels is None:
            top = X.nan_to_num(-1.0).amax(0) if X.shape[0] else torch.zeros(D, dtype=X.dtype)
            levels = (top.to(F64) + 1).clamp_min(1).cpu()
            if reducer is not None:
                levels = all_reduce_max(levels)
            levels = [int(v) for v in levels.tolist()]
        elif isinstance(self.n_levels, int):
            levels = [int(self.n_levels)] * D
        else:
            levels = [int(v) for v in self.n_levels]
            if len(levels) != D:
                raise ValueError(f"n_levels has {len(levels)} entries for {D} columns.")
        if min(levels) < 1:
            raise ValueError("n_levels must be >= 1 for every column.")
        return Categorical(levels)

    def _levels(self) -> torch.Tensor:
        if not isinstance(self.n_levels, (list, tuple)):
            raise RuntimeError("Categorical.prepare(X) resolves the levels before use.")
        return torch.tensor(self.n_levels, dtype=torch.int64)

    def one_hot(self, X: torch.Tensor) -> torch.Tensor:
        """The one-hot code of X, shape (n, sum_j L_j); missing entries all zero
        (memoised for the last X, which the E-step's density and statistics share)."""
        cached = getattr(self, "_last", None)
        if cached is not None and cached[0] is X:
            return cached[1]
        out = self._one_hot(X)
        self._last = (X, out)
        return out

    def _one_hot(self, X: torch.Tensor) -> torch.Tensor:
        levels = self._levels().to(X.device)
        offsets = torch.cumsum(levels, 0) - levels
        X0, mask = observed(X)
        codes = X0.to(torch.int64)
        over = codes >= levels
        if bool(over.any()):
            j = int(torch.nonzero(over.any(0))[0])
            raise ValueError(
                f"column {j} holds the code {int(codes[:, j].max())}, but the model knows "
                f"{int(levels[j])} levels for it: refit with n_levels large enough."
            )
        out = torch.zeros(X.shape[0], int(levels.sum()), dtype=X.dtype, device=X.device)
        src = torch.ones_like(X0) if mask is None else mask
        return out.scatter_(1, codes + offsets, src)

    def _real(self, device) -> torch.Tensor:
        """Mask (D, L) of the real levels of each column."""
        levels = self._levels()
        return (torch.arange(int(levels.max()))[None, :] < levels[:, None]).to(device)

    def log_prob(self, params, X):
        probs = params["probs"]
        keep = self._real(probs.device).reshape(-1)
        flat = floored_log(probs.reshape(probs.shape[0], -1)[:, keep])
        return self.one_hot(X) @ flat.mT.to(X.dtype)

    def statistics(self, params, X, resp):
        flat = (resp.to(X.dtype).mT @ self.one_hot(X)).to(F64)
        real = self._real(flat.device)
        counts = torch.zeros(flat.shape[0], *real.shape, dtype=F64, device=flat.device)
        counts.view(flat.shape[0], -1)[:, real.reshape(-1)] = flat
        return {"counts": counts}

    def maximize(self, stats, params, fixed=None):
        counts = stats["counts"]
        real = self._real(counts.device).to(F64)
        total = counts.sum(2, keepdim=True)
        uniform = real / real.sum(1, keepdim=True)
        probs = torch.where(total > 0, counts / total.clamp_min(1e-300), uniform.expand_as(counts))
        if fixed and "probs" in fixed:
            probs = fixed["probs"]
        return {"probs": probs * real}

    def statistics_of(self, params, weights):
        return {"counts": weights.to(F64)[:, None, None] * params["probs"]}

    def sample(self, params, z, generator):
        p = params["probs"][z]  # (n, D, L)
        n, D, L = p.shape
        draws = torch.multinomial(p.reshape(n * D, L), 1, generator=generator)
        return draws.reshape(n, D).to(F64)

    def mean(self, params):
        """The most probable level of each column (the 'expected' code for imputation)."""
        return params["probs"].argmax(2).to(F64)

    def n_parameters(self, params):
        return int(params["probs"].shape[0] * (self._levels() - 1).sum())

    def param_shapes(self, n_components, n_features):
        return {"probs": (n_components, n_features, int(self._levels().max()))}


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum over the ranks of the default process group."""
    import torch.distributed as dist

    buf = t.to(F64).clone()
    if dist.get_backend() == "nccl":
        buf = buf.cuda()
    dist.all_reduce(buf, op=dist.ReduceOp.MAX)
    return buf.cpu()
