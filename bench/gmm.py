"""Gaussian mixture EM: elbokit against scikit-learn and pomegranate, side by side.

Every system fits the same data from the same initial parameters for the same
number of EM iterations (tol=0); each fit runs in a fresh child process so
that its peak resident memory (RSS) is its own.  The final parameters of
every system are scored the same way (elbokit, float64), so the mean
log-likelihoods compare like with like.

    python bench/gmm.py                 # the full set of cases (several minutes)
    python bench/gmm.py --quick         # small sizes, a smoke run
    python bench/gmm.py --device cuda   # elbokit on the GPU (anchors stay on the CPU)

Cases: N=100000, D=32, K=32 for each covariance type; N=1000000, D=16,
K=16 diag; and a streamed fit of a 10^7 x 32 float32 .npy file from disk
(elbokit alone).  Each fit runs ``--repeats`` times (default 3) and the
fastest counts (the machine's neighbours make single runs vary by up to
30%).  Printed: seconds per iteration, the ratio of each anchor's
time to elbokit's, mean log-likelihood per sample, peak RSS, and for the
full-covariance case the achieved GFLOP/s next to torch.matmul's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

SYSTEMS = ("elbokit", "sklearn", "pomegranate")
POMEGRANATE_TYPES = {"full": "full", "diag": "diag", "spherical": "sphere"}


def make_data(n, d, k, seed=0, dtype=np.float32):
    """Clusters with random covariances; the same array for a given seed."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    scales = rng.uniform(0.5, 1.5, size=(k, d))
    z = rng.integers(0, k, n)
    X = rng.standard_normal(size=(n, d), dtype=np.float32) * scales[z] + centres[z]
    return X.astype(dtype, copy=False)


def rss_mb() -> float:
    """Peak resident memory of this process so far, MB (VmHWM: reset by exec,
    unlike getrusage's ru_maxrss, which a spawned child inherits)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def initial_params(X, k, covariance_type, seed=0):
    """Shared start: k-means++ on a sample, then one EM step (elbokit, float64)."""
    import elbokit

    sample = X[np.random.default_rng(seed).choice(len(X), min(len(X), 20000), replace=False)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = elbokit.GaussianMixture(k, covariance_type=covariance_type, init_params="k-means++",
                                     max_iter=1, random_state=seed, dtype="float64").fit(sample)
    return {"weights": gm.weights_, "means": gm.means_, "precisions": gm.precisions_}


def score_with_elbokit(X, covariance_type, weights, means, covariances):
    """Mean log p(x) of the given parameters on X, computed once for every system."""
    import torch

    from elbokit.models.gaussian_mixture import (
        GaussianMixtureModel, GaussianMixtureParams, precisions_cholesky_from_covariances)

    f64 = torch.float64
    cov = torch.as_tensor(np.asarray(covariances), dtype=f64)
    params = GaussianMixtureParams(torch.as_tensor(np.asarray(weights), dtype=f64),
                                   torch.as_tensor(np.asarray(means), dtype=f64), cov,
                                   precisions_cholesky_from_covariances(cov, covariance_type))
    model = GaussianMixtureModel(covariance_type, 0.0, f64)
    total = 0.0
    for start in range(0, len(X), 65536):
        Xb = torch.as_tensor(X[start:start + 65536]).to(f64)
        total += float(torch.logsumexp(model.log_joint(params, Xb), 1).sum())
    return total / len(X)


def fit_elbokit(X, ct, init, iters, device):
    import torch

    import elbokit

    Xt = torch.as_tensor(X, device=device)
    gm = elbokit.GaussianMixture(len(init["weights"]), covariance_type=ct, max_iter=iters, tol=0,
                                 weights_init=init["weights"], means_init=init["means"],
                                 precisions_init=init["precisions"])
    sync = torch.cuda.synchronize if Xt.is_cuda else (lambda: None)
    if Xt.is_cuda:  # warm-up: CUDA context and kernels
        elbokit.GaussianMixture(**{**gm.get_params(), "max_iter": 1}).fit(Xt)
    sync()
    start = time.perf_counter()
    gm.fit(Xt)
    sync()
    seconds = time.perf_counter() - start
    out = {k: (v.cpu().numpy() if hasattr(v, "cpu") else v)
           for k, v in (("weights", gm.weights_), ("means", gm.means_), ("covariances", gm.covariances_))}
    return seconds, out


def fit_sklearn(X, ct, init, iters, device):
    from sklearn.mixture import GaussianMixture

    X64 = X.astype(np.float64)  # scikit-learn's accurate path; its float32 path cancels (#30382)
    gm = GaussianMixture(len(init["weights"]), covariance_type=ct, max_iter=iters, tol=0,
                         weights_init=init["weights"], means_init=init["means"],
                         precisions_init=init["precisions"])
    start = time.perf_counter()
    gm.fit(X64)
    seconds = time.perf_counter() - start
    return seconds, {"weights": gm.weights_, "means": gm.means_, "covariances": gm.covariances_}


def fit_pomegranate(X, ct, init, iters, device):
    import torch
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    pt = POMEGRANATE_TYPES[ct]
    prec = np.asarray(init["precisions"])
    d = np.asarray(init["means"]).shape[1]
    covs = {"full": lambda: np.linalg.inv(prec), "diag": lambda: 1 / prec,
            "sphere": lambda: np.repeat(1 / prec[:, None], d, 1)}[pt]()
    dists = [Normal(means=torch.as_tensor(m, dtype=torch.float32),
                    covs=torch.as_tensor(c, dtype=torch.float32),
                    covariance_type=pt)
             for m, c in zip(init["means"], covs)]
    model = GeneralMixtureModel(dists, priors=torch.as_tensor(init["weights"], dtype=torch.float32),
                                max_iter=iters, tol=0.0)
    Xt = torch.as_tensor(X)
    start = time.perf_counter()
    model.fit(Xt)
    seconds = time.perf_counter() - start
    means = np.stack([d.means.detach().numpy() for d in model.distributions]).astype(np.float64)
    covs = np.stack([d.covs.detach().numpy() for d in model.distributions]).astype(np.float64)
    return seconds, {"weights": model.priors.detach().numpy().astype(np.float64), "means": means,
                     "covariances": covs}


FITTERS = {"elbokit": fit_elbokit, "sklearn": fit_sklearn, "pomegranate": fit_pomegranate}


def child(system, case, init_path, iters, device, repeats, queue):
    """Run one fit in this (fresh) process and report time, score and peak RSS."""
    warnings.simplefilter("ignore")  # ConvergenceWarning at tol=0 is expected
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        n, d, k, ct = case
        X = make_data(n, d, k)
        init = dict(np.load(init_path))
        FITTERS[system](X[:5000], ct, init, 1, device)  # warm-up: first-call costs
        base = rss_mb()
        times = []
        for _ in range(repeats):  # the fastest of a few: this machine's neighbours are noisy
            seconds, params = FITTERS[system](X, ct, init, iters, device)
            times.append(seconds)
        seconds = min(times)
        peak = rss_mb()
        score = score_with_elbokit(X, ct, **params)
        queue.put({"seconds": seconds, "score": score, "rss": peak, "base": base})
    except Exception as err:  # reported in the table, never silent
        queue.put({"error": f"{type(err).__name__}: {err}"})


def run_child(*args, timeout=3600):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(*args, queue))
    proc.start()
    try:
        result = queue.get(timeout=timeout)
    except Exception:
        result = {"error": "timed out"}
    proc.join()
    return result


def matmul_gflops(device="cpu", n=2048, reps=5):
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def full_flops_per_iteration(n, d, k):
    """E-step GEMM (n x D x KD) plus the dense M-step scatter (K x D x n x D)."""
    return 2 * n * k * d * d + 2 * n * k * d * d


def bench_case(case, iters, device, systems, repeats=3):
    n, d, k, ct = case
    X = make_data(n, d, k)
    init = initial_params(X, k, ct)
    del X
    with tempfile.TemporaryDirectory() as tmp:
        init_path = Path(tmp) / "init.npz"
        np.savez(init_path, **init)
        results = {}
        for system in systems:
            if system == "pomegranate" and ct not in POMEGRANATE_TYPES:
                results[system] = {"error": f"pomegranate has no {ct!r} covariance"}
                continue
            results[system] = run_child(system, case, str(init_path), iters,
                                        device if system == "elbokit" else "cpu", repeats)
    return results


def print_case(case, iters, results, device, matmul):
    n, d, k, ct = case
    print(f"\nN={n:,} D={d} K={k} covariance_type={ct!r}, {iters} EM iterations from the same start"
          " (fastest of the repeats)")
    ours = results.get("elbokit", {})
    print(f"  {'system':<12} {'s/iter':>9} {'anchor/elbokit':>15} {'mean log p(x)':>14} "
          f"{'peak RSS MB':>12} {'(data+libs MB)':>15}")
    for system, r in results.items():
        if "error" in r:
            print(f"  {system:<12} {r['error']}")
            continue
        per = r["seconds"] / iters
        ratio = "" if system == "elbokit" or "seconds" not in ours else f"{r['seconds'] / ours['seconds']:.1f}x"
        label = system + (f" ({device})" if system == "elbokit" and device != "cpu" else "")
        print(f"  {label:<12} {per:>9.4f} {ratio:>15} {r['score']:>14.5f} {r['rss']:>12.0f} "
              f"{r['base']:>15.0f}")
    if ct == "full" and "seconds" in ours:
        achieved = full_flops_per_iteration(n, d, k) * iters / ours["seconds"] / 1e9
        print(f"  elbokit full-covariance iteration: {achieved:.0f} GFLOP/s (dense-equivalent) achieved; "
              f"torch.matmul 2048^3 on this {device}: {matmul:.0f} GFLOP/s "
              f"(ratio {matmul / achieved:.1f}x)")
    if "score" in ours:
        for system, r in results.items():
            if system != "elbokit" and "score" in r:
                print(f"  |log p(x) elbokit - {system}| per sample: {abs(ours['score'] - r['score']):.2e}")


def stream_child(path, n_iter, k, queue):
    try:
        import torch

        import elbokit

        torch.set_num_threads(os.cpu_count() or 1)
        base = rss_mb()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = elbokit.GaussianMixture(k, covariance_type="diag", max_iter=n_iter, tol=0,
                                         random_state=0, batch_size=65536).fit(path)
        seconds = time.perf_counter() - start
        queue.put({"seconds": seconds, "rss": rss_mb(), "base": base, "bound": gm.lower_bound_,
                   "n_iter": gm.n_iter_})
    except Exception as err:
        queue.put({"error": f"{type(err).__name__}: {err}"})


def bench_stream(rows, d, k, n_iter, workdir):
    path = Path(workdir) / f"stream_{rows}x{d}.npy"
    if not path.exists():  # written chunk by chunk: this process stays small too
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (rows, d)})
            for start in range(0, rows, 1_000_000):
                make_data(min(rows, start + 1_000_000) - start, d, k, seed=start).tofile(f)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=stream_child, args=(str(path), n_iter, k, queue))
    proc.start()
    r = queue.get()
    proc.join()
    size_gb = path.stat().st_size / 2**30
    print(f"\nStreaming {rows:,} x {d} float32 from {path.name} ({size_gb:.2f} GiB on disk), "
          f"K={k} diag, elbokit alone, init + {n_iter} EM passes")
    if "error" in r:
        print(f"  error: {r['error']}")
        return
    print(f"  {r['seconds']:.1f} s in all ({r['seconds'] / (n_iter + 2):.1f} s per pass over the file), "
          f"mean log p(x) {r['bound']:.4f}, peak RSS {r['rss']:.0f} MB "
          f"(of which imports {r['base']:.0f} MB): {'under' if r['rss'] < 1024 else 'OVER'} 1 GiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--device", default="cpu", help="device for elbokit (cpu or cuda)")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits per system and case; the fastest is reported")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--types", default="full,tied,diag,spherical",
                        help="covariance types of the 100k x 32 x 32 cases (diag also runs 1M x 16 x 16)")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--stream-rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    import torch

    print(f"elbokit GMM benchmark: torch {torch.__version__}, {os.cpu_count()} CPU threads, "
          f"elbokit on {args.device}")
    matmul = matmul_gflops(args.device)
    print(f"torch.matmul float32 2048^3: {matmul:.0f} GFLOP/s")
    if args.quick:
        cases = [(20_000, 16, 8, ct) for ct in ("full", "tied", "diag", "spherical")]
    else:
        types = [t for t in args.types.split(",") if t]
        cases = [(100_000, 32, 32, ct) for ct in ("full", "tied", "diag", "spherical") if ct in types]
        if "diag" in types:
            cases.append((1_000_000, 16, 16, "diag"))
    for case in cases:
        print_case(case, args.iters, bench_case(case, args.iters, args.device, systems, args.repeats),
                   args.device, matmul)
        sys.stdout.flush()
    if not args.skip_stream:
        rows = 200_000 if args.quick else args.stream_rows
        bench_stream(rows, 32, 16, 3, args.workdir)


if __name__ == "__main__":
    main()
