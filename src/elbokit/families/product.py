"""Products of families over column groups: mixed-type data.

A component of a mixture of products draws each group of columns from its
own family, independently given the component:
log p(x | z=k) = sum_g log p_g(x[:, columns_g] | z=k).  Numeric columns can
be Gaussian, categorical ones Categorical, counts Poisson, flags Bernoulli.
Parameters, statistics and schema are the parts' own, their names prefixed
with the part's index (``"0.loc"``, ``"1.probs"``).
"""

from __future__ import annotations

import torch

from elbokit.families.base import F64, Family


class Product(Family):
    """Independent families over disjoint column groups.

    Parameters
    ----------
    parts : sequence of (columns, family)
        ``columns``: the column indices (ints) of the group; ``family``: a
        :class:`Family` instance or a name (``"gaussian"``, ``"categorical"``,
        ...).  Every column of X belongs to exactly one group.
    """

    name = "product"

    def __init__(self, parts):
        from elbokit.families import get_family

        self.parts = [(list(map(int, cols)), get_family(fam)) for cols, fam in parts]
        if not self.parts:
            raise ValueError("Product needs at least one (columns, family) part.")
        seen = [c for cols, _ in self.parts for c in cols]
        if len(seen) != len(set(seen)) or min(seen) < 0:
            raise ValueError("Product: each column must belong to exactly one part.")
        self.supports_missing = all(f.supports_missing for _, f in self.parts)

    def get_config(self):
        from elbokit.families import family_spec

        return {"parts": [[cols, family_spec(f)] for cols, f in self.parts]}

    def bind_columns(self, n_features):
        cols = sorted(c for c, _ in ((c, f) for cs, f in self.parts for c in cs))
        if cols != list(range(n_features)):
            raise ValueError(
                f"the Product's parts cover columns {cols}, but X has {n_features} columns: "
                "give every column to exactly one part."
            )

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _sub(params, i):
        prefix = f"{i}."
        return None if params is None else {k[len(prefix):]: v for k, v in params.items()
                                            if k.startswith(prefix)}

    @staticmethod
    def _prefixed(d, i):
        return {f"{i}.{k}": v for k, v in d.items()}

    def _cols(self, X, cols):
        return X[:, cols] if len(cols) != X.shape[1] or cols != list(range(X.shape[1])) else X

    # ------------------------------------------------------------ the protocol
    def check(self, X, name="X"):
        self.bind_columns(X.shape[1])
        for i, (cols, fam) in enumerate(self.parts):
            fam.check(self._cols(X, cols), f"{name}[:, {cols}] (part {i}, {fam.name})")
        return X

    def prepare(self, X, reducer=None):
        self.bind_columns(X.shape[1])
        return Product([(cols, fam.prepare(self._cols(X, cols), reducer)) for cols, fam in self.parts])

    def work_per_row(self, n_components, n_features, missing=False):
        return sum(f.work_per_row(n_components, len(c), missing) for c, f in self.parts)

    def log_prob(self, params, X):
        out = None
        for i, (cols, fam) in enumerate(self.parts):
            lp = fam.log_prob(self._sub(params, i), self._cols(X, cols))
            out = lp if out is None else out + lp
        return out

    def statistics(self, params, X, resp):
        stats = {}
        for i, (cols, fam) in enumerate(self.parts):
            stats.update(self._prefixed(fam.statistics(self._sub(params, i), self._cols(X, cols), resp), i))
        return stats

    def maximize(self, stats, params, fixed=None):
        out = {}
        for i, (_, fam) in enumerate(self.parts):
            sub_fixed = self._sub(fixed, i) if fixed else None
            out.update(self._prefixed(fam.maximize(self._sub(stats, i), self._sub(params, i),
                                                   sub_fixed), i))
        return out

    def initialize(self, X, resp, generator):
        out = {}
        for i, (cols, fam) in enumerate(self.parts):
            out.update(self._prefixed(fam.initialize(self._cols(X, cols), resp, generator), i))
        return out

    def statistics_of(self, params, weights):
        out = {}
        for i, (_, fam) in enumerate(self.parts):
            out.update(self._prefixed(fam.statistics_of(self._sub(params, i), weights), i))
        return out

    def _assemble(self, pieces, n, like_device, dtype=F64):
        D = sum(len(c) for c, _ in self.parts)
        out = torch.empty(*n, D, dtype=dtype, device=like_device)
        for (cols, _), piece in zip(self.parts, pieces):
            out[..., cols] = piece.to(dtype)
        return out

    def sample(self, params, z, generator):
        pieces = [fam.sample(self._sub(params, i), z, generator) for i, (_, fam) in enumerate(self.parts)]
        return self._assemble(pieces, (z.shape[0],), z.device)

    def embed(self, X):
        return torch.cat([fam.embed(self._cols(X, cols)) for cols, fam in self.parts], 1)

    def mean(self, params):
        pieces = [fam.mean(self._sub(params, i)) for i, (_, fam) in enumerate(self.parts)]
        return self._assemble(pieces, (pieces[0].shape[0],), pieces[0].device)

    def conditional_mean(self, params, X):
        pieces = [fam.conditional_mean(self._sub(params, i), self._cols(X, cols))
                  for i, (cols, fam) in enumerate(self.parts)]
        return self._assemble(pieces, tuple(pieces[0].shape[:2]), X.device, X.dtype)

    def n_parameters(self, params):
        return sum(fam.n_parameters(self._sub(params, i)) for i, (_, fam) in enumerate(self.parts))

    def param_shapes(self, n_components, n_features):
        out = {}
        for i, (cols, fam) in enumerate(self.parts):
            out.update(self._prefixed(fam.param_shapes(n_components, len(cols)), i))
        return out
