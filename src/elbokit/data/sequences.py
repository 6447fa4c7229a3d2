"""Sources of sequences (for hidden Markov models): whole sequences, in batches.

A sequence model needs every batch to hold whole sequences.  The sources
here serve ``(X, weight)`` batches like every other source (so that the EM
engine, stepwise EM and torch.distributed need nothing new), where X has one
extra last column marking sequence starts: 1 at the first step of each
sequence, 0 elsewhere.  Sequences come

* in memory, as hmmlearn takes them: X of shape (n_samples, n_features) with
  all sequences one after the other, and ``lengths`` (their lengths, summing
  to n_samples; None: one sequence); or as a list of arrays, one per sequence;
* streamed: a ``.npy``/``.csv``/``.parquet`` file of rows (read chunk by
  chunk) with ``lengths``; a directory or a list of ``.npy`` files, one
  sequence per file; or a function returning a fresh iterator of sequences.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from elbokit._validation import storage_dtype
from elbokit.data.sources import InMemorySource, as_source

MARKER = "the sequence-start column"


def check_lengths(lengths, n_samples: int, name: str = "lengths") -> torch.Tensor:
    """``lengths`` as an int64 tensor: 1-D, integers >= 1 summing to ``n_samples``."""
    if lengths is None:
        return torch.tensor([n_samples], dtype=torch.int64)
    arr = np.asarray(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a 1-D list of sequence lengths; got shape {arr.shape}.")
    if arr.dtype.kind not in "iuf" or not np.all(arr == np.round(arr)):
        raise ValueError(f"{name} must hold integers (the length of each sequence).")
    if np.any(arr < 1):
        raise ValueError(f"{name} holds a length < 1: every sequence needs at least one step.")
    if int(arr.sum()) != n_samples:
        raise ValueError(f"{name} sums to {int(arr.sum())}, but X has {n_samples} rows: the "
                         "lengths of the sequences must add up to the number of rows of X.")
    return torch.as_tensor(arr.astype(np.int64))


def with_starts(X: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """X with the sequence-start column appended (1 at each sequence's first row)."""
    marker = torch.zeros(X.shape[0], 1, dtype=X.dtype, device=X.device)
    starts = (torch.cumsum(lengths, 0) - lengths).to(X.device)
    marker[starts] = 1.0
    return torch.cat([X, marker], 1)


def lengths_of(X: torch.Tensor) -> torch.Tensor:
    """The sequence lengths of a batch whose last column marks the starts."""
    first = torch.nonzero(X[:, -1] > 0.5).flatten()
    ends = torch.cat([first[1:], first.new_tensor([X.shape[0]])])
    return ends - first


def batch_bounds(lengths: torch.Tensor, rows: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of batches of whole sequences, about ``rows`` rows each
    (a longer sequence is a batch on its own)."""
    ends = torch.cumsum(lengths, 0)
    n = int(ends[-1]) if ends.numel() else 0
    bounds, start, first = [], 0, 0
    while start < n:
        last = int(torch.searchsorted(ends, start + rows, right=True))  # sequences that fit
        last = max(last, first + 1)
        stop = int(ends[last - 1])
        bounds.append((start, stop))
        start, first = stop, last
    return bounds


class InMemorySequences(InMemorySource):
    """Sequences held in memory, served as batches of whole sequences.

    Parameters
    ----------
    X : torch.Tensor of shape (n_samples, n_features)
        All sequences, one after the other.
    lengths : (n_sequences,) int64 tensor
    weight : torch.Tensor of shape (n_samples,), optional
        Row weights (constant within a sequence).
    batch_size : int
        Rows per batch, about (whole sequences).
    """

    def __init__(self, X: torch.Tensor, lengths: torch.Tensor, weight=None, batch_size=None):
        super().__init__(with_starts(X, lengths), weight, batch_size)
        self.n_features = X.shape[1]
        self.lengths = lengths
        self.bounds = batch_bounds(lengths, self.batch_size) if X.shape[0] else []

    def __iter__(self):
        if self.n_samples == 0:
            yield self.X, self.weight
            return
        for start, stop in self.bounds:
            w = None if self.weight is None else self.weight[start:stop]
            yield self.X[start:stop], w


class SequenceStream:
    """Sequences read as they are needed, served as batches of whole sequences.

    Parameters
    ----------
    sequences : callable
        Returns a fresh iterator of sequences (arrays or tensors of shape
        (T, n_features); 1-D: one feature), once per pass.
    batch_size : int
        Rows per batch, about.
    dtype, device
        Compute dtype (float data keep their own) and device.
    description : str
        What the data are, for error messages.
    """

    def __init__(self, sequences, batch_size: int, dtype, device, description: str):
        self.sequences = sequences
        self.batch_size = batch_size
        self.dtype = dtype
        self.device = device
        self.description = description
        self.n_features: int | None = None
        self.n_samples: int | None = None

    def _tensor(self, seq, index: int) -> torch.Tensor:
        t = seq.detach() if isinstance(seq, torch.Tensor) else torch.from_numpy(
            np.array(seq, dtype=np.float64 if np.asarray(seq).dtype.kind not in "f" else None))
        if t.ndim == 1:
            t = t[:, None]
        where = f"sequence {index} of {self.description}"
        if t.ndim != 2 or t.shape[0] == 0:
            raise ValueError(f"{where} must be a non-empty 2-D array (steps, features); "
                             f"got shape {tuple(t.shape)}.")
        if self.n_features is not None and t.shape[1] != self.n_features:
            raise ValueError(f"{where} has {t.shape[1]} features where the first had "
                             f"{self.n_features}: every sequence needs the same columns.")
        if bool(torch.isinf(t).any()):
            raise ValueError(f"{where} contains inf: remove or clip those values.")
        self.n_features = t.shape[1]
        return t.to(device=self.device, dtype=storage_dtype(t.dtype, self.dtype))

    def __iter__(self) -> Iterator:
        parts, held, rows = [], 0, 0
        for i, seq in enumerate(self.sequences()):
            t = self._tensor(seq, i)
            parts.append(t)
            held += t.shape[0]
            if held >= self.batch_size:
                yield self._batch(parts), None
                rows, parts, held = rows + held, [], 0
        if parts:
            yield self._batch(parts), None
            rows += held
        if rows == 0:
            raise ValueError(f"{self.description} holds no sequence.")
        self.n_samples = rows

    @staticmethod
    def _batch(parts):
        X = torch.cat(parts) if len(parts) > 1 else parts[0]
        lengths = torch.tensor([p.shape[0] for p in parts], dtype=torch.int64)
        return with_starts(X, lengths)


def rows_as_sequences(rows_source, lengths: torch.Tensor):
    """A function returning an iterator over the sequences of a row source cut by ``lengths``."""
    L = [int(v) for v in lengths]

    def sequences():
        buf, held, k, total = [], 0, 0, 0
        for X, _ in rows_source:
            total += X.shape[0]
            buf.append(X)
            held += X.shape[0]
            if k >= len(L) or held < L[k]:
                continue
            block = torch.cat(buf) if len(buf) > 1 else buf[0]
            start = 0
            while k < len(L) and block.shape[0] - start >= L[k]:
                yield block[start:start + L[k]]
                start, k = start + L[k], k + 1
            rest = block[start:]
            buf, held = ([rest] if rest.shape[0] else []), rest.shape[0]
        if k != len(L) or held:
            raise ValueError(f"lengths sums to {sum(L)}, but the data file holds {total} rows: "
                             "the lengths of the sequences must add up to the number of rows.")
    return sequences


def npy_files(paths) -> list[Path]:
    """The .npy files of a directory (sorted by name), or a list of paths checked."""
    if isinstance(paths, (str, os.PathLike)):
        folder = Path(paths)
        files = sorted(folder.glob("*.npy"))
        if not files:
            raise ValueError(f"{folder} holds no .npy file (one sequence per file).")
        return files
    files = [Path(p) for p in paths]
    for p in files:
        if not p.is_file():
            raise FileNotFoundError(f"no sequence file at {p}.")
        if p.suffix.lower() != ".npy":
            raise ValueError(f"{p}: a list of sequence files takes .npy files (one sequence each).")
    return files


def is_sequence_list(X) -> bool:
    """A list or tuple of in-memory arrays or tensors (one per sequence), or of nested
    lists of rows; a plain nested list of numbers is one array (rows)."""
    return isinstance(X, (list, tuple)) and len(X) > 0 and all(
        isinstance(s, (np.ndarray, torch.Tensor)) or (isinstance(s, list) and s and
                                                      isinstance(s[0], (list, tuple)))
        for s in X)


def is_streamed(X) -> bool:
    """Paths (a file of rows, a directory or a list of .npy files) and functions."""
    if isinstance(X, (str, os.PathLike)):
        return True
    if isinstance(X, (list, tuple)) and X and all(isinstance(p, (str, os.PathLike)) for p in X):
        return True
    return callable(X) and not isinstance(X, (np.ndarray, torch.Tensor))


def stream(X, lengths, *, batch_size: int, dtype, device):
    """A :class:`SequenceStream` over streamed sequences (see :func:`is_streamed`)."""
    if isinstance(X, (str, os.PathLike)) and Path(X).is_dir():
        if lengths is not None:
            raise ValueError("lengths goes with a file of rows; a directory holds one "
                             "sequence per .npy file.")
        files = npy_files(X)
        return SequenceStream(lambda: (np.load(p, allow_pickle=False) for p in files), batch_size,
                              dtype, device, str(X))
    if isinstance(X, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths goes with a file of rows; a list of files holds one "
                             "sequence per file.")
        files = npy_files(X)
        return SequenceStream(lambda: (np.load(p, allow_pickle=False) for p in files), batch_size,
                              dtype, device, "the sequence files")
    if callable(X):
        if lengths is not None:
            raise ValueError("lengths goes with a file of rows; a function yields whole sequences.")
        return SequenceStream(X, batch_size, dtype, device, "the sequence iterator")
    rows = as_source(X, batch_size=max(batch_size, 1), dtype=dtype, device=device)
    if lengths is None:
        n = getattr(rows, "n_samples", None)
        if n is None:
            raise ValueError(f"{X}: give lengths (the length of each sequence in the file).")
        lengths = [n]
    lengths = torch.as_tensor(np.asarray(lengths, dtype=np.int64))
    if lengths.ndim != 1 or bool((lengths < 1).any()):
        raise ValueError("lengths must be a 1-D list of sequence lengths, each >= 1.")
    return SequenceStream(rows_as_sequences(rows, lengths), batch_size, dtype, device, str(X))


LETTERS = "abcdefghijklmnopqrstuvwxyz "


def read_text(path, alphabet: str | None = LETTERS):
    """A text file as character sequences, one per non-empty line.

    With ``alphabet`` (default: the 26 letters and the space), the text is
    lower-cased, every other character dropped and runs of spaces collapsed,
    as in the classic character-level HMM experiments; ``None`` keeps every
    character (the alphabet is then the sorted set of characters seen).

    Returns
    -------
    X : int64 array (n_characters, 1)
        Symbol codes (index in the alphabet).
    lengths : int64 array (n_lines,)
    alphabet : str
    lines : list of str
        The sequences as text (for display).
    """
    import re

    text = Path(path).read_text(encoding="utf-8", errors="replace")
    lines = []
    kept = None if alphabet is None else set(alphabet)
    for line in text.splitlines():
        if kept is not None:
            line = "".join(c for c in line.lower() if c in kept)
            if " " in kept:
                line = re.sub(" +", " ", line).strip()
        if line:
            lines.append(line)
    if not lines:
        raise ValueError(f"{path} holds no character of the alphabet {alphabet!r}.")
    if alphabet is None:
        alphabet = "".join(sorted(set("".join(lines))))
    lookup = {c: i for i, c in enumerate(alphabet)}
    codes = np.fromiter((lookup[c] for line in lines for c in line), dtype=np.int64)
    return codes[:, None], np.array([len(line) for line in lines], dtype=np.int64), alphabet, lines
