"""VAE on Fashion-MNIST: elbokit against Pyro's SVI and a hand-written PyTorch loop.

All three train the same architecture (784-512-256-[20]-256-512-784, Bernoulli
decoder, dynamically binarised images, batch 128, Adam lr 1e-3) for the same
number of epochs, in one run; then each model's test log-likelihood is
estimated with importance sampling (IWAE with --k samples, default 1000) on
the same binarised test images, next to its ELBO: the difference is the KL gap
of log p(x) = ELBO + KL(q || p(z|x)).

    apt-get install dataset-fashion-mnist      # IDX files under /usr/share/datasets/fashion-mnist
    python bench/vae.py [--epochs 3] [--device cuda] [--test-images 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from elbokit import VAE
from elbokit.data.idx import load_idx_images
from elbokit.models.vae import Decoder, GaussianEncoder, StandardNormalPrior, VAEModule, mlp

DATA = Path("/usr/share/datasets/fashion-mnist")
HIDDEN, LATENT, BATCH, LR = (512, 256), 20, 128, 1e-3


def networks(seed):
    torch.manual_seed(seed)
    enc = mlp([784, *HIDDEN, 2 * LATENT])
    dec = mlp([LATENT, *HIDDEN[::-1], 784])
    return enc, dec


def as_module(enc, dec, device):
    return VAEModule(GaussianEncoder(enc), Decoder(dec, "bernoulli", 784),
                     StandardNormalPrior(LATENT)).to(device).eval()


def train_elbokit(X, epochs, device, seed):
    vae = VAE(LATENT, hidden_sizes=HIDDEN, likelihood="bernoulli", binarize="dynamic",
              epochs=epochs, batch_size=BATCH, lr=LR, validation_fraction=0.0,
              random_state=seed, device=device)
    start = time.perf_counter()
    vae.fit(torch.as_tensor(X, device=device))
    return time.perf_counter() - start, vae.module_


def train_by_hand(X, epochs, device, seed):
    enc, dec = networks(seed)
    enc, dec = enc.to(device), dec.to(device)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR)
    Xt = torch.as_tensor(X, device=device)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), device=device).split(BATCH):
            x = torch.bernoulli(Xt[idx])
            loc, pre = enc(x).chunk(2, -1)
            scale = nn.functional.softplus(pre) + 1e-5
            z = loc + scale * torch.randn_like(loc)
            rec = -nn.functional.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(1)
            kl = 0.5 * (loc.square() + scale.square() - 1 - 2 * scale.log()).sum(1)
            loss = (kl - rec).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, as_module(enc, dec, device)


def train_pyro(X, epochs, device, seed):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam

    pyro.clear_param_store()
    enc, dec = networks(seed)
    enc, dec = enc.to(device), dec.to(device)

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z), validate_args=False).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", x.shape[0]):
            loc, pre = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(pre) + 1e-5).to_event(1))

    svi = SVI(model, guide, Adam({"lr": LR}), loss=Trace_ELBO())
    Xt = torch.as_tensor(X, device=device)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), device=device).split(BATCH):
            svi.step(torch.bernoulli(Xt[idx]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, as_module(enc, dec, device)


@torch.no_grad()
def evaluate(module, X, k, device):
    """Mean test ELBO and importance-sampled log p(x) (IWAE_k), nats per image."""
    torch.manual_seed(123)
    elbo, iwae = [], []
    rows = max(1, 2**21 // (k * 784))
    for start in range(0, len(X), rows):
        x = X[start:start + rows]
        rec, kl, _ = module.elbo_terms(x)
        elbo.append(rec - kl)
        iwae.append(module.iwae(x, k))
    return float(torch.cat(elbo).double().mean()), float(torch.cat(iwae).double().mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = Path(args.data)
    X = load_idx_images(data / "train-images-idx3-ubyte.gz")
    X_test = load_idx_images(data / "t10k-images-idx3-ubyte.gz")[: args.test_images]
    X_test = torch.as_tensor(load_binarised(X_test), device=args.device)
    print(f"Fashion-MNIST: {len(X)} training images, {len(X_test)} test images; {args.epochs} "
          f"epochs, batch {BATCH}, on {args.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    results = {}
    for name, fn in [("elbokit", train_elbokit), ("hand-written", train_by_hand), ("pyro", train_pyro)]:
        fn(X[:2048], 1, args.device, args.seed)  # warm-up: CUDA context, kernels, first calls
        seconds, module = fn(X, args.epochs, args.device, args.seed)
        elbo, log_px = evaluate(module, X_test, args.k, args.device)
        results[name] = (seconds / args.epochs, elbo, log_px)
        print(f"  trained {name}: {seconds / args.epochs:.2f} s/epoch", flush=True)
    ours = results["elbokit"][0]
    print(f"\n  {'system':<13} {'s/epoch':>8} {'vs elbokit':>11} {'test ELBO':>10} "
          f"{'IS log p(x)':>12} {'NLL (nats)':>11} {'KL gap':>7}")
    for name, (per, elbo, log_px) in results.items():
        ratio = "" if name == "elbokit" else f"{per / ours:.2f}x"
        print(f"  {name:<13} {per:>8.2f} {ratio:>11} {elbo:>10.2f} {log_px:>12.2f} {-log_px:>11.2f} "
              f"{log_px - elbo:>7.2f}")
    print(f"  ('vs elbokit': the system's seconds per epoch over elbokit's; IS log p(x) with "
          f"k={args.k} importance samples)")


def load_binarised(X, seed=0):
    """One fixed binarisation of the test images, shared by every system."""
    return (np.random.default_rng(seed).random(X.shape, dtype=np.float32) < X).astype(np.float32)


if __name__ == "__main__":
    main()
