"""VAE on Fashion-MNIST: speed against a hand-written loop (and Pyro), and the model table.

Every system trains the same architecture (784-512-256-[20]-256-512-784, Bernoulli
decoder, dynamically binarised images, batch 128, Adam lr 1e-3).

``speed``: one run times an epoch of each system side by side, in rotating
order, ``--repeats`` times (the fastest and the median are printed, with the
machine's load): the plain loop as a user writes it (torch's default Adam),
the same loop with the fused Adam kernel elbokit uses, elbokit without and
with its default validation split (and the plain loop doing that same work:
training on 90% and computing the validation ELBO of the other 10% each
epoch), and Pyro's SVI (``--pyro``). Then each model's test log-likelihood is
estimated by importance sampling (IWAE with --k samples) on the same binarised
test images, next to its ELBO.

``defaults``: the two likelihoods for data in [0, 1] (Bernoulli with dynamic
binarisation, continuous Bernoulli) on four data sets (Fashion-MNIST, the 8x8
digits, wine and breast cancer min-max scaled), by measures that do not depend
on the likelihood: reconstruction error, kNN accuracy of the codes, anomaly
AUC of log p(x) for held-out classes.

``table``: VAE, IWAE (k=5, k=50; with and without DReG) and the VampPrior
(500 pseudo-inputs), trained with elbokit on all 60,000 training images,
scored by the importance-sampled test log p(x) (k=1000) on the 10,000 test
images (one fixed binarisation). Training advances every variant stage by
stage (1, 2, 3, 5, 10, 15, ... epochs), resuming from its checkpoint, and
saves the model at each stage under --out, so that an interrupted run
continues and every variant can be compared at the same number of epochs;
``--evaluate`` scores the models of the last stage that every variant reached
(or ``--at``) and prints the table.

    apt-get install dataset-fashion-mnist      # IDX files under /usr/share/datasets/fashion-mnist
    python bench/vae.py speed [--epochs 1] [--repeats 3] [--device cuda] [--pyro]
    python bench/vae.py table --out runs/vae [--epochs 100] [--variants vae,iwae50]
    python bench/vae.py table --out runs/vae --evaluate [--at 20]
    python bench/vae.py defaults      # the likelihood default for data in [0, 1], by measurement
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import elbokit
from elbokit import VAE
from elbokit.data.idx import load_idx_images
from elbokit.models.vae import Decoder, GaussianEncoder, StandardNormalPrior, VAEModule, mlp

DATA = Path("/usr/share/datasets/fashion-mnist")
HIDDEN, LATENT, BATCH, LR = (512, 256), 20, 128, 1e-3
VARIANTS = {
    "vae": ("VAE", {}),
    "iwae5": ("IWAE k=5", dict(objective="iwae", k=5)),
    "iwae5-dreg": ("IWAE k=5, DReG", dict(objective="iwae", k=5, dreg=True)),
    "iwae50": ("IWAE k=50", dict(objective="iwae", k=50)),
    "iwae50-dreg": ("IWAE k=50, DReG", dict(objective="iwae", k=50, dreg=True)),
    "vamp": ("VampPrior (K=500)", dict(prior="vamp", prior_components=500)),
}
STAGES = [1, 2, 3, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100]


def load_avg() -> str:
    return "load %.1f %.1f %.1f" % os.getloadavg()


# ---------------------------------------------------------------- the systems
class Clock:
    """Wall time and this process's CPU time since creation. On a machine shared with
    other work the CPU time (with one thread) is the steadier measure of the work done."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, device) -> tuple[float, float]:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def networks(seed):
    torch.manual_seed(seed)
    enc = mlp([784, *HIDDEN, 2 * LATENT])
    dec = mlp([LATENT, *HIDDEN[::-1], 784])
    return enc, dec


def as_module(enc, dec, device):
    return VAEModule(GaussianEncoder(enc), Decoder(dec, "bernoulli", 784),
                     StandardNormalPrior(LATENT)).to(device).eval()


def train_elbokit(X, epochs, device, seed, validation_fraction=0.0):
    vae = VAE(LATENT, hidden_sizes=HIDDEN, likelihood="bernoulli", binarize="dynamic",
              epochs=epochs, batch_size=BATCH, lr=LR, validation_fraction=validation_fraction,
              random_state=seed, device=device)
    clock = Clock()
    vae.fit(torch.as_tensor(X, device=device))
    return clock.stop(device), vae.module_


def _hand_loss(enc, dec, x):
    loc, pre = enc(x).chunk(2, -1)
    scale = nn.functional.softplus(pre) + 1e-5
    z = loc + scale * torch.randn_like(loc)
    rec = -nn.functional.binary_cross_entropy_with_logits(dec(z), x, reduction="none").sum(1)
    kl = 0.5 * (loc.square() + scale.square() - 1 - 2 * scale.log()).sum(1)
    return kl - rec


def train_by_hand(X, epochs, device, seed, fused=False, validation_fraction=0.0):
    """The loop a user writes; with ``validation_fraction``, the same work as elbokit's
    default: train on the rest, and the mean validation ELBO after every epoch."""
    enc, dec = networks(seed)
    enc, dec = enc.to(device), dec.to(device)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=LR,
                           **({"fused": True} if fused else {}))
    Xt = torch.as_tensor(X, device=device)
    clock = Clock()
    n_val = int(validation_fraction * len(Xt))
    X_val, X_train = Xt[:n_val], Xt[n_val:]
    for _ in range(epochs):
        for idx in torch.randperm(len(X_train), device=device).split(BATCH):
            x = torch.bernoulli(X_train[idx])
            loss = _hand_loss(enc, dec, x).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if n_val:
            with torch.no_grad():
                float(sum(-_hand_loss(enc, dec, torch.bernoulli(x)).sum() for x in X_val.split(1024)))
    return clock.stop(device), as_module(enc, dec, device)


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
    clock = Clock()
    for _ in range(epochs):
        for idx in torch.randperm(len(Xt), device=device).split(BATCH):
            svi.step(torch.bernoulli(Xt[idx]))
    return clock.stop(device), as_module(enc, dec, device)


@torch.no_grad()
def evaluate(module, X, k):
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


def load_binarised(X, seed=0):
    """One fixed binarisation of the test images, shared by every system."""
    return (np.random.default_rng(seed).random(X.shape, dtype=np.float32) < X).astype(np.float32)


# ---------------------------------------------------------------- speed
def speed(args):
    data = Path(args.data)
    X = load_idx_images(data / "train-images-idx3-ubyte.gz")[: args.rows]
    X_test = load_idx_images(data / "t10k-images-idx3-ubyte.gz")[: args.test_images]
    X_test = torch.as_tensor(load_binarised(X_test), device=args.device)
    systems = {
        "plain loop": lambda e: train_by_hand(X, e, args.device, args.seed),
        "plain loop, fused Adam": lambda e: train_by_hand(X, e, args.device, args.seed, fused=True),
        "elbokit": lambda e: train_elbokit(X, e, args.device, args.seed),
        "plain loop + validation": lambda e: train_by_hand(X, e, args.device, args.seed,
                                                           validation_fraction=0.1),
        "elbokit, validation 0.1": lambda e: train_elbokit(X, e, args.device, args.seed, 0.1),
    }
    if args.pyro:
        systems["pyro"] = lambda e: train_pyro(X, e, args.device, args.seed)
    print(f"Fashion-MNIST: {len(X)} training images, {len(X_test)} test images; {args.epochs} "
          f"epoch(s) per fit, {args.repeats} repeats, batch {BATCH}, on {args.device}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads; {load_avg()}", flush=True)
    names = list(systems)
    if len(X) <= 4096:
        for name in names:  # warm-up: CUDA context, kernels, first calls
            systems[name](1)
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    modules = {}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            (w, c), modules[name] = systems[name](args.epochs)
            wall[name].append(w / args.epochs)
            cpu[name].append(c / args.epochs)
        print(f"  repeat {r + 1}: " + ", ".join(f"{n} {wall[n][-1]:.2f} ({cpu[n][-1]:.2f} CPU)"
                                                for n in names) + f" s/epoch; {load_avg()}",
              flush=True)
    base_w, base_c = min(wall["plain loop"]), min(cpu["plain loop"])
    print(f"\n  {'system':<26} {'wall':>7} {'median':>7} {'vs plain':>9} {'CPU':>7} {'median':>7} "
          f"{'vs plain':>9} {'test ELBO':>10} {'IS log p(x)':>12}")
    for name in names:
        elbo, log_px = evaluate(modules[name], X_test, args.k)
        w, c = min(wall[name]), min(cpu[name])
        print(f"  {name:<26} {w:>7.3f} {statistics.median(wall[name]):>7.3f} {w / base_w:>8.3f}x "
              f"{c:>7.3f} {statistics.median(cpu[name]):>7.3f} {c / base_c:>8.3f}x {elbo:>10.2f} "
              f"{log_px:>12.2f}", flush=True)
    print(f"  (s/epoch of the whole fit: data checks, split, training and, where named, the "
          f"validation ELBO; wall and CPU seconds, fastest and median of {args.repeats}; "
          f"'vs plain': fastest over the plain loop's fastest; IS log p(x) with k={args.k}; "
          f"{load_avg()})")
    for label, t in (("wall", wall), ("CPU", cpu)):
        same = min(t["elbokit, validation 0.1"]) / min(t["plain loop + validation"])
        print(f"  elbokit with its validation split / the plain loop doing the same work "
              f"({label}): {same:.3f}x")


# ---------------------------------------------------------------- the table
def _variant_vae(slug, stage, ckpt, seed, device):
    _, options = VARIANTS[slug]
    return VAE(LATENT, hidden_sizes=HIDDEN, likelihood="bernoulli", binarize="dynamic",
               epochs=stage, batch_size=BATCH, lr=LR, validation_fraction=0.0,
               checkpoint_dir=ckpt, random_state=seed, device=device, **options)


def _progress(folder: Path) -> dict:
    path = folder / "progress.json"
    return json.loads(path.read_text()) if path.exists() else {"epochs": 0, "train_seconds": 0.0,
                                                               "stages": []}


def _checkpoint_epoch(ckpt: Path) -> int:
    from elbokit.inference.amortized import _read_checkpoint

    return int(_read_checkpoint(ckpt)[1]["epoch"])


def table_train(args):
    data = Path(args.data)
    X = torch.as_tensor(load_idx_images(data / "train-images-idx3-ubyte.gz"), device=args.device)
    out = Path(args.out)
    stages = [s for s in STAGES if s < args.epochs] + [args.epochs]
    print(f"training {args.variants} to {args.epochs} epochs on {len(X)} images, "
          f"{torch.get_num_threads()} thread(s); {load_avg()}", flush=True)
    for stage in stages:
        for slug in args.variants:
            folder = out / slug
            folder.mkdir(parents=True, exist_ok=True)
            progress = _progress(folder)
            if progress["epochs"] >= stage:
                continue
            ckpt = folder / "ckpt"
            vae = _variant_vae(slug, stage, str(ckpt), args.seed, args.device)
            resume = ckpt if (ckpt / "checkpoint.safetensors").exists() else None
            done = _checkpoint_epoch(ckpt) if resume else 0
            start = time.perf_counter()
            vae.fit(X, resume=resume)
            seconds = time.perf_counter() - start
            vae.save(folder / f"model-{stage:03d}", overwrite=True)
            epochs_run = stage - max(done, progress["epochs"])
            progress["stages"].append({"epochs": stage, "seconds": seconds,
                                       "seconds_per_epoch": seconds / epochs_run if epochs_run else None,
                                       "train_bound": vae.history_["train"][-1],
                                       "active_units": vae.history_["active_units"][-1],
                                       "load": os.getloadavg()[0]})
            progress.update(epochs=stage, train_seconds=progress["train_seconds"] + seconds)
            (folder / "progress.json").write_text(json.dumps(progress, indent=1))
            per_epoch = f"{seconds / epochs_run:.1f}" if epochs_run else "-"
            print(f"  {slug:<12} epoch {stage:3d}: train bound {vae.history_['train'][-1]:.2f}, "
                  f"{per_epoch} s/epoch, active units "
                  f"{vae.history_['active_units'][-1]}; {load_avg()}", flush=True)


def table_evaluate(args):
    data = Path(args.data)
    out = Path(args.out)
    X_test = load_binarised(load_idx_images(data / "t10k-images-idx3-ubyte.gz")[: args.test_images])
    reached = {slug: _progress(out / slug)["epochs"] for slug in args.variants}
    at = args.at or min(reached.values())
    if at == 0 or any(r < at for r in reached.values()):
        raise SystemExit(f"not every variant reached {at} epochs: {reached}")
    rows = []
    for slug in args.variants:
        folder = out / slug
        result_file = folder / f"eval-{at:03d}-k{args.k}-n{len(X_test)}.json"
        if result_file.exists():
            result = json.loads(result_file.read_text())
        else:
            vae = elbokit.load(folder / f"model-{at:03d}")
            start = time.perf_counter()
            log_px = np.asarray(vae.score_samples(X_test, n_samples=args.k), dtype=np.float64)
            np.save(folder / f"logpx-{at:03d}-k{args.k}-n{len(X_test)}.npy", log_px)
            elbo = np.asarray(vae.elbo(X_test), dtype=np.float64)
            diag = vae.collapse_diagnostics(X_test)
            progress = _progress(folder)
            per_epoch = [s["seconds_per_epoch"] for s in progress["stages"]
                         if s["epochs"] <= at and s["seconds_per_epoch"]] or [float("nan")]
            result = {"variant": slug, "epochs": at, "k": args.k, "test_images": len(X_test),
                      "log_px": float(log_px.mean()),
                      "log_px_stderr": float(log_px.std(ddof=1) / np.sqrt(len(log_px))),
                      "elbo": float(elbo.mean()), "active_units": diag["active_units"],
                      "mutual_information": diag["mutual_information"],
                      "train_bound": vae.history_["train"][-1],
                      "median_seconds_per_epoch": float(np.median(per_epoch)),
                      "evaluate_seconds": time.perf_counter() - start,
                      "load": os.getloadavg()[0]}
            result_file.write_text(json.dumps(result, indent=1))
        rows.append(result)
        print(f"  scored {slug}: IS log p(x) {result['log_px']:.2f}", flush=True)
    per_image = {r["variant"]: np.load(out / r["variant"] / f"logpx-{at:03d}-k{args.k}-n"
                                       f"{len(X_test)}.npy") for r in rows}
    base = per_image.get("vae")
    print(f"\nFashion-MNIST, {at} epochs, dynamic binarisation, MLP 784-512-256-20, test log p(x) "
          f"by importance sampling with k={args.k} on {len(X_test)} test images (one fixed "
          "binarisation):")
    print(f"  {'model':<20} {'IS log p(x)':>12} {'+-':>5} {'vs VAE':>7} {'+-':>5} {'test ELBO':>10} "
          f"{'AU':>3} {'I(x;z)':>7} {'s/epoch':>8}")
    for r in rows:
        diff = se = ""
        if base is not None:
            d = per_image[r["variant"]] - base  # paired: the same images and binarisation
            diff, se = f"{d.mean():+.2f}", f"{d.std(ddof=1) / np.sqrt(len(d)):.2f}"
        print(f"  {VARIANTS[r['variant']][0]:<20} {r['log_px']:>12.2f} {r['log_px_stderr']:>5.2f} "
              f"{diff:>7} {se:>5} {r['elbo']:>10.2f} {r['active_units']:>3d} "
              f"{r['mutual_information']:>7.2f} {r['median_seconds_per_epoch']:>8.1f}")
    print("  (+-: standard error over test images, of the mean and of the paired difference "
          f"with the VAE; AU: active units; I(x;z) estimated on {min(1024, len(X_test))} "
          f"test images (at most log {min(1024, len(X_test))} = "
          f"{np.log(min(1024, len(X_test))):.2f}); s/epoch: median training time per epoch on "
          "this machine, under the load of the time)")


# ---------------------------------------------------------------- the likelihood default
LIKELIHOOD_CHOICES = {
    "bernoulli + dynamic binarisation": dict(likelihood="bernoulli", binarize="dynamic"),
    "continuous_bernoulli": dict(likelihood="continuous_bernoulli"),
}


def _datasets(data: Path):
    """Data in [0, 1] with labels: (name, X_train, y_train, X_test, y_test)."""
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import MinMaxScaler

    from elbokit.data.idx import load_idx_labels

    X = load_idx_images(data / "train-images-idx3-ubyte.gz")[:10000]
    y = load_idx_labels(data / "train-labels-idx1-ubyte.gz")[:10000]
    Xt = load_idx_images(data / "t10k-images-idx3-ubyte.gz")[:2000]
    yt = load_idx_labels(data / "t10k-labels-idx1-ubyte.gz")[:2000]
    yield "Fashion-MNIST (10k/2k)", X, y, Xt, yt
    d = load_digits()
    yield ("digits 8x8", *_split((d.data / 16.0).astype(np.float32), d.target, train_test_split))
    for name, loader in (("wine (min-max)", load_wine), ("breast cancer (min-max)", load_breast_cancer)):
        b = loader()
        Xa, Xb, ya, yb = train_test_split(b.data, b.target, test_size=0.3, random_state=0,
                                          stratify=b.target)
        scaler = MinMaxScaler().fit(Xa)
        yield name, scaler.transform(Xa).astype(np.float32), ya, \
            np.clip(scaler.transform(Xb), 0, 1).astype(np.float32), yb


def _split(X, y, train_test_split):
    Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    return Xa, ya, Xb, yb


def defaults(args):
    """The likelihood for [0, 1] data, by measures that do not depend on the likelihood:
    reconstruction error, kNN accuracy of the codes, and the anomaly AUC of log p(x)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.neighbors import KNeighborsClassifier

    print(f"likelihood for data in [0, 1]; {load_avg()}")
    print(f"  {'data':<26} {'likelihood':<34} {'recon MSE':>9} {'kNN acc':>8} {'anomaly AUC':>11} "
          f"{'fit s':>6}")
    for name, X, y, Xt, yt in _datasets(Path(args.data)):
        small = X.shape[1] < 100
        latent = 2 if small else 10
        hidden = (64, 32) if small else (256, 128)
        epochs = 100 if X.shape[0] < 1000 else 30 if small else 10
        for label, options in LIKELIHOOD_CHOICES.items():
            def make():
                return VAE(latent, hidden_sizes=hidden, epochs=epochs, random_state=args.seed,
                           batch_size=64 if small else 128, **options)
            start = time.perf_counter()
            vae = make().fit(X)
            seconds = time.perf_counter() - start
            mse = float(np.mean((vae.reconstruct(Xt) - Xt) ** 2))
            knn = KNeighborsClassifier(5).fit(vae.transform(X), y).score(vae.transform(Xt), yt)
            # anomalies: fit on the first half of the classes, score the test rows of all
            seen = np.unique(y)[: len(np.unique(y)) // 2 or 1]
            part = make().fit(X[np.isin(y, seen)])
            score = np.asarray(part.score_samples(Xt, n_samples=50))
            auc = roc_auc_score(~np.isin(yt, seen), -score)
            print(f"  {name:<26} {label:<34} {mse:>9.4f} {knn:>8.3f} {auc:>11.3f} {seconds:>6.1f}",
                  flush=True)
    print("  (recon MSE: mean squared error of E[x | z = E_q[z | x]] on the test rows; kNN: 5-nearest-"
          "neighbour accuracy of the codes, train -> test; anomaly AUC: -log p(x) separating test rows "
          "of the classes left out of a fit on the first half of the classes)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode")
    for name in ("speed", "table", "defaults"):
        p = sub.add_parser(name)
        p.add_argument("--device", default="cpu")
        p.add_argument("--data", default=str(DATA))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--k", type=int, default=1000)
    s = sub.choices["speed"]
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--rows", type=int, default=None, help="training images (default all)")
    s.add_argument("--test-images", type=int, default=1000)
    s.add_argument("--pyro", action="store_true")
    t = sub.choices["table"]
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--variants", default=",".join(VARIANTS))
    t.add_argument("--evaluate", action="store_true")
    t.add_argument("--at", type=int, default=None, help="epochs of the models to score")
    t.add_argument("--test-images", type=int, default=10000)
    args = parser.parse_args()
    if args.mode is None:
        parser.error("choose a mode: speed or table")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode in ("speed", "defaults"):
        (speed if args.mode == "speed" else defaults)(args)
        return
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: choose from {list(VARIANTS)}")
    table_evaluate(args) if args.evaluate else table_train(args)


if __name__ == "__main__":
    main()
