"""Data sources: where the batches that the engines stream over come from."""

from elbokit.data.sources import BatchSource, InMemorySource

__all__ = ["BatchSource", "InMemorySource"]
