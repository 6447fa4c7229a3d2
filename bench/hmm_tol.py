"""How the HMM's default tolerance was chosen: final log p(x) per step and iterations for
several ``tol`` values (per step) on several data sets, each from the same seeds.

    python bench/hmm_tol.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import elbokit  # noqa: E402
from hmm import fashion_rows, hmm_data, kjv_characters, load  # noqa: E402

warnings.simplefilter("ignore")
TOLS = (1e-3, 1e-4, 1e-5, 1e-6)


def cases():
    Xk, lk = kjv_characters(1500)
    Xf, lf = fashion_rows(500)
    Xs, ls = hmm_data(200, 100, 6, 4, seed=3)
    rng = np.random.default_rng(0)
    rates = np.array([[1.0, 6.0], [5.0, 1.0], [3.0, 3.0]])
    z = np.cumsum(rng.random(20_000) < 0.05) % 3
    Xp = rng.poisson(rates[z])
    return [("KJV characters, 1500 verses, CategoricalHMM(2)", lambda s: elbokit.CategoricalHMM(
                2, random_state=s), Xk, lk),
            ("Fashion-MNIST rows, 500 images, GaussianHMM(8, diag)", lambda s: elbokit.GaussianHMM(
                8, random_state=s), Xf, lf),
            ("synthetic 6-state HMM, 200 x 100, GaussianHMM(6, diag)", lambda s: elbokit.GaussianHMM(
                6, random_state=s), Xs, ls),
            ("Poisson counts, one 20000-step sequence, PoissonHMM(3)", lambda s: elbokit.PoissonHMM(
                3, random_state=s), Xp, None)]


def main():
    print(f"load {load()}; n_iter=1000; per tol: mean over seeds 0-2 of (final log p(x) per step, "
          "iterations, seconds)")
    for name, make, X, lengths in cases():
        print(name)
        for tol in TOLS:
            rows = []
            for seed in range(3):
                t = time.perf_counter()
                m = make(seed).set_params(tol=tol, n_iter=1000).fit(X, lengths)
                rows.append((m.lower_bound_, m.n_iter_, time.perf_counter() - t))
            b, it, s = (np.mean([r[i] for r in rows]) for i in range(3))
            print(f"  tol={tol:.0e}: log p(x)/step {b:.5f}  iterations {it:6.1f}  {s:6.1f} s  "
                  f"(per seed: {' '.join(f'{r[0]:.4f}' for r in rows)})", flush=True)


if __name__ == "__main__":
    main()
