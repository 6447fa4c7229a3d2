"""The LDA report, with what pyLDAvis shows (intertopic distance map, topic prevalence,
top words by relevance) and more: the bound or the sampler's log-likelihood, held-out
perplexity, coherence per topic, example documents, topics against given labels."""

from __future__ import annotations

import numpy as np

from elbokit.report import plots
from elbokit.report.common import agreement, bound_table_and_plot
from elbokit.report.data import categories, read_labels
from elbokit.report.html import Page, Table

MAX_DOCS = 20000       # documents whose topic mixtures are inferred for the plots
TOP_WORDS = 10
RELEVANCE_LAMBDA = 0.6  # Sievert & Shirley (2014): the value their user study found best
EXAMPLES = 3           # example documents per topic
STAGES = 5


def lda_summary(lda, documents, heldout=None) -> dict:
    """The figures the tour prints and the report shows, from one computation: held-out
    perplexity by document completion (when ``heldout`` documents are given) and NPMI
    coherence of each topic's top 10 words over ``documents``."""
    npmi = np.asarray(lda.coherence(documents, measure="npmi"), dtype=np.float64)
    perplexity = float(lda.perplexity(heldout)) if heldout else None
    return {"perplexity": perplexity, "n_heldout": len(heldout) if heldout else 0,
            "npmi": npmi, "npmi_mean": float(npmi.mean())}


def _counts(lda, documents):
    from elbokit.data.text import vectorize

    return vectorize(documents, lda.vocabulary_, lda.vectorizer_params_)


def _js_principal_coordinates(phi: np.ndarray) -> np.ndarray:
    """Topics in 2-D: classical scaling (PCoA) of their Jensen-Shannon divergences (pyLDAvis)."""
    K = len(phi)
    if K < 3:
        return np.stack([np.arange(K, dtype=np.float64), np.zeros(K)], 1)
    m = 0.5 * (phi[:, None, :] + phi[None, :, :])
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(phi[:, None, :] > 0, phi[:, None, :] * np.log(phi[:, None, :] / m), 0).sum(-1)
    d = 0.5 * (kl + kl.T)
    J = np.eye(K) - 1.0 / K
    B = -0.5 * J @ d @ J  # pyLDAvis scales the divergence itself, not its square
    vals, vecs = np.linalg.eigh(B)
    top = np.argsort(vals)[::-1][:2]
    return vecs[:, top] * np.sqrt(np.clip(vals[top], 0, None))


def lda_page(lda, documents, metrics: dict, heldout=None, labels=None, progress=None,
             description: str = "the documents given") -> Page:
    """Report of a fitted LDA (fitted on a Corpus) on raw ``documents``."""
    progress = progress or (lambda stage: None)
    if getattr(lda, "vocabulary_", None) is None:
        raise ValueError("this LDA was fitted on a count matrix without words: fit it on an "
                         "elbokit.Corpus (the command line does) to report on it.")
    n_total = len(documents)
    if labels is not None:
        labels = read_labels(labels, n_total, description)
    index = np.arange(n_total)
    if n_total > MAX_DOCS:
        index = np.sort(np.random.default_rng(0).choice(n_total, MAX_DOCS, replace=False))
    docs = [documents[i] for i in index]
    progress("topic mixtures")
    theta = np.asarray(lda.transform(docs), dtype=np.float64)
    counts = _counts(lda, docs)
    lengths = np.asarray(counts.sum(1)).ravel().astype(np.float64)
    term_freq = np.asarray(counts.sum(0)).ravel().astype(np.float64)
    phi = np.asarray(lda.topic_word_, dtype=np.float64)
    K = phi.shape[0]
    topic_tokens = theta.T @ lengths
    prevalence = topic_tokens / max(topic_tokens.sum(), 1e-300)
    progress("perplexity and coherence")
    s = lda_summary(lda, documents, heldout)
    gibbs = lda.method == "gibbs"
    fitted_on = metrics.get("n_documents", "?")
    run = (f"{lda.n_iter_} sweeps of Gibbs sampling" if gibbs
           else f"{lda.n_iter_} iterations of {lda.method} VI, "
                f"{'converged' if lda.converged_ else 'NOT converged (max_iter reached)'}")
    page = Page(
        f"LDA: {K} topics, method={lda.method!r}",
        f"Fitted on {fitted_on} documents, vocabulary of {len(lda.vocabulary_)} words ({run}); "
        f"shown: {description}, {n_total} documents"
        + (f" (a random {len(index)} of them in the plots)." if len(index) < n_total else "."),
    )
    page.headline.update({"documents fitted on": f"{fitted_on}", "topics": f"{K}",
                          "vocabulary": f"{len(lda.vocabulary_)}"})
    if s["perplexity"] is not None:
        page.headline[f"held-out perplexity ({s['n_heldout']} documents)"] = f"{s['perplexity']:.1f}"
    page.headline["mean NPMI"] = f"{s['npmi_mean']:.3f}"
    _training(page, lda, gibbs)
    palette = plots.colours(K)
    progress("topics")
    _overview(page, phi, prevalence, palette)
    _relevance(page, lda, phi, term_freq, topic_tokens, palette)
    _quality(page, lda, s, palette)
    _examples(page, docs, index, theta, lengths, lda)
    if labels is not None:
        _labels(page, theta, labels[index])
    return page


def _training(page: Page, lda, gibbs: bool) -> None:
    if gibbs:
        burn = lda.burn_in if lda.burn_in is not None else lda.max_iter // 2
        blocks = bound_table_and_plot(
            page, lda.lower_bounds_, int(lda.n_iter_), what="sweep", unit="nats per word",
            label="log p(words | theta, beta) per word", exact=False,
            caption=f"The sampler's per-word log-likelihood of the words given each sweep's draw "
                    f"of theta and the topics (a Monte Carlo quantity, not a bound); the topics "
                    f"average the counts after {burn} burn-in sweeps.")
        title = "Training: the sampler's log-likelihood per sweep"
    else:
        blocks = bound_table_and_plot(
            page, lda.lower_bounds_, int(lda.n_iter_),
            what="pass" if lda.method == "online" else "iteration", unit="nats per word",
            label="ELBO per word", exact=False,
            caption="Mean-field VI climbs the ELBO, a lower bound on log p(words); its gap to "
                    "log p(words) is KL(q || posterior), which is not computable exactly here.")
        title = "Training: the bound per iteration"
    page.add(title, *blocks)


def _overview(page: Page, phi, prevalence, palette) -> None:
    xy = _js_principal_coordinates(phi)
    table = Table("topics-map", ["topic", "PC1", "PC2", "prevalence"],
                  [[k, float(xy[k, 0]), float(xy[k, 1]), float(prevalence[k])]
                   for k in range(len(phi))])
    page.add(
        "Topics at a glance",
        page.figure(plots.intertopic_map(xy, prevalence, palette),
                    "Intertopic distance map (as pyLDAvis): topics placed by classical scaling "
                    "of the Jensen-Shannon divergence between their word distributions; circle "
                    "area proportional to the topic's share of the tokens.", table),
        page.figure(plots.topic_bars(prevalence * 100, palette, ylabel="share of tokens (%)"),
                    "Topic prevalence: the share of the tokens of the documents shown that "
                    "each topic accounts for (sum over documents of E[theta] x length).", table),
    )


def _relevance(page: Page, lda, phi, term_freq, topic_tokens, palette) -> None:
    """Top words by relevance r = lambda log p(w|k) + (1 - lambda) log(p(w|k) / p(w))."""
    vocab = list(lda.vocabulary_)
    p_w = term_freq / max(term_freq.sum(), 1e-300)
    seen = p_w > 0
    with np.errstate(divide="ignore"):
        log_phi, log_lift = np.log(phi), np.log(phi) - np.log(np.where(seen, p_w, 1.0))
    lam = RELEVANCE_LAMBDA
    relevance = np.where(seen, lam * log_phi + (1 - lam) * log_lift, -np.inf)
    by_relevance = np.argsort(-relevance, 1, kind="stable")[:, :TOP_WORDS]
    by_probability = np.argsort(-phi, 1, kind="stable")[:, :TOP_WORDS]
    rows, words, within, overall = [], [], [], []
    for k in range(len(phi)):
        for rank, (w_rel, w_prob) in enumerate(zip(by_relevance[k], by_probability[k]), 1):
            rows.append([k, rank, vocab[w_rel], float(phi[k, w_rel]), float(p_w[w_rel]),
                         float(relevance[k, w_rel]), vocab[w_prob], float(phi[k, w_prob])])
        words.append([vocab[w] for w in by_relevance[k]])
        within.append(phi[k, by_relevance[k]] * topic_tokens[k])
        overall.append(term_freq[by_relevance[k]])
    table = Table("top-words", ["topic", "rank", f"word (relevance, lambda={lam})", "p(word|topic)",
                                "p(word)", "relevance", "word (probability)",
                                "p(word|topic) (probability)"], rows)
    words_table = Table("top-words-shown", ["topic", f"by relevance (lambda={lam})",
                                            "by probability (lambda=1)"],
                        [[k, " ".join(words[k]), " ".join(vocab[w] for w in by_probability[k])]
                         for k in range(len(phi))])
    page.add(
        "Top words by relevance",
        page.figure(plots.topic_word_bars(words, within, overall, palette),
                    f"Each topic's {TOP_WORDS} most relevant words (Sievert & Shirley 2014, "
                    f"lambda={lam}: between the most probable words, lambda=1, and those most "
                    "specific to the topic, lambda=0): expected tokens in the topic (coloured) "
                    "and in the whole corpus (grey), one scale for every topic.", table),
        page.table(words_table, "The same topics' words by relevance and by probability alone.",
                   text_columns=words_table.header[1:], csv=table),
        grid=False,
    )


def _quality(page: Page, lda, s, palette) -> None:
    K = len(s["npmi"])
    top = lda.top_words(TOP_WORDS)
    table = Table("coherence", ["topic", "NPMI", "top words"],
                  [[k, float(s["npmi"][k]), " ".join(top[k])] for k in range(K)])
    perplexity = (f"Held-out perplexity {s['perplexity']:.1f} by document completion (theta "
                  f"inferred from half of each of {s['n_heldout']} held-out documents' words, the "
                  "other half scored; lower is better)."
                  if s["perplexity"] is not None else
                  "No held-out documents were given (elbokit report --heldout DOCS), so no "
                  "held-out perplexity.")
    page.add(
        "Topic quality: coherence per topic, held-out perplexity",
        page.figure(plots.topic_bars(s["npmi"], palette, ylabel="NPMI of the top 10 words",
                                     reference=s["npmi_mean"],
                                     reference_label=f"mean {s['npmi_mean']:.3f}"),
                    "Normalised pointwise mutual information of each topic's top 10 words, from "
                    "their co-occurrence in the documents shown (-1 .. 1, higher: more "
                    "coherent). " + perplexity, table),
        page.table(table, "", text_columns=["top words"]),
    )


def _examples(page: Page, docs, index, theta, lengths, lda) -> None:
    K = theta.shape[1]
    rows = []
    eligible = lengths >= min(3.0, lengths.max() if len(lengths) else 0)
    for k in range(K):
        order = np.argsort(-np.where(eligible, theta[:, k], -1.0), kind="stable")[:EXAMPLES]
        for i in order:
            text = " ".join(docs[i].split())
            rows.append([k, int(index[i]), float(theta[i, k]),
                         text if len(text) <= 220 else text[:217] + "..."])
    table = Table("example-documents", ["topic", "document", "E[theta_k]", "text"], rows)
    page.add("Example documents per topic", page.table(
        table, f"The {EXAMPLES} documents with the largest share of each topic (documents "
               "numbered from 0 in the order read, empty lines skipped).", text_columns=["text"]),
        grid=False)


def _labels(page: Page, theta, labels) -> None:
    names, codes = categories(labels)
    means = np.stack([theta[codes == c].mean(0) for c in range(len(names))])
    table = Table("topics-by-label", ["label"] + [f"topic {k}" for k in range(theta.shape[1])],
                  [[names[c]] + means[c].tolist() for c in range(len(names))])
    blocks, scores = agreement(page, theta.argmax(1), labels, found_name="dominant topic",
                               name="topics")
    page.headline.update({f"{k} (dominant topic vs label)": f"{v:.3f}" for k, v in scores.items()})
    page.add(
        "Topics against the given labels",
        page.figure(plots.heatmap(means, names, list(range(theta.shape[1])), xlabel="topic",
                                  ylabel="given label", cbar="mean E[theta]",
                                  width=plots.FULL if theta.shape[1] > 14 else plots.HALF),
                    "Mean topic mixture of the documents with each label.", table),
        *blocks,
    )
