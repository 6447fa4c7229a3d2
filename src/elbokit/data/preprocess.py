"""Reading data files as a model sees them: chosen columns, optionally standardised.

What the command line's ``--columns``, ``--drop`` and ``--standardize`` do.
The choice is a :class:`Preprocessing`, saved beside a model as JSON
(``preprocessing.json``) so that ``predict``, ``score``, ``transform`` and
``report`` read later files exactly as ``fit`` did.

Formats: ``.npy``, ``.csv``/``.tsv`` (also ``.gz``), ``.parquet`` (columns by
name or 0-based position; only the chosen columns of a table are parsed, so a
text target column can be dropped) and IDX images (one column per pixel).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

PREPROCESSING_FILE = "preprocessing.json"
_BATCH_ROWS = 65536


def is_idx(path) -> bool:
    """An IDX file (MNIST's format), by its name (see :func:`elbokit.data.idx.is_idx_path`)."""
    from elbokit.data.idx import is_idx_path

    return is_idx_path(path)


@dataclass
class Preprocessing:
    """Which columns of a file a model uses, and how they are scaled.

    Attributes
    ----------
    columns : list of int or None
        0-based positions of the kept columns in the file (None: all).
    names : list of str or None
        Their names (from the file's header), when it has one.
    mean, scale : list of float or None
        Standardisation x -> (x - mean) / scale, per kept column (None: none).
    """

    columns: list | None = None
    names: list | None = None
    mean: list | None = None
    scale: list | None = None

    @property
    def is_identity(self) -> bool:
        return self.columns is None and self.mean is None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        raw = json.loads(text)
        if not isinstance(raw, dict) or set(raw) - {"columns", "names", "mean", "scale"}:
            raise ValueError(f"{PREPROCESSING_FILE} is not a preprocessing record.")
        prep = cls(**raw)
        for name in ("columns", "mean", "scale"):
            value = getattr(prep, name)
            if value is not None and not (isinstance(value, list) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise ValueError(f"{PREPROCESSING_FILE}: {name} must be a list of numbers.")
        return prep

    def standardise(self, X: np.ndarray) -> np.ndarray:
        if self.mean is None:
            return X
        return (X - np.asarray(self.mean)) / np.asarray(self.scale)


def load_preprocessing(model_dir) -> Preprocessing | None:
    """The preprocessing saved with a model by the command line, if any."""
    path = Path(model_dir) / PREPROCESSING_FILE
    return Preprocessing.from_json(path.read_text()) if path.is_file() else None


def column_names(path) -> list[str] | None:
    """The header names of a CSV/TSV/Parquet file; None for formats (or CSV files) without."""
    from elbokit.data.sources import detect_header, table_suffix

    suffix = table_suffix(path)
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    if suffix in (".csv", ".tsv") and detect_header(path):
        return _arrow_names(path, header=True)
    return None


def _arrow_names(path, header: bool) -> list[str]:
    """The names pyarrow gives a CSV/TSV file's columns (its header's, or f0, f1, ...)."""
    import pyarrow.csv as pcsv

    from elbokit.data.sources import table_suffix

    reader = pcsv.open_csv(
        path, read_options=pcsv.ReadOptions(autogenerate_column_names=not header),
        parse_options=pcsv.ParseOptions(delimiter="\t" if table_suffix(path) == ".tsv" else ","))
    return list(reader.schema.names)


def feature_names(path, prep: Preprocessing | None = None) -> list[str] | None:
    """Names of the columns a model sees: the kept header names, or None without a header."""
    if prep is not None and prep.columns is not None:
        return prep.names
    return column_names(path)


def _n_columns(path) -> int:
    from elbokit.data.sources import table_suffix

    names = column_names(path)
    if names is not None:
        return len(names)
    if table_suffix(path) in (".csv", ".tsv"):
        return len(_arrow_names(path, header=False))
    if is_idx(path):
        from elbokit.data.idx import read_idx

        return int(np.prod(read_idx(path).shape[1:]))
    return int(np.load(path, mmap_mode="r").shape[1])


def _resolve(spec: list[str], names: list[str] | None, n: int, option: str) -> list[int]:
    """0-based positions of the columns named (or numbered) in ``spec``."""
    positions = []
    for item in spec:
        if names is not None and item in names:
            positions.append(names.index(item))
            continue
        try:
            j = int(item)
        except ValueError:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else ""
            where = f"; the columns are {shown}" if names else " (this format has no names: give positions from 0)"
            raise ValueError(f"{option}: no column {item!r}{where}.") from None
        if not 0 <= j < n:
            raise ValueError(f"{option}: column {j} does not exist; the file has {n} columns (0..{n - 1}).")
        positions.append(j)
    return positions


def choose_columns(path, columns=None, drop=None) -> Preprocessing:
    """The columns kept by ``--columns`` (a list, in that order) and ``--drop``."""
    if columns is not None and drop is not None:
        raise ValueError("give --columns or --drop, not both.")
    if columns is None and drop is None:
        return Preprocessing()
    names = column_names(path)
    n = len(names) if names is not None else _n_columns(path)
    if columns is not None:
        kept = _resolve(columns, names, n, "--columns")
    else:
        dropped = set(_resolve(drop, names, n, "--drop"))
        kept = [j for j in range(n) if j not in dropped]
    if not kept:
        raise ValueError("--drop removes every column: keep at least one.")
    return Preprocessing(columns=kept, names=None if names is None else [names[j] for j in kept])


def raw_batches(path, prep: Preprocessing | None = None,
                batch_rows: int = _BATCH_ROWS) -> Iterator[np.ndarray]:
    """The file's rows in float64 batches (IDX images: float32), with ``prep``'s columns (not
    standardised)."""
    import torch

    from elbokit.data.sources import TABLE_SUFFIXES, TableSource, as_source, table_suffix

    columns = None if prep is None else prep.columns
    if is_idx(path):
        from elbokit.data.idx import load_idx_images

        X = load_idx_images(path)  # float32 grey levels: 60,000 images need no float64 copy
        X = X if columns is None else X[:, columns]
        for start in range(0, len(X), batch_rows):
            yield X[start:start + batch_rows]
        return
    cpu, f64 = torch.device("cpu"), torch.float64
    if table_suffix(path) in TABLE_SUFFIXES and columns is not None:
        names = column_names(path) or _arrow_names(path, header=False)
        source = TableSource(path, batch_rows, f64, cpu, columns=[names[j] for j in columns])
        columns = None  # the source reads only those, in that order
    else:
        source = as_source(str(path), batch_size=batch_rows, dtype=f64, device=cpu)
    for X, _ in source:
        X = X.double().numpy()
        yield X if columns is None else X[:, columns]


def batches(path, prep: Preprocessing | None = None,
            batch_rows: int = _BATCH_ROWS) -> Iterator[np.ndarray]:
    """The rows as the model sees them: ``prep``'s columns, standardised if it says so."""
    for X in raw_batches(path, prep, batch_rows):
        yield X if prep is None else prep.standardise(X)


def read(path, prep: Preprocessing | None = None) -> np.ndarray:
    """The whole file as the model sees it, shape (n_rows, n_columns), float64 (IDX: float32)."""
    return np.concatenate(list(batches(path, prep)))


def standardiser(path, prep: Preprocessing) -> Preprocessing:
    """``prep`` with the columns' mean and standard deviation, from one pass over the
    file (float64, Chan et al.'s pairwise update; a constant column gets scale 1,
    as scikit-learn's StandardScaler)."""
    n, mean, m2 = 0, None, None
    for X in raw_batches(path, prep):
        X = X.astype(np.float64, copy=False)
        b = X.shape[0]
        if b == 0:
            continue
        bm = X.mean(0)
        bm2 = ((X - bm) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = b, bm, bm2
            continue
        delta = bm - mean
        total = n + b
        mean = mean + delta * b / total
        m2 = m2 + bm2 + delta ** 2 * n * b / total
        n = total
    if mean is None:
        raise ValueError(f"{path} holds no rows.")
    std = np.sqrt(m2 / n)
    scale = np.where(std > 0, std, 1.0)
    return Preprocessing(prep.columns, prep.names, mean.tolist(), scale.tolist())


def preprocessing(path, columns=None, drop=None, standardize: bool = False) -> Preprocessing | None:
    """What ``--columns``/``--drop``/``--standardize`` ask for on ``path`` (None: nothing)."""
    prep = choose_columns(path, columns, drop)
    if standardize:
        prep = standardiser(path, prep)
    return None if prep.is_identity else prep
