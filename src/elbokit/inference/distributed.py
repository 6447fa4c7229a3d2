"""Several processes, one fit: reductions over ``torch.distributed``.

Each process (rank) holds a shard of the data.  The engines stay as they are:
where one process sums its batches' statistics, a :class:`Reducer` adds the
sums of all ranks with one ``all_reduce`` of a single flat float64 buffer, and
every rank then runs the same maximiser on the same numbers, so all ranks hold
identical parameters and stop on the same iteration.

Failures do not hang the job: before each reduction the ranks exchange a
status flag, so when one rank's local step raises, every rank raises (the
failing one with its own error), and the process group's timeout bounds
any wait.

Works with any initialised process group: ``torchrun``, Ray's TorchTrainer,
Spark's TorchDistributor, SLURM (gloo for CPU tensors, NCCL for CUDA ones).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class RankFailedError(RuntimeError):
    """Another rank of the process group failed; its own error is in its log."""


def active() -> bool:
    """True inside an initialised process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def resolve(setting) -> "Reducer | None":
    """The reducer for an estimator's ``distributed`` setting (None: auto-detect).

    Auto-detection refuses to fit alone in a process that a launcher (torchrun)
    started as one of several ranks when no process group is initialised:
    each rank would fit its own shard, silently.
    """
    if setting is None or setting == "auto":
        if active():
            return Reducer()
        _check_not_a_lone_rank()
        return None
    if setting is True:
        if not active():
            raise ValueError(
                "distributed=True, but no torch.distributed process group of several ranks is "
                "initialised: launch with torchrun (or call torch.distributed.init_process_group)."
            )
        return Reducer()
    if setting is False:
        return None
    raise ValueError(f"distributed={setting!r}: use None/'auto', True or False.")


def _check_not_a_lone_rank() -> None:
    import os

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return
    if world > 1 and not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            f"this process is one of WORLD_SIZE={world} ranks (torchrun's environment), but no "
            "torch.distributed process group is initialised, so each rank would fit only its own "
            "data: call torch.distributed.init_process_group() before fit (the elbokit command "
            "does), or pass distributed=False to fit each rank on its own on purpose."
        )


def checker(reduce) -> "Reducer | None":
    """``reduce`` when it can exchange error flags across ranks, else None."""
    return reduce if hasattr(reduce, "check") else None


def checked(reducer: "Reducer | None", fn):
    """``fn()``; with a reducer, every rank raises if any rank's call raised."""
    if reducer is None:
        return fn()
    try:
        result = fn()
    except Exception as err:  # noqa: BLE001 - every rank learns of it, then it is raised
        reducer.check(err)
    reducer.check(None)
    return result


class Reducer:
    """Sums statistics across the ranks of the default process group."""

    def __init__(self):
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def _device(self, like: torch.Tensor | None = None) -> torch.device:
        if dist.get_backend() == "nccl":
            return like.device if like is not None and like.is_cuda else torch.device(
                "cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def check(self, error: BaseException | None) -> None:
        """Collective: raise on every rank if any rank's local step failed.

        The failing rank re-raises its own error; the others raise
        :class:`RankFailedError` naming the failed ranks.
        """
        flags = torch.zeros(self.world_size, dtype=torch.float64, device=self._device())
        flags[self.rank] = 1.0 if error is not None else 0.0
        dist.all_reduce(flags)
        if error is not None:
            raise error
        failed = torch.nonzero(flags).flatten().tolist()
        if failed:
            raise RankFailedError(f"rank(s) {failed} of {self.world_size} failed; see their errors.")

    def __call__(self, stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Sum a dict of tensors over ranks with one all_reduce of a flat float64 buffer."""
        keys = sorted(stats)
        first = stats[keys[0]]
        flat = torch.cat([stats[k].reshape(-1).to(torch.float64) for k in keys])
        flat = flat.to(self._device(first))
        dist.all_reduce(flat)
        out, start = {}, 0
        for k in keys:
            n = stats[k].numel()
            out[k] = flat[start:start + n].reshape(stats[k].shape).to(stats[k].device)
            start += n
        return out

    def sum(self, value: float) -> float:
        """A scalar summed over ranks."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t)

    def same_seed(self, seed: int) -> int:
        """Rank 0's ``seed`` on every rank (below 2**53: exact through float64)."""
        t = torch.tensor([float(int(seed) % 2**53)], dtype=torch.float64, device=self._device())
        dist.broadcast(t, 0)
        return int(t)

    def sizes(self, value: int) -> list[int]:
        """Every rank's ``value`` (an integer such as its number of rows), in rank order."""
        values = torch.zeros(self.world_size, dtype=torch.float64, device=self._device())
        values[self.rank] = float(value)
        dist.all_reduce(values)
        return [int(v) for v in values.tolist()]

    def largest(self, value: int) -> int:
        """The rank holding the largest ``value`` (the lowest such rank on ties)."""
        values = self.sizes(value)
        return values.index(max(values))

    def broadcast(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """``tensor`` of rank ``src`` on every rank (same shape everywhere)."""
        buf = tensor.to(torch.float64).to(self._device(tensor)).contiguous()
        dist.broadcast(buf, src)
        return buf.to(device=tensor.device, dtype=tensor.dtype)
