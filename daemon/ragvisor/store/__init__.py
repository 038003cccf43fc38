"""Store implementations behind `ragvisor.core.protocols.Store`."""

from ragvisor.store.dense_index import DenseIndex
from ragvisor.store.sqlite import SqliteStore

__all__ = ["DenseIndex", "SqliteStore"]
