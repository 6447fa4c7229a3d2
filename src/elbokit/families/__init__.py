"""Component families: the unit of extension of EM (see :mod:`elbokit.families.base`).

=================== ============================== =====================================
name                family                         data
=================== ============================== =====================================
``gaussian``        :class:`Gaussian`              real columns; full/tied/diag/spherical
``bernoulli``       :class:`Bernoulli`             0/1 columns
``categorical``     :class:`Categorical`           integer level codes per column (LCA)
``multinomial``     :class:`Multinomial`           count vectors (mixture of unigrams)
``poisson``         :class:`Poisson`               count columns
``student_t``       :class:`StudentT`              real columns, robust to outliers
``von_mises_fisher`` :class:`VonMisesFisher`       unit vectors
``factor_analyzer`` :class:`FactorAnalyzer`        real columns, low-rank + diagonal covariance
``product``         :class:`Product`               column groups, each its own family
=================== ============================== =====================================

A new family subclasses :class:`Family` and can be passed to
``elbokit.Mixture(family=MyFamily())`` directly; :func:`register` makes it
known by name (and to :func:`elbokit.load`).
"""

from __future__ import annotations

from elbokit.families.base import Family, Params, Statistics
from elbokit.families.bernoulli import Bernoulli
from elbokit.families.categorical import Categorical
from elbokit.families.factor import FactorAnalyzer
from elbokit.families.gaussian import Gaussian
from elbokit.families.multinomial import Multinomial
from elbokit.families.poisson import Poisson
from elbokit.families.product import Product
from elbokit.families.student_t import StudentT
from elbokit.families.von_mises_fisher import VonMisesFisher

FAMILIES: dict[str, type] = {}


def register(cls: type) -> type:
    """Make a :class:`Family` subclass known by its ``name`` (for specs and load)."""
    FAMILIES[cls.name] = cls
    return cls


for _cls in (Gaussian, Bernoulli, Categorical, Multinomial, Poisson, StudentT, VonMisesFisher,
             FactorAnalyzer, Product):
    register(_cls)


def get_family(family) -> Family:
    """A :class:`Family` from an instance, a registered name, or a spec dict
    ``{"name": ..., "config": {...}}``."""
    if isinstance(family, Family):
        return family
    if isinstance(family, str):
        if family not in FAMILIES:
            raise ValueError(
                f"family={family!r} is unknown: use one of {', '.join(map(repr, sorted(FAMILIES)))}, "
                "or pass a Family instance."
            )
        return FAMILIES[family]()
    if isinstance(family, dict) and "name" in family:
        cls = FAMILIES.get(family["name"])
        if cls is None:
            raise ValueError(f"family {family['name']!r} is not registered (elbokit.families.register).")
        return cls(**family.get("config", {}))
    raise TypeError(
        f"family={family!r}: give a Family instance, a name such as 'bernoulli', or a spec dict."
    )


def family_spec(family: Family) -> dict:
    """The JSON-able spec of a family: ``{"name": ..., "config": ...}``."""
    return {"name": family.name, "config": family.get_config()}


__all__ = [
    "FAMILIES", "Bernoulli", "Categorical", "FactorAnalyzer", "Family", "Gaussian", "Multinomial",
    "Params", "Poisson", "Product", "Statistics", "StudentT", "VonMisesFisher", "family_spec",
    "get_family", "register",
]
