"""The event store: machines, clips, scores and alerts (SQLite by default).

See :class:`EventStore`; the schema and its migrations live in
:mod:`soundwatch.store.schema`.
"""

from soundwatch.store.events import (
    ClipRef,
    EventStore,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
    stream_key,
)

__all__ = [
    "ClipRef",
    "EventStore",
    "StoreError",
    "StoreFullError",
    "StoreReadOnlyError",
    "stream_key",
]
