"""Input checks and conversions shared by every estimator.

Every public method turns its input into a torch tensor on the estimator's
device with one call to :func:`as_2d_tensor`, which also records whether the
caller gave a NumPy array or a tensor so that :func:`to_output` can answer in
the same type.  Errors name the argument and say what to do.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch

try:
    from sklearn.utils.validation import _check_feature_names
except ImportError:  # scikit-learn < 1.6: a method of BaseEstimator
    def _check_feature_names(estimator, X, *, reset):
        estimator._check_feature_names(X, reset=reset)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class InputKind:
    """How an input arrived, so that outputs can go back the same way.

    Attributes
    ----------
    is_torch : bool
        True for a torch tensor, False for anything NumPy-like.
    device : torch.device
        The device of the input tensor (CPU for NumPy input).
    dtype : torch.dtype or None
        The input's own dtype (None for streamed data).
    """

    is_torch: bool
    device: torch.device
    dtype: torch.dtype | None = None


def output_dtype(kind: InputKind) -> torch.dtype:
    """The floating dtype of results for an input: float32 for float32 input,
    float64 otherwise (scikit-learn's convention)."""
    return torch.float32 if kind.dtype == torch.float32 else torch.float64


def check_feature_names(estimator, X, *, reset: bool, names=None) -> None:
    """Set (``reset=True``) or check ``estimator.feature_names_in_`` as scikit-learn does.

    Parameters
    ----------
    X : array-like or None
        In-memory data: a DataFrame's columns are its feature names, an array
        has none.
    names : list of str, optional
        The column names of a file X is streamed from (a CSV or Parquet header).

    Raises
    ------
    ValueError
        With scikit-learn's message, when the names differ from those seen in
        fit (other names, or the same in another order).
    """
    if names is not None:
        import pyarrow as pa

        X = pa.Table.from_arrays([pa.array([], pa.float64()) for _ in names],
                                 names=[str(n) for n in names])
    _check_feature_names(estimator, X, reset=reset)


def resolve_dtype(dtype) -> torch.dtype:
    """Map ``"float32"``/``"float64"``/a torch dtype to a torch floating dtype."""
    if isinstance(dtype, torch.dtype) and dtype in (torch.float32, torch.float64):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    if dtype in (np.float32, np.float64):
        return _DTYPES[np.dtype(dtype).name]
    raise ValueError(
        f"dtype={dtype!r} is not supported: use 'float32' (default, fast) or 'float64'."
    )


def resolve_device(device, data=None) -> torch.device:
    """The device to compute on: ``device`` if given, else where ``data`` lives."""
    if device is None:
        if isinstance(data, torch.Tensor):
            return data.device
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a torch device: use e.g. 'cpu' or 'cuda'."
        ) from err
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index is not None and resolved.index >= count):
            raise ValueError(
                f"device={device!r}, but this machine has {count} CUDA device(s) available to "
                "PyTorch: use device='cpu'" + (f" or an index below {count}." if count else ".")
            )
    return resolved


def _numpy_2d(X, name: str) -> np.ndarray:
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):
        raise TypeError(
            f"{name} is a sparse matrix; this estimator needs dense data: "
            f"pass {name}.toarray()."
        )
    arr = np.asarray(X)
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has complex values.")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except TypeError as err:
            raise TypeError(f"{name} must hold numbers: {err}") from err
        except ValueError as err:
            raise ValueError(
                f"{name} must hold numbers; got dtype {arr.dtype} ({err}): convert it first."
            ) from err
    return arr


def storage_dtype(given: torch.dtype, compute: torch.dtype) -> torch.dtype:
    """The dtype data is held in: float32/float64 stay as given, others become ``compute``.

    Keeping float64 data in float64 lets each chunk be centred in float64
    before the cast to a float32 compute dtype, so large offsets cost no
    precision (and no float32 copy of the whole data set is made).
    """
    return given if given in (torch.float32, torch.float64) else compute


def as_2d_tensor(
    X, *, name: str = "X", dtype: torch.dtype, device: torch.device, min_samples: int = 1,
    keep_float: bool = False,
) -> tuple[torch.Tensor, InputKind]:
    """Check ``X`` and return it as a 2-D floating tensor on ``device``.

    Parameters
    ----------
    X : array-like or torch.Tensor, shape (n_samples, n_features)
        The data.
    name : str
        The argument's name, used in error messages.
    dtype, device
        Target dtype and device.
    min_samples : int
        Smallest number of rows accepted.
    keep_float : bool
        Keep float32/float64 input in its own dtype (see :func:`storage_dtype`).

    Returns
    -------
    tensor : torch.Tensor, shape (n_samples, n_features)
    kind : InputKind
        How ``X`` arrived.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D, is empty, or holds NaN or inf.
    """
    if isinstance(X, torch.Tensor):
        kind = InputKind(True, X.device, X.dtype)
        if X.is_complex():
            raise ValueError(f"Complex data not supported: {name} has complex values.")
        t = X.detach()
    else:
        arr = _numpy_2d(X, name)
        if not arr.flags.writeable:
            arr = arr.copy()
        t = torch.from_numpy(arr)
        kind = InputKind(False, torch.device("cpu"), t.dtype)
    if t.ndim != 2:
        hint = (
            f" Reshape it: {name}.reshape(-1, 1) for one feature, "
            f"{name}.reshape(1, -1) for one sample."
            if t.ndim == 1
            else ""
        )
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features); got shape {tuple(t.shape)}. "
            f"Reshape your data.{hint}"
        )
    if t.shape[0] < min_samples:
        raise ValueError(
            f"{name} has {t.shape[0]} sample(s) (shape={tuple(t.shape)}) while a minimum of "
            f"{min_samples} is required."
        )
    if t.shape[1] == 0:
        raise ValueError(
            f"{name} has 0 feature(s) (shape={tuple(t.shape)}) while a minimum of 1 is required."
        )
    t = t.to(device=device, dtype=storage_dtype(t.dtype, dtype) if keep_float else dtype)
    if not all_finite(t):
        raise ValueError(
            f"{name} contains NaN or inf: remove or impute those values first "
            "(e.g. sklearn.impute.SimpleImputer)."
        )
    return t, kind


def all_finite(t: torch.Tensor) -> bool:
    """True when ``t`` holds no NaN or inf.

    A sum first (one fast pass, ~50x quicker than ``isfinite`` on a CPU): NaN
    and inf survive it, so a finite sum means finite values; only when the sum
    is not finite (a NaN, an inf, or an overflow of the sum) is every value
    checked.
    """
    if t.numel() == 0:
        return True
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def as_sample_weight(sample_weight, n_samples: int, *, dtype, device,
                     allow_empty: bool = False) -> torch.Tensor | None:
    """Check per-sample weights: 1-D, length ``n_samples``, finite, >= 0, not all 0.

    Returns
    -------
    torch.Tensor of shape (n_samples,) or None
        None when ``sample_weight`` is None (all weights 1).
    """
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Number):
        sample_weight = np.full(n_samples, float(sample_weight))
    if isinstance(sample_weight, torch.Tensor):
        w = sample_weight.detach().to(device=device, dtype=dtype)
    else:
        w = torch.as_tensor(np.asarray(sample_weight, dtype=np.float64)).to(device, dtype)
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(
            f"sample_weight must have shape ({n_samples},) to match X; got {tuple(w.shape)}."
        )
    if not bool(torch.isfinite(w).all()):
        raise ValueError("sample_weight contains NaN or inf.")
    if bool((w < 0).any()):
        raise ValueError("sample_weight has negative values: weights must be >= 0.")
    if not bool((w > 0).any()) and not (allow_empty and n_samples == 0):
        raise ValueError("sample_weight is all zeros: at least one sample needs weight > 0.")
    return w


def to_output(t: torch.Tensor, kind: InputKind):
    """Return ``t`` in the type the input came in: a tensor on its device, or NumPy."""
    if kind.is_torch:
        return t.to(kind.device)
    return t.detach().cpu().numpy()


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Validate an integer hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


def check_nonneg_float(value, name: str, strict: bool = False) -> float:
    """Validate a real hyperparameter (>= 0, or > 0 with ``strict``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < 0 or (strict and value == 0):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}; got {value!r}.")
    return float(value)


def check_mixture_settings(estimator) -> None:
    """The settings every Gaussian mixture estimator shares (GaussianMixture and the Bayesian one).

    Checks ``n_components``, ``max_iter`` (0 allowed), ``n_init``, ``verbose``, ``tol``,
    ``reg_covar`` and ``batch_size`` (None or a positive integer) of ``estimator``.
    """
    check_positive_int(estimator.n_components, "n_components")
    check_positive_int(estimator.max_iter, "max_iter", minimum=0)
    check_positive_int(estimator.n_init, "n_init")
    check_positive_int(estimator.verbose, "verbose", minimum=0)
    check_nonneg_float(estimator.tol, "tol")
    check_nonneg_float(estimator.reg_covar, "reg_covar")
    if estimator.batch_size is not None:
        check_positive_int(estimator.batch_size, "batch_size")


def make_generator(random_state, device: torch.device) -> torch.Generator:
    """A torch generator seeded from ``random_state`` (None, int or a NumPy RandomState)."""
    if random_state is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    elif isinstance(random_state, numbers.Integral):
        seed = int(random_state)
    elif isinstance(random_state, np.random.RandomState):
        seed = int(random_state.randint(np.iinfo(np.int32).max))
    elif isinstance(random_state, np.random.Generator):
        seed = int(random_state.integers(np.iinfo(np.int32).max))
    else:
        raise ValueError(
            f"random_state={random_state!r}: use None, an int seed or a numpy RandomState."
        )
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
