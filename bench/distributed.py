"""Every engine across processes: time per iteration with 1 process vs several (gloo, loopback).

    python bench/distributed.py                     # GMM, LDA (batch, online, Gibbs), VAE
    python bench/distributed.py --models gmm --n 400000 --procs 2 --device cuda

GMM: EM on N x D data with K full-covariance components; LDA: the KJV
gospels shipped with elbokit (3,779 verses, English and archaic stop words
removed), K=20, batch VI iterations, online VI passes (global mini-batch 256)
and Gibbs sweeps; VAE: the 8x8 digits (1,797 images), 64-128-8 MLP,
continuous Bernoulli, global batch 64, seconds per epoch.

The data are split into contiguous shards, one per process.  With P
processes each gets (CPU threads / P) threads, so on one machine this
measures the overhead of the reductions against the parallel speed-up; on a
multi-GPU host (NCCL) it measures the scaling.  Each engine fits the same
model in every configuration (for GMM, batch and online LDA and the VAE the
same numbers up to rounding, which the printed bound shows).
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


def _shard(X, rank, world):
    bounds = np.linspace(0, X.shape[0], world + 1).astype(int)
    return X[bounds[rank]:bounds[rank + 1]]


def _timed(fit, device):
    """Seconds of ``fit()`` and its result (CUDA synchronised)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fit()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def gmm_job(rank, world, args, data):
    from elbokit import GaussianMixture

    X, init = data
    shard = torch.as_tensor(_shard(X, rank, world), device=args.device)
    kw = dict(covariance_type="full", tol=0, weights_init=init["weights"],
              means_init=init["means"], precisions_init=init["precisions"])
    GaussianMixture(args.k, max_iter=1, **kw).fit(shard)  # warm-up
    seconds, gm = _timed(lambda: GaussianMixture(args.k, max_iter=args.iters, **kw).fit(shard),
                         args.device)
    # max_iter M-steps and max_iter + 1 E-steps (the last scores the result)
    return {"gmm (ms per EM iteration)": (seconds / (args.iters + 1) * 1e3, gm.lower_bound_)}


def lda_job(rank, world, args, data):
    from elbokit import LDA

    X = _shard(data, rank, world)
    out = {}
    for method, iters, unit in (("batch", 10, "iteration"), ("online", 5, "pass"),
                                ("gibbs", 20, "sweep")):
        kw = dict(method=method, random_state=0, tol=0, device=args.device)
        LDA(20, max_iter=2, **kw).fit(X)  # warm-up
        seconds, lda = _timed(lambda: LDA(20, max_iter=iters, **kw).fit(X), args.device)
        out[f"lda {method} (ms per {unit})"] = (seconds / iters * 1e3, lda.lower_bounds_[-1])
    return out


def vae_job(rank, world, args, data):
    from elbokit import VAE

    X = _shard(data, rank, world)
    kw = dict(hidden_sizes=(128,), likelihood="continuous_bernoulli", batch_size=64,
              random_state=0, device=args.device, validation_fraction=0.0)
    VAE(8, epochs=1, **kw).fit(X)  # warm-up
    epochs = 5
    seconds, vae = _timed(lambda: VAE(8, epochs=epochs, **kw).fit(X), args.device)
    return {"vae (ms per epoch)": (seconds / epochs * 1e3, vae.lower_bounds_[-1])}


JOBS = {"gmm": gmm_job, "lda": lda_job, "vae": vae_job}


def load(model, args):
    if model == "gmm":
        X = make_data(args.n, args.d, args.k)
        return X, initial_params(X, args.k, "full")
    if model == "lda":
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        from elbokit.data.text import Corpus
        from elbokit.datasets import ARCHAIC_STOP_WORDS, kjv_gospels

        stop = sorted(ENGLISH_STOP_WORDS | set(ARCHAIC_STOP_WORDS))
        return Corpus(kjv_gospels(), stop_words=stop, min_df=3).counts
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float32)


def worker(rank, world, port, args, model, data, queue):
    warnings.simplefilter("ignore")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        backend = "nccl" if args.device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(minutes=5))
    result = JOBS[model](rank, world, args, data)
    if rank == 0:
        queue.put(result)
    if world > 1:
        dist.destroy_process_group()


def run(world, args, model, data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(world, port, args, model, data, queue), nprocs=world,
                       start_method="spawn")
    return queue.get()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="gmm,lda,vae")
    parser.add_argument("--n", type=int, default=400_000, help="GMM rows")
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--iters", type=int, default=10, help="GMM EM iterations")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"elbokit across processes: torch {torch.__version__}, {os.cpu_count()} CPU threads, "
          f"{args.device}, 1 vs {args.procs} processes (threads split between them)")
    print(f"GMM: N={args.n:,} D={args.d} K={args.k} full")
    for model in [m for m in args.models.split(",") if m]:
        data = load(model, args)
        results = {world: run(world, args, model, data) for world in sorted({1, args.procs})}
        for name in results[1]:
            base = results[1][name][0]
            for world, res in results.items():
                ms, bound = res[name]
                print(f"  {name:34s} {world} process(es): {ms:9.1f}  speed-up {base / ms:4.2f}x  "
                      f"bound {bound:.6f}", flush=True)


if __name__ == "__main__":
    main()
