"""IDX files: the format of MNIST and its family (Fashion-MNIST, KMNIST, ...).

An IDX file is a big-endian header -- two zero bytes, a type code, the number
of dimensions, one uint32 per dimension -- followed by the array.  Files may
be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a NumPy array.

    Raises
    ------
    ValueError
        If the file is not IDX or is truncated.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(v) for v in np.frombuffer(raw[4:header], dtype=">u4"))
    dtype = np.dtype(_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header < expected:
        raise ValueError(f"{path} is truncated: its header promises {shape}.")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape)), offset=header).reshape(shape)


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
