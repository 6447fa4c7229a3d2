"""Amortised variational inference: the training loop of the VAE.

The objective is a loss object, separate from the loop (as in Pyro):

* :class:`ELBOObjective`: -(E_q[log p(x|z)] - beta_t KL(q || p)), with the
  reparameterisation trick; ``beta_t`` ramps linearly from 0 to ``beta``
  over ``kl_warmup`` epochs (KL annealing, Bowman et al. 2016); ``free_bits``
  lambda replaces the KL by sum_j max(lambda, mean_batch KL_j) per latent
  dimension (Kingma et al. 2016), so no dimension is pushed below lambda nats.
* :class:`IWAEObjective`: -IWAE_k (Burda et al., 2016).

The loop (:func:`train`) runs Adam over shuffled mini-batches, records the
per-epoch mean training bound and, on a validation split, the mean ELBO,
stops early on the validation bound, writes a checkpoint every epoch
(safetensors + JSON: weights, optimiser state, random state, history) and
resumes from one with the same result as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm


@dataclass
class ELBOObjective:
    """Negative ELBO per sample (mean over the batch), with beta, warm-up and free bits.

    Parameters
    ----------
    beta : float
        Weight of the KL term (beta-VAE; 1 is the ELBO).
    kl_warmup : int
        Epochs over which the KL weight rises linearly from 0 to ``beta``.
    free_bits : float
        Nats per latent dimension below which the KL is not penalised
        (N(0, I) prior only).
    """

    beta: float = 1.0
    kl_warmup: int = 0
    free_bits: float = 0.0

    def kl_weight(self, epoch: float) -> float:
        """beta_t at (fractional) epoch t: beta * min(1, t / kl_warmup)."""
        if self.kl_warmup <= 0:
            return self.beta
        return self.beta * min(1.0, epoch / self.kl_warmup)

    def __call__(self, module, x, epoch: float = math.inf):
        reconstruction, kl, q = module(x)
        if self.free_bits > 0:
            per_dim = _inner(module).kl_per_dimension(q).mean(0)
            penalty = per_dim.clamp_min(self.free_bits).sum()
        else:
            penalty = kl.mean()
        loss = -reconstruction.mean() + self.kl_weight(epoch) * penalty
        return loss, (reconstruction - kl).detach()


@dataclass
class IWAEObjective:
    """Negative importance-weighted bound with ``k`` samples."""

    k: int = 5

    def __call__(self, module, x, epoch: float = math.inf):
        bound = module(x, "iwae", self.k)
        return -bound.mean(), bound.detach()


@dataclass
class TrainState:
    """Everything a run needs to continue: epoch reached, history, random state."""

    epoch: int = 0
    history: dict = field(default_factory=lambda: {"train": [], "validation": []})
    best: float = -math.inf
    best_epoch: int = 0
    stale: int = 0


def _batches(n: int, batch_size: int, device):
    order = torch.randperm(n, device=device)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _inner(module):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(module, "module", module)


@torch.no_grad()
def mean_elbo(module, X, batch_size: int = 1024, prepare=None, reduce=None) -> float:
    """Mean one-sample ELBO over X (float64 accumulation; summed over ranks with ``reduce``)."""
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for start in range(0, X.shape[0], batch_size):
        x = X[start:start + batch_size]
        x = prepare(x) if prepare is not None else x
        reconstruction, kl, _ = _inner(module).elbo_terms(x)
        total += (reconstruction - kl).sum(dtype=torch.float64)
    sums = {"total": total, "n": torch.tensor(float(X.shape[0]), dtype=torch.float64, device=X.device)}
    if reduce is not None:
        sums = reduce(sums)
    return float(sums["total"]) / max(float(sums["n"]), 1.0)


def _flatten_optimizer(optimizer) -> tuple[dict, dict]:
    """Adam's state as flat tensors + JSON (never pickled)."""
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, entry in state["state"].items():
        meta["state"][str(pid)] = {}
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
                meta["state"][str(pid)][key] = "__tensor__"
            else:
                meta["state"][str(pid)][key] = value
    return tensors, meta


def _restore_optimizer(optimizer, tensors: dict, meta: dict) -> None:
    state = {"param_groups": meta["param_groups"], "state": {}}
    for pid, entry in meta["state"].items():
        state["state"][int(pid)] = {
            k: tensors[f"optim.{pid}.{k}"] if v == "__tensor__" else v for k, v in entry.items()
        }
    optimizer.load_state_dict(state)


def save_checkpoint(path, module, optimizer, state: TrainState) -> None:
    """Write a checkpoint directory atomically: checkpoint.safetensors + checkpoint.json."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    optim_tensors, optim_meta = _flatten_optimizer(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.cpu"] = torch.get_rng_state()
    device = next(module.parameters()).device
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device).cpu()
    meta = {"epoch": state.epoch, "history": state.history, "best": state.best,
            "best_epoch": state.best_epoch, "stale": state.stale, "optimizer": optim_meta}
    tmp_t, tmp_j = path / ".checkpoint.safetensors.tmp", path / ".checkpoint.json.tmp"
    save_file(tensors, str(tmp_t))
    tmp_j.write_text(json.dumps(meta))
    os.replace(tmp_t, path / "checkpoint.safetensors")
    os.replace(tmp_j, path / "checkpoint.json")


def load_checkpoint(path, module, optimizer) -> TrainState:
    """Restore module, optimiser and random state from a checkpoint directory."""
    path = Path(path)
    try:
        tensors = load_file(str(path / "checkpoint.safetensors"))
        meta = json.loads((path / "checkpoint.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} holds no readable checkpoint: {err}") from err
    device = next(module.parameters()).device
    module.load_state_dict({k[len("module."):]: v.to(device) for k, v in tensors.items()
                            if k.startswith("module.")})
    _restore_optimizer(optimizer, {k: v.to(device) for k, v in tensors.items()}, meta["optimizer"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return TrainState(meta["epoch"], meta["history"], meta["best"], meta["best_epoch"], meta["stale"])


def train(
    module,
    objective,
    X_train: torch.Tensor,
    X_val: torch.Tensor | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    prepare=None,
    patience: int | None = None,
    checkpoint_dir=None,
    resume=None,
    verbose: int = 0,
    reducer=None,
) -> TrainState:
    """Fit ``module`` by stochastic gradient ascent on ``objective``.

    Parameters
    ----------
    module : VAEModule
    objective : callable
        ``objective(module, x, epoch) -> (loss, per-sample bound)``.
    X_train, X_val : Tensor
        Training data and an optional validation split (on the module's device).
    prepare : callable, optional
        Applied to every mini-batch before use (dynamic binarisation).

    All randomness (shuffling, reparameterised draws, binarisation) comes from
    torch's global generators, which the checkpoints save and restore: run it
    inside ``torch.random.fork_rng`` after seeding for repeatable runs.
    patience : int, optional
        Stop when the validation bound has not improved for this many epochs.
    checkpoint_dir : path, optional
        Write a checkpoint there after every epoch.
    resume : path, optional
        A checkpoint directory to continue from.
    reducer : Reducer, optional
        Under ``torch.distributed``: the module is wrapped in
        DistributedDataParallel (gradients averaged across ranks; uneven or
        empty shards handled with its ``join``), the epoch and validation
        bounds are summed over ranks, and only rank 0 writes checkpoints.

    Returns
    -------
    TrainState
        The history of the bounds (per epoch) and where training stopped.
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    state = TrainState()
    if resume is not None:
        state = load_checkpoint(resume, module, optimizer)
    model, join = module, contextlib.nullcontext
    if reducer is not None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module)  # also broadcasts rank 0's weights
        join = model.join
    n = X_train.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    bar = tqdm(total=epochs, initial=state.epoch, desc="VAE", leave=False, file=sys.stderr,
               disable=verbose != 1)
    while state.epoch < epochs:
        module.train()
        # summed on the device, read once per epoch: no host sync per step
        total = torch.zeros((), dtype=torch.float64, device=X_train.device)
        with join():
            for step, idx in enumerate(_batches(n, batch_size, X_train.device)):
                x = X_train[idx]
                if prepare is not None:
                    x = prepare(x)
                loss, bound = objective(model, x, state.epoch + step / steps_per_epoch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += bound.sum(dtype=torch.float64)
        sums = {"total": total, "n": torch.tensor(float(n), dtype=torch.float64, device=total.device)}
        if reducer is not None:
            sums = reducer(sums)
        mean = float(sums["total"]) / max(float(sums["n"]), 1.0)
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"the training bound became {mean} in epoch {state.epoch + 1}: lower lr, check the "
                "data's scale, or use a likelihood that matches the data."
            )
        state.epoch += 1
        state.history["train"].append(mean)
        module.eval()
        if X_val is not None and (X_val.shape[0] > 0 or reducer is not None):
            val = mean_elbo(module, X_val, prepare=prepare, reduce=reducer)
            state.history["validation"].append(val)
            if val > state.best:
                state.best, state.best_epoch, state.stale = val, state.epoch, 0
            else:
                state.stale += 1
        bar.update(1)
        bar.set_postfix(elbo=f"{state.history['train'][-1]:.3f}")
        if verbose >= 2:
            val_text = (f"  validation ELBO {state.history['validation'][-1]:.4f}"
                        if state.history["validation"] else "")
            print(f"  epoch {state.epoch:4d}  train bound {state.history['train'][-1]:.4f}{val_text}",
                  flush=True)
        if checkpoint_dir is not None and (reducer is None or reducer.rank == 0):
            save_checkpoint(checkpoint_dir, module, optimizer, state)
        if patience is not None and state.stale >= patience:
            break
    bar.close()
    module.eval()
    return state
