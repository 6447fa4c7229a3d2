"""LDA on real corpora of different shapes: elbokit against scikit-learn, gensim and tomotopy.

Corpora, all installed offline on Debian (``--corpora kjv,licences,fortunes,man``):

* ``kjv``: the King James Bible (``bible-kjv``), one document per verse
  (31,102 short documents);
* ``licences``: every ``/usr/share/doc/*/copyright`` file, one document each
  (long documents; about half are copies of another package's, so ~380 remain,
  median ~110 words after the vectoriser, one of ~117,000);
* ``fortunes``: the fortune databases of ``/usr/share/games/fortunes``, one
  document per fortune (short, ~15,000 documents);
* ``man``: 6,000 man pages of sections 1 and 8 (``/usr/share/man/man{1,8}``),
  one document per page, troff requests and escapes stripped (long
  documents, median ~140 words after the vectoriser, up to ~10,000);
* ``changelogs`` (not in the default run; kept aside to check the defaults on
  a corpus they were not chosen on): every ``/usr/share/doc/*/changelog.Debian.gz``,
  one document per package, sign-off lines dropped (~590 long documents once
  copies are dropped);
* ``descriptions`` and ``man357`` (not in the default run either, checked after the
  defaults were chosen): 20,000 one-line package descriptions from apt's
  Packages index (median 4 words), and every man page of sections 3, 5 and 7
  (~1,700 long documents once copies are dropped);
* ``perl`` and ``c-headers`` (session 12, after the defaults were chosen): every
  installed Perl module (code and POD, one document per ``.pm`` file) and 3,000
  C headers of /usr/include.

Each corpus loses its exact duplicate documents (Debian repeats a source
package's changelog and copyright file for each binary package), is vectorised
once (scikit-learn's CountVectorizer, English stop words, min_df=5,
max_df=0.5), 10% of its documents are held out (seeded), and
every system is fitted on the same counts with K topics (default 50), each
with its own defaults except where the line says otherwise:

* elbokit's default ``LDA(K)``, and each method (batch, online, gibbs) with
  that method's defaults, and gibbs from random topics (``init="random"``,
  the default for short documents, whose sampler otherwise starts from batch
  VI on long ones);
* scikit-learn batch (10 iterations) and online (10 passes), on float32 input
  (its fastest path), ``n_jobs=--threads`` (its CPU seconds are spent in
  worker processes, not counted here), and batch again with ``n_jobs=1``
  (``sklearn-batch-1``: all its CPU time in this process);
* gensim ``LdaModel`` (10 passes, its defaults: alpha = eta = 1/K);
* tomotopy ``LDAModel`` (1000 iterations, its defaults: alpha 0.1 optimised
  every 10 iterations, eta 0.01), ``workers=--threads``.

One evaluator scores every system (:func:`evaluate`, reusable: it takes a
topic-word matrix and a function inferring topic mixtures, so any topic
model plugs in):

* held-out log-likelihood per token by document completion: each held-out
  document's words are split in two by binomial thinning (seeded, the same
  for everyone); the mixture is inferred from the first part by the system's
  own inference and the second part scored with log sum_k theta_k beta_kw;
* NPMI of each topic's top 10 words over the held-out documents (document
  co-occurrence; gensim's ``c_npmi`` formula), averaged over topics;
* c_v of the top 10 words over the held-out texts (gensim's ``c_v``, sliding
  windows of 110 tokens);
* topic diversity: distinct words among all topics' top 25;
* shared: the mean number of top-10 words a pair of topics has in common
  (near-duplicate topics share many; lower is more distinct).

Times: wall clock of the fit and CPU seconds of this process during it (the
machine is shared: CPU time is steadier than wall time under load), with
``uptime``'s load average printed before each corpus. With ``--threads 1``
every system runs in this process on one thread (scikit-learn ``n_jobs=1``),
so CPU seconds compare like for like on a loaded machine.

Usage::

    python bench/lda.py [--corpora kjv,licences,fortunes,man] [--topics 50] [--threads 2]
                        [--only elbokit-default,tomotopy,...] [--no-sweeps] [--fit-seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import re
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp
import torch

import elbokit
from elbokit import LDA, Corpus
from elbokit.data.text import analyzer, as_counts
from elbokit.models.lda import (
    completion_log_likelihood,
    split_counts,
    topic_coherence,
    topic_diversity,
)

THREADS = 2


# ---------------------------------------------------------------- corpora
def read_kjv() -> list[str]:
    if shutil.which("bible") is None:
        raise SystemExit("the `bible` command is missing: apt-get install bible-kjv")
    out = subprocess.run(["bible", "-f", "Ge1:1-Re22:21"], capture_output=True, text=True,
                         check=True).stdout
    return [re.sub(r"^\S+\d+:\d+\s+", "", line) for line in out.splitlines() if line.strip()]


def read_licences() -> list[str]:
    return [open(f, errors="replace").read() for f in sorted(glob.glob("/usr/share/doc/*/copyright"))]


def read_fortunes() -> list[str]:
    docs = []
    for f in sorted(glob.glob("/usr/share/games/fortunes/*")):
        if os.path.isfile(f) and "." not in os.path.basename(f):
            text = open(f, errors="replace").read()
            docs += [d.strip() for d in re.split(r"\n%\n", text) if d.strip()]
    return docs


_SIGNATURE = re.compile(r"^ -- .*$", re.M)  # a changelog entry's maintainer and date line


def read_changelogs() -> list[str]:
    """Debian's package changelogs, one document per package (the entries' sign-off
    lines, names and dates, dropped): a corpus not used while developing the defaults."""
    docs = []
    for f in sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz")):
        with gzip.open(f, "rt", errors="replace") as fh:
            docs.append(_SIGNATURE.sub("", fh.read()))
    return docs


_MACRO = re.compile(r"^[.']\s*\S+\s*")  # a troff request or macro name at the start of a line
_ESCAPE = re.compile(r"\\(f(\[[^\]]*\]|\(..|.)|s[-+]?\d+|\(..|\[[^\]]*\]|\*(\(..|\[[^\]]*\]|.)"
                     r"|[-&|^%e0 ~c\\/,:])")  # font, size, special-character escapes


def read_manpages(n_docs: int = 6000, seed: int = 0, sections: str = "18") -> list[str]:
    """Man pages of ``sections`` (default 1 and 8), one document per page (troff requests
    and escapes stripped, comments and ``.so`` links dropped, pages of at least 20 words),
    ``n_docs`` of them drawn with ``seed``."""
    import gzip

    files = sorted(sum((glob.glob(f"/usr/share/man/man{s}/*.gz") for s in sections), []))
    docs = []
    for f in files:
        try:
            raw = gzip.open(f, "rt", errors="replace").read()
        except (OSError, EOFError):
            continue
        if raw.startswith(".so "):
            continue
        lines = [_ESCAPE.sub(" ", _MACRO.sub("", line) if line[:1] in ".'" else line)
                 for line in raw.splitlines() if not line.startswith(('.\\"', "'\\\"", '\\"'))]
        text = " ".join(lines)
        if len(text.split()) >= 20:
            docs.append(text)
    pick = np.sort(np.random.default_rng(seed).permutation(len(docs))[:n_docs])
    return [docs[i] for i in pick]


def read_package_descriptions(n_docs: int = 20000, seed: int = 0) -> list[str]:
    """The one-line descriptions of Debian's main archive (apt's Packages index, read
    with ``apt-helper cat-file``), distinct ones, ``n_docs`` drawn with ``seed``: very
    short documents (median 4 words after the vectoriser)."""
    lists = glob.glob("/var/lib/apt/lists/*_main_binary-*_Packages*")
    docs = set()
    for f in lists:
        text = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", f], capture_output=True,
                              text=True).stdout
        docs.update(line[12:].strip() for line in text.splitlines()
                    if line.startswith("Description:"))
    docs = sorted(docs)
    pick = np.sort(np.random.default_rng(seed).permutation(len(docs))[:n_docs])
    return [docs[i] for i in pick]


def read_python_stdlib() -> list[str]:
    """Python 3.11's standard-library modules (Debian's /usr/lib/python3.11, tests left
    out), one document per file: its comments and string literals (docstrings), files
    with at least 200 characters of them."""
    import io
    import tokenize

    keep = (tokenize.COMMENT, tokenize.STRING)
    docs = []
    for f in sorted(glob.glob("/usr/lib/python3.11/**/*.py", recursive=True)):
        if "/test" in f:
            continue
        try:
            with open(f, encoding="utf-8") as fh:
                tokens = list(tokenize.generate_tokens(io.StringIO(fh.read()).readline))
        except (OSError, UnicodeDecodeError, SyntaxError, tokenize.TokenError):
            continue
        text = " ".join(t.string for t in tokens if t.type in keep)
        if len(text) > 200:
            docs.append(text)
    return docs


def read_debian_readmes() -> list[str]:
    """Debian's README* and NEWS* files under /usr/share/doc (gzipped or not), one
    document per file of at least 200 characters."""
    docs = []
    for f in sorted(glob.glob("/usr/share/doc/*/*")):
        if not os.path.basename(f).startswith(("README", "NEWS")) or not os.path.isfile(f):
            continue
        try:
            raw = gzip.open(f).read() if f.endswith(".gz") else open(f, "rb").read()
        except (OSError, EOFError):
            continue
        text = raw.decode("utf-8", "replace")
        if len(text) > 200:
            docs.append(text)
    return docs


def read_perl_modules() -> list[str]:
    """Every Perl module installed by Debian (``*.pm`` under /usr/share/perl,
    /usr/share/perl5 and /usr/lib/*/perl*), one document per file: code and its POD
    documentation (long documents)."""
    files = sorted(set(glob.glob("/usr/share/perl/**/*.pm", recursive=True)
                       + glob.glob("/usr/share/perl5/**/*.pm", recursive=True)
                       + glob.glob("/usr/lib/*/perl*/**/*.pm", recursive=True)))
    return [open(f, "rb").read().decode("utf-8", "replace") for f in files]


def read_c_headers(n_docs: int = 3000, seed: int = 0) -> list[str]:
    """C headers under /usr/include (a seeded sample of ``n_docs``), one document per
    file of at least 500 characters: declarations and their comments."""
    files = sorted(glob.glob("/usr/include/**/*.h", recursive=True))
    docs = [open(f, "rb").read().decode("utf-8", "replace") for f in files]
    docs = [d for d in docs if len(d) >= 500]
    rng = np.random.default_rng(seed)
    return [docs[i] for i in sorted(rng.permutation(len(docs))[:n_docs])]


CORPORA = {"kjv": read_kjv, "licences": read_licences, "fortunes": read_fortunes,
           "man": read_manpages, "changelogs": read_changelogs,
           # kept out of the default run, as the changelogs: corpora the defaults were not
           # chosen on (session 4 checked them after choosing)
           "descriptions": read_package_descriptions,
           "man357": lambda: read_manpages(n_docs=10**6, sections="357"),
           # session 9's, after the defaults were chosen
           "python-stdlib": read_python_stdlib, "debian-readme": read_debian_readmes,
           # session 12's, after the defaults were chosen
           "perl": read_perl_modules, "c-headers": read_c_headers}


class Split:
    """A corpus vectorised once, with its held-out documents split for completion.

    Attributes
    ----------
    corpus : elbokit.Corpus of the training documents
    X : csr int64 (n_train, V) training counts
    observed, heldout : csr int64 (n_test, V): the two halves of each held-out document
    test : csr int64 (n_test, V): the held-out documents (observed + heldout)
    sequences : list of int arrays: held-out documents' tokens as word indices (-1 outside)
    """

    def __init__(self, docs: list[str], seed: int = 0):
        # exact copies dropped (the first kept): Debian ships one changelog or copyright
        # file per binary package, so a source package's text recurs (binutils' changelog
        # five times in training and twice held out, a third of the changelogs' scored
        # tokens, scored on a copy of training text)
        unique = list(dict.fromkeys(docs))
        self.duplicates = len(docs) - len(unique)
        docs = unique
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(docs))
        n_test = len(docs) // 10
        train = [docs[i] for i in order[n_test:]]
        test = [docs[i] for i in order[:n_test]]
        self.corpus = Corpus(train, min_df=5, max_df=0.5)
        self.X = self.corpus.counts
        X_test = self.corpus.transform(test)
        first, second = split_counts(as_counts(X_test), 0.5, torch.Generator().manual_seed(seed))
        obs = first.to_scipy().astype(np.int64)
        held = second.to_scipy().astype(np.int64)
        keep = (np.asarray(obs.sum(1)).ravel() > 0) & (np.asarray(held.sum(1)).ravel() > 0)
        self.observed, self.heldout = obs[keep], held[keep]
        self.test = (self.observed + self.heldout).tocsr()
        where = {w: i for i, w in enumerate(self.corpus.vocabulary)}
        analyze = analyzer(self.corpus.vectorizer_params)
        self.sequences = [np.array([where.get(w, -1) for w in analyze(test[i])], dtype=np.int64)
                          for i in np.nonzero(keep)[0]]

    def describe(self) -> str:
        lengths = np.asarray(self.X.sum(1)).ravel()
        return (f"{self.X.shape[0]} training documents, {self.X.shape[1]} words, "
                f"{int(self.X.sum())} tokens (per document: median {np.median(lengths):.0f}, "
                f"max {lengths.max()}); {self.observed.shape[0]} held-out documents "
                f"({int(self.observed.sum())} tokens to infer from, {int(self.heldout.sum())} "
                f"to score); {self.duplicates} duplicate documents dropped")


# ---------------------------------------------------------------- the evaluator
def evaluate(topic_word, infer, split: Split, top_n: int = 10) -> dict:
    """Score a topic model on a :class:`Split`, the same way for every system.

    Parameters
    ----------
    topic_word : array (K, V)
        Topic-word distributions (rows are normalised here).
    infer : callable
        ``infer(counts)`` -> topic mixtures (n_docs, K) of a csr count matrix.
    split : Split

    Returns
    -------
    dict with ``ll`` (held-out log-likelihood per token by document
    completion), ``npmi`` (top ``top_n`` words over the held-out documents),
    ``c_v`` (top ``top_n``, windows of 110 tokens), ``diversity`` (top 25).
    """
    beta = np.asarray(topic_word, dtype=np.float64)
    beta = beta / beta.sum(1, keepdims=True)
    theta = np.asarray(infer(split.observed), dtype=np.float64)
    theta = theta / theta.sum(1, keepdims=True)
    ll = completion_log_likelihood(torch.as_tensor(theta), torch.as_tensor(beta),
                                   as_counts(split.heldout, dtype=torch.float64))
    order = np.argsort(-beta, axis=1, kind="stable")
    top = order[:, :top_n]
    sets = [set(r) for r in top.tolist()]
    shared = [len(a & b) for i, a in enumerate(sets) for b in sets[i + 1:]]
    return {
        "shared": float(np.mean(shared)) if shared else 0.0,
        "ll": float(ll.sum() / split.heldout.sum()),
        "npmi": float(topic_coherence(top, split.test, "npmi").mean()),
        "c_v": float(topic_coherence(top, measure="c_v", sequences=split.sequences,
                                     window_size=110).mean()),
        "diversity": topic_diversity(order[:, :25]),
    }


# ---------------------------------------------------------------- systems
def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def run_elbokit(split, K, seed, **kw):
    lda = LDA(K, random_state=seed, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", elbokit.ConvergenceWarning)
        _, wall, cpu = timed(lambda: lda.fit(split.X))
    note = f"{lda.method_}, {lda.n_iter_} iterations"
    if lda.init_ == "batch":
        note = f"gibbs from batch VI, {lda.n_iter_} sweeps"
    return lda.topic_word_, lda.transform, wall, cpu, note


def run_sklearn(split, K, seed, method, jobs=None):
    from sklearn.decomposition import LatentDirichletAllocation

    lda = LatentDirichletAllocation(K, learning_method=method, max_iter=10, random_state=seed,
                                    n_jobs=jobs or THREADS)
    X32 = split.X.astype(np.float32)
    _, wall, cpu = timed(lambda: lda.fit(X32))
    return lda.components_, lambda X: lda.transform(X.astype(np.float32)), wall, cpu, \
        "10 passes" if method == "online" else "10 iterations"


def _bow(X):
    X = sp.csr_matrix(X)
    return [list(zip(X.indices[X.indptr[d]:X.indptr[d + 1]].tolist(),
                     X.data[X.indptr[d]:X.indptr[d + 1]].tolist())) for d in range(X.shape[0])]


def run_gensim(split, K, seed):
    from gensim.corpora import Dictionary
    from gensim.models import LdaModel

    bow = _bow(split.X)
    id2word = Dictionary.from_corpus(bow, id2word=dict(enumerate(split.corpus.vocabulary)))
    lda, wall, cpu = timed(lambda: LdaModel(bow, num_topics=K, id2word=id2word, passes=10,
                                            random_state=seed))

    def infer(X):
        gamma, _ = lda.inference(_bow(X))
        return gamma

    return lda.get_topics(), infer, wall, cpu, "10 passes"


def _words(X, vocab):
    X = sp.csr_matrix(X)
    return [[vocab[i] for i, c in zip(X.indices[X.indptr[d]:X.indptr[d + 1]],
                                      X.data[X.indptr[d]:X.indptr[d + 1]]) for _ in range(int(c))]
            for d in range(X.shape[0])]


def run_tomotopy(split, K, seed, iterations=1000):
    import tomotopy as tp

    vocab = split.corpus.vocabulary
    mdl = tp.LDAModel(k=K, seed=seed)
    for words in _words(split.X, vocab):
        mdl.add_doc(words if words else ["__empty__"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, wall, cpu = timed(lambda: mdl.train(iterations, workers=THREADS))
    where = {w: i for i, w in enumerate(mdl.used_vocabs)}
    cols = np.array([where.get(w, -1) for w in vocab])
    beta = np.zeros((K, len(vocab)))
    for k in range(K):
        dist = np.asarray(mdl.get_topic_word_dist(k))
        beta[k] = np.where(cols >= 0, dist[np.maximum(cols, 0)], 0.0)

    def infer(X):
        docs = [mdl.make_doc(w) for w in _words(X, vocab)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dists, _ = mdl.infer(docs, workers=THREADS)
        return np.array([d if isinstance(d, np.ndarray) else d.get_topic_dist() for d in dists])

    return beta, infer, wall, cpu, f"{iterations} iterations"


def systems(split, K, seed):
    return {
        "elbokit-default": lambda: run_elbokit(split, K, seed),
        "elbokit-batch": lambda: run_elbokit(split, K, seed, method="batch"),
        "elbokit-online": lambda: run_elbokit(split, K, seed, method="online"),
        "elbokit-gibbs": lambda: run_elbokit(split, K, seed, method="gibbs"),
        "elbokit-gibbs-random": lambda: run_elbokit(split, K, seed, method="gibbs",
                                                    init="random"),
        "sklearn-batch": lambda: run_sklearn(split, K, seed, "batch"),
        "sklearn-batch-1": lambda: run_sklearn(split, K, seed, "batch", jobs=1),
        "sklearn-online": lambda: run_sklearn(split, K, seed, "online"),
        "gensim": lambda: run_gensim(split, K, seed),
        "tomotopy": lambda: run_tomotopy(split, K, seed),
    }


# ---------------------------------------------------------------- Gibbs sweep speed
def sweep_speed(split, K, seed, sweeps=20):
    """CPU and wall seconds per token of one Gibbs sweep: elbokit's and tomotopy's, on
    the same counts (tomotopy with its defaults, elbokit without learned priors).

    Each system runs ``sweeps`` and then ``2 * sweeps`` sweeps from the same start; the
    difference over ``sweeps`` is the cost of a sweep alone, without what a fit does
    once (elbokit: validation, the initial assignments, the final averages; tomotopy's
    initialisation is its ``train(0)``, outside its timing in any case).
    """
    import tomotopy as tp

    LDA(K, method="gibbs", max_iter=2, tol=0, random_state=seed).fit(split.X[:50])  # compile

    def ours(n):
        lda = LDA(K, method="gibbs", max_iter=n, tol=0, random_state=seed, alpha=0.1,
                  eta=0.01)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return timed(lambda: lda.fit(split.X))[1:]

    def theirs(n):
        mdl = tp.LDAModel(k=K, seed=seed)
        for words in _words(split.X, split.corpus.vocabulary):
            mdl.add_doc(words if words else ["__empty__"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mdl.train(0, workers=THREADS)
            return timed(lambda: mdl.train(n, workers=THREADS))[1:]

    per = 1e9 / (sweeps * float(split.X.sum()))
    out = {}
    for name, run in (("elbokit", ours), ("tomotopy", theirs)):
        (w1, c1), (w2, c2) = run(sweeps), run(2 * sweeps)
        out[name] = (max(w2 - w1, 0.0) * per, max(c2 - c1, 0.0) * per)
    return out


# ---------------------------------------------------------------- main
def load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "?"


def _row(label: str, r: dict, note: str) -> str:
    return (f"{label:20s} {r['wall']:8.2f} {r['cpu']:8.2f} {r['ll']:9.4f} {r['npmi']:7.4f} "
            f"{r['c_v']:6.4f} {r['diversity']:6.3f} {r['shared']:6.2f}  {note}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default="kjv,licences,fortunes,man")
    ap.add_argument("--topics", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0, help="seed of the held-out split (and of "
                    "the fits unless --fit-seeds)")
    ap.add_argument("--fit-seeds", default="", help="comma-separated seeds: every system is "
                    "fitted once per seed on the same split, with a mean line per system")
    ap.add_argument("--only", default="", help="comma-separated subset of systems")
    ap.add_argument("--threads", type=int, default=2,
                    help="threads per system (torch and elbokit's sampler, scikit-learn "
                         "n_jobs, tomotopy workers; gensim's LdaModel is single-threaded)")
    ap.add_argument("--no-sweeps", action="store_true", help="skip the sweep-speed comparison")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    torch.set_num_threads(THREADS)
    K, seed = args.topics, args.seed
    only = [s for s in args.only.split(",") if s]
    print(f"bench/lda.py: K={K}, {THREADS} thread(s), seed {seed}; torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}")
    with warnings.catch_warnings():  # numba's compiled kernels: loaded (or compiled) once
        warnings.simplefilter("ignore")
        small = sp.random(60, 40, density=0.2, format="csr", random_state=0) * 5
        for method in ("batch", "gibbs"):
            LDA(3, method=method, max_iter=2).fit(small.ceil().astype(np.int64))
        try:  # and scikit-learn's worker processes started, so no system pays a start-up
            from sklearn.decomposition import LatentDirichletAllocation
            LatentDirichletAllocation(3, max_iter=2, n_jobs=THREADS).fit(small)
        except ImportError:
            pass
    for name in args.corpora.split(","):
        split = Split(CORPORA[name](), seed)
        print(f"\n== {name}: {split.describe()}; load average {load()}", flush=True)
        print(f"{'system':20s} {'wall s':>8s} {'cpu s':>8s} {'ll/token':>9s} {'NPMI':>7s} "
              f"{'c_v':>6s} {'divers':>6s} {'shared':>6s}  note")
        fit_seeds = [int(x) for x in args.fit_seeds.split(",") if x] or [seed]
        results, runs = {}, {}
        for fit_seed in fit_seeds:
            for sysname, fn in systems(split, K, fit_seed).items():
                if only and sysname not in only:
                    continue
                if (sysname == "sklearn-batch-1" and THREADS == 1
                        and (not only or "sklearn-batch" in only)):
                    continue  # the same run as sklearn-batch
                try:
                    beta, infer, wall, cpu, note = fn()
                except ImportError as err:
                    print(f"{sysname:20s} skipped: {err} (pip install -e '.[bench]')")
                    continue
                r = dict(evaluate(beta, infer, split), wall=wall, cpu=cpu)
                runs.setdefault(sysname, []).append(r)
                label = sysname if len(fit_seeds) == 1 else f"{sysname}@{fit_seed}"
                print(_row(label, r, f"{note}; load {load()}"), flush=True)
        for sysname, rs in runs.items():
            results[sysname] = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
            if len(fit_seeds) > 1:
                print(_row(f"{sysname} mean", results[sysname], f"{len(rs)} seeds"))
        anchors = [n for n in results if not n.startswith("elbokit")]
        if anchors and "elbokit-default" in results:
            d = results["elbokit-default"]
            best_ll = max(anchors, key=lambda a: results[a]["ll"])
            best_co = max(anchors, key=lambda a: results[a]["npmi"])
            print(f"elbokit-default vs best anchor: ll/token {d['ll'] - results[best_ll]['ll']:+.4f}"
                  f" ({best_ll}), NPMI {d['npmi'] - results[best_co]['npmi']:+.4f} ({best_co})")
            if "sklearn-batch" in results:
                s = results["sklearn-batch"]
                # scikit-learn's workers' CPU time is not the process's: compare CPU with n_jobs=1
                s1 = results.get("sklearn-batch-1", s if THREADS == 1 else None)
                cpu = f", cpu {d['cpu'] / s1['cpu']:.3f} (n_jobs=1)" if s1 else ""
                print(f"elbokit-default time / scikit-learn batch (10 iterations): wall "
                      f"{d['wall'] / s['wall']:.3f} (n_jobs={THREADS}){cpu} (target <= 1/3)")
        if not args.no_sweeps and (not only or "sweeps" in only):
            try:
                sp_ = sweep_speed(split, K, seed)
            except ImportError:
                continue
            (ew, ec), (tw, tc) = sp_["elbokit"], sp_["tomotopy"]
            print(f"Gibbs sweep, ns per token: elbokit wall {ew:.0f} cpu {ec:.0f}; tomotopy wall "
                  f"{tw:.0f} cpu {tc:.0f}; elbokit/tomotopy wall {ew / tw:.2f}, cpu {ec / tc:.2f}"
                  f"; load {load()}", flush=True)


if __name__ == "__main__":
    main()
