"""Batch sources: where the batches that the engines stream over come from.

An engine never holds the data set; it asks a *source* for an iterator of
``(X, weight)`` pairs, once per pass.  The same loop therefore serves

* an in-memory array or tensor, cut into chunks (bounded working memory);
* a ``.npy`` file on disk, read chunk by chunk with plain file reads (the
  process's resident memory stays at one chunk, however large the file);
* a Parquet or CSV file, read in record batches with pyarrow;
* any re-iterable of batches (a list, or a function returning a fresh
  iterator), for data that lives elsewhere.

Every batch is checked (2-D, finite, the same number of features) and cast
to the compute dtype and device as it is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from elbokit._validation import all_finite, storage_dtype

Batch = tuple[torch.Tensor, "torch.Tensor | None"]


class BatchSource(Protocol):
    """What an engine needs from the data.

    Attributes
    ----------
    n_features : int
        Number of columns.
    """

    n_features: int

    def __iter__(self) -> Iterator[Batch]:
        """Yield ``(X, weight)``: X of shape (b, n_features), weight (b,) or None."""
        ...


class InMemorySource:
    """A tensor (and optional weights) served in chunks of ``batch_size`` rows.

    Parameters
    ----------
    X : torch.Tensor, shape (n_samples, n_features)
    weight : torch.Tensor of shape (n_samples,), optional
    batch_size : int, optional
        Rows per chunk; None serves the whole tensor at once.
    """

    def __init__(self, X: torch.Tensor, weight: torch.Tensor | None = None, batch_size=None):
        self.X = X
        self.weight = weight
        self.n_samples, self.n_features = X.shape
        self.batch_size = batch_size or max(self.n_samples, 1)

    def __iter__(self):
        if self.n_samples == 0:  # an empty shard still yields (empty) statistics
            yield self.X, self.weight
            return
        for start in range(0, self.n_samples, self.batch_size):
            stop = start + self.batch_size
            w = None if self.weight is None else self.weight[start:stop]
            yield self.X[start:stop], w


def _check_batch(X: torch.Tensor, where: str, n_features: int | None,
                 allow_missing: bool = False) -> None:
    if X.ndim != 2:
        raise ValueError(f"{where} must be 2-D (rows, features); got shape {tuple(X.shape)}.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(
            f"{where} has {X.shape[1]} features where earlier batches had {n_features}: "
            "every batch needs the same columns."
        )
    if allow_missing:  # NaN marks a missing entry for the models that marginalise it
        if bool(torch.isinf(X).any()):
            raise ValueError(f"{where} contains inf: remove those rows or clip the values.")
    elif not all_finite(X):
        raise ValueError(
            f"{where} contains NaN or inf: remove or impute those values first."
        )


class _ConvertingSource:
    """Shared logic: convert raw NumPy/torch batches, check them, count rows."""

    def __init__(self, dtype: torch.dtype, device: torch.device, description: str):
        self.dtype = dtype
        self.device = device
        self.description = description
        self.n_features: int | None = None
        self.n_samples: int | None = None
        self.allow_missing = False  # set by as_source(allow_missing=True)

    def _raw_batches(self) -> Iterator:
        raise NotImplementedError

    def _convert(self, raw, index: int) -> Batch:
        X, w = raw if isinstance(raw, tuple) else (raw, None)
        where = f"batch {index} of {self.description}"
        X = X.detach() if isinstance(X, torch.Tensor) else torch.from_numpy(
            np.array(X, dtype=np.float64 if np.asarray(X).dtype.kind != "f" else None, copy=True))
        X = X.to(device=self.device, dtype=storage_dtype(X.dtype, self.dtype))
        _check_batch(X, where, self.n_features, self.allow_missing)
        if w is not None:
            w = torch.as_tensor(np.asarray(w) if not isinstance(w, torch.Tensor) else w)
            w = w.to(device=self.device, dtype=X.dtype)
            if w.shape != (X.shape[0],) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"{where}: its weights must be finite, >= 0, one per row.")
        return X, w

    def __iter__(self):
        rows = 0
        for i, raw in enumerate(self._raw_batches()):
            X, w = self._convert(raw, i)
            if X.shape[0] == 0:
                continue
            self.n_features = X.shape[1]
            rows += X.shape[0]
            yield X, w
        if rows == 0:
            raise ValueError(f"{self.description} holds no rows.")
        self.n_samples = rows


class NpySource(_ConvertingSource):
    """A 2-D ``.npy`` file read ``batch_size`` rows at a time with plain reads.

    Unlike ``np.load(mmap_mode="r")``, nothing stays mapped: resident memory
    is one chunk, whatever the file's size.

    Parameters
    ----------
    path : str or Path
    batch_size : int
    dtype, device
        Compute dtype (float files keep their own) and device of the batches.
    """

    def __init__(self, path, batch_size: int, dtype, device):
        super().__init__(dtype, device, str(path))
        self.path = Path(path)
        with open(self.path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, file_dtype = read_header(f)
            except ValueError as err:
                raise ValueError(f"{path} is not a valid .npy file: {err}") from err
            self.offset = f.tell()
        if len(shape) != 2 or fortran or file_dtype.hasobject or file_dtype.kind not in "biuf":
            raise ValueError(
                f"{path} must hold a 2-D C-ordered numeric array; got shape {shape}, "
                f"dtype {file_dtype}, fortran_order={fortran}."
            )
        self.file_dtype = file_dtype
        self.n_samples, self.n_features = int(shape[0]), int(shape[1])
        self._width = self.n_features
        self.batch_size = batch_size

    def _raw_batches(self):
        row_bytes = self._width * self.file_dtype.itemsize
        buf = np.empty((self.batch_size, self._width), dtype=self.file_dtype)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for start in range(0, self.n_samples, self.batch_size):
                rows = min(self.batch_size, self.n_samples - start)
                view = buf[:rows]
                if f.readinto(memoryview(view).cast("B")) != rows * row_bytes:
                    raise ValueError(f"{self.path} is truncated: fewer rows than its header says.")
                yield view

    def __iter__(self):
        n_features = self.n_features
        self.n_features = None  # let the base class check every batch against the first
        try:
            yield from super().__iter__()
        finally:
            self.n_features = n_features


class MemmapSource(_ConvertingSource):
    """A 2-D ``np.memmap`` (e.g. ``np.load(path, mmap_mode="r")``) served in chunks.

    Each chunk is copied out of the mapping, so the data are never loaded
    whole; the pages read stay in the page cache, which the system can drop.
    """

    def __init__(self, array: np.memmap, batch_size: int, dtype, device):
        super().__init__(dtype, device, "the memory-mapped array")
        if array.ndim != 2:
            raise ValueError(f"the memory-mapped array must be 2-D; got shape {array.shape}.")
        self.array = array
        self.batch_size = batch_size

    def _raw_batches(self):
        for start in range(0, self.array.shape[0], self.batch_size):
            yield self.array[start:start + self.batch_size]


def _csv_delimiter(path) -> str:
    return "\t" if table_suffix(path) == ".tsv" else ","


def _first_row(path) -> list[str]:
    """The cells of the first row of a CSV/TSV file (from its first 1 MiB)."""
    import csv

    import pyarrow as pa

    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(1 << 20).decode("utf-8", errors="replace")
    return next(csv.reader(head.splitlines()[:1], delimiter=_csv_delimiter(path)), [])


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def detect_header(path) -> bool:
    """Whether the first row of a CSV/TSV file holds column names.

    It does when any of its non-empty cells is not a number (a row of
    numbers is data: taking it as names would lose it silently).
    """
    return any(c.strip() and not _is_number(c.strip()) for c in _first_row(path))


def describe_header(path, header: bool | None = None) -> str:
    """What is assumed about the first row of a CSV/TSV file, in words (the CLI prints it)."""
    row = _first_row(path)
    has = detect_header(path) if header is None else header
    shown = ", ".join(row[:4]) + (", ..." if len(row) > 4 else "")
    how = "detected" if header is None else "as told"
    if has:
        return f"{path}: the first row ({shown}) is read as column names ({how})."
    return f"{path}: no header row ({how}): the first row ({shown}) is data."


class TableSource(_ConvertingSource):
    """A Parquet or CSV file read in record batches with pyarrow.

    Every column must be numeric; a non-numeric cell is an error naming the
    column.

    Parameters
    ----------
    path : str or Path
        ``.parquet``/``.pq`` or ``.csv``/``.tsv`` (also gzip-compressed,
        ``.csv.gz``/``.tsv.gz``).
    batch_size : int
        Rows per batch (Parquet; CSV batches follow pyarrow's block size).
    header : bool, optional
        CSV/TSV: whether the first row holds column names; None detects it
        (:func:`detect_header`). ``self.header`` holds what was assumed.
    columns : list of str, optional
        Read only these columns, in this order (the others are never parsed);
        without a header, pyarrow's names f0, f1, ...
    """

    def __init__(self, path, batch_size: int, dtype, device, header: bool | None = None,
                 columns=None):
        super().__init__(dtype, device, str(path))
        self.path = Path(path)
        self.batch_size = batch_size
        self.suffix = table_suffix(self.path)
        self.columns = None if columns is None else list(columns)
        self.header = True
        if self.suffix in (".csv", ".tsv"):
            self.header = detect_header(self.path) if header is None else bool(header)

    def _csv_reader(self):
        import pyarrow.csv as pcsv

        return pcsv.open_csv(  # decompresses .gz by the file name
            self.path,
            read_options=pcsv.ReadOptions(block_size=1 << 22,
                                          autogenerate_column_names=not self.header),
            parse_options=pcsv.ParseOptions(delimiter=_csv_delimiter(self.path)),
            convert_options=pcsv.ConvertOptions(include_columns=self.columns),
        )

    def _record_batches(self):
        if self.suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(self.path).iter_batches(batch_size=self.batch_size,
                                                              columns=self.columns)
            return
        yield from self._csv_reader()

    @property
    def feature_names(self) -> list[str] | None:
        """The names of the columns read: the header row (CSV/TSV) or schema (Parquet);
        None for a CSV/TSV without a header (pyarrow's f0, f1, ... are no names)."""
        if not self.header:
            return None
        if not hasattr(self, "_feature_names"):
            import pyarrow as pa

            try:
                if self.suffix in (".parquet", ".pq"):
                    import pyarrow.parquet as pq

                    names = self.columns or pq.ParquetFile(self.path).schema_arrow.names
                else:
                    with self._csv_reader() as reader:
                        names = reader.schema.names
            except pa.ArrowInvalid as err:
                raise ValueError(f"{self.path} cannot be parsed: {err}") from err
            self._feature_names = [str(n) for n in names]
        return self._feature_names

    def _raw_batches(self):
        import pyarrow as pa

        row = 0
        try:
            for batch in self._record_batches():
                columns = []
                for name, col in zip(batch.schema.names, batch.columns):
                    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                            or pa.types.is_null(col.type)):
                        raise ValueError(self._bad_cell_message(name, col.to_pylist(), row))
                    columns.append(col.to_numpy(zero_copy_only=False).astype(np.float64))
                row += batch.num_rows
                yield np.stack(columns, axis=1)
        except pa.ArrowInvalid as err:
            raise ValueError(self._scan_csv() or f"{self.path} cannot be parsed: {err}") from err

    def _bad_cell_message(self, column, values, first_row: int) -> str:
        for i, value in enumerate(values):
            try:
                float(value)
            except (TypeError, ValueError):
                return (f"{self.path}: row {first_row + i + 1}, column {column!r} holds "
                        f"{value!r}, not a number: every column must be numeric.")
        return f"{self.path}: column {column!r} is not numeric: every column must be numeric."

    def _scan_csv(self) -> str | None:
        """Find the first non-numeric cell of a CSV file (the slow path, for the message)."""
        import csv

        if self.suffix not in (".csv", ".tsv"):
            return None
        import gzip

        opener = gzip.open if self.path.suffix.lower() == ".gz" else open
        with opener(self.path, "rt", newline="") as f:
            reader = csv.reader(f, delimiter=_csv_delimiter(self.path))
            header = next(reader, []) if self.header else []
            for r, cells in enumerate(reader, start=1):
                for c, value in enumerate(cells):
                    try:
                        float(value)
                    except ValueError:
                        name = header[c] if c < len(header) else str(c)
                        return (f"{self.path}: row {r}, column {name!r} holds {value!r}, not a "
                                "number: every column must be numeric.")
        return None


class IterableSource(_ConvertingSource):
    """Batches from a re-iterable, or from a function returning a fresh iterator.

    Each item is an array of shape (b, n_features), or a pair (array, weights).
    """

    def __init__(self, batches: Iterable | Callable[[], Iterable], dtype, device):
        super().__init__(dtype, device, "the batch iterable")
        if isinstance(batches, Iterator):
            raise TypeError(
                "fit needs several passes over the data, but a one-shot iterator or "
                "generator can be read once: pass a list of batches, a function returning "
                "a fresh iterator, or feed batches one at a time to partial_fit."
            )
        self.batches = batches

    def _raw_batches(self):
        return iter(self.batches() if callable(self.batches) else self.batches)


def is_source_like(X) -> bool:
    """True for what :func:`as_source` streams rather than loads.

    Paths, functions returning iterators, non-sequence iterables, and lists
    or tuples of 2-D arrays (batches) are streamed; arrays, tensors and
    nested lists of numbers are data.
    """
    if isinstance(X, (str, os.PathLike, np.memmap)):
        return True
    if isinstance(X, (np.ndarray, torch.Tensor)) or hasattr(X, "__array__") or hasattr(X, "toarray"):
        return False
    if isinstance(X, (list, tuple)):
        first = X[0] if len(X) > 0 else None
        if isinstance(first, tuple) and len(first) == 2:  # (X_batch, weight_batch) pairs
            first = first[0]
        return getattr(first, "ndim", None) == 2
    return callable(X) or isinstance(X, Iterable)


TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv")


def table_suffix(path) -> str:
    """The format suffix of a data file: ``.csv`` for ``x.csv`` and ``x.csv.gz`` alike."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] == ".gz" and suffixes[-2] in (".csv", ".tsv"):
        return suffixes[-2]
    return path.suffix.lower()


def as_source(X, *, batch_size: int, dtype, device, allow_missing: bool = False):
    """A batch source for a path (.npy, .parquet, .csv), a memmap or an iterable of batches.

    ``allow_missing``: NaN (a null in a table) passes as a missing entry.
    """
    source = _as_source(X, batch_size=batch_size, dtype=dtype, device=device)
    source.allow_missing = allow_missing
    return source


def _as_source(X, *, batch_size: int, dtype, device):
    if isinstance(X, (str, os.PathLike)):
        from elbokit import files

        path = files.check_input(X, what="data file")  # a FIFO or device would block or never end
        suffix = table_suffix(path)
        if suffix == ".npy":
            return NpySource(path, batch_size, dtype, device)
        if suffix in TABLE_SUFFIXES:
            return TableSource(path, batch_size, dtype, device)
        raise ValueError(
            f"{path}: unknown data format {suffix!r}; use .npy, .parquet, .csv, .tsv "
            "(or .csv.gz, .tsv.gz)."
        )
    if isinstance(X, np.memmap):
        return MemmapSource(X, batch_size, dtype, device)
    return IterableSource(X, dtype, device)


def sample_rows(source, max_rows: int, generator: torch.Generator):
    """A uniform random sample of up to ``max_rows`` rows, in one pass.

    Each row gets a uniform random key and the rows with the smallest keys are
    kept (a bottom-k sample), so the number of rows need not be known.  An
    in-memory source no larger than ``max_rows`` is returned whole.

    Returns
    -------
    X : Tensor of shape (min(n, max_rows), n_features), or None when n = 0
    weight : Tensor of shape (min(n, max_rows),) or None
    """
    if isinstance(source, InMemorySource):
        if source.n_samples <= max_rows:
            return (source.X, source.weight) if source.n_samples else (None, None)
        # the same keys, hence rows, as the streamed pass below, drawn at once
        keys = torch.rand(source.n_samples, generator=generator, device=generator.device)
        idx = torch.topk(keys, max_rows, largest=False).indices.sort().values.to(source.X.device)
        return source.X[idx], None if source.weight is None else source.weight[idx]
    parts: list[tuple] = []
    held = 0

    def prune(parts, limit):
        X = torch.cat([p[0] for p in parts])
        keys = torch.cat([p[2] for p in parts])
        has_w = any(p[1] is not None for p in parts)
        w = torch.cat([p[1] if p[1] is not None else torch.ones(p[0].shape[0], dtype=X.dtype,
                                                                  device=X.device)
                       for p in parts]) if has_w else None
        if X.shape[0] > limit:
            idx = torch.topk(keys, limit, largest=False).indices.sort().values
            X, keys, w = X[idx], keys[idx], None if w is None else w[idx]
        return [(X, w, keys)]

    for X, w in source:
        keys = torch.rand(X.shape[0], generator=generator, device=generator.device).to(X.device)
        parts.append((X.clone(), None if w is None else w.clone(), keys))
        held += X.shape[0]
        if held > 2 * max_rows:
            parts = prune(parts, max_rows)
            held = parts[0][0].shape[0]
    if not parts:
        return None, None
    X, w, _ = prune(parts, max_rows)[0]
    return X, w
