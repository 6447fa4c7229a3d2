"""Amortised variational inference: the training loop of the VAE (and ProdLDA).

The objective is a loss object, separate from the loop (as in Pyro):

* :class:`ELBOObjective`: -(E_q[log p(x|z)] - beta_t KL(q || p)), with the
  reparameterisation trick. ``beta_t`` is constant,
  a linear warm-up from 0 to ``beta`` over ``kl_warmup`` epochs (Bowman et
  al. 2016), or cyclical annealing (Fu et al. 2019: ``kl_cycles`` cycles over
  the run, each rising linearly over its first ``kl_cycle_ratio`` and then
  held at ``beta``). ``free_bits`` lambda replaces the KL by sum_j
  max(lambda, mean_batch KL_j) per latent dimension (Kingma et al. 2016), so
  no dimension is pushed below lambda nats.
* :class:`IWAEObjective`: -IWAE_k (Burda et al., 2016), with the encoder's
  gradient optionally doubly reparameterised (DReG, Tucker et al. 2019).

The loop (:func:`train`) runs Adam over shuffled mini-batches and records per
epoch the mean training bound and, on a validation split, the mean ELBO and
the posterior-collapse diagnostics of :func:`collapse_diagnostics` (KL per
latent dimension, active units, an estimate of I(x; z)). It stops early on
the validation bound, stops with :class:`TrainingDivergedError` when the
bound falls far below its start or the gradients explode, writes a
checkpoint every epoch (one safetensors file, replaced atomically: weights,
optimiser state, random state and history always belong together) and
resumes from one with the same result as an uninterrupted run.

The per-step work is the network's: the batch is gathered and drawn with a
few tensor operations, the loss is a handful of fused operations on the
encoder's and decoder's raw outputs, and nothing is read back to the host
inside an epoch (the bound is summed on the device; the gradient norm is
sampled into a device tensor every ``_GRAD_EVERY`` steps).
"""

from __future__ import annotations

import gc
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from tqdm.auto import tqdm

from elbokit import files, io
from elbokit.models.vae import diagonal_normal_log_prob, mixture_log_prob

CHECKPOINT_NAME = "checkpoint.safetensors"
_CHECKPOINT_KEY = "elbokit-checkpoint"
_CHECKPOINT_VERSION = 2
_GRAD_EVERY = 50          # steps between sampled gradient norms
_GRAD_EXPLOSION = 1e4     # a sampled gradient norm this many times the first one: diverged
_DIAGNOSTIC_ROWS = 2048   # rows the collapse diagnostics are computed on ...
_MI_ROWS = 1024           # ... and the aggregate posterior of I(x; z) (a cost quadratic in rows)
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. (2016): Cov_x(E_q[z_j | x]) above this


class TrainingDivergedError(FloatingPointError):
    """Training diverged: the bound fell far below its start, or the gradients exploded."""


# ---------------------------------------------------------------- objectives
@dataclass
class ELBOObjective:
    """Negative ELBO per sample (mean over the batch), with a KL schedule and free bits.

    Parameters
    ----------
    beta : float
        Weight of the KL term (beta-VAE; 1 is the ELBO).
    kl_warmup : int
        Epochs over which the KL weight rises linearly from 0 to ``beta``.
    free_bits : float
        Nats per latent dimension below which the KL is not penalised
        (N(0, I) prior only).
    kl_cycles : int
        Cyclical annealing (Fu et al. 2019) instead of the warm-up: the run's
        ``epochs`` are cut into ``kl_cycles`` equal cycles; in each, the weight
        rises linearly from 0 to beta over the first ``kl_cycle_ratio`` of the
        cycle and stays at beta for the rest (0: none).
    kl_cycle_ratio : float
    epochs : int
        Length of the run (for the cycles).
    """

    beta: float = 1.0
    kl_warmup: int = 0
    free_bits: float = 0.0
    kl_cycles: int = 0
    kl_cycle_ratio: float = 0.5
    epochs: int = 0
    k = 1  # draws per sample

    def kl_weight(self, epoch: float) -> float:
        """beta_t at (fractional) epoch t."""
        if self.kl_cycles > 0 and math.isfinite(epoch):
            period = self.epochs / self.kl_cycles
            return self.beta * min(1.0, (epoch % period) / period / self.kl_cycle_ratio)
        if self.kl_warmup > 0:
            return self.beta * min(1.0, epoch / self.kl_warmup)
        return self.beta

    def __call__(self, module, x, epoch: float = math.inf, *, noise=None, batch: Batch | None = None,
                 c=None):
        """(loss, summed bound) for the rows ``x`` of a (possibly split) batch.

        Parameters
        ----------
        module : VAEModule or DistributedDataParallel
        x : Tensor (n, D)
            This process's rows of the batch.
        epoch : float
            Fractional epoch (for the KL schedule).
        noise : Tensor (n, 1, L), optional
            The reparameterisation draws of these rows.
        batch : Batch, optional
            The whole batch's size and the ranks it is split over (default:
            ``x`` is the whole batch). The loss is scaled so that the gradients
            averaged over ranks equal the gradient of the whole batch's mean.
        c : Tensor (n, C), optional
            Covariates of these rows.

        Returns
        -------
        loss : Tensor ()
        bound : Tensor (), float64
            Sum over these rows of the one-draw ELBO (detached).
        """
        batch = batch or Batch(x.shape[0])
        reconstruction, kl, (loc, scale) = module(x, "elbo", 1, noise, c)
        weight = self.kl_weight(epoch)
        bound = (reconstruction - kl).detach()
        if self.free_bits > 0:
            # sum_j max(lambda, mean_batch KL_j): its gradient flows through the
            # dimensions whose mean over the *whole* batch exceeds lambda
            per_dim = _inner(module).kl_per_dimension(loc, scale).sum(0) * batch.live
            mean = batch.sum(per_dim.detach()) / batch.size
            active = mean > self.free_bits
            penalty = ((per_dim * active).sum() / batch.size
                       + self.free_bits * (~active).sum())
            loss = -reconstruction.sum() * (batch.live / batch.size) + weight * penalty
            loss = loss * batch.world
        else:
            terms = reconstruction - kl if weight == 1.0 else reconstruction - weight * kl
            loss = terms.sum() * -batch.scale
        return loss, batch.total(bound)


@dataclass
class IWAEObjective:
    """Negative importance-weighted bound with ``k`` samples (see :class:`ELBOObjective`).

    ``dreg``: the encoder's gradient is the doubly reparameterised estimator
    (Tucker et al. 2019), unbiased for the same gradient with a lower variance.
    """

    k: int = 5
    dreg: bool = False

    def __call__(self, module, x, epoch: float = math.inf, *, noise=None, batch: Batch | None = None,
                 c=None):
        batch = batch or Batch(x.shape[0])
        bound = module(x, "iwae", self.k, noise, c, self.dreg)
        return bound.sum() * -batch.scale, batch.total(bound.detach())


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

    @property
    def scale(self) -> float:
        """Factor from a sum over this rank's rows to its share of the loss."""
        return self.live * self.world / self.size

    def total(self, per_row: torch.Tensor) -> torch.Tensor:
        """Sum (float64) of the per-row values of this rank's real rows."""
        total = per_row.sum(dtype=torch.float64)
        return total * 0.0 if self.placeholder else total

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over ranks."""
        return value if self.reducer is None else self.reducer({"v": value})["v"]


# ---------------------------------------------------------------- data
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


@dataclass
class Rows:
    """One split's rows on this rank: the data, optional covariates, their global positions.

    ``X`` is a tensor (N, D) or any object with ``shape``, ``dtype``,
    ``device`` and ``X[rows]`` giving dense rows (e.g. sparse counts
    densified per batch). ``select`` (n,), optional, are the rows of ``X``
    (and ``C``) that form the split, so that a split is not a copy of the data.
    """

    X: object
    C: torch.Tensor | None = None
    index: RowIndex | None = None
    select: torch.Tensor | None = None

    def __post_init__(self):
        if self.select is not None:
            self.select = self.select.to(self.X.device)
        if self.index is None:
            self.index = RowIndex(len(self))

    def __len__(self) -> int:
        return int(self.X.shape[0] if self.select is None else self.select.shape[0])

    @property
    def n_global(self) -> int:
        return self.index.n_global

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def __getitem__(self, rows):
        if self.select is not None:
            rows = self.select[rows]
        return self.X[rows], (None if self.C is None else self.C[rows])


def _draws(mine, n: int, n_features: int, k: int, latent: int, prepare, like):
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
    """The model inside a DistributedDataParallel or compiled wrapper (or the model itself)."""
    module = getattr(module, "module", module)
    return getattr(module, "_orig_mod", module)


def binarize(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """A Bernoulli(x) draw from uniforms u (dynamic binarisation)."""
    return (u < x).to(x.dtype)


def _chunks(index: RowIndex, stop: int, batch_size: int, n_features: int, latent: int,
            prepare, data: Rows, k: int = 1):
    """(x, c, noise, offsets) of this rank's rows among global rows [0, stop), block by block,
    with the global draws of each block."""
    for start in range(0, stop, batch_size):
        end = min(stop, start + batch_size)
        rows, offsets = index.span(start, end)
        u, noise = _draws(offsets, end - start, n_features, k, latent, prepare, data.X)
        x, c = data[rows]
        if prepare is not None:
            x = prepare(x, u)
        yield x, c, noise, (None if offsets is None else offsets + start)


@torch.no_grad()
def mean_elbo(module, data, batch_size: int = 1024, prepare=None, reduce=None) -> float:
    """Mean one-sample ELBO over the rows ``data`` (float64 accumulation; summed over
    ranks with ``reduce``).

    ``data`` is a :class:`Rows` (or a tensor). ``prepare(x, u)``, optional,
    transforms a chunk with uniforms u of its shape (dynamic binarisation).
    Under several processes the draws are the global rows' ones.
    """
    data = data if isinstance(data, Rows) else Rows(data)
    inner = _inner(module)
    total = torch.zeros((), dtype=torch.float64, device=data.X.device)
    for x, c, noise, _ in _chunks(data.index, data.n_global, batch_size, data.n_features,
                                  inner.latent_dim, prepare, data):
        if x.shape[0]:
            reconstruction, kl, _ = inner.elbo_terms(x, noise=noise, c=c)
            total += (reconstruction - kl).sum(dtype=torch.float64)
    if reduce is not None:
        total = reduce({"total": total})["total"]
    return float(total) / max(data.n_global, 1)


@torch.no_grad()
def collapse_diagnostics(module, data, *, prepare=None, reduce=None,
                         max_rows: int = _DIAGNOSTIC_ROWS, mi_rows: int = _MI_ROWS) -> dict:
    """Posterior-collapse diagnostics on the first ``max_rows`` (global) rows of ``data``.

    * ``kl_per_dimension`` (L,): the mean over rows of KL(q(z_j | x) || p(z_j))
      per latent dimension (exact for N(0, I); for a mixture prior the
      one-draw estimate against the prior's marginal on that dimension);
    * ``active_units`` (int) and ``unit_variance`` (L,): Burda et al. (2016)'s
      criterion, a dimension is active when Cov_x(E_q[z_j | x]) > 0.01;
    * ``mutual_information`` (float): I(x; z) under q, E_x E_q(z|x)[log q(z | x)
      - log q(z)] with the aggregate posterior q(z) = mean_i q(z | x_i) over
      the first ``mi_rows`` of them (Hoffman & Johnson 2016), one draw per
      row; at most log(mi_rows).

    ``data`` is a :class:`Rows` (or a tensor). Under several processes every
    rank computes the same numbers from the rows of all ranks.
    """
    data = data if isinstance(data, Rows) else Rows(data)
    inner = _inner(module)
    L = inner.latent_dim
    m = min(int(max_rows), data.n_global)
    if m == 0:
        return {}
    locs, scales, where = [], [], []
    for x, c, _, offsets in _chunks(data.index, m, 1024, data.n_features, L, prepare, data):
        loc, scale = inner.encode(x, c)
        locs.append(loc)
        scales.append(scale)
        where.append(offsets)
    loc, scale = torch.cat(locs), torch.cat(scales)
    if reduce is not None:  # every rank's rows in their global places: a sum of disjoint parts
        full = {"loc": loc.new_zeros(m, L), "scale": loc.new_zeros(m, L)}
        full["loc"][torch.cat(where)] = loc
        full["scale"][torch.cat(where)] = scale
        full = reduce(full)
        loc, scale = full["loc"], full["scale"]
    eps = torch.randn(m, L, dtype=loc.dtype, device=loc.device)
    z = loc + scale * eps
    kl = torch.cat([inner.kl_per_dimension(loc[s:s + 256], scale[s:s + 256], z[s:s + 256])
                    for s in range(0, m, 256)]).to(torch.float64).mean(0)
    variance = loc.to(torch.float64).var(0, correction=1) if m > 1 else torch.zeros(L)
    r = min(m, int(mi_rows))
    loc_r, scale_r, z_r = loc[:r], scale[:r], z[:r]
    log_q = diagonal_normal_log_prob(z_r, loc_r, scale_r).to(torch.float64)
    log_w = torch.full((r,), -math.log(r), dtype=loc.dtype, device=loc.device)
    log_aggregate = mixture_log_prob(z_r, log_w, loc_r, scale_r).to(torch.float64)
    return {
        "kl_per_dimension": kl.tolist(),
        "unit_variance": variance.tolist(),
        "active_units": int((variance > ACTIVE_UNIT_THRESHOLD).sum()),
        "mutual_information": float((log_q - log_aggregate).mean()),
    }


# ---------------------------------------------------------------- checkpoints
@dataclass
class TrainState:
    """Everything a run needs to continue: epoch reached, history, divergence references."""

    epoch: int = 0
    history: dict = field(default_factory=lambda: {"train": [], "validation": []})
    best: float = -math.inf
    best_epoch: int = 0
    stale: int = 0
    start_bound: float | None = None  # mean bound of the first batch, at initialisation
    start_grad: float | None = None   # gradient norm of the first batch


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


def save_checkpoint(path, module, optimizer, state: TrainState, fingerprint: dict | None = None) -> None:
    """Write the checkpoint ``path/checkpoint.safetensors`` as one atomic unit.

    Weights, optimiser and random state are the file's tensors; the epoch,
    history and settings are its metadata, so they can never come from
    different epochs. The file is written with :func:`elbokit.files.write_output`
    (a temporary sibling with the umask's permissions, flushed, swapped in by
    one rename; temporaries of crashed writes removed): at every instant the
    previous or the new checkpoint is complete.
    """
    path = Path(path)
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    optim_tensors, optim_meta = _flatten_optimizer(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.cpu"] = torch.get_rng_state()
    device = next(module.parameters()).device
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device).cpu()
    meta = {"version": _CHECKPOINT_VERSION, "epoch": state.epoch, "history": state.history,
            "best": state.best, "best_epoch": state.best_epoch, "stale": state.stale,
            "start_bound": state.start_bound, "start_grad": state.start_grad,
            "optimizer": optim_meta, "fingerprint": fingerprint or {}}
    data = save(tensors, metadata={_CHECKPOINT_KEY: json.dumps(meta)})
    files.write_output(path / CHECKPOINT_NAME, lambda tmp: Path(tmp).write_bytes(data),
                       overwrite=True, what="checkpoint")


def _read_checkpoint(path: Path) -> tuple[dict, dict]:
    """(tensors, metadata) of a checkpoint directory; ValueError naming what is wrong."""
    file = path / CHECKPOINT_NAME
    if not file.exists():
        if (path / "checkpoint.json").exists():
            raise ValueError(f"{path} holds a checkpoint in the two-file layout of an older "
                             "elbokit, which cannot be resumed safely: start the fit afresh.")
        raise ValueError(f"{path} holds no checkpoint ({CHECKPOINT_NAME} is missing).")
    raw = files.read_regular(file, max_bytes=io.MAX_TENSOR_BYTES, what="checkpoint")
    try:
        n = int.from_bytes(raw[:8], "little")
        header = files.parse_json(raw[8:8 + n], what=f"the header of {file}")
        meta = json.loads(header.get("__metadata__", {}).get(_CHECKPOINT_KEY, "null"))
        tensors = load(raw)
    except (SafetensorError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{file} is truncated or corrupted ({err}): start the fit afresh.") from err
    if not isinstance(meta, dict) or meta.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(f"{file} is not an elbokit training checkpoint of this version.")
    return tensors, meta


def _check_compatible(path, module, tensors: dict, meta: dict, fingerprint: dict | None) -> None:
    """Raise if the checkpoint was written by another model than ``module``."""
    fingerprint = fingerprint or {}
    saved = meta.get("fingerprint", {})
    differ = [k for k in sorted(set(saved) | set(fingerprint)) if saved.get(k) != fingerprint.get(k)]
    if differ:
        detail = "; ".join(f"{k}={saved.get(k)!r} there, {fingerprint.get(k)!r} here" for k in differ)
        raise ValueError(f"the checkpoint in {path} was written by another model ({detail}): "
                         "resume with the settings it was written with, or start afresh.")
    mine = {f"module.{k}": tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in tensors.items() if k.startswith("module.")}
    if mine != theirs:
        diff = sorted(set(mine) ^ set(theirs)) or [k for k in mine if mine[k] != theirs[k]]
        name = diff[0]
        raise ValueError(
            f"the checkpoint in {path} was written by a network of another architecture "
            f"({name[len('module.'):]}: {theirs.get(name, 'absent')} there, "
            f"{mine.get(name, 'absent')} here): resume with the settings it was written with, "
            "or start afresh.")


def load_checkpoint(path, module, optimizer, fingerprint: dict | None = None) -> TrainState:
    """Restore module, optimiser and random state from a checkpoint directory.

    Raises
    ------
    ValueError
        No checkpoint, a truncated or corrupted one, or one written by a model
        with other settings or another architecture.
    """
    path = Path(path)
    tensors, meta = _read_checkpoint(path)
    _check_compatible(path, module, tensors, meta, fingerprint)
    device = next(module.parameters()).device
    module.load_state_dict({k[len("module."):]: v.to(device) for k, v in tensors.items()
                            if k.startswith("module.")})
    _restore_optimizer(optimizer, {k: v.to(device) for k, v in tensors.items()}, meta["optimizer"])
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    return TrainState(meta["epoch"], meta["history"], meta["best"], meta["best_epoch"],
                      meta["stale"], meta.get("start_bound"), meta.get("start_grad"))


# ---------------------------------------------------------------- the loop
def _adam(module, lr: float, options: dict | None):
    """Adam; its fused kernel (one operation per step instead of ~10 per tensor) where
    the parameters' device has one."""
    options = dict(options or {})
    devices = {p.device.type for p in module.parameters()}
    if "fused" not in options and devices <= {"cpu", "cuda"}:
        options["fused"] = True
    return torch.optim.Adam(module.parameters(), lr=lr, **options)


def _gradient_norm(parameters) -> torch.Tensor:
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _check_divergence(state: TrainState, mean: float, grad_max: float, lr: float,
                      n_features: int) -> None:
    """Raise :class:`TrainingDivergedError` when the epoch's bound or gradients show divergence.

    Diverged: a bound that is not finite; a mean bound more than
    2 max(|start|, D) nats below the first batch's bound at initialisation
    (a trained model is not that much worse than an untrained one); or a
    sampled gradient norm above 1e4 times the first one.
    """
    epoch = state.epoch
    fix = f"lower lr (now {lr:g}; e.g. {lr / 10:g}), check the data's scale, or use a " \
          "likelihood that matches the data"
    if not math.isfinite(mean):
        raise TrainingDivergedError(f"the training bound became {mean} in epoch {epoch}: {fix}.")
    start = state.start_bound
    if start is not None and mean < start - 2.0 * max(abs(start), n_features):
        raise TrainingDivergedError(
            f"training diverged: the mean bound fell to {mean:.4g} in epoch {epoch}, far below "
            f"its start ({start:.4g}): {fix}.")
    g0 = state.start_grad
    if not math.isfinite(grad_max) or (g0 is not None and g0 > 0 and grad_max > _GRAD_EXPLOSION * g0):
        raise TrainingDivergedError(
            f"training diverged: the gradient norm grew to {grad_max:.4g} in epoch {epoch}, from "
            f"{g0:.4g} at the start: {fix}.")


def _record(state: TrainState, key: str, value) -> None:
    state.history.setdefault(key, []).append(value)


def _batch_starts(n: int, batch_size: int, min_batch: int) -> list[int]:
    """Start rows of the mini-batches; a last batch under ``min_batch`` rows joins the one before."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_batch:
        starts.pop()
    return starts + [n]


def train(
    module,
    objective,
    train_rows,
    val_rows=None,
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
    fingerprint: dict | None = None,
    diagnostics: bool = True,
    compile: bool = False,
    min_batch: int = 1,
    optimizer_options: dict | None = None,
) -> TrainState:
    """Fit ``module`` by stochastic gradient ascent on ``objective``.

    Parameters
    ----------
    module : VAEModule
    objective : callable
        ``objective(module, x, epoch, noise=..., batch=..., c=...) -> (loss, summed bound)``
        with an attribute ``k`` (draws per sample).
    train_rows, val_rows : Rows or Tensor
        Training rows and an optional validation split (on the module's
        device), with their covariates and, under several processes, their
        global positions (:class:`Rows`).
    prepare : callable, optional
        ``prepare(x, u)`` with uniforms u of x's shape, applied to every
        mini-batch before use (dynamic binarisation).
    patience : int, optional
        Stop when the validation bound has not improved for this many epochs.
    checkpoint_dir : path, optional
        Write a checkpoint there after every epoch.
    resume : path, optional
        A checkpoint directory to continue from.
    reducer : Reducer, optional
        Under ``torch.distributed`` (with the same seed on every rank): the
        module is wrapped in DistributedDataParallel; the rows' ``index``
        says which global rows this rank holds.
        Every rank makes the same shuffles and draws for whole mini-batches
        and computes its own rows' part of the loss, scaled so that
        DistributedDataParallel's average of the gradients is the whole
        batch's gradient: ``batch_size`` is the global batch, every rank takes
        the same number of steps (uneven and empty shards need no special
        case), and the result equals one process's up to rounding.  The
        bounds are summed over ranks; only rank 0 writes checkpoints.
    fingerprint : dict, optional
        The settings a checkpoint must have been written with to be resumed
        (stored in every checkpoint).
    diagnostics : bool
        Record :func:`collapse_diagnostics` each epoch (on the validation rows,
        or on training rows without a validation split).
    compile : bool
        Run the module's forward through ``torch.compile``.
    min_batch : int
        Fewest rows of a mini-batch (a smaller last batch joins the one before;
        2 for networks with batch normalisation).
    optimizer_options : dict, optional
        More keyword arguments of ``torch.optim.Adam`` (e.g. ``betas``).

    All randomness (shuffling, reparameterised draws, binarisation) comes from
    torch's global generators, which the checkpoints save and restore: run it
    inside ``torch.random.fork_rng`` after seeding for repeatable runs.

    Returns
    -------
    TrainState
        The history (per epoch: "train", "validation", "kl_weight" and the
        diagnostics) and where training stopped.
    """
    optimizer = _adam(module, lr, optimizer_options)
    state = TrainState()
    if resume is not None:
        state = load_checkpoint(resume, module, optimizer, fingerprint)
    model, world = module, 1
    if reducer is not None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module)  # also broadcasts rank 0's weights
        world = reducer.world_size
    if compile:
        model = torch.compile(model)
    train_rows = train_rows if isinstance(train_rows, Rows) else Rows(train_rows)
    if val_rows is not None and not isinstance(val_rows, Rows):
        val_rows = Rows(val_rows)
    if val_rows is not None and val_rows.n_global == 0:
        val_rows = None
    diag_rows = val_rows if val_rows is not None else train_rows
    n = train_rows.n_global
    latent, n_features, k = module.latent_dim, train_rows.n_features, int(objective.k)
    like = train_rows.X
    starts = _batch_starts(n, batch_size, min_batch)
    steps = len(starts) - 1
    params = [p for p in module.parameters() if p.requires_grad]
    # the bar moves every mini-batch (an epoch of a large data set takes minutes)
    bar = tqdm(total=epochs * steps, initial=state.epoch * steps, desc="VAE", leave=False,
               file=sys.stderr, disable=verbose != 1, unit="batch")
    loss = bound = None
    while state.epoch < epochs:
        module.train()
        # summed on the device, read once per epoch: no host sync per step
        total = torch.zeros((), dtype=torch.float64, device=like.device)
        grad_max = torch.zeros((), dtype=torch.float32, device=like.device)
        order = torch.randperm(n, device=like.device)
        weight_sum = 0.0
        for step in range(steps):
            idx = order[starts[step]:starts[step + 1]]
            keep, rows = train_rows.index.take(idx)
            u, noise = _draws(keep, idx.shape[0], n_features, k, latent, prepare, like)
            x, c = train_rows[rows]
            if prepare is not None:
                x = prepare(x, u)
            placeholder = reducer is not None and x.shape[0] == 0
            if placeholder:  # nothing of this batch here: one row that counts for nothing
                x, noise = x.new_zeros(1, n_features), noise.new_zeros(1, k, latent)
                c = None if c is None else c.new_zeros(1, c.shape[1])
            t = state.epoch + step / steps
            weight_sum += objective.kl_weight(t) if hasattr(objective, "kl_weight") else 1.0
            loss, bound = objective(model, x, t, noise=noise,
                                    batch=Batch(idx.shape[0], world, reducer, placeholder), c=c)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if step % _GRAD_EVERY == 0:
                norm = _gradient_norm(params)
                if state.start_grad is None:  # once per run: the references of the divergence test
                    first = bound if reducer is None else reducer({"b": bound})["b"]
                    state.start_grad = float(norm)  # (gradients are alike on every rank)
                    state.start_bound = float(first) / max(1, idx.shape[0])
                grad_max = torch.maximum(grad_max, norm.to(grad_max))
            optimizer.step()
            total += bound
            bar.update(1)
        if reducer is not None:
            total = reducer({"total": total})["total"]
        mean = float(total) / max(n, 1)
        state.epoch += 1
        _check_divergence(state, mean, float(grad_max), lr, n_features)
        state.history["train"].append(mean)
        _record(state, "kl_weight", weight_sum / steps)
        module.eval()
        if val_rows is not None:
            val = mean_elbo(module, val_rows, prepare=prepare, reduce=reducer)
            state.history["validation"].append(val)
            if val > state.best:
                state.best, state.best_epoch, state.stale = val, state.epoch, 0
            else:
                state.stale += 1
        if diagnostics:
            for key, value in collapse_diagnostics(module, diag_rows, prepare=prepare,
                                                   reduce=reducer).items():
                _record(state, key, value)
        bar.set_postfix(epoch=state.epoch, elbo=f"{state.history['train'][-1]:.3f}")
        if verbose >= 2:
            val_text = (f"  validation ELBO {state.history['validation'][-1]:.4f}"
                        if state.history["validation"] else "")
            au = (f"  active units {state.history['active_units'][-1]}"
                  if state.history.get("active_units") else "")
            print(f"  epoch {state.epoch:4d}  train bound {state.history['train'][-1]:.4f}"
                  f"{val_text}{au}", flush=True)
        if checkpoint_dir is not None and (reducer is None or reducer.rank == 0):
            save_checkpoint(checkpoint_dir, module, optimizer, state, fingerprint)
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
