"""ProdLDA against LDA, scored alike: held-out document completion and NPMI.

Corpora (offline, Debian packages): the King James Bible, one document per
verse (``bible-kjv``), and the fortune databases, one document per fortune
(``fortunes``, ``fortunes-min``). Each corpus: 90% of the documents train
(elbokit.Corpus: English stop words, min_df=5, max_df=0.5), 10% are held out;
each held-out document's words are split in two by binomial thinning (seeded,
the same split for both models); the model infers the document's topics from
the first part and the second part is scored with the model's word
distribution -- sum_k theta_k beta_kw for LDA, softmax(BN(beta^T theta)) for
ProdLDA -- by each estimator's ``completion_log_likelihood``. NPMI: each
topic's top 10 words, document co-occurrence in the training documents, the
same function (``elbokit.models.lda.topic_coherence``) for both; ProdLDA's top
words by p(w | topic k) (its ``components_``: the word distribution of a document
of topic k alone) and, on a second line, by the decoder's weights beta, as the
paper reads them.

``prodlda_vs_lda(corpus, observed, heldout, ...)`` is the comparison for one
corpus; ``bench/lda.py`` can call it on its corpora.

    python bench/prodlda.py [--topics 20] [--epochs 50] [--corpora kjv,fortunes]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import elbokit
from elbokit import LDA, Corpus, ProdLDA
from elbokit.data.text import as_counts
from elbokit.models.lda import split_counts, topic_coherence

sys.path.insert(0, str(Path(__file__).parent))
from lda import ARCHAIC, read_kjv  # noqa: E402  (the LDA benchmark's corpus reader)


def read_fortunes(folder="/usr/share/games/fortunes") -> list[str]:
    docs = []
    for path in sorted(Path(folder).glob("*")):
        if path.suffix or not path.is_file():  # the text files have no suffix (.dat, .u8 are not)
            continue
        text = path.read_text(errors="replace")
        docs += [d.strip() for d in text.split("\n%\n") if len(d.split()) >= 5]
    return docs


def prepare(texts: list[str], extra_stop=(), seed=0):
    """(training Corpus, observed part, held-out part) of a 90/10 split of ``texts``."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    order = np.random.default_rng(seed).permutation(len(texts))
    n_test = len(texts) // 10
    train = [texts[i] for i in order[n_test:]]
    test = [texts[i] for i in order[:n_test]]
    corpus = Corpus(train, stop_words=sorted(set(ENGLISH_STOP_WORDS) | set(extra_stop)),
                    min_df=5, max_df=0.5)
    first, second = split_counts(as_counts(corpus.transform(test)), 0.5,
                                 torch.Generator().manual_seed(seed))
    obs, held = first.to_scipy().astype(np.int64), second.to_scipy().astype(np.int64)
    keep = (np.asarray(obs.sum(1)).ravel() > 0) & (np.asarray(held.sum(1)).ravel() > 0)
    return corpus, obs[keep], held[keep]


def prodlda_vs_lda(corpus, observed, heldout, *, topics=20, epochs=50, seed=0) -> list[dict]:
    """Fit elbokit's LDA (its defaults) and ProdLDA on ``corpus``; score both alike.

    Returns one dict per model: fit seconds, held-out log-likelihood per word
    by document completion, mean NPMI of the top 10 words.
    """
    words = float(heldout.sum())
    rows = []
    models = {
        "LDA (elbokit default)": lambda: LDA(topics, random_state=seed),
        "ProdLDA": lambda: ProdLDA(topics, epochs=epochs, random_state=seed),
    }
    for name, make in models.items():
        model = make()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", elbokit.ConvergenceWarning)
            start = time.perf_counter()
            model.fit(corpus)
            seconds = time.perf_counter() - start
        ll = float(model.completion_log_likelihood(observed, heldout).sum()) / words
        npmi = float(np.mean(model.coherence(corpus.counts, measure="npmi")))
        rows.append({"model": name, "seconds": seconds, "heldout_ll_per_word": ll,
                     "perplexity": float(np.exp(-ll)), "npmi": npmi,
                     "top_words": [" ".join(t[:6]) for t in model.top_words(10)[:3]]})
        if isinstance(model, ProdLDA):  # its topics read as the paper does: by beta
            top = np.argsort(-model.beta_, axis=1, kind="stable")[:, :10]
            rows.append({"model": "  (top words by beta)", "seconds": float("nan"),
                         "heldout_ll_per_word": ll, "perplexity": float(np.exp(-ll)),
                         "npmi": float(topic_coherence(top, corpus.counts, "npmi").mean()),
                         "top_words": [" ".join(corpus.vocabulary[i] for i in t[:6])
                                       for t in top[:3]]})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--corpora", default="kjv,fortunes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    readers = {"kjv": (read_kjv, ARCHAIC), "fortunes": (read_fortunes, ())}
    print(f"ProdLDA vs LDA, K={args.topics}, ProdLDA {args.epochs} epochs; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    for name in args.corpora.split(","):
        read, stop = readers[name]
        corpus, obs, held = prepare(read(), stop, args.seed)
        print(f"\n{name}: {corpus.counts.shape[0]} training documents, {len(corpus.vocabulary)} "
              f"words; {obs.shape[0]} held-out documents ({int(held.sum())} held-out words)")
        print(f"  {'model':<24} {'fit s':>8} {'held-out ll/word':>17} {'perplexity':>11} "
              f"{'NPMI':>7}")
        for r in prodlda_vs_lda(corpus, obs, held, topics=args.topics, epochs=args.epochs,
                                seed=args.seed):
            print(f"  {r['model']:<24} {r['seconds']:>8.1f} {r['heldout_ll_per_word']:>17.4f} "
                  f"{r['perplexity']:>11.1f} {r['npmi']:>7.4f}   e.g. {' | '.join(r['top_words'])}",
                  flush=True)
    print(f"\n(held-out ll/word: document completion, the same split and formula for both; NPMI: "
          f"top 10 words in the training documents; load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
