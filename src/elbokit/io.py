"""Save and load fitted estimators: safetensors for arrays, JSON for the rest.

A saved model is a directory::

    MODEL_DIR/
      config.json        format name and version, estimator class, hyperparameters,
                         scalar fitted attributes, SHA-256 of the tensor file, the files written
      model.safetensors  every array: fitted parameters and array hyperparameters
      (metrics.json ...) extra files the CLI writes in the same step

Nothing is ever unpickled: loading reads JSON and raw tensors, and builds
only estimator classes registered with :func:`register`.

Writing goes through :mod:`elbokit.files` (the one safe-write mechanism):
the directory is claimed, written into a temporary sibling and swapped in,
so that the old or the new model is complete at every instant; an existing
directory is replaced only with ``overwrite=True`` and only if it is an
elbokit model (holding nothing elbokit did not write).

Loading validates everything against a **schema** before any of it reaches
an estimator, and raises :class:`ModelFormatError` naming the problem for
every malformed model: config.json and model.safetensors must be regular
files within size limits (a FIFO or ``/dev/zero`` is refused without
blocking), the JSON at most :data:`elbokit.files.MAX_JSON_DEPTH` deep; the
hyperparameters must be the estimator's own and pass its
``_check_hyperparameters()``; the fitted attributes must be exactly the
declared ones, each of the declared kind, shape (derived from the
hyperparameters and the other fitted values), dtype and range, with finite
values; every tensor in the file must be accounted for.  ``save`` runs the
same validation on what it is about to write, so a saved model always loads.

Declaring a schema (how estimators extend it)
---------------------------------------------
Every estimator lists what ``save`` writes in ``_fitted_attributes`` and
declares each such attribute once, in a class attribute ``_fitted_schema``
(a dict of name to :class:`Field`); the dicts of the classes along the MRO
are merged, so a base class declares what all estimators share (e.g.
``feature_names_in_`` in :class:`elbokit.base.ElbokitEstimator`) and a
subclass adds or overrides entries.  :func:`register` refuses a class whose
``_fitted_attributes`` are not all declared.  For example::

    _fitted_schema = {
        "weights_": io.array("n_components", low=0, check=sums_to_one),
        "means_": io.array("n_components", "n_features_in_"),
        "covariances_": io.array(lambda m: m._cov_shape(m.n_features_in_)),
        "n_iter_": io.integer(low=0),
        "vocabulary_": io.strings(length="n_features_in_", nullable=True),
        "state_dict_": io.tensor_dict(lambda m: expected_names_shapes_dtypes(m)),
    }

A dimension is an int, None (any size), or the name of an int hyperparameter
or int fitted attribute; a shape may also be a function of the model (the
estimator built from the saved hyperparameters, with the scalar fitted
attributes already set).  Nothing in this module changes when an estimator
or an attribute is added.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load as load_tensor_bytes
from safetensors.torch import save as tensor_bytes

from elbokit import files

FORMAT = "elbokit-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
TENSORS_NAME = "model.safetensors"
MAX_CONFIG_BYTES = 256 << 20
MAX_TENSOR_BYTES = 16 << 30
# files the library writes into a model directory after saving it (reports): an
# overwrite may replace a model directory holding these besides its own files
MODEL_DIR_FILES = ["metrics.json", "preprocessing.json", "report.html", "report-*", "report_*"]

_REGISTRY: dict[str, type] = {}
_RESERVED = {"__tensor__", "__tensor_dict__", "__dict__", "__spec__"}


class ModelFormatError(ValueError):
    """A file or directory is not a readable elbokit model."""


# ------------------------------------------------------------------ the schema
@dataclass(frozen=True)
class Field:
    """What one fitted attribute of a saved model must be.

    Parameters
    ----------
    kind : {"array", "int", "float", "bool", "str", "strings", "json", "tensors"}
        An array (NumPy or torch, as fitted), a scalar, a list of str, any
        JSON value, or a dict of named tensors (a module's ``state_dict``).
    shape : tuple or callable, optional
        Arrays: the dimensions (see the module docstring); None: any shape.
    dtype : {"float", "int", "bool"}
        Arrays: float32/float64, an integer type, or bool.
    low, high : float, optional
        Inclusive bounds on the values (arrays, int, float).
    positive : bool
        Values strictly > 0.
    finite : bool
        Float values (also inside "json" and "tensors") must be finite.
    optional : bool
        May be absent (written only sometimes, or added in a later version).
    nullable : bool
        May be None.
    length : int or str, optional
        "strings": the number of items (an int or the name of one).
    expected : callable, optional
        "tensors": ``expected(model)`` gives {name: (shape, torch dtype)}.
    check : callable, optional
        ``check(model, value)`` returns None, or a message saying what is
        wrong, for what the options above cannot express.
    """

    kind: str
    shape: tuple | Callable | None = None
    dtype: str = "float"
    low: float | None = None
    high: float | None = None
    positive: bool = False
    finite: bool = True
    optional: bool = False
    nullable: bool = False
    length: int | str | None = None
    expected: Callable | None = None
    check: Callable | None = None


def array(*shape, dtype: str = "float", **options) -> Field:
    """An array attribute: ``array("n_components", "n_features_in_")``, or ``array(fn)``."""
    return Field("array", shape=shape[0] if len(shape) == 1 and callable(shape[0]) else shape,
                 dtype=dtype, **options)


def integer(**options) -> Field:
    return Field("int", **options)


def real(**options) -> Field:
    return Field("float", **options)


def flag(**options) -> Field:
    return Field("bool", **options)


def strings(length=None, **options) -> Field:
    return Field("strings", length=length, **options)


def json_value(**options) -> Field:
    return Field("json", **options)


def tensor_dict(expected: Callable, **options) -> Field:
    return Field("tensors", expected=expected, **options)


def schema_of(cls: type) -> dict[str, Field]:
    """The merged ``_fitted_schema`` of ``cls`` and its bases (subclasses win)."""
    schema: dict[str, Field] = {}
    for klass in reversed(cls.__mro__):
        schema.update(vars(klass).get("_fitted_schema", {}))
    return schema


def register(cls: type) -> type:
    """Class decorator: allow :func:`load` to rebuild estimators of ``cls``.

    Raises
    ------
    TypeError
        If a name in ``cls._fitted_attributes`` has no :class:`Field` in its schema.
    """
    schema = schema_of(cls)
    missing = [a for a in getattr(cls, "_fitted_attributes", ()) if a not in schema]
    if missing:
        raise TypeError(f"{cls.__name__} declares no schema for its fitted attribute(s) "
                        f"{', '.join(missing)}: add them to {cls.__name__}._fitted_schema "
                        "(see elbokit.io).")
    _REGISTRY[cls.__name__] = cls
    return cls


# ------------------------------------------------------------------ saving
def _split_value(name: str, value, tensors: dict, kinds: dict):
    """JSON-able value, or a placeholder with the array(s) stored in ``tensors``.

    A dict of tensors (a module's state_dict) is stored tensor by tensor.
    """
    if isinstance(value, dict) and value and all(torch.is_tensor(v) for v in value.values()):
        for key, t in value.items():
            tensors[f"{name}.{key}"] = t.detach().cpu().contiguous()
        return {"__tensor_dict__": list(value)}
    if isinstance(value, (np.ndarray, torch.Tensor)):
        is_torch = isinstance(value, torch.Tensor)
        t = value.detach().cpu() if is_torch else torch.from_numpy(
            np.ascontiguousarray(value).reshape(np.shape(value)))  # 0-d stays 0-d
        tensors[name] = t.contiguous()
        kinds[name] = "torch" if is_torch else "numpy"
        return {"__tensor__": name}
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, torch.device):
        return str(value)
    if _is_json(value):
        return _plain(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _split_value(f"{name}.{k}", v, tensors, kinds) for k, v in value.items()}}
    if callable(getattr(value, "__elbokit_spec__", None)):  # a component family
        return {"__spec__": _plain(value.__elbokit_spec__())}
    raise TypeError(f"cannot save {name}={value!r} as JSON or a tensor.")


def _is_json(value) -> bool:
    """JSON-able: None, bool, int, float, str, and lists/tuples/str-keyed dicts of those."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _plain(value):
    """Tuples become lists (JSON has no tuple); dicts with reserved keys are refused."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        reserved = _RESERVED & set(value)
        if reserved:
            raise TypeError(f"cannot save a dict with the reserved key {reserved.pop()!r}.")
        return {k: _plain(v) for k, v in value.items()}
    return value


def replaceable_model(path: Path) -> str | None:
    """None if the directory ``path`` is an elbokit model an overwrite may replace, else why not."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return "is not an elbokit model directory"
    try:
        config = files.read_json(path / CONFIG_NAME, max_bytes=MAX_CONFIG_BYTES)
    except ValueError:
        return "is not an elbokit model (it has no readable config.json)"
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        return "is not an elbokit model"
    listed = set(config.get("files") or []) | {CONFIG_NAME, TENSORS_NAME}
    report_tables = files.replaceable_output("report-data")  # a report's CSV folder
    foreign = files.foreign_entries(
        path, lambda name: name in listed or any(fnmatch(name, p) for p in MODEL_DIR_FILES),
        lambda sub: report_tables(sub) if fnmatch(sub.name, "report-*") else "foreign")
    if foreign:
        return f"holds files elbokit did not write ({', '.join(foreign[:5])})"
    return None


def claim_model(path, *, overwrite: bool = False, protect=()) -> files.Claim:
    """Claim a model directory before fitting (see :func:`elbokit.files.claim`); pass it to save."""
    return files.claim(path, kind="dir", overwrite=overwrite, what="model directory",
                       replaceable=replaceable_model, protect=protect)


def save(estimator, path, *, overwrite: bool = False, extra_files: dict | None = None) -> Path:
    """Write a fitted estimator to the directory ``path``.

    Parameters
    ----------
    estimator : a fitted elbokit estimator
    path : str, Path or elbokit.files.Claim
        Directory to create (or a claim on it taken with :func:`claim_model`).
    overwrite : bool
        Replace an existing model directory at ``path``; otherwise refuse.
        Only an elbokit model is ever replaced, never another directory.
    extra_files : dict of str to str or bytes, optional
        More files written into the directory in the same atomic step (for
        example ``metrics.json``); ``load`` ignores them.

    Returns
    -------
    Path
        The directory written.
    """
    cls = type(estimator)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise TypeError(f"{cls.__name__} is not a registered elbokit estimator.")
    extra = dict(extra_files or {})
    for name in extra:
        if name in (CONFIG_NAME, TENSORS_NAME, files.MANIFEST_NAME) or Path(name).name != name \
                or name.startswith("."):
            raise ValueError(f"extra file name {name!r} is reserved or not a plain name.")
    tensors: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    params = {k: _split_value(f"param.{k}", v, tensors, kinds)
              for k, v in estimator.get_params(deep=False).items()}
    fitted = {k: _split_value(f"fitted.{k}", v, tensors, kinds)
              for k, v in estimator._fitted_state().items()}
    raw = tensor_bytes(tensors)
    from elbokit import __version__

    config = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "elbokit_version": __version__,
        "estimator": cls.__name__, "params": params, "fitted": fitted, "tensor_kinds": kinds,
        "tensors_sha256": hashlib.sha256(raw).hexdigest(),
        "files": sorted([CONFIG_NAME, TENSORS_NAME, *extra]),
    }
    text = json.dumps(config, indent=2)
    target = path.path if isinstance(path, files.Claim) else Path(path)
    try:  # what would not load is not written
        _Validator(target, json.loads(text), load_tensor_bytes(raw), torch.device("cpu"), False).build()
    except ModelFormatError as err:
        raise ValueError(f"this {cls.__name__} cannot be saved, it would not load back: {err}") from None

    def write(tmp: Path) -> None:
        (tmp / TENSORS_NAME).write_bytes(raw)
        (tmp / CONFIG_NAME).write_text(text)
        for name, content in extra.items():
            target = tmp / name
            target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)

    return files.write_output(path, write, kind="dir", overwrite=overwrite, what="model directory",
                              replaceable=replaceable_model)


# ------------------------------------------------------------------ loading
def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise ModelFormatError(
            f"{path} is not a model directory (expected {CONFIG_NAME} and {TENSORS_NAME})."
        )
    if not (path / CONFIG_NAME).exists() and not (path / CONFIG_NAME).is_symlink():
        raise ModelFormatError(f"{path} has no {CONFIG_NAME}: not an elbokit model.")
    config = files.read_json(path / CONFIG_NAME, max_bytes=MAX_CONFIG_BYTES,
                             what="model file", error=ModelFormatError)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFormatError(f"{path} is not an elbokit model (format field missing).")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFormatError(f"{path / CONFIG_NAME} has no valid format_version ({version!r}).")
    if version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has format version {version!r}; this elbokit reads up to "
            f"{FORMAT_VERSION}: upgrade elbokit."
        )
    for key, kind in (("estimator", str), ("params", dict), ("fitted", dict),
                      ("tensor_kinds", dict), ("tensors_sha256", str)):
        if not isinstance(config.get(key), kind):
            raise ModelFormatError(f"{path / CONFIG_NAME} lacks a valid {key!r} entry: "
                                   "the file is damaged or was not written by elbokit.")
    if any(v not in ("torch", "numpy") for v in config["tensor_kinds"].values()):
        raise ModelFormatError(f"{path / CONFIG_NAME}: tensor_kinds must be 'torch' or 'numpy'.")
    return config


def _read_tensors(path: Path, config: dict) -> dict:
    tensor_file = path / TENSORS_NAME
    if not tensor_file.exists() and not tensor_file.is_symlink():
        raise ModelFormatError(f"{path} has no {TENSORS_NAME}: the model is incomplete.")
    raw = files.read_regular(tensor_file, max_bytes=MAX_TENSOR_BYTES, what="model file",
                             error=ModelFormatError)
    if hashlib.sha256(raw).hexdigest() != config["tensors_sha256"]:
        raise ModelFormatError(
            f"{tensor_file} does not match its checksum: the file is truncated or corrupted."
        )
    try:
        return load_tensor_bytes(raw)
    except Exception as err:  # SafetensorError and whatever a forged header provokes
        raise ModelFormatError(f"{tensor_file} cannot be read: {err}.") from err


def load(path, *, device=None):
    """Rebuild an estimator saved with :func:`save`, validated against its schema.

    Parameters
    ----------
    path : str or Path
        The model directory.
    device : str or torch.device, optional
        Where to compute, and where tensors that were torch tensors at save
        time are placed (by default: CPU, and the saved ``device`` setting).

    Raises
    ------
    ModelFormatError
        If the directory is missing, foreign, truncated, corrupted or
        inconsistent (see the module docstring for what is checked).
    """
    path = Path(path)
    files.recover(path)  # a swap a crash interrupted leaves the old model aside: put it back
    config = _read_config(path)
    tensors = _read_tensors(path, config)
    device_given = device is not None
    try:
        device = torch.device(device) if device_given else torch.device("cpu")
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device: use e.g. 'cpu' or 'cuda'.") from err
    return _Validator(path, config, tensors, device, device_given).build()


_ORDER = {"int": 0, "float": 0, "bool": 0, "str": 0, "strings": 1, "json": 1, "array": 2, "tensors": 2}
_DTYPES = {"float": (torch.float32, torch.float64),
           "int": (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8),
           "bool": (torch.bool,)}


class _Validator:
    """Checks a config and its tensors against the estimator's schema; builds the estimator."""

    def __init__(self, path: Path, config: dict, tensors: dict, device, device_given: bool):
        self.path, self.config, self.tensors = path, config, tensors
        self.kinds = config.get("tensor_kinds", {})
        self.device, self.device_given = device, device_given
        self.used: set[str] = set()

    def fail(self, message: str):
        raise ModelFormatError(f"{self.path}: {message}")

    def build(self):
        try:
            return self._build()
        except ModelFormatError:
            raise
        except Exception as err:  # noqa: BLE001 - whatever a forged file provokes is a format error
            self.fail(f"the model is inconsistent ({type(err).__name__}: {err}).")

    def _build(self):
        cls = _REGISTRY.get(self.config.get("estimator"))
        if cls is None:
            raise ModelFormatError(f"unknown estimator {self.config.get('estimator')!r} in {self.path}.")
        model = self._estimator(cls)
        fitted = self._fitted(cls, model)
        unused = sorted(set(self.tensors) - self.used)
        if unused:
            self.fail(f"{TENSORS_NAME} holds {unused[0]!r}, which config.json does not describe.")
        model._set_fitted_state(fitted)
        return model

    # -------------------------------------------------------------- hyperparameters
    def _estimator(self, cls):
        names = set(cls._get_param_names())
        params = {}
        for key, value in self.config["params"].items():
            if key not in names:
                self.fail(f"{key!r} is not a hyperparameter of {cls.__name__}.")
            params[key] = self._join(value, f"param.{key}")
        if "device" in params and self.device_given:
            params["device"] = str(self.device)
        try:
            model = cls(**params)
            check = getattr(model, "_check_hyperparameters", None)
            if check is not None:
                check()
        except (ValueError, TypeError) as err:
            self.fail(f"invalid hyperparameters: {err}")
        return model

    def _join(self, value, name: str):
        """A saved value with its tensors put back (hyperparameters)."""
        if isinstance(value, dict) and "__tensor__" in value:
            return self._tensor(value, name)
        if isinstance(value, dict) and "__dict__" in value and isinstance(value["__dict__"], dict):
            return {k: self._join(v, f"{name}.{k}") for k, v in value["__dict__"].items()}
        if isinstance(value, dict) and "__tensor_dict__" in value:
            return self._tensor_dict(value, name)
        if isinstance(value, dict) and "__spec__" in value:  # a component family
            from elbokit.families import get_family

            try:
                return get_family(value["__spec__"])
            except (TypeError, ValueError) as err:
                self.fail(f"{name} is not a valid component family: {err}")
        return value

    def _tensor(self, value, name: str):
        if value != {"__tensor__": name}:
            self.fail(f"{name} refers to the tensor {value.get('__tensor__')!r}; expected {name!r}.")
        if name not in self.tensors:
            self.fail(f"the tensor file lacks {name!r}: the model is incomplete.")
        self.used.add(name)
        t = self.tensors[name]
        return t.to(self.device) if self.kinds.get(name) == "torch" else t.numpy()

    def _tensor_dict(self, value, name: str) -> dict:
        keys = value.get("__tensor_dict__")
        if set(value) != {"__tensor_dict__"} or not isinstance(keys, list) or \
                not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
            self.fail(f"{name} is not a valid list of tensor names.")
        out = {}
        for k in keys:
            full = f"{name}.{k}"
            if full not in self.tensors:
                self.fail(f"the tensor file lacks {full}: the model is incomplete.")
            self.used.add(full)
            out[k] = self.tensors[full]
        return out

    # -------------------------------------------------------------- fitted attributes
    def _fitted(self, cls, model) -> dict:
        schema = schema_of(cls)
        raw = self.config["fitted"]
        for key in raw:
            if key not in schema:
                self.fail(f"fitted attribute {key!r} is not one {cls.__name__} declares.")
        for key in cls._fitted_attributes:
            if key not in raw and not schema[key].optional:
                self.fail(f"the fitted attribute {key!r} is missing: the model is incomplete.")
        fitted = {}
        for key, field in sorted(schema.items(), key=lambda kv: _ORDER[kv[1].kind]):
            if key in raw:
                fitted[key] = self._value(model, key, field, raw[key])
                setattr(model, key, fitted[key])  # later shapes may depend on it
        return fitted

    def _value(self, model, key: str, field: Field, value):
        if value is None:
            if not field.nullable:
                self.fail(f"fitted {key!r} is null.")
            return None
        where = f"fitted {key!r}"
        kind = field.kind
        if kind == "int":
            if not isinstance(value, int) or isinstance(value, bool):
                self.fail(f"{where} must be an integer; got {value!r}.")
            self._bounds(where, field, np.asarray(value))
        elif kind == "float":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                self.fail(f"{where} must be a number; got {value!r}.")
            value = float(value)
            self._bounds(where, field, np.asarray(value))
        elif kind == "bool":
            if not isinstance(value, bool):
                self.fail(f"{where} must be true or false; got {value!r}.")
        elif kind == "str":
            if not isinstance(value, str):
                self.fail(f"{where} must be a string; got {value!r}.")
        elif kind == "strings":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                self.fail(f"{where} must be a list of strings.")
            if field.length is not None and len(value) != self._dim(model, field.length, where):
                self.fail(f"{where} has {len(value)} entries; expected "
                          f"{self._dim(model, field.length, where)} ({field.length}).")
        elif kind == "json":
            self._plain_json(where, field, value)
        elif kind == "array":
            value = self._array(model, key, field, value)
        elif kind == "tensors":
            if not isinstance(value, dict):
                self.fail(f"{where} must be a dict of tensors.")
            value = self._tensors(model, key, field, self._tensor_dict(value, f"fitted.{key}"))
        else:  # pragma: no cover - a schema declaration error
            raise TypeError(f"unknown Field kind {kind!r} for {key}.")
        self._custom(model, where, field, value)
        return value

    def _array(self, model, key: str, field: Field, value):
        where = f"fitted {key!r}"
        if not isinstance(value, dict) or "__tensor__" not in value:
            self.fail(f"{where} must be an array stored in {TENSORS_NAME}.")
        name = f"fitted.{key}"
        self._tensor(value, name)
        t = self.tensors[name]
        if t.dtype not in _DTYPES[field.dtype]:
            self.fail(f"{where} has dtype {t.dtype}; expected a {field.dtype} array.")
        if field.shape is not None:
            expected = self._shape(model, field.shape, where)
            if not _shape_matches(tuple(t.shape), expected):
                self.fail(f"{where} has shape {tuple(t.shape)}; the hyperparameters and other "
                          f"fitted values say {_show_shape(expected)}.")
        self._finite(where, field, t)
        self._bounds(where, field, t)
        return t.to(self.device) if self.kinds.get(name) == "torch" else t.numpy()

    def _tensors(self, model, key: str, field: Field, tensors: dict) -> dict:
        where = f"fitted {key!r}"
        expected = field.expected(model) if field.expected is not None else None
        if expected is not None:
            missing = sorted(set(expected) - set(tensors))
            extra = sorted(set(tensors) - set(expected))
            if missing or extra:
                self.fail(f"{where} does not match the network the hyperparameters describe: "
                          + (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}") + ".")
            for name, (shape, dtype) in expected.items():
                t = tensors[name]
                if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                    self.fail(f"{where}: {name} has shape {tuple(t.shape)} and dtype {t.dtype}; the "
                              f"hyperparameters say {tuple(shape)} and {dtype}.")
        for name, t in tensors.items():
            self._finite(f"{where}: {name}", field, t)
        return tensors

    # -------------------------------------------------------------- helpers
    def _dim(self, model, dim, where: str) -> int | None:
        if dim is None or (isinstance(dim, int) and not isinstance(dim, bool)):
            return dim
        value = getattr(model, dim, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            self.fail(f"{where} is sized by {dim}, which is {value!r}, not a count.")
        return value

    def _shape(self, model, shape, where: str) -> tuple:
        if callable(shape):
            try:
                shape = shape(model)
            except ModelFormatError:
                raise
            except Exception as err:  # noqa: BLE001
                self.fail(f"the shape of {where} cannot be derived from the config ({err}).")
        return tuple(self._dim(model, d, where) for d in shape)

    def _finite(self, where: str, field: Field, t: torch.Tensor) -> None:
        if field.finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            self.fail(f"{where} contains NaN or infinite values: the model is corrupted.")

    def _bounds(self, where: str, field: Field, values) -> None:
        v = values if isinstance(values, torch.Tensor) else torch.as_tensor(values)
        if v.numel() == 0:
            return
        if field.kind == "float" and field.finite and not bool(torch.isfinite(v).all()):
            self.fail(f"{where} is {v.item()!r}, not a finite number.")
        if field.positive and not bool((v > 0).all()):
            self.fail(f"{where} must be > 0; its smallest value is {v.min().item()!r}.")
        if field.low is not None and not bool((v >= field.low).all()):
            self.fail(f"{where} must be >= {field.low}; its smallest value is {v.min().item()!r}.")
        if field.high is not None and not bool((v <= field.high).all()):
            self.fail(f"{where} must be <= {field.high}; its largest value is {v.max().item()!r}.")

    def _plain_json(self, where: str, field: Field, value) -> None:
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, dict):
                if _RESERVED & set(v):
                    self.fail(f"{where} holds tensor placeholders where plain JSON is declared.")
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
            elif isinstance(v, float) and field.finite and not math.isfinite(v):
                self.fail(f"{where} holds {v!r}, not a finite number.")

    def _custom(self, model, where: str, field: Field, value) -> None:
        if field.check is None:
            return
        try:
            problem = field.check(model, value)
        except Exception as err:  # noqa: BLE001
            problem = f"its check failed ({type(err).__name__}: {err})"
        if problem:
            self.fail(f"{where}: {problem}.")


def _shape_matches(got: tuple, expected: tuple) -> bool:
    return len(got) == len(expected) and all(e is None or g == e for g, e in zip(got, expected))


def _show_shape(shape: tuple) -> str:
    dims = ", ".join("any" if d is None else str(d) for d in shape)
    return f"({dims},)" if len(shape) == 1 else f"({dims})"


# ------------------------------------------------------------------ checks estimators share
def sums_to_one(model, value) -> str | None:
    """A ``check``: the last axis sums to 1 (probability vectors)."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.numel() and not bool(torch.allclose(t.sum(-1), torch.ones((), dtype=torch.float64), atol=1e-5)):
        return f"must sum to 1 (probabilities); sums to {t.sum(-1).flatten()[:3].tolist()}"
    return None
