"""The journal's service interface: what front ends and meta may call.

Two classes implement it: :class:`~journal.journal.Journal` in-process and
:class:`~journal.remote.RemoteJournal` over the journal RPC (``docs/rpc.md``).
Code written against :class:`JournalService` runs unchanged on either, so a
broker can move to another machine than its data. Every method is async,
because over the network every method is a round trip; the in-process
journal's synchronous conveniences (``streams()``, ``stream_info()``,
``segments()``, ``statistics()``) have async twins here named after the RPC
requests that carry them.

The conformance suite (``tests/test_journal_conformance.py``) runs the same
tests against both implementations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, overload

from journal.config import StreamConfig
from journal.errors import StorageError
from journal.journal import SegmentInfo, StreamInfo
from journal.records import AppendResult, Record
from journal.stats import JournalStatistics, StreamStatistics

__all__ = ["JournalService"]


class JournalService(Protocol):
    """Streams of records; see :class:`~journal.journal.Journal` for each method's contract."""

    async def create_stream(
        self, name: str, config: StreamConfig | None = None, *, exist_ok: bool = False
    ) -> None: ...

    async def delete_stream(self, name: str) -> None: ...

    async def list_streams(self) -> list[str]: ...

    async def describe_stream(self, name: str) -> StreamInfo: ...

    async def list_segments(self, name: str) -> list[SegmentInfo]: ...

    @overload
    async def get_statistics(self) -> JournalStatistics: ...
    @overload
    async def get_statistics(self, name: str) -> StreamStatistics: ...

    async def get_statistics(
        self, name: str | None = None
    ) -> JournalStatistics | StreamStatistics: ...

    async def append(self, name: str, records: Sequence[Record]) -> AppendResult: ...

    async def append_batch(
        self, name: str, batch: bytes | bytearray | memoryview
    ) -> AppendResult: ...

    async def roll(self, name: str) -> None: ...

    async def read(self, name: str, offset: int, max_bytes: int = 1 << 20) -> list[Record]: ...

    async def read_batches(
        self, name: str, offset: int, max_bytes: int = 1 << 20
    ) -> list[bytes]: ...

    async def offset_for_time(self, name: str, timestamp_ms: int) -> int | None: ...

    async def wait(self, name: str, offset: int) -> None: ...

    def tail(self, name: str, from_offset: int) -> AsyncIterator[Record]: ...

    async def apply_retention(self, name: str | None = None) -> int: ...

    async def migrate(self, name: str | None = None) -> int: ...

    async def verify(self, name: str) -> list[StorageError]: ...
