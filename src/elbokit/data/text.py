"""Text to counts, and document-term count matrices as torch tensors.

:class:`Corpus` turns raw text (one document per line, a folder of ``.txt``
files, or JSONL with a ``text`` field) into a sparse document-term matrix
with scikit-learn's :class:`~sklearn.feature_extraction.text.CountVectorizer`,
and keeps the vocabulary so that new text maps onto the same columns.

:func:`as_counts` checks any count input (SciPy sparse, torch sparse, dense
NumPy/torch, or a :class:`Corpus`) and returns a :class:`SparseCounts`: the
CSR arrays of the matrix as torch tensors on the compute device.
:class:`CountBatches` serves documents from it in batches of non-zeros, the
shape the topic models' local updates work on.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.feature_extraction.text import CountVectorizer

# CountVectorizer settings a Corpus exposes (and saves with a model, as JSON).
VECTORIZER_KEYS = (
    "stop_words", "min_df", "max_df", "max_features", "lowercase", "token_pattern",
    "ngram_range", "strip_accents",
)


class Corpus:
    """Documents as a sparse document-term count matrix, with their vocabulary.

    Parameters
    ----------
    documents : iterable of str
        The raw texts, one per document.
    stop_words : "english", list of str or None, default="english"
        Words to drop (scikit-learn's English list by default).
    min_df, max_df : int or float
        Drop words in fewer than ``min_df`` / more than ``max_df`` documents
        (a float is a fraction of the documents), as in ``CountVectorizer``.
    max_features : int, optional
        Keep only the most frequent words.
    lowercase : bool, default=True
    token_pattern : str
        Regular expression of a token (default: words of 2+ letters/digits).
    ngram_range : tuple of int, default=(1, 1)
    strip_accents : {"ascii", "unicode"} or None
    vocabulary : list of str, optional
        A fixed vocabulary (then min_df/max_df/max_features are not applied).

    Attributes
    ----------
    counts : scipy.sparse.csr_matrix of shape (n_documents, n_words), int64
        Word counts; words outside the vocabulary are dropped.
    vocabulary : list of str, length n_words
        Column j of ``counts`` counts ``vocabulary[j]``.
    names : list of str or None
        Where each document came from (file name, or line number), if known.

    Examples
    --------
    >>> corpus = Corpus(["the cat sat", "the dog sat down"], stop_words=None)
    >>> corpus.vocabulary
    ['cat', 'dog', 'down', 'sat', 'the']
    >>> corpus.counts.shape
    (2, 5)
    """

    def __init__(
        self,
        documents: Iterable[str],
        *,
        stop_words="english",
        min_df=1,
        max_df=1.0,
        max_features=None,
        lowercase=True,
        token_pattern=r"(?u)\b\w\w+\b",
        ngram_range=(1, 1),
        strip_accents=None,
        vocabulary=None,
        names=None,
    ):
        if isinstance(documents, str):
            raise TypeError(
                "documents must be an iterable of str, one per document; got one str: "
                "wrap it in a list, or use Corpus.from_lines(path) for a file."
            )
        documents = list(documents)
        if not documents:
            raise ValueError("documents is empty: a Corpus needs at least one document.")
        bad = [i for i, d in enumerate(documents) if not isinstance(d, str)]
        if bad:
            raise TypeError(
                f"documents must hold str; item {bad[0]} is {type(documents[bad[0]]).__name__}."
            )
        self.vectorizer_params = {
            "stop_words": stop_words, "min_df": min_df, "max_df": max_df,
            "max_features": max_features, "lowercase": lowercase,
            "token_pattern": token_pattern, "ngram_range": list(ngram_range),
            "strip_accents": strip_accents,
        }
        kw = dict(self.vectorizer_params, ngram_range=tuple(ngram_range))
        if vocabulary is not None:
            kw.update(min_df=1, max_df=1.0, max_features=None)
            self.vectorizer = CountVectorizer(vocabulary=list(vocabulary), **kw)
            counts = self.vectorizer.fit_transform(documents)
        else:
            self.vectorizer = CountVectorizer(**kw)
            try:
                counts = self.vectorizer.fit_transform(documents)
            except ValueError as err:
                raise ValueError(
                    f"no vocabulary could be built ({err}): the documents are empty or hold "
                    "only stop words; lower min_df, raise max_df or pass stop_words=None."
                ) from err
        self.counts = sp.csr_matrix(counts, dtype=np.int64)
        self.vocabulary = [str(w) for w in self.vectorizer.get_feature_names_out()]
        self.names = None if names is None else [str(n) for n in names]

    # ------------------------------------------------------------ readers
    @classmethod
    def from_lines(cls, path, *, encoding="utf-8", decode_error="strict", skip_empty=True,
                   **kwargs) -> Corpus:
        """One document per line of the text file ``path`` (gzip-compressed if it ends in
        ``.gz``).

        Empty lines are skipped unless ``skip_empty=False``; ``names`` are
        the 1-based line numbers. ``encoding`` and ``decode_error`` (``"strict"``:
        a byte that does not decode is an error naming the file; ``"replace"``,
        ``"ignore"``) as in scikit-learn's vectorizers.
        """
        docs, names = read_lines(path, encoding=encoding, decode_error=decode_error,
                                 skip_empty=skip_empty)
        return cls(docs, names=names, **kwargs)

    @classmethod
    def from_folder(cls, path, *, pattern="*.txt", encoding="utf-8", decode_error="strict",
                    **kwargs) -> Corpus:
        """One document per file matching ``pattern`` under the folder ``path`` and its
        subfolders (sorted; ``names`` their paths relative to ``path``)."""
        docs, names = read_folder(path, pattern=pattern, encoding=encoding,
                                  decode_error=decode_error)
        return cls(docs, names=names, **kwargs)

    @classmethod
    def from_jsonl(cls, path, *, field="text", encoding="utf-8", decode_error="strict",
                   **kwargs) -> Corpus:
        """One document per line of the JSON-lines file ``path`` (``.gz``: compressed),
        its text in ``field``; ``names`` each record's ``id``, else its line number."""
        docs, names = read_jsonl(path, field=field, encoding=encoding,
                                 decode_error=decode_error)
        return cls(docs, names=names, **kwargs)

    @classmethod
    def from_path(cls, path, *, field="text", pattern="*.txt", encoding="utf-8",
                  decode_error="strict", **kwargs) -> Corpus:
        """:meth:`from_folder`, :meth:`from_jsonl` or :meth:`from_lines`, by what ``path``
        is (see :func:`read_texts`)."""
        docs, names = read_texts(path, field=field, pattern=pattern, encoding=encoding,
                                 decode_error=decode_error)
        return cls(docs, names=names, **kwargs)

    # ------------------------------------------------------------ use
    def __len__(self) -> int:
        return self.counts.shape[0]

    def transform(self, documents: Iterable[str]) -> sp.csr_matrix:
        """Counts of new texts over this corpus's vocabulary (unknown words are dropped)."""
        return vectorize(documents, self.vocabulary, self.vectorizer_params)


def vectorize(documents, vocabulary, params: dict) -> sp.csr_matrix:
    """Counts of ``documents`` over a fixed ``vocabulary`` with the saved vectorizer settings."""
    if isinstance(documents, str):
        raise TypeError("documents must be an iterable of str, one per document; got one str.")
    kw = {k: params[k] for k in VECTORIZER_KEYS if k in params}
    kw["ngram_range"] = tuple(kw.get("ngram_range", (1, 1)))
    kw.update(min_df=1, max_df=1.0, max_features=None)
    vec = CountVectorizer(vocabulary=list(vocabulary), **kw)
    return sp.csr_matrix(vec.transform(list(documents)), dtype=np.int64)


# ---------------------------------------------------------------- count matrices
@dataclass
class SparseCounts:
    """A document-term count matrix in CSR form, as torch tensors on one device.

    Attributes
    ----------
    indptr : LongTensor, shape (n_docs + 1,)
    indices : LongTensor, shape (nnz,)
        Word (column) of each non-zero.
    data : Tensor, shape (nnz,)
        Count of each non-zero, in the compute dtype.
    n_docs, n_features : int
    is_torch : bool
        Whether the input was a torch tensor (outputs then come back as tensors).
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    data: torch.Tensor
    n_docs: int
    n_features: int
    is_torch: bool = False

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def n_words(self) -> float:
        """Total count (float64 sum)."""
        return float(self.data.to(torch.float64).sum())

    def doc_lengths(self) -> torch.Tensor:
        """Words per document, float64, shape (n_docs,)."""
        rows = self.row_ids()
        return torch.zeros(self.n_docs, dtype=torch.float64, device=self.device).index_add_(
            0, rows, self.data.to(torch.float64))

    def row_ids(self) -> torch.Tensor:
        """Document of each non-zero, shape (nnz,)."""
        lengths = self.indptr[1:] - self.indptr[:-1]
        return torch.repeat_interleave(torch.arange(self.n_docs, device=self.device), lengths)

    def take(self, rows: torch.Tensor) -> SparseCounts:
        """The documents ``rows`` (in that order) as a new SparseCounts."""
        rows = rows.to(self.device)
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        indptr = torch.zeros(len(rows) + 1, dtype=torch.int64, device=self.device)
        indptr[1:] = torch.cumsum(lengths, 0)
        total = int(indptr[-1])
        pos = torch.arange(total, device=self.device) + torch.repeat_interleave(
            starts - indptr[:-1], lengths, output_size=total)
        return SparseCounts(indptr, self.indices[pos], self.data[pos], len(rows),
                            self.n_features, self.is_torch)

    def to_scipy(self) -> sp.csr_matrix:
        return sp.csr_matrix(
            (self.data.cpu().numpy(), self.indices.cpu().numpy(), self.indptr.cpu().numpy()),
            shape=(self.n_docs, self.n_features))


def as_counts(X, *, name="X", dtype=torch.float32, device=None, n_features=None,
              integer=False, allow_empty=False, estimator="the model") -> SparseCounts:
    """Check a document-term count matrix and return it as :class:`SparseCounts`.

    Parameters
    ----------
    X : scipy.sparse matrix, torch sparse tensor (COO or CSR), dense array/tensor, or Corpus
        Shape (n_docs, n_words); non-negative finite counts.
    name : str
        The argument's name, for error messages.
    dtype : torch.dtype
        Dtype of the returned counts.
    device : torch.device, optional
        Where to put the tensors (by default: where a torch input is, else CPU).
    n_features : int, optional
        Required number of columns (the fitted vocabulary size).
    integer : bool
        Require integer counts.
    allow_empty : bool
        Accept 0 documents.
    estimator : str
        Name of the estimator, for error messages.

    Raises
    ------
    ValueError
        Negative, NaN/inf or non-integer (when required) counts, no documents,
        or the wrong number of columns.
    TypeError
        Input that is not a matrix of numbers.
    """
    is_torch = isinstance(X, torch.Tensor)
    if isinstance(X, Corpus):
        X = X.counts
    if isinstance(X, (str, bytes)) or (isinstance(X, (list, tuple)) and X and isinstance(X[0], str)):
        raise TypeError(
            f"{name} is text: pass a count matrix, a Corpus, or fit on a Corpus so that the "
            "model keeps a vocabulary and accepts raw text."
        )
    if is_torch:
        if device is None:
            device = X.device
        t = X.detach()
        if t.is_complex():
            raise ValueError(f"Complex data not supported: {name} must hold real counts.")
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_docs, n_words); got shape {tuple(t.shape)}. "
                             "Reshape your data: one row of counts per document.")
        if t.layout == torch.sparse_csr:
            indptr, indices, data = t.crow_indices(), t.col_indices(), t.values()
        else:
            if t.layout != torch.sparse_coo:
                t = t.to_sparse()
            t = t.coalesce()
            rows, indices = t.indices()
            data = t.values()
            counts = torch.bincount(rows, minlength=t.shape[0])
            indptr = torch.zeros(t.shape[0] + 1, dtype=torch.int64, device=t.device)
            indptr[1:] = torch.cumsum(counts, 0)
        shape = tuple(t.shape)
        indptr, indices = indptr.to(torch.int64), indices.to(torch.int64)
    else:
        device = torch.device("cpu") if device is None else device
        if sp.issparse(X):
            m = sp.csr_matrix(X)
        else:
            arr = np.asarray(X)
            if arr.dtype.kind == "O":  # numbers stored as objects
                try:
                    arr = arr.astype(np.float64)
                except (TypeError, ValueError) as err:
                    raise TypeError(f"{name} must hold numbers: {err}.") from err
            if arr.dtype.kind == "c":
                raise ValueError(f"Complex data not supported: {name} must hold real counts.")
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"{name} must hold numbers; got dtype {arr.dtype}.")
            if arr.ndim != 2:
                raise ValueError(
                    f"{name} must be 2-D (n_docs, n_words); got shape {arr.shape}. Reshape "
                    "your data: one row of counts per document.")
            m = sp.csr_matrix(arr)
        if m.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: {name} must hold real counts.")
        if m.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers; got dtype {m.dtype}.")
        m.sum_duplicates()
        m.sort_indices()
        shape = m.shape
        indptr = torch.from_numpy(m.indptr.astype(np.int64))
        indices = torch.from_numpy(m.indices.astype(np.int64))
        data = torch.from_numpy(np.asarray(m.data, dtype=np.float64))
    if shape[0] < 1 and not allow_empty:
        raise ValueError(f"{name} has 0 sample(s) (shape={shape}) while a minimum of 1 is "
                         "required: pass at least one document.")
    if shape[1] < 1:
        raise ValueError(f"{name} has 0 feature(s) (shape={shape}) while a minimum of 1 is "
                         "required: the vocabulary is empty.")
    if n_features is not None and shape[1] != n_features:
        raise ValueError(
            f"X has {shape[1]} features, but {estimator} is expecting {n_features} features "
            f"as input: {name}'s columns must be the vocabulary the model was fitted on "
            "(build it with the same vectorizer, e.g. corpus.transform)."
        )
    data64 = data.to(torch.float64)
    if not bool(torch.isfinite(data64).all()):
        raise ValueError(f"{name} contains NaN or inf: counts must be finite.")
    if bool((data64 < 0).any()):
        raise ValueError(f"Negative values in data passed as {name}: word counts must be >= 0.")
    if integer and bool((data64 != data64.round()).any()):
        raise ValueError(
            f"{name} has non-integer counts, which the Gibbs sampler cannot use: pass word "
            "counts, or use method='batch' or 'online'."
        )
    keep = data64 > 0
    if not bool(keep.all()):  # drop explicit zeros
        rows = torch.repeat_interleave(torch.arange(shape[0]), indptr[1:] - indptr[:-1])
        rows, indices, data = rows[keep], indices[keep], data[keep]
        indptr = torch.zeros(shape[0] + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
    return SparseCounts(indptr.to(device), indices.to(device), data.to(device=device, dtype=dtype),
                        int(shape[0]), int(shape[1]), is_torch)


@dataclass
class DocBatch:
    """A batch of documents as non-zeros: what a local update works on.

    Attributes
    ----------
    doc : LongTensor, shape (nnz,)
        Document (row within the batch) of each non-zero.
    word : LongTensor, shape (nnz,)
    count : Tensor, shape (nnz,)
    n_docs : int
    index : int
        Position of the batch in its source's pass (for per-batch local state).
    rows : LongTensor, shape (n_docs,)
        The batch's documents in the full matrix.
    """

    doc: torch.Tensor
    word: torch.Tensor
    count: torch.Tensor
    n_docs: int
    index: int
    rows: torch.Tensor

    @property
    def n_words(self) -> torch.Tensor:
        return self.count.to(torch.float64).sum()


class CountBatches:
    """Serve :class:`SparseCounts` in batches of ``batch_size`` documents.

    Parameters
    ----------
    counts : SparseCounts
    batch_size : int, optional
        Documents per batch; all at once when None.
    shuffle : bool
        Visit documents in a new random order on each pass (online learning).
    generator : torch.Generator, optional
        Random source of the shuffling.
    shard : (offset, n_global), optional
        Under torch.distributed: ``counts`` are the global documents
        [offset, offset + n_docs) of ``n_global``. Batches are then cut from
        the global order (the same shuffle on every rank, with the same
        generator state) and each yields this rank's documents of the global
        batch, possibly none: every rank yields the same number of batches.
    """

    def __init__(self, counts: SparseCounts, batch_size=None, shuffle=False, generator=None,
                 shard=None):
        self.counts = counts
        self.offset, self.n_samples = (0, counts.n_docs) if shard is None else map(int, shard)
        self.sharded = shard is not None
        self.n_features = counts.n_features
        self.batch_size = batch_size or self.n_samples or 1
        self.shuffle = shuffle
        self.generator = generator

    def __len__(self) -> int:
        return -(-self.n_samples // self.batch_size)

    def __iter__(self) -> Iterator[DocBatch]:
        n = self.n_samples
        device = self.counts.device
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator,
                                   device=self.generator.device if self.generator else "cpu")
            order = order.to(device)
        elif self.sharded:
            order = torch.arange(n, device=device)
        else:
            order = None
        for i, start in enumerate(range(0, n, self.batch_size)):
            stop = min(n, start + self.batch_size)
            if order is None:
                rows = torch.arange(start, stop, device=device)
                lo, hi = int(self.counts.indptr[start]), int(self.counts.indptr[stop])
                lengths = self.counts.indptr[start + 1:stop + 1] - self.counts.indptr[start:stop]
                word, count = self.counts.indices[lo:hi], self.counts.data[lo:hi]
            else:
                rows = order[start:stop]
                if self.sharded:  # this rank's documents of the global batch
                    local = rows - self.offset
                    rows = local[(local >= 0) & (local < self.counts.n_docs)]
                part = self.counts.take(rows)
                lengths = part.indptr[1:] - part.indptr[:-1]
                word, count = part.indices, part.data
            n_docs = rows.shape[0]
            doc = torch.repeat_interleave(torch.arange(n_docs, device=device), lengths)
            yield DocBatch(doc, word, count, n_docs, i, rows)


def analyzer(params: dict):
    """The CountVectorizer analyzer of saved settings: text -> tokens, in order (for
    coherence measures on sliding windows)."""
    kw = {k: params[k] for k in VECTORIZER_KEYS if k in params}
    kw["ngram_range"] = tuple(kw.get("ngram_range", (1, 1)))
    kw.update(min_df=1, max_df=1.0, max_features=None)
    return CountVectorizer(**kw).build_analyzer()


DECODE_ERRORS = ("strict", "replace", "ignore")  # scikit-learn's decode_error choices
READ_DEFAULTS = {"field": "text", "encoding": "utf-8", "decode_error": "strict"}


def recorded_reading(metrics: dict) -> dict:
    """The :func:`read_texts` options (field, encoding, decode_error) a model's documents
    were read with, as ``elbokit fit lda`` records them in metrics.json under
    ``reading``; {} where none are recorded (older models, the Python API)."""
    recorded = metrics.get("reading")
    if not isinstance(recorded, dict):
        return {}
    return {k: v for k, v in recorded.items() if k in READ_DEFAULTS and isinstance(v, str)}


def read_texts(path, *, field="text", pattern="*.txt", encoding="utf-8",
               decode_error="strict") -> tuple[list[str], list[str]]:
    """Raw documents and where each came from, by what ``path`` is: a folder (the
    files matching ``pattern`` in it and its subfolders, :func:`read_folder`), a
    JSON-lines file (``.jsonl`` or ``.json``, optionally ``.gz``: :func:`read_jsonl`,
    the text in ``field``), else a text file of one document per line (optionally
    ``.gz``: :func:`read_lines`). One reader for the library, the command line and the
    reports, so a model fitted on a folder reads the same documents again.

    Returns
    -------
    documents : list of str
    names : list of str
        File paths relative to the folder, records' ``id`` or line numbers.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no corpus at {path}.")
    if path.is_dir():
        return read_folder(path, pattern=pattern, encoding=encoding, decode_error=decode_error)
    if _plain_suffix(path) in (".jsonl", ".json"):
        return read_jsonl(path, field=field, encoding=encoding, decode_error=decode_error)
    return read_lines(path, encoding=encoding, decode_error=decode_error)


def read_documents(path, **kwargs) -> list[str]:
    """The documents of :func:`read_texts`, without their names."""
    return read_texts(path, **kwargs)[0]


def read_lines(path, *, encoding="utf-8", decode_error="strict", skip_empty=True):
    """(documents, 1-based line numbers) of a text file, one document per line."""
    path = Path(path)
    docs, names = [], []
    with _decoding(path, encoding, decode_error) as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if skip_empty and not line.strip():
                continue
            docs.append(line)
            names.append(str(i))
    if not docs:
        raise ValueError(f"{path} holds no non-empty line: no documents to read.")
    return docs, names


def read_folder(path, *, pattern="*.txt", encoding="utf-8", decode_error="strict"):
    """(documents, relative paths) of the files matching ``pattern`` under ``path``."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"path={str(path)!r} is not a folder.")
    files = sorted(p for p in path.rglob(pattern) if p.is_file())
    if not files:
        raise ValueError(f"no file matches {pattern!r} under {path}.")
    docs = []
    for p in files:
        with _decoding(p, encoding, decode_error) as f:
            docs.append(f.read())
    return docs, [str(p.relative_to(path)) for p in files]


def read_jsonl(path, *, field="text", encoding="utf-8", decode_error="strict"):
    """(documents, ids or line numbers) of a JSON-lines file, the text in ``field``."""
    path = Path(path)
    docs, names = [], []
    with _decoding(path, encoding, decode_error) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {i} is not valid JSON: {err}.") from err
            if not isinstance(record, dict) or not isinstance(record.get(field), str):
                raise ValueError(
                    f"{path}, line {i} has no string field {field!r}: pass field=... "
                    "naming the field that holds the text."
                )
            docs.append(record[field])
            names.append(str(record.get("id", i)))
    if not docs:
        raise ValueError(f"{path} holds no record.")
    return docs, names


def _plain_suffix(path: Path) -> str:
    """The suffix under a ``.gz``: ``.jsonl`` for ``d.jsonl.gz``."""
    suffixes = [x.lower() for x in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


@contextlib.contextmanager
def _decoding(path: Path, encoding: str, decode_error: str):
    """``path`` open as text (``.gz``: decompressed), a byte that does not decode an
    error that names the file and the fix."""
    if decode_error not in DECODE_ERRORS:
        raise ValueError(f"decode_error={decode_error!r}: use one of {', '.join(DECODE_ERRORS)}.")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"encoding={encoding!r} is not a text encoding Python knows "
                         "(say 'utf-8' or 'latin-1').") from None
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding=encoding, errors=decode_error) as f:
            yield f
    except UnicodeDecodeError as err:
        byte = err.object[err.start:err.start + 1].hex()
        raise ValueError(
            f"{path} is not {encoding} text (byte 0x{byte} does not decode): pass its "
            "encoding (say encoding='latin-1'), or decode_error='replace' to read past "
            "such bytes."
        ) from None
    except (OSError, EOFError) as err:  # a .gz that is not gzip, or is cut short
        if opener is open:
            raise
        raise ValueError(f"{path} is not a readable gzip file ({err}).") from None


