"""Text to counts (Corpus) and count-matrix checks (as_counts, CountBatches)."""

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from elbokit import Corpus
from elbokit.data.text import CountBatches, as_counts

DOCS = ["The cat sat on the mat", "The dog chased the cat", "A bird sang", "dogs and cats"]


def test_corpus_builds_counts_with_countvectorizer_settings():
    c = Corpus(DOCS, stop_words="english")
    assert "the" not in c.vocabulary and "cat" in c.vocabulary
    assert c.counts.shape == (4, len(c.vocabulary))
    assert c.counts.dtype == np.int64
    j = c.vocabulary.index("cat")
    np.testing.assert_array_equal(c.counts[:, j].toarray().ravel(), [1, 1, 0, 0])
    c2 = Corpus(DOCS, stop_words=None, min_df=2)
    assert sorted(c2.vocabulary) == ["cat", "the"]
    c3 = Corpus(DOCS, stop_words=None, max_features=3)
    assert len(c3.vocabulary) == 3


def test_corpus_transform_keeps_columns_and_drops_unknown_words():
    c = Corpus(DOCS)
    new = c.transform(["cat cat zebra", "unicorn"])
    assert new.shape == (2, len(c.vocabulary))
    assert new[0, c.vocabulary.index("cat")] == 2
    assert new[1].sum() == 0  # no known word: an empty document


def test_corpus_readers(tmp_path):
    (tmp_path / "lines.txt").write_text("the cat sat\n\nthe dog ran\n")
    c = Corpus.from_lines(tmp_path / "lines.txt", stop_words=None)
    assert len(c) == 2 and c.names == ["1", "3"]
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "b.txt").write_text("dog dog")
    (folder / "a.txt").write_text("cat")
    c = Corpus.from_folder(folder)
    assert c.names == ["a.txt", "b.txt"]
    assert c.counts[1, c.vocabulary.index("dog")] == 2
    with open(tmp_path / "d.jsonl", "w") as f:
        for i, t in enumerate(["cat sat", "dog ran"]):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    c = Corpus.from_jsonl(tmp_path / "d.jsonl")
    assert c.names == ["d0", "d1"] and len(c.vocabulary) == 4


def test_readers_decode_compressed_and_foreign_text(tmp_path):
    """One reader for every path: .gz lines and JSONL decompressed; a file that is not
    in the encoding is an error naming the file and the fix, until its encoding (or
    decode_error) is given; the library's and the command line's folder readers agree
    (subfolders included)."""
    import gzip

    from elbokit.data.text import read_documents, read_texts

    with gzip.open(tmp_path / "lines.txt.gz", "wt", encoding="utf-8") as f:
        f.write("the cat sat\n\nthe dog ran\n")
    c = Corpus.from_lines(tmp_path / "lines.txt.gz", stop_words=None)
    assert c.names == ["1", "3"] and "cat" in c.vocabulary
    with gzip.open(tmp_path / "d.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"id": "a", "text": "cat sat"}) + "\n")
    assert read_texts(tmp_path / "d.jsonl.gz") == (["cat sat"], ["a"])
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("café au lait", encoding="latin-1")
    (folder / "sub" / "b.txt").write_text("dog dog", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.txt is not utf-8 text \(byte 0xe9.*"
                                         r"encoding='latin-1'.*decode_error='replace'"):
        Corpus.from_folder(folder)
    c = Corpus.from_folder(folder, encoding="latin-1", stop_words=None)
    assert c.names == ["a.txt", "sub/b.txt"] and "café" in c.vocabulary
    replaced = Corpus.from_folder(folder, decode_error="replace", stop_words=None)
    assert "caf" in replaced.vocabulary and "café" not in replaced.vocabulary  # U+FFFD splits it
    assert read_documents(folder, encoding="latin-1") == ["café au lait", "dog dog"]
    with pytest.raises(ValueError, match="decode_error='nope'"):
        read_texts(folder, decode_error="nope")
    with pytest.raises(ValueError, match="encoding='klingon'"):
        read_texts(folder, encoding="klingon")
    (tmp_path / "fake.txt.gz").write_text("not gzip")
    with pytest.raises(ValueError, match="not a readable gzip file"):
        read_texts(tmp_path / "fake.txt.gz")


def test_corpus_bad_input(tmp_path):
    with pytest.raises(TypeError, match="iterable of str"):
        Corpus("one string")
    with pytest.raises(ValueError, match="documents is empty"):
        Corpus([])
    with pytest.raises(ValueError, match="stop words"):
        Corpus(["the and of"])
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="field"):
        Corpus.from_jsonl(tmp_path / "bad.jsonl")


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")
def test_as_counts_accepts_scipy_torch_sparse_and_dense_alike():
    dense = np.array([[0, 2, 0, 1], [0, 0, 0, 0], [3, 0, 1, 0]])
    ref = as_counts(sp.csr_matrix(dense))
    for X in (sp.coo_matrix(dense), dense, torch.tensor(dense).to_sparse(),
              torch.tensor(dense).to_sparse_csr(), torch.tensor(dense, dtype=torch.float64)):
        c = as_counts(X)
        torch.testing.assert_close(c.indptr, ref.indptr)
        torch.testing.assert_close(c.indices, ref.indices)
        torch.testing.assert_close(c.data, ref.data)
    assert as_counts(torch.tensor(dense).to_sparse()).is_torch
    np.testing.assert_array_equal(ref.to_scipy().toarray(), dense)
    np.testing.assert_array_equal(ref.doc_lengths().numpy(), [3, 0, 4])


def test_as_counts_drops_explicit_zeros():
    m = sp.csr_matrix((np.array([1, 0, 2]), np.array([0, 1, 2]), np.array([0, 2, 3])),
                      shape=(2, 3))
    c = as_counts(m)
    assert c.indices.tolist() == [0, 2] and c.indptr.tolist() == [0, 1, 2]


@pytest.mark.parametrize("X, match", [
    (np.array([[1, -1]]), "Negative values"),
    (np.array([[1.0, np.nan]]), "NaN or inf"),
    (np.array([1, 2]), "2-D"),
    (np.zeros((0, 3)), "0 sample"),
    (np.array([["a", "b"]]), "numbers"),
    (["some text"], "is text"),
])
def test_as_counts_rejects_bad_input(X, match):
    with pytest.raises((ValueError, TypeError), match=match):
        as_counts(X)


def test_as_counts_checks_vocabulary_size_and_integers():
    with pytest.raises(ValueError, match="expecting 5 features"):
        as_counts(np.ones((2, 3)), n_features=5)
    with pytest.raises(ValueError, match="non-integer"):
        as_counts(np.array([[0.5, 1.0]]), integer=True)


def test_count_batches_cover_every_document_once():
    X = sp.random(23, 7, density=0.4, format="csr", random_state=0) * 10
    X.data = np.ceil(X.data)
    c = as_counts(X)
    for shuffle in (False, True):
        gen = torch.Generator().manual_seed(0)
        seen = []
        rebuilt = np.zeros(X.shape)
        for b in CountBatches(c, 5, shuffle=shuffle, generator=gen):
            seen.extend(b.rows.tolist())
            np.add.at(rebuilt, (b.rows[b.doc].numpy(), b.word.numpy()), b.count.numpy())
        assert sorted(seen) == list(range(23))
        np.testing.assert_allclose(rebuilt, X.toarray())
