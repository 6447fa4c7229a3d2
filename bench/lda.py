"""LDA side by side: elbokit (batch, online, gibbs) against scikit-learn, gensim, tomotopy.

Corpus: the King James Bible, one document per verse (31,102 verses), from
the Debian package ``bible-kjv-text`` read through its ``bible`` command
(``apt-get install bible-kjv``). 90% of the verses train, 10% are held out.

Every system gets the same vocabulary (elbokit.Corpus over the training
verses: English and archaic stop words removed, min_df=5, max_df=0.5), the
same K, the same priors (alpha = eta = 1/K), the same number of passes over
the training data, and the same number of threads (``--threads``, default 2; on a machine busy with
other work, ``--threads 1`` gives steadier figures: OpenMP threads that
must wait for a core slow torch down many times over).
Printed per system:

* wall time of the fit, and the speed-up of each elbokit method over each
  anchor (anchor time / elbokit time);
* held-out per-word log-likelihood by document completion: each held-out
  verse's words are split in two by binomial thinning (seeded, the same
  split for everyone); the topic mixture is inferred from the first part
  by the system's own inference, and the second part is scored with
  log sum_k theta_k beta_kw, beta the system's topic-word distributions;
* NPMI coherence of each topic's top 10 words, from document co-occurrence
  in the training verses (one function for every system), averaged over
  topics.

Usage::

    python bench/lda.py [--topics 50] [--passes 10] [--only elbokit-batch,gensim ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

import elbokit
from elbokit import LDA, Corpus
from elbokit.data.text import as_counts
from elbokit.models.lda import completion_log_likelihood, split_counts, topic_coherence

THREADS = 2
ONLINE_BATCH = 2000  # documents per mini-batch for every online method (gensim's default)
ARCHAIC = ["thee", "thou", "thy", "thine", "ye", "hath", "unto", "shall", "shalt", "hast",
           "doth", "dost", "art", "saith", "said", "wilt", "upon", "also", "even", "therefore",
           "things", "thing", "come", "came", "went", "let", "say", "make", "made", "man",
           "men", "day", "lord", "god"]


def read_kjv() -> list[str]:
    if shutil.which("bible") is None:
        raise SystemExit("the `bible` command is missing: apt-get install bible-kjv bible-kjv-text")
    out = subprocess.run(["bible", "-l100000", "Gen1:1-Rev22:21"], capture_output=True,
                         text=True, check=True).stdout
    verses = []
    for line in out.splitlines():
        m = re.match(r"^\s+\d+\s+(.*)$", line)
        if m:
            verses.append(m.group(1))
    return verses


def data(seed=0):
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    verses = read_kjv()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(verses))
    n_test = len(verses) // 10
    test = [verses[i] for i in order[:n_test]]
    train = [verses[i] for i in order[n_test:]]
    stop = sorted(set(ENGLISH_STOP_WORDS) | set(ARCHAIC))
    corpus = Corpus(train, stop_words=stop, min_df=5, max_df=0.5)
    X_test = corpus.transform(test)
    first, second = split_counts(as_counts(X_test), 0.5, torch.Generator().manual_seed(seed))
    obs, held = first.to_scipy().astype(np.int64), second.to_scipy().astype(np.int64)
    keep = (np.asarray(obs.sum(1)).ravel() > 0) & (np.asarray(held.sum(1)).ravel() > 0)
    return corpus, obs[keep], held[keep]


def completion(theta, beta, held) -> float:
    """Per-word held-out log-likelihood, the same function for every system."""
    ll = completion_log_likelihood(torch.as_tensor(theta, dtype=torch.float64),
                                   torch.as_tensor(beta, dtype=torch.float64),
                                   as_counts(held, dtype=torch.float64))
    return float(ll.sum() / held.sum())


def npmi(beta, X) -> float:
    top = np.argsort(-beta, axis=1, kind="stable")[:, :10]
    return float(topic_coherence(top, X, "npmi").mean())


# ---------------------------------------------------------------- systems
def run_elbokit(method, X, obs, K, passes, seed):
    kw = dict(batch=dict(tol=0.0), online=dict(batch_size=ONLINE_BATCH, tol=0.0),
              gibbs=dict())[method]
    lda = LDA(K, method=method, max_iter=passes, alpha=1.0 / K, eta=1.0 / K,
              random_state=seed, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", elbokit.ConvergenceWarning)
        t = time.perf_counter()
        lda.fit(X)
        wall = time.perf_counter() - t
    return wall, lda.transform(obs), lda.topic_word_


def run_sklearn(method, X, obs, K, passes, seed):
    from sklearn.decomposition import LatentDirichletAllocation

    lda = LatentDirichletAllocation(
        K, doc_topic_prior=1.0 / K, topic_word_prior=1.0 / K, learning_method=method,
        max_iter=passes, batch_size=ONLINE_BATCH, random_state=seed, n_jobs=THREADS)
    t = time.perf_counter()
    lda.fit(X)
    wall = time.perf_counter() - t
    beta = lda.components_ / lda.components_.sum(1, keepdims=True)
    return wall, lda.transform(obs), beta


def _bow(X):
    X = sp.csr_matrix(X)
    return [list(zip(X.indices[X.indptr[d]:X.indptr[d + 1]].tolist(),
                     X.data[X.indptr[d]:X.indptr[d + 1]].tolist())) for d in range(X.shape[0])]


def run_gensim(X, obs, K, passes, seed, vocab):
    from gensim.corpora import Dictionary
    from gensim.models import LdaModel

    bow = _bow(X)
    id2word = Dictionary.from_corpus(bow, id2word=dict(enumerate(vocab)))
    t = time.perf_counter()
    lda = LdaModel(bow, num_topics=K, id2word=id2word, passes=passes, alpha=1.0 / K,
                   eta=1.0 / K, chunksize=ONLINE_BATCH, random_state=seed)
    wall = time.perf_counter() - t
    gamma, _ = lda.inference(_bow(obs))
    theta = gamma / gamma.sum(1, keepdims=True)
    beta = lda.get_topics()  # (K, V), in our column order (ids are our columns)
    return wall, theta, beta


def _words(X, vocab):
    X = sp.csr_matrix(X)
    out = []
    for d in range(X.shape[0]):
        ids = X.indices[X.indptr[d]:X.indptr[d + 1]]
        cnt = X.data[X.indptr[d]:X.indptr[d + 1]]
        out.append([vocab[i] for i, c in zip(ids, cnt) for _ in range(int(c))])
    return out


def run_tomotopy(X, obs, K, passes, seed, vocab):
    import tomotopy as tp

    docs = _words(X, vocab)
    mdl = tp.LDAModel(k=K, alpha=1.0 / K, eta=1.0 / K, seed=seed)
    for words in docs:
        mdl.add_doc(words if words else ["__empty__"])
    t = time.perf_counter()
    mdl.train(passes, workers=THREADS)
    wall = time.perf_counter() - t
    where = {w: i for i, w in enumerate(mdl.used_vocabs)}
    cols = np.array([where.get(w, -1) for w in vocab])
    beta = np.zeros((K, len(vocab)))
    for k in range(K):
        dist = np.asarray(mdl.get_topic_word_dist(k))
        beta[k] = np.where(cols >= 0, dist[np.maximum(cols, 0)], 0.0)
    beta /= beta.sum(1, keepdims=True)
    held_docs = [mdl.make_doc(w) for w in _words(obs, vocab)]
    dists, _ = mdl.infer(held_docs, iterations=100, workers=THREADS)
    # tomotopy returns topic distributions (0.13+) or documents (older)
    theta = np.array([d if isinstance(d, np.ndarray) else d.get_topic_dist() for d in dists])
    return wall, theta, beta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topics", type=int, default=50)
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default="", help="comma-separated subset of systems")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads/processes per system (torch threads, sklearn n_jobs, "
                         "tomotopy workers; gensim's LdaModel is single-threaded)")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    torch.set_num_threads(THREADS)
    K, P, seed = args.topics, args.passes, args.seed
    corpus, obs, held = data(seed)
    X = corpus.counts
    print(f"KJV verses: {X.shape[0]} training documents, {X.shape[1]} words, {X.nnz} non-zeros, "
          f"{int(X.sum())} tokens; {obs.shape[0]} held-out documents "
          f"({int(obs.sum())} words to infer from, {int(held.sum())} to score)")
    print(f"K={K}, {P} passes, alpha=eta=1/K, {THREADS} thread(s); torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs\n")
    systems = {
        "elbokit-batch": lambda: run_elbokit("batch", X, obs, K, P, seed),
        "elbokit-online": lambda: run_elbokit("online", X, obs, K, P, seed),
        "elbokit-gibbs": lambda: run_elbokit("gibbs", X, obs, K, P, seed),
        "sklearn-batch": lambda: run_sklearn("batch", X, obs, K, P, seed),
        "sklearn-online": lambda: run_sklearn("online", X, obs, K, P, seed),
        "gensim": lambda: run_gensim(X, obs, K, P, seed, corpus.vocabulary),
        "tomotopy": lambda: run_tomotopy(X, obs, K, P, seed, corpus.vocabulary),
    }
    only = [s for s in args.only.split(",") if s]
    results = {}
    print(f"{'system':16s} {'fit s':>8s} {'held-out ll/word':>17s} {'NPMI@10':>8s}")
    for name, fn in systems.items():
        if only and name not in only:
            continue
        try:
            wall, theta, beta = fn()
        except ImportError as err:
            print(f"{name:16s} skipped: {err} (pip install -e '.[bench]')")
            continue
        ll, co = completion(theta, beta, held), npmi(beta, X)
        results[name] = (wall, ll, co)
        print(f"{name:16s} {wall:8.2f} {ll:17.4f} {co:8.4f}", flush=True)
    ours = [n for n in results if n.startswith("elbokit")]
    anchors = [n for n in results if not n.startswith("elbokit")]
    if ours and anchors:
        print("\nspeed-up (anchor fit time / elbokit fit time):")
        print(f"{'':16s}" + "".join(f"{a:>16s}" for a in anchors))
        for o in ours:
            print(f"{o:16s}" + "".join(f"{results[a][0] / results[o][0]:16.2f}x"
                                       for a in anchors))
        best_ll = max(results[a][1] for a in anchors)
        best_co = max(results[a][2] for a in anchors)
        print(f"\nbest anchor: held-out ll/word {best_ll:.4f}, NPMI {best_co:.4f}")
        for o in ours:
            print(f"{o:16s} ll/word {results[o][1] - best_ll:+.4f} vs best anchor, "
                  f"NPMI {results[o][2] - best_co:+.4f}")


if __name__ == "__main__":
    main()
