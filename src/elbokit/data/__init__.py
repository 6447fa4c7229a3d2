"""Data sources: where the batches that the engines stream over come from."""

from elbokit.data.sources import BatchSource, InMemorySource
from elbokit.data.text import Corpus, CountBatches, SparseCounts, as_counts

__all__ = ["BatchSource", "Corpus", "CountBatches", "InMemorySource", "SparseCounts", "as_counts"]
