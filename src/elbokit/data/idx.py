"""IDX files: the format of MNIST and its family (Fashion-MNIST, KMNIST, ...).

An IDX file is a big-endian header -- two zero bytes, a type code, the number
of dimensions, one uint32 per dimension -- followed by the array.  Files may
be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import math
import re
from pathlib import Path

import numpy as np

from elbokit import files

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_IDX_BYTES = 16 << 30  # the largest array an IDX header may promise
_TABLE_SUFFIXES = {".csv", ".tsv", ".npy", ".parquet", ".pq", ".txt", ".json", ".jsonl"}


def is_idx_path(path) -> bool:
    """True for names of IDX files (``train-images-idx3-ubyte``, ``t10k-labels.idx1-ubyte.gz``).

    The name decides, not the substring "idx" anywhere: ``idx.csv`` or
    ``my_idx_data.npy`` are tables, read by their suffix.
    """
    name = Path(path).name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    if Path(name).suffix in _TABLE_SUFFIXES:
        return False
    return "ubyte" in name or re.search(r"idx[1-9]", name) is not None or name.endswith(".idx")


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a NumPy array.

    Raises
    ------
    ValueError
        If the file is not IDX, not a regular file, truncated, longer than
        its header says, or its header promises an implausibly large array.
    """
    path = Path(path)
    raw = files.open_regular(path, what="IDX file")
    with (gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw) as f, raw:
        try:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _TYPES:
                raise ValueError(f"{path} is not an IDX file (bad magic number).")
            header = f.read(4 * magic[3])
            if len(header) < 4 * magic[3]:
                raise ValueError(f"{path} is truncated: its header ends early.")
            shape = tuple(int(v) for v in np.frombuffer(header, dtype=">u4"))
            dtype = np.dtype(_TYPES[magic[2]])
            expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow
            if expected > MAX_IDX_BYTES:
                raise ValueError(f"{path}: its header promises shape {shape}, {expected} bytes, "
                                 f"more than the {MAX_IDX_BYTES} elbokit reads: the header is "
                                 "corrupted or this is not an IDX file.")
            data = f.read(expected)
            trailing = f.read(1)
        except (OSError, EOFError) as err:  # a damaged gzip stream
            raise ValueError(f"{path} cannot be read as IDX: {err}.") from err
    if len(data) < expected:
        raise ValueError(f"{path} is truncated: its header promises {shape}.")
    if trailing:
        raise ValueError(f"{path} holds more data than its header's shape {shape}: the header "
                         "is corrupted or this is not an IDX file.")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def load_idx_images(path, *, flatten: bool = True, binarize: str | None = None,
                    seed: int = 0) -> np.ndarray:
    """Images from an IDX file as float32 grey levels in [0, 1].

    Parameters
    ----------
    path : str or Path
        An images file, e.g. ``train-images-idx3-ubyte(.gz)``.
    flatten : bool
        Return shape (n, height * width) instead of (n, height, width).
    binarize : {None, "static"}
        "static" draws x ~ Bernoulli(grey level) once (with ``seed``). For
        *dynamic* binarisation (a fresh draw every epoch), keep grey levels
        here and pass ``binarize="dynamic"`` to :class:`elbokit.VAE`.

    Returns
    -------
    array of shape (n, height * width) or (n, height, width), float32
    """
    images = read_idx(path)
    if images.ndim != 3:
        raise ValueError(f"{path} holds shape {images.shape}, not a stack of 2-D images.")
    X = images.astype(np.float32)
    if images.dtype == np.uint8:
        X /= 255.0
    if binarize == "static":
        X = (np.random.default_rng(seed).random(X.shape, dtype=np.float32) < X).astype(np.float32)
    elif binarize is not None:
        raise ValueError(f"binarize={binarize!r}: use None or 'static' here ('dynamic' is a VAE option).")
    return X.reshape(len(X), -1) if flatten else X


def load_idx_labels(path) -> np.ndarray:
    """Labels from an IDX file, shape (n,), int64."""
    labels = read_idx(path)
    if labels.ndim != 1:
        raise ValueError(f"{path} holds shape {labels.shape}, not a vector of labels.")
    return labels.astype(np.int64)
