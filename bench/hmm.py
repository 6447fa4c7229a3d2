"""Hidden Markov models (Baum-Welch): elbokit against hmmlearn and pomegranate, side by side.

    python bench/hmm.py            # agreement, speed, real data (a few minutes on 2 cores)
    python bench/hmm.py --quick    # small sizes, a smoke run
    python bench/hmm.py --skip-kjv # without the KJV character model (the longest part)

1. Agreement, float64: every system starts from the same parameters and runs the same
   number of iterations (no tolerance stop); printed are the largest relative
   difference of the log-likelihood and the largest differences of the parameters.
   hmmlearn: GaussianHMM (diag, full; ``covars_prior=0`` so that its M-step is the
   maximum-likelihood one), CategoricalHMM.  pomegranate: DenseHMM models an end
   state (learned end probabilities, which enter the transition normalisation); it is
   run with the end probabilities fixed at 1 and left out of the normalisation (the
   class ``NoEndDenseHMM`` below, three lines) so that it fits the same model.
2. Speed: 1,000 sequences x 200 steps, 8 states, 5-D diagonal Gaussians: seconds
   per Baum-Welch iteration from the same start (fastest of ``--repeats`` fits of
   ``--iters`` iterations, the systems interleaved; elbokit's final E-step that
   scores the returned parameters is counted against it), each system in its
   fastest mode (elbokit and pomegranate float32; hmmlearn's faster of its "log"
   and "scaling" implementations, float64 only); and the time a user waits for
   with each library's defaults (initialisation included, each its own stopping rule).
3. Real data: Fashion-MNIST images read row by row (sequences of 28 steps, each row
   a 28-D diagonal Gaussian emission, 8 states), and the KJV Bible character by
   character (verses as sequences, 27 symbols, 2 states): the vowel/consonant split.

Other helpers share this machine's cores: ``uptime``'s load is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import elbokit  # noqa: E402

warnings.simplefilter("ignore")
ALPHABET = "abcdefghijklmnopqrstuvwxyz "


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


# ----------------------------------------------------------------------------- data
def hmm_data(n_seq, T, K, D, seed=0):
    """Sequences from a random K-state Gaussian HMM (sticky transitions)."""
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(K), K) * 0.3 + np.eye(K) * 0.7
    means = rng.normal(scale=2.0, size=(K, D))
    scales = rng.uniform(0.5, 1.5, size=(K, D))
    z = np.empty((n_seq, T), dtype=np.int64)
    z[:, 0] = rng.integers(0, K, n_seq)
    cdf = np.cumsum(A, 1)
    for t in range(1, T):
        z[:, t] = (rng.random(n_seq)[:, None] > cdf[z[:, t - 1]]).sum(1)
    X = means[z] + scales[z] * rng.standard_normal((n_seq, T, D))
    return X.reshape(-1, D), np.full(n_seq, T)


def fashion_rows(n_images, seed=0):
    """Fashion-MNIST images as sequences of their 28 rows, dequantised: (grey level + U(0, 1))
    / 256, so that no state's pixel has zero variance (maximum likelihood needs it)."""
    from elbokit.data.idx import load_idx_images

    images = load_idx_images("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    X = images[:n_images].reshape(n_images * 28, 28).astype(np.float64)
    X = X * 255.0 if X.max() <= 1 else X
    X = (X + np.random.default_rng(seed).random(X.shape)) / 256.0
    return X, np.full(n_images, 28)


def kjv_characters(max_verses=None):
    """The KJV, one sequence per verse: lower-case letters and single spaces as codes 0..26."""
    text = subprocess.run(["bible", "-f", "Ge1:1-Re22:21"], capture_output=True, text=True,
                          check=True).stdout
    codes, lengths = [], []
    lookup = np.full(256, -1, dtype=np.int64)
    for i, c in enumerate(ALPHABET):
        lookup[ord(c)] = i
    for line in text.splitlines()[:max_verses]:
        verse = line.split(" ", 1)[1] if " " in line else ""
        verse = re.sub(r" +", " ", re.sub(r"[^a-z ]", "", verse.lower())).strip()
        if len(verse) < 2:
            continue
        codes.append(lookup[np.frombuffer(verse.encode(), dtype=np.uint8)])
        lengths.append(len(verse))
    return np.concatenate(codes)[:, None], np.array(lengths)


# ----------------------------------------------------------------------------- anchors
def pomegranate_classes():
    from pomegranate._utils import _update_parameter
    from pomegranate.hmm import DenseHMM

    class NoEndDenseHMM(DenseHMM):
        """DenseHMM with its end probabilities fixed at 1 (no end state): the HMM of
        hmmlearn and elbokit.  Only the normalisation of the transitions changes."""

        def from_summaries(self):
            for node in self.distributions:
                node.from_summaries()
            if self.frozen:
                return
            starts = torch.log(self._xw_starts_sum / self._xw_starts_sum.sum())
            edges = torch.log(self._xw_sum / self._xw_sum.sum(1, keepdims=True))
            _update_parameter(self.starts, starts, inertia=self.inertia)
            _update_parameter(self.edges, edges, inertia=self.inertia)
            self._reset_cache()

    return NoEndDenseHMM


def pomegranate_model(start, kind, n_iter, dtype):
    from pomegranate.distributions import Categorical, Normal

    NoEnd = pomegranate_classes()
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    K = len(start["startprob_"])
    if kind == "categorical":
        dists = [Categorical(probs=t(start["emissionprob_"][k:k + 1])) for k in range(K)]
    else:
        cov = start["covars_"]
        dists = [Normal(means=t(start["means_"][k]), covs=t(cov[k]), covariance_type=kind)
                 for k in range(K)]
    model = NoEnd(dists, edges=t(start["transmat_"]), starts=t(start["startprob_"]),
                  ends=t(np.ones(K)), max_iter=n_iter, tol=0.0, inertia=0.0)
    model.tol = -np.inf  # no early stop: the same number of iterations as the others
    return model.to(dtype)  # (its dtype is its first parameter's, a float32 placeholder)


def pomegranate_input(X, lengths, dtype):
    """Equal lengths: one (n, T, d) tensor; otherwise a list of them, one per length (how
    pomegranate batches variable lengths); symbols as int64."""
    if np.issubdtype(np.asarray(X).dtype, np.integer):
        dtype = torch.int64
    if np.all(lengths == lengths[0]):
        return torch.as_tensor(X.reshape(len(lengths), lengths[0], -1), dtype=dtype)
    seqs = np.split(X, np.cumsum(lengths)[:-1])
    groups = {}
    for s in seqs:
        groups.setdefault(len(s), []).append(s)
    return [torch.as_tensor(np.stack(g), dtype=dtype) for _, g in sorted(groups.items())]


def pomegranate_params(model, kind):
    starts = model.starts.exp().double().numpy()
    transmat = model.edges.exp().double().numpy()
    if kind == "categorical":
        return {"startprob_": starts, "transmat_": transmat,
                "emissionprob_": np.stack([d.probs[0].double().numpy() for d in model.distributions])}
    return {"startprob_": starts, "transmat_": transmat,
            "means_": np.stack([d.means.double().numpy() for d in model.distributions])}


def hmmlearn_model(kind, K, n_iter, implementation="log"):
    from hmmlearn import hmm

    if kind == "categorical":
        m = hmm.CategoricalHMM(K, n_iter=n_iter, tol=-np.inf, init_params="",
                               implementation=implementation)
    else:
        m = hmm.GaussianHMM(K, kind, n_iter=n_iter, tol=-np.inf, init_params="", covars_prior=0.0,
                            min_covar=0.0, implementation=implementation)
    m.monitor_ = type(m.monitor_)(-np.inf, n_iter, False)
    return m


def ours_model(kind, K, n_iter, dtype):
    if kind == "categorical":
        return elbokit.CategoricalHMM(K, n_iter=n_iter, tol=0, init_params="", dtype=dtype)
    return elbokit.GaussianHMM(K, kind, min_covar=0.0, n_iter=n_iter, tol=0, init_params="",
                               dtype=dtype)


def set_start(model, start):
    for name, value in start.items():
        setattr(model, name, np.array(value, copy=True))
    return model


def a_start(kind, K, X, lengths, seed=0):
    """Starting parameters: one hmmlearn iteration from its own initialisation."""
    from hmmlearn import hmm

    if kind == "categorical":
        h = hmm.CategoricalHMM(K, n_iter=1, random_state=seed).fit(X, lengths)
        return {"startprob_": h.startprob_, "transmat_": h.transmat_, "emissionprob_": h.emissionprob_}
    h = hmm.GaussianHMM(K, kind, n_iter=1, random_state=seed, covars_prior=0.0).fit(X, lengths)
    return {"startprob_": h.startprob_, "transmat_": h.transmat_, "means_": h.means_,
            "covars_": np.array(h._covars_)}


# ----------------------------------------------------------------------------- 1. agreement
def max_rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def agreement(name, kind, K, X, lengths, n_iter=10, with_pomegranate=True):
    start = a_start(kind, K, X, lengths)
    ours = set_start(ours_model(kind, K, n_iter, "float64"), start).fit(X, lengths)
    theirs = set_start(hmmlearn_model(kind, K, n_iter), start).fit(X, lengths)
    ll_ours = ours.score(X, lengths) * len(X)
    ll_h = theirs.score(X, lengths)
    traj = np.abs(ours.lower_bounds_[:-1] * len(X) - theirs.monitor_.history) / np.abs(
        theirs.monitor_.history)
    names = ["startprob_", "transmat_"] + (["emissionprob_"] if kind == "categorical" else ["means_"])
    pdiff = max(float(np.max(np.abs(np.asarray(getattr(ours, n)) - getattr(theirs, n)))) for n in names)
    print(f"  {name} ({len(lengths)} sequences, {len(X)} steps, {K} states)")
    print(f"    hmmlearn:    final log p(x) rel diff {abs(ll_ours - ll_h) / abs(ll_h):.1e}, max "
          f"|param diff| {pdiff:.1e}; per iteration {' '.join(f'{v:.0e}' for v in traj)}", flush=True)
    if not with_pomegranate:
        return
    pg = pomegranate_model(start, kind, n_iter, torch.float64)
    Xp = pomegranate_input(X, lengths, torch.float64)
    pg.fit(Xp)
    ll_p = float(sum(pg.log_probability(x).sum() for x in (Xp if isinstance(Xp, list) else [Xp])))
    pp = pomegranate_params(pg, kind)
    pdiff = max(float(np.max(np.abs(np.asarray(getattr(ours, n)) - pp[n]))) for n in names)
    print(f"    pomegranate: final log p(x) rel diff {abs(ll_ours - ll_p) / abs(ll_p):.1e}, max "
          f"|param diff| {pdiff:.1e}  (hmmlearn vs pomegranate: {abs(ll_h - ll_p) / abs(ll_p):.1e})",
          flush=True)


# ----------------------------------------------------------------------------- 2. speed
THREADS = [os.cpu_count()]
CLOCK = [time.perf_counter]  # --clock cpu: process CPU time (with --threads 1, fair on a busy machine)


def timed(fn):
    torch.set_num_threads(THREADS[0])  # (scikit-learn's k-means in hmmlearn's init resets it)
    t = CLOCK[0]()
    fn()
    return CLOCK[0]() - t


def speed(name, kind, K, X, lengths, iters, repeats, systems=("elbokit", "hmmlearn", "pomegranate")):
    start = a_start(kind, K, X, lengths)
    X32 = X.astype(np.float32) if kind != "categorical" else X
    Xp = pomegranate_input(X, lengths, torch.float32) if "pomegranate" in systems else None
    runs = {
        "elbokit float32": lambda: set_start(ours_model(kind, K, iters, "float32"), start).fit(X32, lengths),
        "elbokit float64": lambda: set_start(ours_model(kind, K, iters, "float64"), start).fit(X, lengths),
    }
    if "hmmlearn" in systems:
        for impl in ("log", "scaling"):
            runs[f"hmmlearn {impl}"] = (lambda impl=impl: set_start(hmmlearn_model(kind, K, iters, impl),
                                                                    start).fit(X, lengths))
    if "pomegranate" in systems:
        runs["pomegranate float32"] = lambda: pomegranate_model(start, kind, iters, torch.float32).fit(Xp)
    best = {k: float("inf") for k in runs}
    loads = []
    for fn in runs.values():  # warm-up: first-call costs (allocations, thread pools) are not an iteration's
        fn()
    for _ in range(repeats):
        for k, fn in runs.items():  # interleaved, so that a busy moment hits every system
            loads.append(float(load()))
            best[k] = min(best[k], timed(fn) / iters)
    ours = best["elbokit float32"]
    print(f"\n{name}: seconds per Baum-Welch iteration (fastest of {repeats} x {iters} iterations; "
          f"load {min(loads):.1f}-{max(loads):.1f})")
    for k, v in best.items():
        ratio = "" if k.startswith("elbokit float32") else f"{v / ours:8.1f}x elbokit float32's time"
        print(f"  {k:22s} {v:9.4f}  {ratio}")
    return best


def defaults(name, K, X, lengths):
    """What a user waits for: each library's defaults, initialisation included."""
    from hmmlearn import hmm
    from pomegranate.distributions import Normal
    from pomegranate.hmm import DenseHMM

    print(f"\n{name}: fit with each library's defaults (initialisation included, own stopping rule; "
          f"load {load()})")
    ours = elbokit.GaussianHMM(K, "diag", random_state=0)
    s_ours = timed(lambda: ours.fit(X.astype(np.float32), lengths))
    theirs = hmm.GaussianHMM(K, "diag", random_state=0)
    s_h = timed(lambda: theirs.fit(X, lengths))
    Xp = pomegranate_input(X, lengths, torch.float32)
    pg = DenseHMM([Normal(covariance_type="diag") for _ in range(K)], random_state=0)
    s_p = timed(lambda: pg.fit(Xp))
    ll_p = float(pg.log_probability(Xp).sum()) / len(X)
    print(f"  {'elbokit':12s} {s_ours:8.2f} s  {ours.n_iter_:4d} iterations  log p(x)/sample "
          f"{ours.score(X, lengths):.5f}")
    print(f"  {'hmmlearn':12s} {s_h:8.2f} s  {theirs.monitor_.iter:4d} iterations  log p(x)/sample "
          f"{theirs.score(X, lengths) / len(X):.5f}  ({s_h / s_ours:.1f}x elbokit's time)")
    print(f"  {'pomegranate':12s} {s_p:8.2f} s  {'?':>4s} iterations  log p(x)/sample {ll_p:.5f}  "
          f"({s_p / s_ours:.1f}x; its model has an end state)")


FIRST_FIT = """import time; t = time.perf_counter()
import numpy as np, elbokit
X = np.random.default_rng(0).normal(size=(2000, 3)).astype(np.float32)
elbokit.GaussianHMM(2, "diag", n_iter=2).fit(X, [200] * 10)
print(time.perf_counter() - t)"""


def first_use():
    """A fresh process's first fit (import included), with numba's disk cache empty and then
    filled: the difference is the compilation of the CPU recursions, paid once per machine."""
    import tempfile

    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        run = lambda: float(subprocess.run([sys.executable, "-c", FIRST_FIT], env=env, check=True,
                                           capture_output=True, text=True).stdout.split()[-1])
        cold, warm = run(), run()
    print(f"\nfirst fit in a fresh process (import included, wall): {cold:.2f} s with numba's cache "
          f"empty, {warm:.2f} s with it filled (compiling the recursions: {cold - warm:.2f} s, once)")


# ----------------------------------------------------------------------------- 3. KJV
def kjv(max_verses, n_init):
    """Character-level 2-state HMMs on the KJV from ``n_init`` seeds: each restart's split."""
    torch.set_num_threads(THREADS[0])
    X, lengths = kjv_characters(max_verses)
    print(f"\nKJV, character level: {len(lengths)} verses, {len(X)} characters, 27 symbols, "
          f"2 states, {n_init} seeds (load {load()})")
    fits = []
    for seed in range(n_init):
        t = time.perf_counter()
        m = elbokit.CategoricalHMM(2, random_state=seed).fit(X, lengths)
        probs = np.asarray(m.emissionprob_)
        vowel = int(np.argmax(probs[:, [ALPHABET.index(c) for c in "aeiou"]].sum(1)))
        side = "".join("_" if c == " " else c for c, o in zip(ALPHABET, probs[vowel] > probs[1 - vowel])
                       if o)
        print(f"  seed {seed}: {time.perf_counter() - t:6.1f} s, {m.n_iter_:3d} iterations, log p(x) per "
              f"character {m.lower_bound_:.5f}; more likely in the vowel state: {side}", flush=True)
        fits.append((m.lower_bound_, seed, m, vowel))
    best, seed, m, vowel = max(fits, key=lambda f: f[0])
    probs = np.asarray(m.emissionprob_)
    print(f"  kept (best bound): seed {seed}; transitions {np.round(np.asarray(m.transmat_), 3).tolist()}")
    for k, tag in ((vowel, "vowel"), (1 - vowel, "consonant")):
        top = " ".join(f"{'_' if ALPHABET[i] == ' ' else ALPHABET[i]}:{probs[k, i]:.3f}"
                       for i in np.argsort(-probs[k])[:12])
        print(f"  {tag} state {k}: {top}")
    return m


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--skip-kjv", action="store_true")
    p.add_argument("--only-kjv", action="store_true", help="only the whole-KJV character model")
    p.add_argument("--skip-defaults", action="store_true")
    p.add_argument("--skip-agreement", action="store_true")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time (use with --threads 1 when others share the cores)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads (every system; hmmlearn's recursions are single-threaded)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    THREADS[0] = args.threads
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    print(f"elbokit HMM benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs; no GPU on this machine (GPU figures not measured); load {load()}")
    import hmmlearn
    import pomegranate

    print(f"hmmlearn {hmmlearn.__version__}, pomegranate {pomegranate.__version__}")
    quick = args.quick
    if args.only_kjv:
        kjv(3000 if quick else None, n_init=1 if quick else 4)
        return
    Xf, lf = fashion_rows(100 if quick else 1000)
    Xc, lc = kjv_characters(300 if quick else 3000)
    if not args.skip_agreement:
        print("\n1. Agreement from the same start, float64, 10 iterations")
        Xs, ls = hmm_data(40 if quick else 200, 50 if quick else 100, 4, 3, seed=1)
        agreement("GaussianHMM diag (synthetic)", "diag", 4, Xs, ls)
        agreement("GaussianHMM full (synthetic)", "full", 4, Xs, ls)
        agreement("GaussianHMM diag (Fashion-MNIST rows)", "diag", 8, Xf, lf)
        agreement(f"CategoricalHMM (KJV, {len(lc)} verses)", "categorical", 2, Xc, lc,
                  with_pomegranate=False)
        # pomegranate batches variable lengths one tensor per distinct length: slow, so fewer verses
        Xq, lq = kjv_characters(30 if quick else 100)
        agreement(f"CategoricalHMM (KJV, {len(lq)} verses)", "categorical", 2, Xq, lq)

    print(f"\n2. Speed ({args.clock} clock, {args.threads} threads)")
    n_seq, T = (100, 200) if quick else (1000, 200)
    X, lengths = hmm_data(n_seq, T, 8, 5, seed=0)
    speed(f"{n_seq} sequences x {T} steps, 8 states, 5-D diag Gaussian", "diag", 8, X, lengths,
          args.iters, args.repeats)
    if not args.skip_defaults:
        defaults(f"{n_seq} x {T}, 8 states, 5-D diag", 8, X, lengths)
        first_use()
    speed(f"Fashion-MNIST rows ({len(lf)} images x 28 steps, 28-D), 8 states, diag", "diag", 8, Xf, lf,
          args.iters, args.repeats)
    speed(f"KJV characters ({len(lc)} verses, {len(Xc)} characters), 2 states", "categorical", 2, Xc, lc,
          args.iters, args.repeats, systems=("elbokit", "hmmlearn"))
    Xl, ll = hmm_data(1, 20_000 if quick else 200_000, 4, 3, seed=2)
    speed(f"one long sequence ({len(Xl)} steps), 4 states, 3-D diag", "diag", 4, Xl, ll,
          args.iters, max(1, args.repeats - 1), systems=("elbokit", "hmmlearn"))
    if not args.skip_kjv:
        kjv(3000 if quick else None, n_init=1 if quick else 4)


if __name__ == "__main__":
    main()
