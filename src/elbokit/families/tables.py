"""Mixed-type tables: one family per column type, taken from the data.

A DataFrame (or a Parquet file, or a pyarrow Table) becomes a numeric array
and a :class:`~elbokit.families.Product`:

=================================== =============== ==============================
column type                         family          values in the array
=================================== =============== ==============================
floating                            Gaussian (full) as they are
integer                             Poisson         counts (negative: Gaussian)
boolean                             Bernoulli       0 / 1
string, categorical (dictionary)    Categorical     level codes, in sorted order
=================================== =============== ==============================

Nulls become NaN (missing at random).  The encoding (column names, kinds,
levels) is JSON, saved with the model, so that ``predict`` on a new frame
codes its categories the same way (an unseen level is treated as missing).
"""

from __future__ import annotations

import numpy as np

from elbokit.families.base import Family

KINDS = ("gaussian", "poisson", "bernoulli", "categorical")


def _as_table(data):
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if hasattr(data, "columns") and hasattr(data, "dtypes"):
        return pa.Table.from_pandas(data, preserve_index=False)
    raise TypeError("expected a pandas DataFrame or a pyarrow Table.")


def _kind(col) -> str:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        return "categorical"
    if pa.types.is_boolean(t):
        return "bernoulli"
    if pa.types.is_integer(t):
        low = pc.min(col).as_py()
        return "poisson" if low is None or low >= 0 else "gaussian"
    if pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return "gaussian"
    raise ValueError(f"column {col!r} of type {t} is neither numeric, boolean nor categorical.")


class TableEncoding:
    """Column names, their kinds and the levels of categorical columns."""

    def __init__(self, columns, kinds, categories):
        self.columns = list(columns)
        self.kinds = list(kinds)
        self.categories = dict(categories)

    @classmethod
    def from_frame(cls, data) -> "TableEncoding":
        table = _as_table(data)
        names = [str(n) for n in table.column_names]
        kinds, categories = [], {}
        for name, col in zip(names, table.columns):
            kind = _kind(col)
            kinds.append(kind)
            if kind == "categorical":
                values = col.cast("string") if not hasattr(col.type, "value_type") else \
                    col.cast(col.type.value_type)
                levels = sorted({v for v in values.to_pylist() if v is not None})
                categories[name] = [str(v) for v in levels]
        return cls(names, kinds, categories)

    @classmethod
    def from_parquet(cls, path) -> "TableEncoding":
        import pyarrow.parquet as pq

        return cls.from_frame(pq.read_table(path))

    @classmethod
    def from_config(cls, config: dict) -> "TableEncoding":
        return cls(config["columns"], config["kinds"], config.get("categories", {}))

    def to_config(self) -> dict:
        return {"columns": self.columns, "kinds": self.kinds, "categories": self.categories}

    def encode(self, data, check_kinds: bool = True) -> np.ndarray:
        """The table as a float64 array: codes for categorical columns, NaN for nulls."""
        table = _as_table(data)
        if not self.kinds:
            self.kinds = TableEncoding.from_frame(table).kinds if check_kinds else \
                ["gaussian"] * len(self.columns)
        names = [str(n) for n in table.column_names]
        if names != self.columns:
            raise ValueError(
                "The feature names should match those that were passed during fit: "
                f"got {names}, expected {self.columns}; select and order the columns alike."
            )
        out = np.empty((table.num_rows, len(names)), dtype=np.float64)
        for j, (name, kind, col) in enumerate(zip(names, self.kinds, table.columns)):
            if kind == "categorical":
                index = {v: i for i, v in enumerate(self.categories[name])}
                values = col.to_pylist()
                out[:, j] = [np.nan if v is None else index.get(str(v), np.nan) for v in values]
            else:
                arr = col.to_numpy(zero_copy_only=False)
                out[:, j] = np.asarray([np.nan if v is None else v for v in arr], dtype=np.float64) \
                    if arr.dtype == object else arr.astype(np.float64)
        return out

    def family(self) -> Family:
        """The Product of one family per column kind (columns of a kind grouped)."""
        from elbokit.families import Bernoulli, Categorical, Gaussian, Poisson, Product

        makers = {"gaussian": lambda cols: Gaussian("full"),
                  "poisson": lambda cols: Poisson(),
                  "bernoulli": lambda cols: Bernoulli(),
                  "categorical": lambda cols: Categorical(
                      [max(1, len(self.categories[self.columns[c]])) for c in cols])}
        parts = []
        for kind in KINDS:
            cols = [j for j, k in enumerate(self.kinds) if k == kind]
            if cols:
                parts.append((cols, makers[kind](cols)))
        return Product(parts)
