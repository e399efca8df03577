"""StrataMQ's storage engine: segmented, append-only, crash-safe streams of records.

Public names are re-exported here; modules below are private by convention::

    from journal import Journal, Record, StreamConfig

    async with Journal.open("data", fsync="interval") as j:
        await j.create_stream("orders", StreamConfig(), exist_ok=True)
        res = await j.append("orders", [Record(value=b"hello")])
        records = await j.read("orders", res.base_offset)
"""

from journal.config import FSYNC_POLICIES, FsyncPolicy, InvalidConfigError, StreamConfig
from journal.errors import (
    BatchTooLargeError,
    CorruptSegmentError,
    InvalidArgumentError,
    InvalidBatchError,
    JournalClosedError,
    JournalConnectionLostError,
    JournalUnavailableError,
    LocalProtocolError,
    ObjectStoreError,
    ObjectStoreTimeoutError,
    OffsetOutOfRangeError,
    ProtocolError,
    RemoteJournalError,
    RemoteProtocolError,
    StorageError,
    StrataError,
    StreamDeletedError,
    StreamExistsError,
    UnknownStreamError,
    UnsupportedCompressionError,
)
from journal.journal import Journal, SegmentInfo, StreamInfo
from journal.records import AppendResult, Header, Record
from journal.stats import (
    JournalStatistics,
    LatencyHistogram,
    StreamStatistics,
    TieringStatistics,
)

__all__ = [
    "FSYNC_POLICIES",
    "AppendResult",
    "BatchTooLargeError",
    "CorruptSegmentError",
    "FsyncPolicy",
    "Header",
    "InvalidArgumentError",
    "InvalidBatchError",
    "InvalidConfigError",
    "Journal",
    "JournalClosedError",
    "JournalConnectionLostError",
    "JournalStatistics",
    "JournalUnavailableError",
    "LatencyHistogram",
    "LocalProtocolError",
    "ObjectStoreError",
    "ObjectStoreTimeoutError",
    "OffsetOutOfRangeError",
    "ProtocolError",
    "Record",
    "RemoteJournalError",
    "RemoteProtocolError",
    "SegmentInfo",
    "StorageError",
    "StrataError",
    "StreamConfig",
    "StreamDeletedError",
    "StreamExistsError",
    "StreamInfo",
    "StreamStatistics",
    "TieringStatistics",
    "UnknownStreamError",
    "UnsupportedCompressionError",
]
