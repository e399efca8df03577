"""The analytics side: a stream's records as Arrow tables and Parquet files.

Columns: ``offset`` (int64), ``timestamp`` (timestamp[ms, UTC]), ``key`` and
``value`` (binary, null when absent), ``headers`` (list of key/value structs).
Batches are decoded one read at a time and turned into columns per read, so a
large range never needs one Python object per record at once beyond a read.
Parquet goes to any fsspec URL (``s3://``, ``file://``, ``memory://``); the
write runs in a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import trio

from journal.segments.batch import decode_batch

if TYPE_CHECKING:
    from journal.stream import Stream

__all__ = ["SCHEMA", "Table", "read_table", "write_parquet"]

Table = pa.Table

_HEADER = pa.struct([("key", pa.string()), ("value", pa.binary())])
SCHEMA = pa.schema(
    [
        ("offset", pa.int64()),
        ("timestamp", pa.timestamp("ms", tz="UTC")),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("headers", pa.list_(_HEADER)),
    ]
)
_READ_BYTES = 4 << 20


async def read_table(stream: Stream, start_offset: int, end_offset: int) -> pa.Table:
    """Records ``start_offset..end_offset-1`` that the stream still holds, as one table."""
    start = max(start_offset, stream.first_offset)
    end = min(end_offset, stream.committed)
    chunks: list[pa.RecordBatch] = []
    offset = start
    while offset < end:
        raws = await stream.read_batches(offset, _READ_BYTES)
        if not raws:
            break
        columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        for raw in raws:
            for rec in decode_batch(raw)[1]:
                if rec.offset is None or not offset <= rec.offset < end:
                    continue
                columns["offset"].append(rec.offset)
                columns["timestamp"].append(rec.timestamp)
                columns["key"].append(rec.key)
                columns["value"].append(rec.value)
                columns["headers"].append([{"key": k, "value": v} for k, v in rec.headers])
        if columns["offset"]:
            chunks.append(pa.RecordBatch.from_pydict(columns, schema=SCHEMA))
            offset = columns["offset"][-1] + 1
        else:
            break
    return pa.Table.from_batches(chunks, schema=SCHEMA)


async def write_parquet(
    table: pa.Table, url: str, storage_options: dict[str, Any] | None = None
) -> None:
    def write() -> None:
        fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
        parent = path.rsplit("/", 1)[0]
        if parent and parent != path:
            fs.makedirs(parent, exist_ok=True)
        with fs.open(path, "wb") as f:
            pq.write_table(table, f)

    await trio.to_thread.run_sync(write)
