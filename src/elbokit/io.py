"""Save and load fitted estimators: safetensors for arrays, JSON for the rest.

A saved model is a directory::

    MODEL_DIR/
      config.json        format name and version, estimator class, hyperparameters,
                         scalar fitted attributes, SHA-256 of the tensor file
      model.safetensors  every array: fitted parameters and array hyperparameters

Nothing is ever unpickled: loading reads JSON and raw tensors, and builds
only estimator classes registered with :func:`register`.  A model directory
is written to a temporary sibling and renamed into place, so an interrupted
save leaves nothing half-written, and an existing directory is never
overwritten unless ``overwrite=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "elbokit-model"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
TENSORS_NAME = "model.safetensors"

_REGISTRY: dict[str, type] = {}


class ModelFormatError(ValueError):
    """A file or directory is not a readable elbokit model."""


def register(cls: type) -> type:
    """Class decorator: allow :func:`load` to rebuild estimators of ``cls``."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
        t = value.detach().cpu() if is_torch else torch.from_numpy(np.ascontiguousarray(value))
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
        reserved = {"__tensor__", "__tensor_dict__", "__dict__", "__spec__"} & set(value)
        if reserved:
            raise TypeError(f"cannot save a dict with the reserved key {reserved.pop()!r}.")
        return {k: _plain(v) for k, v in value.items()}
    return value


def _join_value(value, tensors: dict, kinds: dict, device, name: str = ""):
    if isinstance(value, dict) and "__spec__" in value:
        from elbokit.families import get_family

        try:
            return get_family(value["__spec__"])
        except (TypeError, ValueError) as err:
            raise ModelFormatError(f"{name}: {err}") from err
    if isinstance(value, dict) and "__tensor_dict__" in value:
        missing = [k for k in value["__tensor_dict__"] if f"{name}.{k}" not in tensors]
        if missing:
            raise ModelFormatError(f"the tensor file lacks {name}.{missing[0]}: the model is incomplete.")
        return {k: tensors[f"{name}.{k}"] for k in value["__tensor_dict__"]}
    if isinstance(value, dict) and "__dict__" in value:
        return {k: _join_value(v, tensors, kinds, device, f"{name}.{k}")
                for k, v in value["__dict__"].items()}
    if isinstance(value, dict) and "__tensor__" in value:
        name = value["__tensor__"]
        if name not in tensors:
            raise ModelFormatError(f"the tensor file lacks {name!r}: the model is incomplete.")
        t = tensors[name]
        return t.to(device) if kinds.get(name) == "torch" else t.numpy()
    return value


def save(estimator, path, *, overwrite: bool = False, extra_files: dict | None = None) -> Path:
    """Write a fitted estimator to the directory ``path``.

    Parameters
    ----------
    estimator : a fitted elbokit estimator
    path : str or Path
        Directory to create.
    overwrite : bool
        Replace an existing directory at ``path``; otherwise refuse.
    extra_files : dict of str to str or bytes, optional
        More files written into the directory in the same atomic step (for
        example ``metrics.json``); ``load`` ignores them.

    Returns
    -------
    Path
        The directory written.
    """
    path = Path(path)
    cls = type(estimator)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise TypeError(f"{cls.__name__} is not a registered elbokit estimator.")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists: choose another path or pass overwrite=True."
        )
    tensors: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    params = {k: _split_value(f"param.{k}", v, tensors, kinds)
              for k, v in estimator.get_params(deep=False).items()}
    fitted = {k: _split_value(f"fitted.{k}", v, tensors, kinds)
              for k, v in estimator._fitted_state().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(tensors, str(tmp / TENSORS_NAME))
        from elbokit import __version__

        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "elbokit_version": __version__,
            "estimator": cls.__name__,
            "params": params,
            "fitted": fitted,
            "tensor_kinds": kinds,
            "tensors_sha256": _sha256(tmp / TENSORS_NAME),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2))
        for name, content in (extra_files or {}).items():
            if name in (CONFIG_NAME, TENSORS_NAME) or Path(name).name != name:
                raise ValueError(f"extra file name {name!r} is reserved or not a plain name.")
            target = tmp / name
            target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise ModelFormatError(
            f"{path} is not a model directory (expected {CONFIG_NAME} and {TENSORS_NAME})."
        )
    try:
        config = json.loads((path / CONFIG_NAME).read_text())
    except FileNotFoundError as err:
        raise ModelFormatError(f"{path} has no {CONFIG_NAME}: not an elbokit model.") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{path / CONFIG_NAME} is corrupted: {err}.") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFormatError(f"{path} is not an elbokit model (format field missing).")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} has format version {version!r}; this elbokit reads up to "
            f"{FORMAT_VERSION}: upgrade elbokit."
        )
    return config


def load(path, *, device=None):
    """Rebuild an estimator saved with :func:`save`.

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
        If the directory is missing, foreign, truncated or corrupted.
    """
    path = Path(path)
    config = _read_config(path)
    tensor_file = path / TENSORS_NAME
    if not tensor_file.is_file():
        raise ModelFormatError(f"{path} has no {TENSORS_NAME}: the model is incomplete.")
    if _sha256(tensor_file) != config.get("tensors_sha256"):
        raise ModelFormatError(
            f"{tensor_file} does not match its checksum: the file is truncated or corrupted."
        )
    try:
        tensors = load_file(str(tensor_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFormatError(f"{tensor_file} cannot be read: {err}.") from err
    cls = _REGISTRY.get(config.get("estimator"))
    if cls is None:
        raise ModelFormatError(f"unknown estimator {config.get('estimator')!r} in {path}.")
    kinds = config.get("tensor_kinds", {})
    device_given = device is not None
    device = torch.device(device) if device_given else torch.device("cpu")
    params = {k: _join_value(v, tensors, kinds, device, f"param.{k}")
              for k, v in config["params"].items()}
    if "device" in params and device_given:
        params["device"] = str(device)
    fitted = {k: _join_value(v, tensors, kinds, device, f"fitted.{k}")
              for k, v in config["fitted"].items()}
    estimator = cls(**params)
    estimator._set_fitted_state(fitted)
    return estimator
