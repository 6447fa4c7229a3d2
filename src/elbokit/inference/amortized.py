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

import gc
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
    k = 1  # draws per sample

    def kl_weight(self, epoch: float) -> float:
        """beta_t at (fractional) epoch t: beta * min(1, t / kl_warmup)."""
        if self.kl_warmup <= 0:
            return self.beta
        return self.beta * min(1.0, epoch / self.kl_warmup)

    def __call__(self, module, x, epoch: float = math.inf, *, noise=None, batch: Batch | None = None):
        """(loss, per-sample bound) for the rows ``x`` of a (possibly split) batch.

        Parameters
        ----------
        module : VAEModule or DistributedDataParallel
        x : Tensor (n, D)
            This process's rows of the batch.
        epoch : float
            Fractional epoch (for the KL warm-up).
        noise : Tensor (n, 1, L), optional
            The reparameterisation draws of these rows.
        batch : Batch, optional
            The whole batch's size and the ranks it is split over (default:
            ``x`` is the whole batch). The loss is scaled so that the gradients
            averaged over ranks equal the gradient of the whole batch's mean.
        """
        batch = batch or Batch(x.shape[0])
        reconstruction, kl, q = module(x, "elbo", 1, noise)
        if self.free_bits > 0:
            # sum_j max(lambda, mean_batch KL_j): its gradient flows through the
            # dimensions whose mean over the *whole* batch exceeds lambda
            per_dim = _inner(module).kl_per_dimension(q).sum(0) * batch.live
            mean = batch.sum(per_dim.detach()) / batch.size
            active = mean > self.free_bits
            penalty = ((per_dim * active).sum() / batch.size
                       + self.free_bits * (~active).sum())
        else:
            penalty = kl.sum() * batch.live / batch.size
        loss = -reconstruction.sum() * batch.live / batch.size + self.kl_weight(epoch) * penalty
        return loss * batch.world, batch.rows((reconstruction - kl).detach())


@dataclass
class IWAEObjective:
    """Negative importance-weighted bound with ``k`` samples (see :class:`ELBOObjective`)."""

    k: int = 5

    def __call__(self, module, x, epoch: float = math.inf, *, noise=None, batch: Batch | None = None):
        batch = batch or Batch(x.shape[0])
        bound = module(x, "iwae", self.k, noise)
        return -bound.sum() * batch.live / batch.size * batch.world, batch.rows(bound.detach())


@dataclass
class Batch:
    """A mini-batch as the loss sees it: its size over all ranks, and how to sum over them.

    Attributes
    ----------
    size : int
        Rows in the whole batch (all ranks).
    world : int
        Ranks whose gradients DistributedDataParallel averages (1 in one process).
    reducer : Reducer, optional
        Sums a tensor over the ranks.
    placeholder : bool
        This rank has no row of the batch and runs one placeholder row
        instead (DistributedDataParallel needs every rank's backward pass);
        it counts for nothing.
    """

    size: int
    world: int = 1
    reducer: object = None
    placeholder: bool = False

    @property
    def live(self) -> float:
        """Weight of this rank's rows in the sums: 0 for a placeholder row."""
        return 0.0 if self.placeholder else 1.0

    def rows(self, per_row: torch.Tensor) -> torch.Tensor:
        """Per-row values of this rank's real rows (none for a placeholder)."""
        return per_row[:0] if self.placeholder else per_row

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over ranks."""
        return value if self.reducer is None else self.reducer({"v": value})["v"]


@dataclass
class TrainState:
    """Everything a run needs to continue: epoch reached, history, random state."""

    epoch: int = 0
    history: dict = field(default_factory=lambda: {"train": [], "validation": []})
    best: float = -math.inf
    best_epoch: int = 0
    stale: int = 0


class RowIndex:
    """Where this process's rows sit among the rows of all processes.

    Training is defined on the *global* rows (all ranks' data, in one
    order): the shuffles, the mini-batches and every random draw are made
    identically on every rank for the whole batch, and each rank keeps the
    part that is its own.  A fit over several processes therefore sees
    exactly the batches and draws of a fit in one process.

    Parameters
    ----------
    n_global : int
        Rows over all ranks.
    positions : LongTensor (n_local,), ascending, optional
        Global positions of this rank's rows, in the order they are stored;
        None when this process holds every row (positions 0..n_global-1).
    """

    def __init__(self, n_global: int, positions: torch.Tensor | None = None):
        self.n_global = int(n_global)
        self.positions = positions

    def take(self, idx: torch.Tensor):
        """This rank's part of the global rows ``idx``.

        Returns
        -------
        keep : BoolTensor (len(idx),) or None
            Which entries of ``idx`` are here (None: all of them).
        rows : LongTensor
            Their local row numbers, in the order of ``idx``.
        """
        if self.positions is None:
            return None, idx
        pos = self.positions.to(idx.device)
        if pos.numel() == 0:
            keep = torch.zeros_like(idx, dtype=torch.bool)
            return keep, idx[keep]
        loc = torch.searchsorted(pos, idx)
        keep = (loc < pos.numel()) & (pos[loc.clamp(max=pos.numel() - 1)] == idx)
        return keep, loc[keep]

    def span(self, start: int, stop: int):
        """Local rows whose global positions lie in [start, stop), and their offsets there."""
        if self.positions is None:
            return slice(start, stop), None
        lo = int(torch.searchsorted(self.positions, torch.tensor(start)))
        hi = int(torch.searchsorted(self.positions, torch.tensor(stop)))
        return slice(lo, hi), self.positions[lo:hi] - start


def _draws(mine, n: int, n_features: int, k: int, latent: int, prepare, like: torch.Tensor):
    """Random draws for ``n`` global rows (binarisation uniforms, reparameterisation noise),
    made identically on every rank, restricted to this rank's rows by ``mine`` (a mask or
    offsets; None: all rows are here)."""
    opts = dict(device=like.device, dtype=like.dtype)
    u = torch.rand(n, n_features, **opts) if prepare is not None else None
    noise = torch.randn(n, k, latent, **opts)
    if mine is None:
        return u, noise
    u = u[mine] if u is not None else None
    return u, noise[mine]


def _inner(module):
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(module, "module", module)


def binarize(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A Bernoulli(x) draw from uniforms u (dynamic binarisation)."""
    return (u < x).to(x.dtype)


@torch.no_grad()
def mean_elbo(module, X, batch_size: int = 1024, prepare=None, reduce=None,
              index: RowIndex | None = None) -> float:
    """Mean one-sample ELBO over X (float64 accumulation; summed over ranks with ``reduce``).

    ``prepare(x, u)``, optional, transforms a chunk with uniforms u of its
    shape (dynamic binarisation). With ``index`` (several processes), X is
    this rank's part of the global rows and the draws are the global ones.
    """
    index = index or RowIndex(X.shape[0])
    inner = _inner(module)
    total = torch.zeros((), dtype=torch.float64, device=X.device)
    for start in range(0, index.n_global, batch_size):
        stop = min(index.n_global, start + batch_size)
        rows, offsets = index.span(start, stop)
        u, noise = _draws(offsets, stop - start, X.shape[1], 1, inner.latent_dim,
                          prepare, X)
        x = X[rows]
        if x.shape[0] == 0:
            continue
        x = prepare(x, u) if prepare is not None else x
        reconstruction, kl, _ = inner.elbo_terms(x, noise=noise)
        total += (reconstruction - kl).sum(dtype=torch.float64)
    if reduce is not None:
        total = reduce({"total": total})["total"]
    return float(total) / max(index.n_global, 1)


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
    train_index: RowIndex | None = None,
    val_index: RowIndex | None = None,
) -> TrainState:
    """Fit ``module`` by stochastic gradient ascent on ``objective``.

    Parameters
    ----------
    module : VAEModule
    objective : callable
        ``objective(module, x, epoch, noise=..., batch=...) -> (loss, per-sample bound)``
        with an attribute ``k`` (draws per sample).
    X_train, X_val : Tensor
        Training data and an optional validation split (on the module's device).
    prepare : callable, optional
        ``prepare(x, u)`` with uniforms u of x's shape, applied to every
        mini-batch before use (dynamic binarisation).

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
        Under ``torch.distributed`` (with the same seed on every rank): the
        module is wrapped in DistributedDataParallel; ``train_index`` and
        ``val_index`` say which global rows ``X_train`` and ``X_val`` hold.
        Every rank makes the same shuffles and draws for whole mini-batches
        and computes its own rows' part of the loss, scaled so that
        DistributedDataParallel's average of the gradients is the whole
        batch's gradient: ``batch_size`` is the global batch, every rank takes
        the same number of steps (uneven and empty shards need no special
        case), and the result equals one process's up to rounding.  The
        bounds are summed over ranks; only rank 0 writes checkpoints.

    Returns
    -------
    TrainState
        The history of the bounds (per epoch) and where training stopped.
    """
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    state = TrainState()
    if resume is not None:
        state = load_checkpoint(resume, module, optimizer)
    model, world = module, 1
    if reducer is not None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module)  # also broadcasts rank 0's weights
        world = reducer.world_size
    train_index = train_index or RowIndex(X_train.shape[0])
    if X_val is not None:
        val_index = val_index or RowIndex(X_val.shape[0])
    n = train_index.n_global
    latent, n_features, k = module.latent_dim, X_train.shape[1], int(objective.k)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    # the bar moves every mini-batch (an epoch of a large data set takes minutes)
    bar = tqdm(total=epochs * steps_per_epoch, initial=state.epoch * steps_per_epoch, desc="VAE",
               leave=False, file=sys.stderr, disable=verbose != 1, unit="batch")
    loss = bound = None
    while state.epoch < epochs:
        module.train()
        # summed on the device, read once per epoch: no host sync per step
        total = torch.zeros((), dtype=torch.float64, device=X_train.device)
        order = torch.randperm(n, device=X_train.device)
        for step, start in enumerate(range(0, n, batch_size)):
            idx = order[start:start + batch_size]
            keep, rows = train_index.take(idx)
            u, noise = _draws(keep, idx.shape[0], n_features, k, latent, prepare,
                              X_train)
            x = X_train[rows]
            if prepare is not None:
                x = prepare(x, u)
            placeholder = reducer is not None and x.shape[0] == 0
            if placeholder:  # nothing of this batch here: one row that counts for nothing
                x, noise = x.new_zeros(1, n_features), noise.new_zeros(1, k, latent)
            loss, bound = objective(model, x, state.epoch + step / steps_per_epoch, noise=noise,
                                    batch=Batch(idx.shape[0], world, reducer, placeholder))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += bound.sum(dtype=torch.float64)
            bar.update(1)
        if reducer is not None:
            total = reducer({"total": total})["total"]
        mean = float(total) / max(n, 1)
        if not math.isfinite(mean):
            raise FloatingPointError(
                f"the training bound became {mean} in epoch {state.epoch + 1}: lower lr, check the "
                "data's scale, or use a likelihood that matches the data."
            )
        state.epoch += 1
        state.history["train"].append(mean)
        module.eval()
        if X_val is not None and val_index.n_global > 0:
            val = mean_elbo(module, X_val, prepare=prepare, reduce=reducer, index=val_index)
            state.history["validation"].append(val)
            if val > state.best:
                state.best, state.best_epoch, state.stale = val, state.epoch, 0
            else:
                state.stale += 1
        bar.set_postfix(epoch=state.epoch, elbo=f"{state.history['train'][-1]:.3f}")
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
    if model is not module:
        # free DistributedDataParallel's reducer (and the threads it holds on the process
        # group) now: left to the interpreter's exit, after the group is destroyed, it
        # can abort the process ("terminate called without an active exception")
        del model, loss, bound
        gc.collect()
    return state
