"""Kafka RecordBatch v2: the one format used on disk, in memory and on the wire.

Layout (big-endian), 61 fixed header bytes then the records::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 (=2)
    crc uint32 (CRC32C of everything from attributes to the end)
    attributes int16 | lastOffsetDelta int32 | baseTimestamp int64 | maxTimestamp int64
    producerId int64 | producerEpoch int16 | baseSequence int32 | recordCount int32
    records: each a zigzag-varint length, then attributes int8, timestampDelta
             varlong, offsetDelta varint, key, value, headers (varint lengths, -1
             for null)

The first 12 bytes (base offset and length) and the leader epoch sit outside the
CRC, so the journal assigns offsets by patching 8 bytes, never re-encoding. The
hot path only needs :func:`check_batch` (header + CRC, per batch); records are
decoded only when a caller asks for :class:`~journal.records.Record` objects.

Pure code: no I/O, no trio. Every malformed input raises
:class:`~journal.errors.InvalidBatchError`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from crc32c import crc32c

from journal.errors import InvalidBatchError, LocalProtocolError, UnsupportedCompressionError
from journal.records import Header, Record

__all__ = [
    "HEADER_SIZE",
    "LOG_OVERHEAD",
    "BatchHeader",
    "check_batch",
    "check_client_batch",
    "decode_batch",
    "encode_batch",
    "iter_batches",
    "parse_header",
    "restamp_batch",
    "set_base_offset",
    "validate_batch",
]

_HEADER = struct.Struct(">qiibIhiqqqhii")
HEADER_SIZE = _HEADER.size  # 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: bytes not counted by batchLength
_CRC_START = 21  # attributes onwards are covered by the CRC
_MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
_MAX_DECOMPRESSED = 256 << 20  # refuse zip bombs

COMPRESSION_NONE, COMPRESSION_GZIP = 0, 1
_COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20


class BatchHeader(NamedTuple):
    """The 61 fixed bytes of a batch, decoded."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> str:
        return _COMPRESSION_NAMES.get(self.attributes & 0x07, "unknown")

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def log_append_time(self) -> bool:
        """True when the broker's time (max_timestamp) applies to every record."""
        return bool(self.attributes & _TIMESTAMP_TYPE_BIT)


def parse_header(buf: bytes | bytearray | memoryview, pos: int) -> BatchHeader:
    """The fixed header at ``pos``, sanity-checked but without the CRC (a header walk)."""
    if len(buf) - pos < HEADER_SIZE:
        raise InvalidBatchError(
            f"truncated batch header: {len(buf) - pos} of {HEADER_SIZE} bytes", position=pos
        )
    header = BatchHeader._make(_HEADER.unpack_from(buf, pos))
    if header.magic != 2:
        raise InvalidBatchError(f"unsupported magic {header.magic}, expected 2", position=pos)
    if header.batch_length < _MIN_BATCH_LENGTH:
        raise InvalidBatchError(f"batch length {header.batch_length} too small", position=pos)
    if header.last_offset_delta < 0 or header.record_count < 0:
        raise InvalidBatchError("negative record count or offset delta", position=pos)
    return header


def check_batch(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Validate the batch starting at ``pos``: header, full length present, CRC32C.

    Per-batch work only; records are not looked at.
    """
    header = parse_header(buf, pos)
    end = pos + header.size
    if end > len(buf):
        raise InvalidBatchError(
            f"truncated batch: {len(buf) - pos} of {header.size} bytes", position=pos
        )
    crc = crc32c(memoryview(buf)[pos + _CRC_START : end])
    if crc != header.crc:
        raise InvalidBatchError(
            f"CRC32C mismatch: stored {header.crc:#010x}, computed {crc:#010x}", position=pos
        )
    return header


def iter_batches(buf: bytes | bytearray | memoryview, pos: int = 0) -> Iterator[BatchHeader]:
    """Yield the header of each complete, valid batch laid end to end in ``buf``.

    Raises on the first invalid or truncated one, so a caller can learn where
    good data ends from the last header it saw.
    """
    end = len(buf)
    while pos < end:
        header = check_batch(buf, pos)
        yield header
        pos += header.size


def set_base_offset(batch: bytearray | memoryview, base_offset: int, pos: int = 0) -> None:
    """Assign offsets to a batch in place; the CRC does not cover these 8 bytes."""
    struct.pack_into(">q", batch, pos, base_offset)


def restamp_batch(buf: bytes | bytearray, header: BatchHeader, now_ms: int) -> bytearray | None:
    """``buf`` with every record's timestamp set to ``now_ms`` and no producer, or None.

    Only for an uncompressed batch whose records all carry its base timestamp
    (every timestamp delta 0): that is what :func:`encode_batch` writes for
    records without a timestamp, so the result is byte for byte the batch
    ``encode_batch(records, now_ms=now_ms)`` gives. None when the batch is not
    of that shape (the caller decodes it instead). The CRC is recomputed, so
    check the batch (:func:`check_batch`) before restamping it.
    """
    if header.attributes & 0x07 != COMPRESSION_NONE:
        return None
    if header.max_timestamp != header.base_timestamp:
        return None
    pos, end = HEADER_SIZE, header.size
    try:
        for _ in range(header.record_count):
            # the record's length (varint), then its attributes byte and timestamp delta
            z = buf[pos]
            length, pos = ((z >> 1) ^ -(z & 1), pos + 1) if z < 0x80 else _read_varint(buf, pos)
            if length < 2 or buf[pos + 1] != 0:  # a timestamp delta that is not 0
                return None
            pos += length
    except IndexError:
        return None
    if pos != end:
        return None
    out = bytearray(buf)
    struct.pack_into(">qqqh", out, 27, now_ms, now_ms, -1, -1)
    struct.pack_into(">I", out, 17, crc32c(memoryview(out)[_CRC_START:end]))
    return out


# -- varints ----------------------------------------------------------------


def _encode_varint(n: int) -> bytes:
    """Zigzag + base-128 varint, as Kafka's records use for every length."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL_LIMIT = 1 << 14
_SMALL_VARINTS = [_encode_varint(n) for n in range(-1, _SMALL_LIMIT)]


def _varint(n: int) -> bytes:
    if -1 <= n < _SMALL_LIMIT:
        return _SMALL_VARINTS[n + 1]
    return _encode_varint(n)


def _read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            if z >> 64:
                raise InvalidBatchError("varint overflows 64 bits", position=pos)
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            if z >> 64:
                raise InvalidBatchError("varint overflows 64 bits", position=pos)
            raise InvalidBatchError("varint longer than 10 bytes", position=pos)


# -- encoding ---------------------------------------------------------------


def encode_batch(
    records: Sequence[Record],
    base_offset: int = 0,
    *,
    now_ms: int,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Encode records (uncompressed) into one batch.

    Records without a timestamp get ``now_ms``. An empty list raises
    :class:`~journal.errors.LocalProtocolError`: the format has no empty batch.
    """
    if not records:
        raise LocalProtocolError("a batch needs at least one record")
    first_ts = records[0].timestamp
    base_ts = now_ms if first_ts is None else first_ts
    max_ts = base_ts
    varint = _varint
    parts: list[bytes] = []
    append = parts.append
    for delta, rec in enumerate(records):
        ts = rec.timestamp
        if ts is None:
            ts = now_ms
        if ts > max_ts:
            max_ts = ts
        key, value, headers = rec.key, rec.value, rec.headers
        body = [b"\x00", varint(ts - base_ts), varint(delta)]
        if key is None:
            body.append(b"\x01")  # varint(-1)
        else:
            body += (varint(len(key)), key)
        if value is None:
            body.append(b"\x01")
        else:
            body += (varint(len(value)), value)
        if headers:
            body.append(varint(len(headers)))
            for hkey, hvalue in headers:
                hk = hkey.encode()
                body += (varint(len(hk)), hk)
                if hvalue is None:
                    body.append(b"\x01")
                else:
                    body += (varint(len(hvalue)), hvalue)
        else:
            body.append(b"\x00")
        encoded = b"".join(body)
        append(varint(len(encoded)))
        append(encoded)
    count = len(records)
    payload = b"".join(parts)
    tail = _HEADER.pack(
        0, 0, 0, 2, 0, 0, count - 1, base_ts, max_ts,
        producer_id, producer_epoch, base_sequence, count,
    )[_CRC_START:] + payload  # fmt: skip
    crc = crc32c(tail)
    head = struct.pack(">qiibI", base_offset, len(tail) + 9, partition_leader_epoch, 2, crc)
    return head + tail


# -- decoding ---------------------------------------------------------------


def decode_batch(
    buf: bytes | bytearray | memoryview, pos: int = 0
) -> tuple[BatchHeader, list[Record]]:
    """Validate and decode the batch at ``pos`` into records with offsets."""
    header = check_batch(buf, pos)
    records = _records_of(buf, pos, header, build=True)
    return header, records


def check_client_batch(buf: bytes | bytearray | memoryview) -> BatchHeader:
    """The journal's check of a batch handed to ``append_batch``: cheap, per batch.

    :func:`check_batch`, exactly one batch, ``recordCount`` consistent with
    ``lastOffsetDelta``, and (uncompressed) the record length prefixes tiling
    the record area exactly: one varint per record, no record built. Front
    ends facing untrusted clients add :func:`validate_batch`.
    """
    header = check_batch(buf)
    if header.size != len(buf):
        raise InvalidBatchError(f"{len(buf) - header.size} bytes after the batch", position=0)
    if header.record_count < 1 or header.record_count != header.last_offset_delta + 1:
        raise InvalidBatchError("record count does not match the last offset delta")
    if header.attributes & 0x07 == COMPRESSION_NONE:
        _check_record_lengths(bytes(buf) if isinstance(buf, memoryview) else buf, header)
    return header


def _check_record_lengths(buf: bytes | bytearray, header: BatchHeader) -> None:
    """The length prefixes of ``recordCount`` records fill the record area exactly.

    Hot: one- and two-byte varints (records under 8 KiB) are decoded inline.
    """
    pos, end = HEADER_SIZE, len(buf)
    try:
        for _ in range(header.record_count):
            z = buf[pos]
            if z < 0x80:
                pos += 1
            elif buf[pos + 1] < 0x80:
                z = (z & 0x7F) | (buf[pos + 1] << 7)
                pos += 2
            else:
                z, pos = _read_varint(buf, pos)
                z = (z << 1) ^ (z >> 63)  # back to zigzag form
            if z & 1:
                raise InvalidBatchError("negative record length", position=pos)
            pos += z >> 1
    except IndexError:
        pos = end + 1
    if pos != end:
        raise InvalidBatchError("record lengths do not fill the batch", position=HEADER_SIZE)


def validate_batch(buf: bytes | bytearray | memoryview) -> BatchHeader:
    """Check a client's batch through and through before it is stored.

    Beyond :func:`check_batch`: every record parses, offset deltas run
    0..n-1 and ``maxTimestamp`` is the records' largest timestamp, so nothing
    stored can later fail to decode or mislead the time index and retention.
    Walks the records without building them.
    """
    header = check_client_batch(buf)
    _records_of(buf, 0, header, build=False)
    return header


def _records_of(
    buf: bytes | bytearray | memoryview, pos: int, header: BatchHeader, *, build: bool
) -> list[Record]:
    data = bytes(memoryview(buf)[pos + HEADER_SIZE : pos + header.size])
    codec = header.attributes & 0x07
    if codec == COMPRESSION_GZIP:
        try:
            inflater = zlib.decompressobj(wbits=47)
            data = inflater.decompress(data, _MAX_DECOMPRESSED)
        except zlib.error as exc:
            raise InvalidBatchError(f"bad gzip data: {exc}", position=pos) from None
        if inflater.unconsumed_tail:
            raise InvalidBatchError("decompressed batch too large", position=pos)
        if not inflater.eof or inflater.unused_data:
            raise InvalidBatchError("gzip data is cut short or followed by junk", position=pos)
    elif codec != COMPRESSION_NONE:
        raise UnsupportedCompressionError(
            f"cannot decompress {header.compression} batches", position=pos
        )
    try:
        return _decode_records(data, header, build)
    except InvalidBatchError as exc:
        # Positions inside compressed data mean nothing to a reader: name the batch.
        where = pos if codec != COMPRESSION_NONE else pos + HEADER_SIZE + exc.position
        raise InvalidBatchError(exc.reason, position=where) from None
    except IndexError:
        raise InvalidBatchError("record runs past the end of the batch", position=pos) from None
    except UnicodeDecodeError:
        raise InvalidBatchError("header key is not UTF-8", position=pos) from None


def _decode_records(data: bytes, header: BatchHeader, build: bool) -> list[Record]:
    """Parse every record; ``build=False`` only checks them, strictly (see validate_batch)."""
    read = _read_varint
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    fixed_ts = header.max_timestamp if header.log_append_time else None
    max_ts = -1 << 63
    out: list[Record] = []
    pos = 0
    end = len(data)
    key: bytes | None = None
    value: bytes | None = None
    for index in range(header.record_count):
        length, pos = read(data, pos)
        stop = pos + length
        if length < 0 or stop > end:
            raise InvalidBatchError("bad record length", position=pos)
        pos += 1  # record attributes: unused in v2
        ts_delta, pos = read(data, pos)
        offset_delta, pos = read(data, pos)
        klen, pos = read(data, pos)
        if klen < -1:
            raise InvalidBatchError("bad key length", position=pos)
        if klen >= 0:
            key = data[pos : pos + klen] if build else None
            pos += klen
        elif build:
            key = None
        vlen, pos = read(data, pos)
        if vlen < -1:
            raise InvalidBatchError("bad value length", position=pos)
        if vlen >= 0:
            value = data[pos : pos + vlen] if build else None
            pos += vlen
        elif build:
            value = None
        nheaders, pos = read(data, pos)
        if nheaders < 0:
            raise InvalidBatchError("negative header count", position=pos)
        headers: list[Header] = []
        for _ in range(nheaders):
            hklen, pos = read(data, pos)
            if hklen < 0:
                raise InvalidBatchError("null header key", position=pos)
            hkey = data[pos : pos + hklen].decode()
            pos += hklen
            hvlen, pos = read(data, pos)
            if hvlen < -1:
                raise InvalidBatchError("bad header value length", position=pos)
            if hvlen == -1:
                hvalue = None
            else:
                hvalue = data[pos : pos + hvlen]
                pos += hvlen
            headers.append((hkey, hvalue))
        if pos != stop:
            raise InvalidBatchError("record length does not match its fields", position=pos)
        if offset_delta < 0 or offset_delta > header.last_offset_delta:
            raise InvalidBatchError("record offset outside the batch", position=pos)
        if build:
            ts = base_ts + ts_delta if fixed_ts is None else fixed_ts
            out.append(Record(value, key, headers, ts, base_offset + offset_delta))
        else:
            if offset_delta != index:
                raise InvalidBatchError("record offsets are not consecutive", position=pos)
            if base_ts + ts_delta > max_ts:
                max_ts = base_ts + ts_delta
    if pos != end:
        raise InvalidBatchError("bytes left after the last record", position=pos)
    if not build and fixed_ts is None and max_ts != header.max_timestamp:
        raise InvalidBatchError(
            f"maxTimestamp {header.max_timestamp} is not the records' largest, {max_ts}"
        )
    return out
