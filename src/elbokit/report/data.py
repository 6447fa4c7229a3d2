"""The data a report shows: a sample of rows that keeps their row numbers, and labels
checked against the rows they describe.

Every table and plot of a report that names a row gives its 0-based row number
in the data file (or array) as a whole, never a position in the plotted
sample; labels are taken at those row numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elbokit.data import preprocess
from elbokit.data.idx import is_idx_path


@dataclass
class Rows:
    """A uniform random sample of a data set's rows.

    Attributes
    ----------
    X : array (m, D), float64
        The rows, in the order of the data.
    index : array (m,), int64, ascending
        Their 0-based row numbers in the data.
    n_total : int
        Rows in the data.
    """

    X: np.ndarray
    index: np.ndarray
    n_total: int

    @property
    def is_sample(self) -> bool:
        return len(self.index) < self.n_total


@dataclass
class Data:
    """A data set as a model sees it: an array, or a file read through ``prep``.

    Parameters
    ----------
    source : path or array
        A file (read through ``prep``), or an array already in the model's
        columns and scale.
    prep : Preprocessing, optional
        The columns and scaling the model was fitted with (command line).
    """

    source: object
    prep: preprocess.Preprocessing | None = None

    @property
    def is_file(self) -> bool:
        return isinstance(self.source, (str, Path))

    @property
    def description(self) -> str:
        return Path(self.source).name if self.is_file else "the array given"

    def model_input(self):
        """What an estimator's ``predict``/``score_samples`` take: the path itself when
        nothing needs changing (streamed by the estimator), else a function returning
        fresh batches, or the array."""
        if not self.is_file:
            return np.asarray(self.source, dtype=np.float64)
        if self.prep is None and not is_idx_path(self.source):
            return str(self.source)
        return lambda: preprocess.batches(self.source, self.prep)

    def array(self) -> np.ndarray:
        """All rows in memory (float64; IDX images float32)."""
        if not self.is_file:
            return np.asarray(self.source, dtype=np.float64)
        return preprocess.read(self.source, self.prep)

    def _batches(self):
        if not self.is_file:
            yield self.array()
            return
        yield from preprocess.batches(self.source, self.prep)

    def sample(self, max_rows: int, seed: int = 0) -> Rows:
        """Up to ``max_rows`` rows drawn uniformly without replacement, with their numbers.

        Files are read in one streaming pass (a bottom-k sample on uniform keys:
        memory stays at about 2 * max_rows rows).
        """
        rng = np.random.default_rng(seed)
        if not self.is_file:
            X = self.array()
            n = len(X)
            idx = np.arange(n) if n <= max_rows else np.sort(rng.choice(n, max_rows, replace=False))
            return Rows(X[idx], idx, n)
        keys, index, parts, offset = [], [], [], 0
        for X in self._batches():
            b = len(X)
            keys.append(rng.random(b))
            index.append(np.arange(offset, offset + b))
            parts.append(X)
            offset += b
            if sum(len(k) for k in keys) > 2 * max_rows:
                keys, index, parts = _bottom(keys, index, parts, max_rows)
        if offset == 0:
            raise ValueError(f"{self.description} holds no rows.")
        keys, index, parts = _bottom(keys, index, parts, max_rows)
        order = np.argsort(index[0])
        return Rows(parts[0][order], index[0][order], offset)

    def take(self, index) -> np.ndarray:
        """The rows at 0-based row numbers ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        if not self.is_file:
            return self.array()[index]
        wanted = np.unique(index)
        found, offset = {}, 0
        for X in self._batches():
            here = wanted[(wanted >= offset) & (wanted < offset + len(X))]
            found.update(zip(here.tolist(), X[here - offset]))
            offset += len(X)
        missing = [int(i) for i in wanted if int(i) not in found]
        if missing:
            raise ValueError(f"{self.description} has {offset} rows, no row {missing[0]}.")
        return np.stack([found[i] for i in index.tolist()]) if len(index) else np.zeros((0, 0))


def _bottom(keys, index, parts, k):
    """The k rows with the smallest keys (one part each)."""
    keys, index, X = np.concatenate(keys), np.concatenate(index), np.concatenate(parts)
    if len(keys) > k:
        keep = np.argpartition(keys, k)[:k]
        keys, index, X = keys[keep], index[keep], X[keep]
    return [keys], [index], [X]


# ------------------------------------------------------------------ labels
def read_labels(spec, n_rows: int, data_description: str) -> np.ndarray:
    """One label per row of the data, from an array or a file, or a clear error.

    Files: ``.npy``; IDX (``*-idx1-ubyte[.gz]``); text (``.csv``, ``.tsv``,
    ``.txt``, also ``.gz``) with one label per line after an optional header
    line; ``FILE:COLUMN`` for one named column of a CSV/TSV with a header, or
    of a Parquet file. Integer labels stay integers, others are strings.

    The first line of a one-column text file is a header when it is text
    above integer labels, or when the file has exactly one line more than
    the data has rows.
    """
    header_possible = False
    if isinstance(spec, (str, Path)):
        labels, header_possible = _read_label_file(spec)
    else:
        labels = np.asarray(spec)
    if labels.ndim != 1:
        raise ValueError(f"the labels have shape {labels.shape}: give one label per row.")
    if header_possible and len(labels) == n_rows + 1:
        labels = _typed(labels[1:])
    if len(labels) != n_rows:
        count = f"{len(labels)} entries" + (f" ({len(labels) - 1} after a header line)"
                                            if header_possible else "")
        raise ValueError(
            f"the labels have {count} but {data_description} has {n_rows} rows: "
            "give the labels of exactly these rows (the labels file that belongs to this "
            "data, or the data the labels belong to)."
        )
    return labels


def _read_label_file(spec) -> tuple[np.ndarray, bool]:
    """The labels in a file, and whether its first entry may be a header."""
    from elbokit import files

    path, column = _split_column(str(spec))
    if not path.exists():
        raise FileNotFoundError(f"no labels file at {path}.")
    files.check_input(path, what="labels file")
    if is_idx_path(path):
        from elbokit.data.idx import load_idx_labels

        return load_idx_labels(path), False
    suffix = path.suffix.lower()
    if suffix == ".npy":
        labels = np.load(path, allow_pickle=False)
        return (labels[:, 0] if labels.ndim == 2 and labels.shape[1] == 1 else labels), False
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        name = column or (table.column_names[0] if table.num_columns == 1 else None)
        if name is None or name not in table.column_names:
            raise ValueError(f"{path} has the columns {', '.join(table.column_names)}: "
                             f"name the labels as {path}:COLUMN.")
        return _typed(table.column(name).to_pylist()), False
    return _text_labels(path, column)


def label_file(spec):
    """The file a labels argument names (``FILE:COLUMN`` -> FILE), or None for an array."""
    return _split_column(str(spec))[0] if isinstance(spec, (str, Path)) else None


def _split_column(spec: str):
    """``FILE:COLUMN`` -> (FILE, COLUMN) when FILE exists and the whole does not."""
    path = Path(spec)
    if not path.exists() and ":" in spec:
        head, _, tail = spec.rpartition(":")
        if Path(head).is_file():
            return Path(head), tail
    return path, None


def _text_labels(path: Path, column: str | None) -> tuple[np.ndarray, bool]:
    import csv
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    delimiter = "\t" if ".tsv" in path.name.lower() else ","
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter) if r]
    except (UnicodeDecodeError, OSError) as err:
        raise ValueError(f"{path} is not a text file of labels ({err}).") from None
    if not rows:
        raise ValueError(f"{path} holds no labels.")
    if column is not None:
        if column not in rows[0]:
            raise ValueError(f"{path} has no column {column!r}; its header is {', '.join(rows[0])}.")
        j = rows[0].index(column)
        return _typed([r[j] if j < len(r) else "" for r in rows[1:]]), False
    if max(len(r) for r in rows) != 1:
        raise ValueError(f"{path} has several columns: name the one with the labels as "
                         f"{path}:COLUMN (its header names them).")
    values = [r[0].strip() for r in rows]
    if len(values) > 1 and not _is_int(values[0]) and all(_is_int(v) for v in values[1:]):
        return _typed(values[1:]), False  # a header above integer labels
    return _typed(values), len(values) > 1 and not _is_int(values[0])


def _is_int(value) -> bool:
    if isinstance(value, str):
        try:
            return float(value).is_integer()  # "3", "3.0", "3.00"
        except ValueError:
            return False
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def _typed(values) -> np.ndarray:
    values = list(values)
    if values and all(_is_int(v) for v in values):
        return np.asarray([int(float(v)) for v in values], dtype=np.int64)
    return np.asarray([str(v) for v in values])


def categories(labels) -> tuple[list, np.ndarray]:
    """The distinct labels (sorted) and each row's code into them."""
    names, codes = np.unique(np.asarray(labels), return_inverse=True)
    return [v.item() if hasattr(v, "item") else v for v in names], codes.reshape(-1)
