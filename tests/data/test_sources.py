"""Batch sources: files and iterables stream the same rows as in-memory data."""

import numpy as np
import pytest
import torch

from elbokit.data.sources import as_source, is_source_like, sample_rows

F32 = torch.float32
CPU = torch.device("cpu")


def rows(source):
    return torch.cat([X for X, _ in source]).numpy()


@pytest.fixture
def data():
    return np.random.default_rng(0).normal(size=(1003, 4)).astype(np.float32)


def test_npy_file_streams_all_rows_in_chunks(data, tmp_path):
    np.save(tmp_path / "x.npy", data)
    src = as_source(tmp_path / "x.npy", batch_size=100, dtype=F32, device=CPU)
    sizes = [X.shape[0] for X, _ in src]
    assert sizes == [100] * 10 + [3]
    np.testing.assert_array_equal(rows(src), data)
    assert src.n_samples == 1003 and src.n_features == 4


def test_parquet_and_csv_stream_the_same_rows(data, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({f"f{i}": data[:, i] for i in range(4)})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=200)
    np.savetxt(tmp_path / "x.csv", data, delimiter=",", header="a,b,c,d", comments="", fmt="%.9g")
    for name in ("x.parquet", "x.csv"):
        src = as_source(tmp_path / name, batch_size=128, dtype=F32, device=CPU)
        np.testing.assert_allclose(rows(src), data, rtol=1e-6)


def test_non_numeric_csv_column_is_named(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,x\n2,y\n")
    with pytest.raises(ValueError, match="row 1, column .b. holds .x."):
        rows(as_source(tmp_path / "x.csv", batch_size=10, dtype=F32, device=CPU))


def test_iterables_and_callables(data):
    batches = [data[:500], data[500:]]
    np.testing.assert_array_equal(rows(as_source(batches, batch_size=1, dtype=F32, device=CPU)), data)
    np.testing.assert_array_equal(
        rows(as_source(lambda: iter(batches), batch_size=1, dtype=F32, device=CPU)), data)
    with pytest.raises(TypeError, match="one-shot iterator"):
        as_source(iter(batches), batch_size=1, dtype=F32, device=CPU)


@pytest.mark.parametrize("bad, match", [
    ([np.ones((3, 2)), np.ones((3, 5))], "same columns"),
    ([np.ones((3, 2)), np.full((3, 2), np.nan)], "NaN or inf"),
    ([np.ones((3, 2)), np.ones(3)], "2-D"),
    ([np.ones((0, 2))], "no rows"),
])
def test_bad_batches_are_clear_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        rows(as_source(bad, batch_size=1, dtype=F32, device=CPU))


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        as_source(tmp_path / "none.npy", batch_size=1, dtype=F32, device=CPU)
    (tmp_path / "x.txt").write_text("1,2")
    with pytest.raises(ValueError, match="unknown data format"):
        as_source(tmp_path / "x.txt", batch_size=1, dtype=F32, device=CPU)
    np.save(tmp_path / "v.npy", np.ones(5))
    with pytest.raises(ValueError, match="2-D"):
        as_source(tmp_path / "v.npy", batch_size=1, dtype=F32, device=CPU)
    np.save(tmp_path / "t.npy", np.ones((50, 3)))
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:-40])
    with pytest.raises(ValueError, match="truncated"):
        rows(as_source(tmp_path / "t.npy", batch_size=16, dtype=F32, device=CPU))


def test_what_is_streamed():
    assert is_source_like("data.npy") and is_source_like([np.ones((2, 2))]) and is_source_like(lambda: [])
    assert not is_source_like(np.ones((2, 2))) and not is_source_like([[1.0, 2.0]])
    assert not is_source_like(torch.ones(2, 2))


def test_sample_rows_is_uniform_and_bounded(data):
    src = as_source([data[i:i + 100] for i in range(0, 1003, 100)], batch_size=1, dtype=F32, device=CPU)
    g = torch.Generator().manual_seed(0)
    picked = [sample_rows(src, 50, g)[0] for _ in range(200)]
    assert all(p.shape == (50, 4) for p in picked)
    # every row about equally likely: the mean of the samples' means is the data mean
    mean = torch.stack([p.mean(0) for p in picked]).mean(0).numpy()
    np.testing.assert_allclose(mean, data.mean(0), atol=0.05)
    X, w = sample_rows(src, 5000, g)
    np.testing.assert_array_equal(np.sort(X.numpy(), 0), np.sort(data, 0))
