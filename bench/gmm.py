"""Gaussian mixture EM: elbokit against scikit-learn and pomegranate, side by side.

Four sections (``--sections``, all by default):

* ``same-start``: every system fits the same float32 data from the same
  initial parameters for the same number of EM iterations (tol=0): seconds
  per iteration.  scikit-learn runs on the float32 array (its fast path) and
  on a float64 copy; the faster is the anchor.
* ``end-to-end``: what a user waits for: elbokit's and scikit-learn's
  defaults (k-means initialisation included) on the same float32 data, to
  convergence; elbokit's initialisation time is also given in EM iterations.
* ``robustness``: every data set bundled with scikit-learn (iris, wine,
  breast_cancer, digits, diabetes), raw and standardised, K = 2..20, every
  covariance type: elbokit's float32 default against float64 from the same
  start, and scikit-learn: fits that fail, bounds that fall, mean log p(x)
  gaps.
* ``stream``: a streamed fit of a 10^7 x 32 float32 .npy file (elbokit alone).

Each timed fit runs in a fresh child process, so that its peak resident
memory (RSS) is its own, ``--repeats`` times (default 3); the fastest counts
(neighbours on the machine make single runs vary).  Final parameters of every
system are scored the same way (elbokit, float64).  The machine's load
average is printed with each section: other work on the machine slows every
system, the ratios less than the times.

    python bench/gmm.py                 # everything (about 15 minutes on 2 cores)
    python bench/gmm.py --quick         # small sizes, a smoke run
    python bench/gmm.py --sections end-to-end,same-start --types full,diag
    python bench/gmm.py --device cuda   # elbokit on the GPU (anchors stay on the CPU)

Cases: N=100000, D=32, K=32 for each covariance type; N=1000000, D=16,
K=16 diag.  For the full-covariance case the achieved GFLOP/s is printed
next to torch.matmul's.
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

SYSTEMS = ("elbokit", "sklearn", "sklearn64", "pomegranate")
SECTIONS = ("same-start", "end-to-end", "robustness", "stream")
BUNDLED = ("iris", "wine", "breast_cancer", "digits", "diabetes")
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


def fit_sklearn(X, ct, init, iters, device, dtype=np.float32):
    """scikit-learn on the float32 array as given (``dtype=np.float32``), or on a float64 copy."""
    from sklearn.mixture import GaussianMixture

    Xs = X.astype(dtype, copy=False)
    gm = GaussianMixture(len(init["weights"]), covariance_type=ct, max_iter=iters, tol=0,
                         weights_init=init["weights"], means_init=init["means"],
                         precisions_init=init["precisions"])
    start = time.perf_counter()
    gm.fit(Xs)
    seconds = time.perf_counter() - start
    return seconds, {"weights": gm.weights_, "means": gm.means_, "covariances": gm.covariances_}


def fit_sklearn64(X, ct, init, iters, device):
    return fit_sklearn(X, ct, init, iters, device, dtype=np.float64)


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


FITTERS = {"elbokit": fit_elbokit, "sklearn": fit_sklearn, "sklearn64": fit_sklearn64,
           "pomegranate": fit_pomegranate}


def child(system, case, init_path, iters, device, repeats, queue):
    """Run one fit in this (fresh) process and report time, score and peak RSS."""
    warnings.simplefilter("ignore")  # ConvergenceWarning at tol=0 is expected
    try:
        import torch

        torch.set_num_threads(_threads())
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
        label = {"sklearn": "sklearn f32", "sklearn64": "sklearn f64"}.get(system, system)
        label += f" ({device})" if system == "elbokit" and device != "cpu" else ""
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


def print_anchor_ratio(results, iters):
    """The same-start ratio against scikit-learn's faster path (float32 or float64 input)."""
    ours = results.get("elbokit", {})
    anchors = {s: r for s, r in results.items() if s in ("sklearn", "sklearn64") and "seconds" in r}
    if "seconds" in ours and anchors:
        best = min(anchors, key=lambda s: anchors[s]["seconds"])
        print(f"  same-start per-iteration ratio against scikit-learn's faster path "
              f"({'float32' if best == 'sklearn' else 'float64'} input): "
              f"{anchors[best]['seconds'] / ours['seconds']:.1f}x")


# ------------------------------------------------------------------ end to end
def e2e_child(system, case, repeats, queue):
    """Defaults, to convergence, initialisation included, in this (fresh) process."""
    warnings.simplefilter("ignore")
    try:
        import torch

        torch.set_num_threads(_threads())
        n, d, k, ct = case
        X = make_data(n, d, k)
        if system == "elbokit":
            import elbokit
            from elbokit.mixture import GaussianMixture as Estimator

            init_seconds = []
            initialize = Estimator._initialize

            def timed(self, *args, **kwargs):
                start = time.perf_counter()
                out = initialize(self, *args, **kwargs)
                init_seconds.append(time.perf_counter() - start)
                return out

            Estimator._initialize = timed

            def fit(data):
                return elbokit.GaussianMixture(k, covariance_type=ct, random_state=0).fit(data)
        else:
            from sklearn.mixture import GaussianMixture

            def fit(data):
                return GaussianMixture(k, covariance_type=ct, random_state=0).fit(data)
        fit(X[:5000])  # warm-up: first-call costs
        best = None
        for _ in range(repeats):
            init_seconds = [] if system == "elbokit" else None
            start = time.perf_counter()
            gm = fit(X)
            seconds = time.perf_counter() - start
            if best is None or seconds < best["seconds"]:
                best = {"seconds": seconds, "n_iter": int(gm.n_iter_), "converged": bool(gm.converged_),
                        "init": sum(init_seconds) if init_seconds else None,
                        "params": {"weights": gm.weights_, "means": gm.means_,
                                   "covariances": gm.covariances_}}
        best["score"] = score_with_elbokit(X, ct, **best.pop("params"))
        queue.put(best)
    except Exception as err:  # reported in the table, never silent
        queue.put({"error": f"{type(err).__name__}: {err}"})


def run_e2e(case, repeats):
    ctx = mp.get_context("spawn")
    results = {}
    for system in ("elbokit", "sklearn"):
        queue = ctx.Queue()
        proc = ctx.Process(target=e2e_child, args=(system, case, repeats, queue))
        proc.start()
        results[system] = queue.get()
        proc.join()
    return results


def print_e2e(case, results):
    n, d, k, ct = case
    print(f"\nN={n:,} D={d} K={k} covariance_type={ct!r}: defaults, float32 data, to convergence, "
          "initialisation included (fastest of the repeats)")
    print(f"  {'system':<12} {'seconds':>9} {'iterations':>11} {'converged':>10} {'mean log p(x)':>14}")
    for system, r in results.items():
        if "error" in r:
            print(f"  {system:<12} {r['error']}")
            continue
        print(f"  {system:<12} {r['seconds']:>9.3f} {r['n_iter']:>11d} {str(r['converged']):>10} "
              f"{r['score']:>14.5f}")
    ours, sk = results.get("elbokit", {}), results.get("sklearn", {})
    if "seconds" in ours and "seconds" in sk:
        print(f"  end-to-end: scikit-learn / elbokit = {sk['seconds'] / ours['seconds']:.1f}x")
    if ours.get("init") is not None:
        per_iter = (ours["seconds"] - ours["init"]) / (ours["n_iter"] + 1)
        print(f"  elbokit initialisation {ours['init']:.3f} s = {ours['init'] / per_iter:.1f} EM "
              f"iterations of this fit ({per_iter:.4f} s each, the final E-step counted as one)")


# ------------------------------------------------------------------ robustness
def _bundled(name):
    from sklearn import datasets

    return getattr(datasets, f"load_{name}")().data.astype(np.float64)


def _falls(bounds) -> set:
    """Steps where the bound fell by more than float32 rounding, 4 eps32 (1 + |bound|)."""
    b = np.asarray(bounds, dtype=np.float64)
    return set(np.flatnonzero(np.diff(b) < -4 * np.finfo(np.float32).eps * (1 + np.abs(b[:-1]))).tolist())


def robustness(names, ks, types):
    """elbokit float32 (default) and float64 from the same start, and scikit-learn (defaults),
    on every bundled data set, raw and standardised, for every K and covariance type."""
    import torch
    from sklearn.mixture import GaussianMixture as SkGaussianMixture
    from sklearn.preprocessing import StandardScaler

    import elbokit
    from elbokit.models.gaussian_mixture import FLOAT32_TOLERANCE, float32_error

    def attempt(make, X):
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = make().fit(X)
            return gm, time.perf_counter() - start
        except Exception as err:
            return f"{type(err).__name__}", time.perf_counter() - start

    def exact(gm, X, ct, k):  # the fitted parameters' mean log p(x), in float64
        twin = elbokit.GaussianMixture(k, covariance_type=ct, dtype="float64")
        twin.__dict__.update({a: v for a, v in vars(gm).items() if a.endswith("_")})
        return twin.score(X)

    print(f"\nRobustness: {', '.join(names)}, raw and standardised, K = {ks[0]}..{ks[-1]}, "
          f"{', '.join(types)}; elbokit float32 (default) vs float64 from the same start "
          "(random_state=0), and scikit-learn's defaults")
    print("  fail: fits that raised; falls: fits whose bound fell by more than float32 rounding "
          "(for float32: at a step where float64's did not); gap: |mean log p(x) float32 - float64|,\n"
          "  the optimum evaluated in float64; reported: |float32 lower_bound_ - exact|; f64 parts: "
          "fits whose final parameters have components computed in float64;\n"
          "  sk - f64: scikit-learn's mean log p(x) minus elbokit float64's (another start: "
          "informative only)")
    header = (f"  {'data':<15} {'type':<10} {'fits':>4} {'fail 32/64/sk':>14} {'falls 32/64/sk':>15} "
              f"{'max gap':>9} {'gaps>1e-3':>9} {'max reported':>12} {'f64 parts':>9} "
              f"{'sk - f64 (mean)':>15} {'seconds 32/64/sk':>17}")
    print(header)
    totals = dict(fits=0, fail32=0, fail64=0, failsk=0, falls32=0, falls64=0, fallssk=0, big=0,
                  gap=0.0, rep=0.0)
    for name in names:
        raw = _bundled(name)
        for scaled in (False, True):
            X = StandardScaler().fit_transform(raw) if scaled else raw
            for ct in types:
                row = dict(fits=0, fail32=0, fail64=0, failsk=0, falls32=0, falls64=0, fallssk=0,
                           big=0, gap=0.0, rep=0.0, parts=0, sk=[], t32=0.0, t64=0.0, tsk=0.0)
                for k in ks:
                    a, ta = attempt(lambda: elbokit.GaussianMixture(k, covariance_type=ct, random_state=0), X)
                    b, tb = attempt(lambda: elbokit.GaussianMixture(k, covariance_type=ct, random_state=0,
                                                                    dtype="float64"), X)
                    c, tc = attempt(lambda: SkGaussianMixture(k, covariance_type=ct, random_state=0), X)
                    row["fits"] += 1
                    row["t32"] += ta
                    row["t64"] += tb
                    row["tsk"] += tc
                    row["fail32"] += isinstance(a, str)
                    row["fail64"] += isinstance(b, str)
                    row["failsk"] += isinstance(c, str)
                    if not isinstance(b, str):
                        row["falls64"] += bool(_falls(b.lower_bounds_))
                    if not isinstance(c, str):
                        row["fallssk"] += bool(_falls(c.lower_bounds_))
                    if isinstance(a, str) or isinstance(b, str):
                        continue
                    row["falls32"] += bool(_falls(a.lower_bounds_) - _falls(b.lower_bounds_))
                    exact_a, exact_b = exact(a, X, ct, k), b.score(X)
                    gap = abs(exact_a - exact_b)
                    row["gap"] = max(row["gap"], gap)
                    row["big"] += gap > 1e-3
                    row["rep"] = max(row["rep"], abs(a.lower_bound_ - exact_a))
                    params = a._params(torch.device("cpu"))
                    row["parts"] += bool((float32_error(params, ct) > FLOAT32_TOLERANCE).any())
                    if not isinstance(c, str):
                        row["sk"].append(c.score(X) - exact_b)
                label = f"{name}{' std' if scaled else ''}"
                sk = f"{np.mean(row['sk']):+.4f}" if row["sk"] else "-"
                print(f"  {label:<15} {ct:<10} {row['fits']:>4} "
                      f"{row['fail32']:>5}/{row['fail64']}/{row['failsk']:<6} "
                      f"{row['falls32']:>6}/{row['falls64']}/{row['fallssk']:<6} {row['gap']:>9.1e} "
                      f"{row['big']:>9} {row['rep']:>12.1e} {row['parts']:>9} {sk:>15} "
                      f"{row['t32']:>6.1f}/{row['t64']:.1f}/{row['tsk']:.1f}", flush=True)
                for key in totals:
                    totals[key] = (max(totals[key], row[key]) if key in ("gap", "rep")
                                   else totals[key] + row[key])
    print(f"  total: {totals['fits']} fits per system; failures float32 {totals['fail32']}, float64 "
          f"{totals['fail64']}, scikit-learn {totals['failsk']}; float32 falls where float64 has none "
          f"{totals['falls32']} (float64 {totals['falls64']}, scikit-learn {totals['fallssk']} fits "
          f"with falls); gaps > 1e-3: {totals['big']}, largest {totals['gap']:.1e}; largest "
          f"reported-bound error {totals['rep']:.1e}")


def _threads() -> int:
    """Threads for torch in this process: BENCH_THREADS (set by --threads), else every CPU."""
    return int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1))


def load_line() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} CPUs"


def stream_child(path, n_iter, k, queue):
    try:
        import torch

        import elbokit

        torch.set_num_threads(_threads())
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
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--types", default="full,tied,diag,spherical",
                        help="covariance types of the 100k x 32 x 32 cases (diag also runs 1M x 16 x 16)")
    parser.add_argument("--datasets", default=",".join(BUNDLED), help="robustness: bundled data sets")
    parser.add_argument("--ks", default="2..20", help="robustness: range of K")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--stream-rows", type=int, default=10_000_000)
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every system (torch, and numpy's BLAS through the usual "
                             "environment variables); default: every CPU. On a machine shared with "
                             "other work, 1 keeps oversubscribed threads from waiting on each other")
    args = parser.parse_args()
    if args.threads:  # children are spawned: they read these before importing numpy or torch
        for var in ("BENCH_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
        from threadpoolctl import threadpool_limits  # this process's numpy (robustness section)

        threadpool_limits(args.threads)
    systems = [s for s in args.systems.split(",") if s]
    sections = [s for s in args.sections.split(",") if s]
    import torch

    torch.set_num_threads(_threads())
    print(f"elbokit GMM benchmark: torch {torch.__version__}, {_threads()} of {os.cpu_count()} CPU "
          f"threads per system, elbokit on {args.device}; {load_line()}")
    matmul = matmul_gflops(args.device)
    print(f"torch.matmul float32 2048^3: {matmul:.0f} GFLOP/s")
    types = [t for t in args.types.split(",") if t]
    if args.quick:
        cases = [(20_000, 16, 8, ct) for ct in types]
    else:
        cases = [(100_000, 32, 32, ct) for ct in ("full", "tied", "diag", "spherical") if ct in types]
        if "diag" in types:
            cases.append((1_000_000, 16, 16, "diag"))
    if "same-start" in sections:
        print(f"\n== same start, per iteration ({load_line()})")
        for case in cases:
            results = bench_case(case, args.iters, args.device, systems, args.repeats)
            print_case(case, args.iters, results, args.device, matmul)
            print_anchor_ratio(results, args.iters)
            sys.stdout.flush()
    if "end-to-end" in sections:
        print(f"\n== end to end ({load_line()})")
        e2e = [c for c in cases if c[3] in ("full", "diag")] if not args.quick else cases[:2]
        for case in e2e:
            print_e2e(case, run_e2e(case, args.repeats))
            sys.stdout.flush()
    if "robustness" in sections:
        print(f"\n== robustness ({load_line()})")
        lo, _, hi = args.ks.partition("..")
        ks = list(range(int(lo), int(hi or lo) + 1))
        names = [n for n in args.datasets.split(",") if n]
        if args.quick:
            names, ks = names[:2], ks[:3]
        robustness(names, ks, types)
    if "stream" in sections and not args.skip_stream:
        print(f"\n== stream ({load_line()})")
        rows = 200_000 if args.quick else args.stream_rows
        bench_stream(rows, 32, 16, 3, args.workdir)
    print(f"\n(finished: {load_line()})")


if __name__ == "__main__":
    main()
