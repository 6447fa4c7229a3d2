"""EM across processes: time per iteration with 1 process vs several (gloo, loopback).

    python bench/distributed.py [--n 400000] [--d 32] [--k 32] [--procs 2] [--device cuda]

The data are split into contiguous shards, one per process; every process
runs the same EM with one all_reduce of the statistics per iteration.  With
P processes each gets (CPU threads / P) threads, so on one machine this
measures the overhead of the reduction against the parallel speed-up; on a
multi-GPU host (NCCL) it measures the scaling.
"""

import argparse
import os
import socket
import sys
import time
import warnings
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))
from gmm import initial_params, make_data  # noqa: E402


def worker(rank, world, port, args, init, queue):
    from elbokit import GaussianMixture

    warnings.simplefilter("ignore")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(minutes=5))
    X = make_data(args.n, args.d, args.k)
    bounds = np.linspace(0, len(X), world + 1).astype(int)
    shard = torch.as_tensor(X[bounds[rank]:bounds[rank + 1]], device=args.device)
    kw = dict(covariance_type=args.covariance_type, tol=0, weights_init=init["weights"],
              means_init=init["means"], precisions_init=init["precisions"])
    GaussianMixture(args.k, max_iter=1, **kw).fit(shard)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    gm = GaussianMixture(args.k, max_iter=args.iters, **kw).fit(shard)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if rank == 0:
        queue.put((seconds / (args.iters + 1), gm.lower_bound_))
    if world > 1:
        dist.destroy_process_group()


def run(world, args, init):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(world, port, args, init, queue), nprocs=world,
                       start_method="spawn")
    return queue.get()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400_000)
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    init = initial_params(make_data(args.n, args.d, args.k), args.k, args.covariance_type)
    print(f"EM on N={args.n:,} D={args.d} K={args.k} {args.covariance_type}, {args.device}, "
          f"{os.cpu_count()} CPU threads")
    base = None
    for world in sorted({1, args.procs}):
        per, bound = run(world, args, init)
        base = base or per
        print(f"  {world} process(es): {per * 1e3:8.1f} ms per E-step  speed-up {base / per:4.2f}x  "
              f"mean log p(x) {bound:.6f}")


if __name__ == "__main__":
    main()
