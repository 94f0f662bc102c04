"""The knowledge broker: a content-addressed packet store with an SQLite index, its HTTP service
and the clients that publish to it, search it and pull from it (docs/broker.md).

The HTTP parts need the `broker` extra (fastapi, uvicorn, httpx); the store and the directory
client do not.
"""

from m2kt.broker.blobs import BlobStore, FileBlobs
from m2kt.broker.client import BrokerClient, DirectoryStore, Store, open_store, pull
from m2kt.broker.index import Entry, Index, Query, SQLiteIndex
from m2kt.broker.registry import Consistency, Registry, normalize_digest
from m2kt.broker.tokens import SCOPES, Publisher, TokenTable, add_publisher

__all__ = [
    "SCOPES",
    "BlobStore",
    "BrokerClient",
    "Consistency",
    "DirectoryStore",
    "Entry",
    "FileBlobs",
    "Index",
    "Publisher",
    "Query",
    "Registry",
    "SQLiteIndex",
    "Store",
    "TokenTable",
    "add_publisher",
    "normalize_digest",
    "open_store",
    "pull",
]
