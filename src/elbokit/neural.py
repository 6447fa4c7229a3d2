"""What the estimators trained by amortised VI share (``VAE``, ``ProdLDA``).

Their model is a :class:`~elbokit.models.vae.VAEModule` trained by
:func:`elbokit.inference.amortized.train`; what is saved is its
``state_dict_`` and the training history. A subclass says how to build its
networks from its hyperparameters and fitted sizes (``_new_module``).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from elbokit import io
from elbokit._validation import resolve_device, resolve_dtype
from elbokit.base import ElbokitEstimator


class NetworkEstimator(ElbokitEstimator):
    """Base of the estimators whose fitted state is a network's weights and a training history."""

    _fitted_schema = {
        "state_dict_": io.tensor_dict(lambda m: m._state_spec()),
        "history_": io.json_value(check=lambda m, h: None if isinstance(h, dict) else "must be a dict"),
        "lower_bounds_": io.array(None), "n_epochs_": io.integer(low=0),
        "n_features_in_": io.integer(low=1),
    }

    def _new_module(self, device, dtype):
        """The untrained networks for the fitted sizes (``n_features_in_`` and the like)."""
        raise NotImplementedError

    def _state_spec(self) -> dict:
        """{name: (shape, dtype)} of the networks the hyperparameters describe (no memory used)."""
        with torch.device("meta"):
            module = self._new_module(torch.device("meta"), resolve_dtype(self.dtype))
        return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}

    @property
    def module_(self):
        """The trained networks (built from ``state_dict_``), in evaluation mode."""
        check_is_fitted(self)
        cached = getattr(self, "_module", None)
        if cached is None:
            device = resolve_device(self.device)
            cached = self._new_module(device, resolve_dtype(self.dtype))
            cached.load_state_dict({k: v.to(device) for k, v in self.state_dict_.items()})
            self._module = cached
        return cached.eval()

    def _store_training(self, module, state) -> None:
        """The fitted attributes a training run leaves (``state`` is its TrainState)."""
        self.state_dict_ = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self._module = module
        self.history_ = state.history
        self.lower_bounds_ = np.asarray(state.history["train"], dtype=np.float64)
        self.n_epochs_ = int(state.epoch)

    def _set_fitted_state(self, state: dict) -> None:
        super()._set_fitted_state(state)
        self._module = None
