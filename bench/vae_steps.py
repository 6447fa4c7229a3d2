"""Diagnostic: one epoch of elbokit's VAE against the hand-written loop, alternating, twice."""

import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import vae as B  # noqa: E402

from elbokit.data.idx import load_idx_images  # noqa: E402

data, device = sys.argv[1], sys.argv[2]
X = load_idx_images(f"{data}/train-images-idx3-ubyte.gz")
for _ in range(2):
    for name, fn in (("elbokit", B.train_elbokit), ("hand-written", B.train_by_hand)):
        seconds, _ = fn(X, 1, device, 0)
        print(f"{name}: {seconds:.2f} s/epoch on {device}", flush=True)
