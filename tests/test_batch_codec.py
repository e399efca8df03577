"""Tests for :mod:`journal.segments.batch`, the pure Kafka RecordBatch v2 codec.

What is covered:

* byte tables: batches written out by hand, field by field from the Kafka spec,
  checked against ``encode_batch`` and ``decode_batch`` and fed one byte at a time
  through ``iter_batches``;
* hypothesis round trips of arbitrary records, and the header fields they produce;
* cross-checks with kafka-python in both directions (plain, producer state, gzip);
* ``set_base_offset`` patching offsets without touching the CRC;
* validation: every malformed batch raises ``InvalidBatchError`` (or
  ``UnsupportedCompressionError``) with a position inside the offending batch,
  and ``iter_batches`` stops at the first bad batch;
* fuzzing: arbitrary bytes, arbitrary record areas and mutated batches either
  decode or raise ``InvalidBatchError``, never anything else.

"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import itertools
import struct
from collections.abc import Callable, Sequence

import pytest
from crc32c import crc32c
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from journal.errors import (
    InvalidBatchError,
    LocalProtocolError,
    UnsupportedCompressionError,
)
from journal.records import Record
from journal.segments.batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    check_batch,
    check_client_batch,
    decode_batch,
    encode_batch,
    iter_batches,
    parse_header,
    restamp_batch,
    set_base_offset,
    validate_batch,
)

# Byte positions of the header fields, straight from the Kafka spec.
_LENGTH_AT = 8  # batchLength int32
_EPOCH_AT = 12  # partitionLeaderEpoch int32
_MAGIC_AT = 16  # magic int8
_CRC_AT = 17  # crc uint32
_ATTRIBUTES_AT = 21  # attributes int16: first byte covered by the CRC
_LAST_DELTA_AT = 23  # lastOffsetDelta int32
_COUNT_AT = 57  # recordCount int32
_RECORDS_AT = 61  # first record

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# -- helpers ----------------------------------------------------------------


def _hex(*fields: str) -> bytes:
    """Join hex fields (whitespace allowed) into bytes."""
    return bytes.fromhex("".join(fields))


def _crc32c_reference(data: bytes) -> int:
    """Bit-at-a-time CRC-32C (Castagnoli, reflected 0x82F63B78), independent of the codec."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _reseal(batch: bytes | bytearray, *, fix_length: bool = True) -> bytes:
    """Make a hand-edited standalone batch self-consistent: batchLength and CRC."""
    buf = bytearray(batch)
    if fix_length:
        struct.pack_into(">i", buf, _LENGTH_AT, len(buf) - LOG_OVERHEAD)
    if len(buf) >= _ATTRIBUTES_AT:
        struct.pack_into(">I", buf, _CRC_AT, crc32c(bytes(buf[_ATTRIBUTES_AT:])))
    return bytes(buf)


def _patch(batch: bytes, at: int, fmt: str, value: int, *, reseal: bool = True) -> bytes:
    buf = bytearray(batch)
    struct.pack_into(fmt, buf, at, value)
    return _reseal(buf) if reseal else bytes(buf)


def _stamped(records: Sequence[Record], base_offset: int, now_ms: int) -> list[Record]:
    """What decoding should give back: offsets assigned, missing timestamps = now_ms."""
    return [
        dataclasses.replace(
            rec,
            headers=list(rec.headers),
            timestamp=now_ms if rec.timestamp is None else rec.timestamp,
            offset=base_offset + i,
        )
        for i, rec in enumerate(records)
    ]


def _times(records: Sequence[Record]) -> list[int]:
    """The timestamps of decoded (or _stamped) records, which are never None."""
    out = [rec.timestamp for rec in records]
    assert None not in out
    return [t for t in out if t is not None]


def _decode_or_invalid(buf: bytes | bytearray) -> None:
    """The fuzzing rule: decode_batch returns something coherent or raises InvalidBatchError."""
    try:
        header, records = decode_batch(buf)
    except InvalidBatchError:
        return
    assert header.magic == 2
    assert header.size <= len(buf)
    assert len(records) == header.record_count
    for rec in records:
        assert rec.offset is not None
        assert header.base_offset <= rec.offset <= header.last_offset


# -- strategies -------------------------------------------------------------

_timestamps = st.integers(0, 2**45)  # 1970 .. year 3084 in ms
_base_offsets = st.integers(0, 2**62)
_headers = st.lists(st.tuples(st.text(max_size=12), st.none() | st.binary(max_size=16)), max_size=4)
_records = st.builds(
    Record,
    value=st.none() | st.binary(max_size=200),
    key=st.none() | st.binary(max_size=32),
    headers=_headers,
    timestamp=st.none() | _timestamps,
    offset=st.none(),
)


def _record_lists(max_size: int = 20) -> st.SearchStrategy[list[Record]]:
    return st.lists(_records, min_size=1, max_size=max_size)


# -- 1. byte tables ---------------------------------------------------------


@dataclasses.dataclass
class ByteCase:
    records: list[Record]
    base_offset: int
    now_ms: int
    expected: bytes


TABLE: dict[str, ByteCase] = {
    "null-key-and-value": ByteCase(
        records=[Record()],
        base_offset=0,
        now_ms=1_700_000_000_000,
        expected=_hex(
            "0000000000000000",  # baseOffset 0
            "00000038",  # batchLength 56 = 49 fixed + 7 record bytes
            "ffffffff",  # partitionLeaderEpoch -1
            "02",  # magic 2
            "c428857f",  # crc
            "0000",  # attributes: uncompressed, create time
            "00000000",  # lastOffsetDelta 0
            "0000018bcfe56800",  # baseTimestamp 1_700_000_000_000 (now_ms)
            "0000018bcfe56800",  # maxTimestamp
            "ffffffffffffffff",  # producerId -1
            "ffff",  # producerEpoch -1
            "ffffffff",  # baseSequence -1
            "00000001",  # recordCount 1
            "0c",  # record length 6
            "00",  # attributes
            "00",  # timestampDelta 0
            "00",  # offsetDelta 0
            "01",  # key length -1: null
            "01",  # value length -1: null
            "00",  # header count 0
        ),
    ),
    "key-value-headers": ByteCase(
        records=[
            Record(b"hello", b"k1", [("h", b"v"), ("n", None)], timestamp=1000),
        ],
        base_offset=5,
        now_ms=99,
        expected=_hex(
            "0000000000000005",  # baseOffset 5
            "00000046",  # batchLength 70 = 49 + 21
            "ffffffff",  # partitionLeaderEpoch -1
            "02",  # magic
            "3ed9be1f",  # crc
            "0000",  # attributes
            "00000000",  # lastOffsetDelta 0
            "00000000000003e8",  # baseTimestamp 1000
            "00000000000003e8",  # maxTimestamp 1000
            "ffffffffffffffff",  # producerId -1
            "ffff",  # producerEpoch -1
            "ffffffff",  # baseSequence -1
            "00000001",  # recordCount 1
            "28",  # record length 20
            "00",  # attributes
            "00",  # timestampDelta 0
            "00",  # offsetDelta 0
            "04 6b31",  # key: length 2, "k1"
            "0a 68656c6c6f",  # value: length 5, "hello"
            "04",  # header count 2
            "02 68 02 76",  # "h": length 1, value length 1, "v"
            "02 6e 01",  # "n": length 1, value length -1: null
        ),
    ),
    "timestamp-deltas": ByteCase(
        records=[
            Record(b"a", timestamp=1000),
            Record(b"b", timestamp=1001),
            Record(b"c", timestamp=1500),
            Record(b"d"),  # no timestamp: now_ms
        ],
        base_offset=100,
        now_ms=2000,
        expected=_hex(
            "0000000000000064",  # baseOffset 100
            "00000053",  # batchLength 83 = 49 + 8 + 8 + 9 + 9
            "ffffffff",  # partitionLeaderEpoch -1
            "02",  # magic
            "7760d1cb",  # crc
            "0000",  # attributes
            "00000003",  # lastOffsetDelta 3
            "00000000000003e8",  # baseTimestamp 1000
            "00000000000007d0",  # maxTimestamp 2000
            "ffffffffffffffff",  # producerId -1
            "ffff",  # producerEpoch -1
            "ffffffff",  # baseSequence -1
            "00000004",  # recordCount 4
            "0e 00 00 00 01 0261 00",  # len 7, attrs, tsDelta 0, offDelta 0, null key, "a"
            "0e 00 02 02 01 0262 00",  # len 7, attrs, tsDelta 1, offDelta 1, null key, "b"
            "10 00 e807 04 01 0263 00",  # len 8, attrs, tsDelta 500 (2 bytes), offDelta 2, "c"
            "10 00 d00f 06 01 0264 00",  # len 8, attrs, tsDelta 1000 (2 bytes), offDelta 3, "d"
        ),
    ),
    "negative-timestamp-delta": ByteCase(
        records=[
            Record(b"z", timestamp=5000),
            Record(b"y", timestamp=3000),
            Record(None, b"k", timestamp=6000),
        ],
        base_offset=0,
        now_ms=0,
        expected=_hex(
            "0000000000000000",  # baseOffset 0
            "0000004b",  # batchLength 75 = 49 + 8 + 9 + 9
            "ffffffff",  # partitionLeaderEpoch -1
            "02",  # magic
            "fb107c8b",  # crc
            "0000",  # attributes
            "00000002",  # lastOffsetDelta 2
            "0000000000001388",  # baseTimestamp 5000: the first record's, not the smallest
            "0000000000001770",  # maxTimestamp 6000
            "ffffffffffffffff",  # producerId -1
            "ffff",  # producerEpoch -1
            "ffffffff",  # baseSequence -1
            "00000003",  # recordCount 3
            "0e 00 00 00 01 027a 00",  # len 7, tsDelta 0, offDelta 0, null key, "z"
            "10 00 9f1f 02 01 0279 00",  # len 8, tsDelta -2000 (zigzag 3999), offDelta 1, "y"
            "10 00 d00f 04 026b 01 00",  # len 8, tsDelta +1000, offDelta 2, key "k", null value
        ),
    ),
    "value-64-bytes-empty-key": ByteCase(
        # 64 is the first length whose zigzag form (128) needs two varint bytes.
        records=[Record(bytes(range(64)), b"", timestamp=1)],
        base_offset=7,
        now_ms=50,
        expected=_hex(
            "0000000000000007",  # baseOffset 7
            "0000007a",  # batchLength 122 = 49 + 2 + 71
            "ffffffff",  # partitionLeaderEpoch -1
            "02",  # magic
            "15c55281",  # crc
            "0000",  # attributes
            "00000000",  # lastOffsetDelta 0
            "0000000000000001",  # baseTimestamp 1
            "0000000000000001",  # maxTimestamp 1
            "ffffffffffffffff",  # producerId -1
            "ffff",  # producerEpoch -1
            "ffffffff",  # baseSequence -1
            "00000001",  # recordCount 1
            "8e01",  # record length 71 (zigzag 142, two bytes)
            "00 00 00",  # attributes, tsDelta 0, offDelta 0
            "00",  # key length 0: empty, not null
            "8001",  # value length 64 (zigzag 128, two bytes)
            bytes(range(64)).hex(),  # value 00 01 .. 3f
            "00",  # header count 0
        ),
    ),
    "value-200-bytes": ByteCase(
        records=[Record(b"\xab" * 200, timestamp=0)],  # timestamp 0 is not "missing"
        base_offset=1 << 40,
        now_ms=123,
        expected=_hex(
            "0000010000000000",  # baseOffset 2**40
            "00000102",  # batchLength 258 = 49 + 2 + 207
            "ffffffff",  # partitionLeaderEpoch -1
            "02",  # magic
            "8e8ff89b",  # crc
            "0000",  # attributes
            "00000000",  # lastOffsetDelta 0
            "0000000000000000",  # baseTimestamp 0
            "0000000000000000",  # maxTimestamp 0
            "ffffffffffffffff",  # producerId -1
            "ffff",  # producerEpoch -1
            "ffffffff",  # baseSequence -1
            "00000001",  # recordCount 1
            "9e03",  # record length 207 (zigzag 414)
            "00 00 00",  # attributes, tsDelta 0, offDelta 0
            "01",  # key length -1: null
            "9003",  # value length 200 (zigzag 400)
            "ab" * 200,  # value
            "00",  # header count 0
        ),
    ),
}

_TABLE_PARAMS = [pytest.param(case, id=name) for name, case in TABLE.items()]


def test_crc32c_reference_check_value() -> None:
    assert _crc32c_reference(b"123456789") == 0xE3069283  # the standard CRC-32C check value


@pytest.mark.parametrize("case", _TABLE_PARAMS)
def test_table_is_self_consistent(case: ByteCase) -> None:
    """The hand-written lengths and CRCs agree with the spec (guards against typos)."""
    (length,) = struct.unpack_from(">i", case.expected, _LENGTH_AT)
    assert length == len(case.expected) - LOG_OVERHEAD
    (stored_crc,) = struct.unpack_from(">I", case.expected, _CRC_AT)
    assert stored_crc == _crc32c_reference(case.expected[_ATTRIBUTES_AT:])


@pytest.mark.parametrize("case", _TABLE_PARAMS)
def test_table_encode(case: ByteCase) -> None:
    encoded = encode_batch(case.records, case.base_offset, now_ms=case.now_ms)
    assert encoded.hex() == case.expected.hex()


@pytest.mark.parametrize("case", _TABLE_PARAMS)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda t: t.__name__)
def test_table_decode(
    case: ByteCase, wrap: Callable[[bytes], bytes | bytearray | memoryview]
) -> None:
    header, records = decode_batch(wrap(case.expected))
    expected = _stamped(case.records, case.base_offset, case.now_ms)
    assert records == expected
    timestamps = _times(expected)
    assert header == BatchHeader(
        base_offset=case.base_offset,
        batch_length=len(case.expected) - LOG_OVERHEAD,
        partition_leader_epoch=-1,
        magic=2,
        crc=struct.unpack_from(">I", case.expected, _CRC_AT)[0],
        attributes=0,
        last_offset_delta=len(expected) - 1,
        base_timestamp=timestamps[0],
        max_timestamp=max(timestamps),
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        record_count=len(expected),
    )


@pytest.mark.parametrize("case", _TABLE_PARAMS)
def test_table_byte_by_byte_through_iter_batches(case: ByteCase) -> None:
    """Every proper prefix is reported as truncated at 0; the whole batch yields one header."""
    full = case.expected
    buf = bytearray()
    assert list(iter_batches(buf)) == []
    for byte in full[:-1]:
        buf.append(byte)
        with pytest.raises(InvalidBatchError, match="truncated") as exc_info:
            list(iter_batches(buf))
        assert exc_info.value.position == 0
    buf.append(full[-1])
    headers = list(iter_batches(buf))
    assert len(headers) == 1
    assert headers[0].size == len(full)
    assert headers[0].base_offset == case.base_offset
    assert headers[0].record_count == len(case.records)


# -- 2. round trips ---------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(records=_record_lists(), base_offset=_base_offsets, now_ms=_timestamps)
def test_round_trip(records: list[Record], base_offset: int, now_ms: int) -> None:
    buf = encode_batch(records, base_offset, now_ms=now_ms)
    header, decoded = decode_batch(buf)
    expected = _stamped(records, base_offset, now_ms)
    assert decoded == expected
    timestamps = _times(expected)
    assert header.size == len(buf)
    assert header.base_offset == base_offset
    assert header.last_offset == base_offset + len(records) - 1
    assert header.next_offset == base_offset + len(records)
    assert header.record_count == len(records)
    assert header.base_timestamp == timestamps[0]
    assert header.max_timestamp == max(timestamps)
    assert header.magic == 2
    assert header.attributes == 0
    assert header.compression == "none"
    assert not header.is_transactional
    assert not header.is_control
    assert not header.log_append_time
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == (-1, -1, -1)
    assert check_batch(buf) == header


@settings(max_examples=60, deadline=None)
@given(
    producer_id=st.integers(_INT64_MIN, _INT64_MAX),
    producer_epoch=st.integers(-(2**15), 2**15 - 1),
    base_sequence=st.integers(-(2**31), 2**31 - 1),
    leader_epoch=st.integers(-(2**31), 2**31 - 1),
)
def test_producer_fields_round_trip(
    producer_id: int, producer_epoch: int, base_sequence: int, leader_epoch: int
) -> None:
    buf = encode_batch(
        [Record(b"x"), Record(b"y")],
        3,
        now_ms=10,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        partition_leader_epoch=leader_epoch,
    )
    header, _ = decode_batch(buf)
    assert header.producer_id == producer_id
    assert header.producer_epoch == producer_epoch
    assert header.base_sequence == base_sequence
    assert header.partition_leader_epoch == leader_epoch
    # The leader epoch sits outside the CRC: the default epoch gives the same checksum.
    default_epoch = encode_batch(
        [Record(b"x"), Record(b"y")],
        3,
        now_ms=10,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    assert check_batch(default_epoch).crc == header.crc


def test_encode_empty_batch_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_batch([], now_ms=0)


def test_log_append_time_gives_every_record_max_timestamp() -> None:
    case = TABLE["timestamp-deltas"]
    buf = _patch(case.expected, _ATTRIBUTES_AT, ">h", 0x08)
    header, records = decode_batch(buf)
    assert header.log_append_time
    assert [rec.timestamp for rec in records] == [2000] * 4


# -- 3. kafka-python cross-checks -------------------------------------------


def _kafka_builder(
    compression_type: int = 0,
    *,
    is_transactional: bool = False,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> DefaultRecordBatchBuilder:
    return DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression_type,
        is_transactional=is_transactional,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
        batch_size=1 << 20,
    )


def _kafka_build(
    builder: DefaultRecordBatchBuilder, records: Sequence[Record], offsets: Sequence[int]
) -> tuple[bytearray, list[Record]]:
    """Append records at the given offset deltas; returns the batch and what it holds."""
    expected: list[Record] = []
    for rec, offset in zip(records, offsets, strict=True):
        meta = builder.append(offset, rec.timestamp, rec.key, rec.value, rec.headers)
        assert meta is not None, "batch_size too small for the generated records"
        expected.append(Record(rec.value, rec.key, list(rec.headers), int(meta.timestamp), offset))
    buf: bytearray = builder.build()
    return buf, expected


@st.composite
def _offset_deltas(draw: st.DrawFn, n: int) -> list[int]:
    """n strictly increasing offset deltas from 0, gaps allowed (as after compaction)."""
    steps = draw(st.lists(st.integers(1, 3), min_size=n - 1, max_size=n - 1))
    deltas = [0]
    for step in steps:
        deltas.append(deltas[-1] + step)
    return deltas


@settings(max_examples=100, deadline=None)
@given(records=_record_lists(), base_offset=_base_offsets, now_ms=_timestamps)
def test_kafka_python_reads_our_batches(
    records: list[Record], base_offset: int, now_ms: int
) -> None:
    buf = encode_batch(records, base_offset, now_ms=now_ms)
    batch = DefaultRecordBatch(bytearray(buf))
    assert batch.validate_crc()
    assert batch.magic == 2
    assert batch.size_in_bytes == len(buf)
    assert batch.base_offset == base_offset
    assert batch.last_offset == base_offset + len(records) - 1
    assert batch.records_count == len(records)
    assert batch.compression_type == 0
    assert batch.timestamp_type == 0
    expected = _stamped(records, base_offset, now_ms)
    assert batch.first_timestamp == expected[0].timestamp
    assert batch.max_timestamp == max(_times(expected))
    got = [Record(kr.value, kr.key, list(kr.headers), kr.timestamp, kr.offset) for kr in batch]
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(data=st.data(), records=_record_lists(), base_offset=_base_offsets)
def test_we_read_kafka_python_batches(
    data: st.DataObject, records: list[Record], base_offset: int
) -> None:
    offsets = data.draw(_offset_deltas(len(records)))
    buf, expected = _kafka_build(_kafka_builder(), records, offsets)
    set_base_offset(buf, base_offset)
    header, decoded = decode_batch(buf)
    assert decoded == [
        dataclasses.replace(rec, offset=base_offset + delta)
        for rec, delta in zip(expected, offsets, strict=True)
    ]
    assert header.size == len(buf)
    assert header.last_offset == base_offset + offsets[-1]
    assert header.record_count == len(records)
    assert header.base_timestamp == expected[0].timestamp
    assert header.max_timestamp == max(_times(expected))
    assert header.compression == "none"


@pytest.mark.parametrize(
    ("is_transactional", "producer_id", "producer_epoch", "base_sequence"),
    [
        pytest.param(False, 1234, 5, 0, id="idempotent"),
        pytest.param(True, 2**62 + 7, 2**15 - 1, 2**31 - 10, id="transactional-max-fields"),
    ],
)
def test_we_read_kafka_python_producer_state(
    is_transactional: bool, producer_id: int, producer_epoch: int, base_sequence: int
) -> None:
    builder = _kafka_builder(
        is_transactional=is_transactional,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=base_sequence,
    )
    records = [Record(b"one", timestamp=10), Record(b"two", b"k", timestamp=11)]
    buf, expected = _kafka_build(builder, records, [0, 1])
    header, decoded = decode_batch(buf)
    assert decoded == expected
    assert header.producer_id == producer_id
    assert header.producer_epoch == producer_epoch
    assert header.base_sequence == base_sequence
    assert header.is_transactional is is_transactional
    assert not header.is_control


def _kafka_gzip_batch(records: Sequence[Record]) -> tuple[bytearray, list[Record]]:
    """A gzip batch from kafka-python, padded so compression is sure to pay off."""
    padded = [*records, Record(b"compress me " * 40, timestamp=records[0].timestamp)]
    buf, expected = _kafka_build(_kafka_builder(1), padded, range(len(padded)))
    assert DefaultRecordBatch(bytearray(buf)).compression_type == 1  # really compressed
    return buf, expected


def test_we_read_kafka_python_gzip() -> None:
    records = [Record(b"x" * 100, b"key", [("h", None)], timestamp=1000 + i) for i in range(10)]
    buf, expected = _kafka_gzip_batch(records)
    header, decoded = decode_batch(buf)
    assert header.compression == "gzip"
    assert header.record_count == 11
    assert decoded == expected


@settings(max_examples=40, deadline=None)
@given(records=_record_lists(max_size=10))
def test_we_read_kafka_python_gzip_arbitrary(records: list[Record]) -> None:
    buf, expected = _kafka_gzip_batch(records)
    header, decoded = decode_batch(buf)
    assert header.compression == "gzip"
    assert decoded == expected


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda gz: gz[:-8] + b"\0" * 4 + gz[-4:], id="gzip-crc32-wrong"),
        pytest.param(lambda gz: gz[:-4] + b"\0" * 4, id="gzip-isize-wrong"),
        pytest.param(lambda gz: gz[:-8], id="gzip-trailer-missing"),
        pytest.param(lambda gz: gz + b"junk", id="junk-after-gzip-member"),
    ],
)
def test_corrupt_gzip_stream_is_rejected(mangle: Callable[[bytes], bytes]) -> None:
    buf, _ = _kafka_gzip_batch([Record(b"v", timestamp=1)])
    mangled = _reseal(bytes(buf[:HEADER_SIZE]) + mangle(bytes(buf[HEADER_SIZE:])))
    assert check_batch(mangled).size == len(mangled)
    with pytest.raises(InvalidBatchError, match="gzip"):
        decode_batch(mangled)


def test_stdlib_gzip_rejects_what_the_xfails_above_expect_rejected() -> None:
    """Backs the expectation of the gzip xfails: the stdlib refuses the same mangling."""
    buf, _ = _kafka_gzip_batch([Record(b"v", timestamp=1)])
    gz = bytes(buf[HEADER_SIZE:])
    assert gzip.decompress(gz)  # the intact stream holds the records
    with pytest.raises(EOFError):
        gzip.decompress(gz[:-8])
    with pytest.raises(gzip.BadGzipFile):
        gzip.decompress(gz + b"junk")


# -- 4. set_base_offset -----------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(records=_record_lists(max_size=5), new_base=_base_offsets)
def test_set_base_offset(records: list[Record], new_base: int) -> None:
    original = encode_batch(records, 0, now_ms=1)
    buf = bytearray(original)
    set_base_offset(buf, new_base)
    assert buf[8:] == original[8:]  # only the 8 offset bytes changed
    header = check_batch(buf)
    assert header.crc == check_batch(original).crc
    assert header.base_offset == new_base
    _, decoded = decode_batch(buf)
    assert [rec.offset for rec in decoded] == list(range(new_base, new_base + len(records)))
    assert decoded == _stamped(records, new_base, 1)


def test_set_base_offset_at_position_in_memoryview() -> None:
    first = TABLE["key-value-headers"].expected
    second = TABLE["timestamp-deltas"].expected
    buf = bytearray(first + second)
    set_base_offset(memoryview(buf), 1000, pos=len(first))
    headers = list(iter_batches(buf))
    assert [h.base_offset for h in headers] == [5, 1000]
    _, decoded = decode_batch(buf, len(first))
    assert [rec.offset for rec in decoded] == [1000, 1001, 1002, 1003]
    assert bytes(buf[: len(first)]) == first


# -- 5. validation ----------------------------------------------------------

# The single-record batch of TABLE["null-key-and-value"]; its record area is
# 61: 0c (length 6)  62: 00 attrs  63: 00 tsDelta  64: 00 offDelta  65: 01 key  66: 01 value
# 67: 00 header count.
_ONE = TABLE["null-key-and-value"].expected
_WITH_HEADERS = TABLE["key-value-headers"].expected
_H_AT = _WITH_HEADERS.index(bytes.fromhex("02 68 02 76"))  # header "h" = b"v"


def _set_byte(batch: bytes, at: int, value: int) -> bytes:
    return _patch(batch, at, ">B", value)


def _with_attributes(attributes: int) -> Callable[[], bytes]:
    return lambda: _patch(_ONE, _ATTRIBUTES_AT, ">h", attributes)


@dataclasses.dataclass
class BadCase:
    make: Callable[[], bytes]
    match: str
    record_level: bool = False  # check_batch passes; only decoding the records fails
    error: type[InvalidBatchError] = InvalidBatchError


_BAD: dict[str, BadCase] = {
    "truncated-header-1-byte": BadCase(lambda: _ONE[:1], "truncated batch header"),
    "truncated-header-12-bytes": BadCase(lambda: _ONE[:12], "truncated batch header"),
    "truncated-header-60-bytes": BadCase(lambda: _ONE[:60], "truncated batch header"),
    "truncated-body-header-only": BadCase(lambda: _ONE[:HEADER_SIZE], "truncated batch"),
    "truncated-body-last-byte": BadCase(lambda: _ONE[:-1], "truncated batch"),
    "magic-0": BadCase(lambda: _patch(_ONE, _MAGIC_AT, ">b", 0, reseal=False), "magic"),
    "magic-1": BadCase(lambda: _patch(_ONE, _MAGIC_AT, ">b", 1, reseal=False), "magic"),
    "magic-3": BadCase(lambda: _patch(_ONE, _MAGIC_AT, ">b", 3, reseal=False), "magic"),
    "batch-length-48": BadCase(
        lambda: _patch(_ONE, _LENGTH_AT, ">i", 48, reseal=False), "too small"
    ),
    "batch-length-0": BadCase(lambda: _patch(_ONE, _LENGTH_AT, ">i", 0, reseal=False), "too small"),
    "batch-length-negative": BadCase(
        lambda: _patch(_ONE, _LENGTH_AT, ">i", -1, reseal=False), "too small"
    ),
    "crc-mismatch": BadCase(lambda: _patch(_ONE, _CRC_AT, ">I", 0, reseal=False), "CRC32C"),
    "negative-record-count": BadCase(lambda: _patch(_ONE, _COUNT_AT, ">i", -1), "negative"),
    "negative-last-offset-delta": BadCase(
        lambda: _patch(_ONE, _LAST_DELTA_AT, ">i", -1), "negative"
    ),
    "bytes-after-last-record": BadCase(lambda: _reseal(_ONE + b"\x00"), "bytes left", True),
    "record-count-too-high": BadCase(
        lambda: _patch(_ONE, _COUNT_AT, ">i", 2), "past the end", True
    ),
    "record-offset-outside-batch": BadCase(lambda: _set_byte(_ONE, 64, 0x02), "offset", True),
    "record-length-mismatch": BadCase(lambda: _set_byte(_ONE, 61, 0x0A), "record length", True),
    "record-length-negative": BadCase(lambda: _set_byte(_ONE, 61, 0x01), "record length", True),
    "key-length-minus-2": BadCase(lambda: _set_byte(_ONE, 65, 0x03), "key length", True),
    "value-length-minus-2": BadCase(lambda: _set_byte(_ONE, 66, 0x03), "value length", True),
    "varint-11-bytes": BadCase(
        lambda: _reseal(_ONE[:63] + b"\x80" * 10 + b"\x00" + _ONE[64:]), "varint", True
    ),
    "varint-beyond-64-bits": BadCase(  # tsDelta 0xfe ff*8 7f: 70 significant bits
        lambda: _reseal(_ONE[:61] + b"\x1e\x00\xfe" + b"\xff" * 8 + b"\x7f" + _ONE[64:]),
        "varint",
        True,
    ),
    "null-header-key": BadCase(lambda: _set_byte(_WITH_HEADERS, _H_AT, 0x01), "header key", True),
    "header-key-not-utf8": BadCase(
        lambda: _set_byte(_WITH_HEADERS, _H_AT + 1, 0xFF), "UTF-8", True
    ),
    "header-value-length-minus-2": BadCase(
        lambda: _set_byte(_WITH_HEADERS, _H_AT + 2, 0x03), "header value length", True
    ),
    "negative-header-count": BadCase(lambda: _set_byte(_ONE, 67, 0x01), "header", True),
    "gzip-flag-on-plain-records": BadCase(
        lambda: _patch(_ONE, _ATTRIBUTES_AT, ">h", 1), "gzip", True
    ),
    **{
        f"compression-{codec}": BadCase(
            _with_attributes(codec),
            "cannot decompress",
            True,
            UnsupportedCompressionError,
        )
        for codec in range(2, 8)
    },
}


def _bad_params() -> list[object]:
    return [pytest.param(case, id=name) for name, case in _BAD.items()]


@pytest.mark.parametrize("case", _bad_params())
def test_invalid_batch_is_rejected(case: BadCase) -> None:
    bad = case.make()
    if case.record_level:
        assert check_batch(bad).size == len(bad)  # header and CRC are fine
    else:
        with pytest.raises(case.error, match=case.match):
            check_batch(bad)
    with pytest.raises(case.error, match=case.match) as exc_info:
        decode_batch(bad)
    assert exc_info.value.code == (76 if case.error is UnsupportedCompressionError else 2)


@pytest.mark.parametrize("case", _bad_params())
def test_invalid_batch_position(case: BadCase) -> None:
    """Placed after a good batch, the error points into the bad batch, not before it."""
    good = TABLE["timestamp-deltas"].expected
    bad = case.make()
    buf = good + bad
    pos = len(good)
    with pytest.raises(InvalidBatchError) as exc_info:
        decode_batch(buf, pos)
    if case.record_level:
        assert pos <= exc_info.value.position <= len(buf)
    else:
        assert exc_info.value.position == pos
        # iter_batches yields the good batch, then stops at the bad one.
        seen: list[BatchHeader] = []
        with pytest.raises(InvalidBatchError) as iter_exc:
            seen.extend(iter_batches(buf))
        assert [h.base_offset for h in seen] == [100]
        assert iter_exc.value.position == pos


@settings(max_examples=200, deadline=None)
@given(data=st.data(), records=_record_lists(max_size=4))
def test_flipped_bit_in_crc_area_is_caught(data: st.DataObject, records: list[Record]) -> None:
    good = TABLE["key-value-headers"].expected
    batch = bytearray(encode_batch(records, 10, now_ms=1))
    index = data.draw(st.integers(_CRC_AT, len(batch) - 1), label="index")
    bit = data.draw(st.integers(0, 7), label="bit")
    batch[index] ^= 1 << bit
    buf = good + bytes(batch)
    with pytest.raises(InvalidBatchError) as exc_info:
        check_batch(buf, len(good))
    assert exc_info.value.position == len(good)
    with pytest.raises(InvalidBatchError) as exc_info:
        decode_batch(buf, len(good))
    assert exc_info.value.position == len(good)


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(_record_lists(max_size=5), min_size=1, max_size=6), data=st.data())
def test_iter_batches(batches: list[list[Record]], data: st.DataObject) -> None:
    encoded: list[bytes] = []
    next_offset = 0
    for records in batches:
        encoded.append(encode_batch(records, next_offset, now_ms=1))
        next_offset += len(records)
    buf = b"".join(encoded)

    headers = list(iter_batches(buf))
    assert [h.size for h in headers] == [len(b) for b in encoded]
    assert [h.record_count for h in headers] == [len(r) for r in batches]
    assert headers[0].base_offset == 0
    for prev, nxt in itertools.pairwise(headers):
        assert nxt.base_offset == prev.next_offset
    assert headers[-1].next_offset == next_offset

    # Corrupt one batch (and maybe a later one): iteration stops at the first.
    bad = data.draw(st.integers(0, len(encoded) - 1), label="bad batch")
    start = sum(len(b) for b in encoded[:bad])
    corrupt = bytearray(buf)
    corrupt[start + data.draw(st.integers(_ATTRIBUTES_AT, len(encoded[bad]) - 1))] ^= 0x40
    if data.draw(st.booleans(), label="corrupt the last byte too"):
        corrupt[-1] ^= 0x01
    seen: list[BatchHeader] = []
    with pytest.raises(InvalidBatchError) as exc_info:
        seen.extend(iter_batches(corrupt))
    assert seen == headers[:bad]
    assert exc_info.value.position == start


# -- 6. fuzzing -------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(buf=st.binary(max_size=300))
def test_fuzz_arbitrary_bytes(buf: bytes) -> None:
    _decode_or_invalid(buf)


@settings(max_examples=300, deadline=None)
@given(
    records_area=st.binary(max_size=120),
    attributes=st.sampled_from([0, 1, 0x08, 0x10]),
    last_offset_delta=st.integers(0, 4),
    record_count=st.integers(0, 4),
)
def test_fuzz_record_area(
    records_area: bytes, attributes: int, last_offset_delta: int, record_count: int
) -> None:
    """A valid header and CRC around arbitrary record bytes: the record parser is reached."""
    header = struct.pack(
        ">qiibIhiqqqhii",
        0, 0, -1, 2, 0, attributes, last_offset_delta, 1000, 2000, -1, -1, -1, record_count,
    )  # fmt: skip
    _decode_or_invalid(_reseal(header + records_area))


@st.composite
def _mutated_batches(draw: st.DrawFn) -> bytes:
    records = draw(_record_lists(max_size=5))
    buf = bytearray(encode_batch(records, draw(_base_offsets), now_ms=draw(_timestamps)))
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(_ATTRIBUTES_AT, len(buf)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        if op == "insert":
            buf[index:index] = draw(st.binary(min_size=1, max_size=4))
        elif op == "replace" and index < len(buf):
            buf[index] = draw(st.integers(0, 255))
        elif op == "delete":
            del buf[index : index + draw(st.integers(1, 4))]
    return _reseal(buf, fix_length=draw(st.booleans()))


@settings(max_examples=400, deadline=None)
@given(buf=_mutated_batches())
def test_fuzz_mutated_batches(buf: bytes) -> None:
    _decode_or_invalid(buf)


@settings(max_examples=400, deadline=None)
@given(buf=_mutated_batches())
def test_fuzz_append_checks(buf: bytes) -> None:
    """Append-path checks raise only InvalidBatchError; the strict one implies the cheap one.

    ``validate_batch`` (what front ends run on untrusted input) passing means the
    batch decodes to records with consecutive offsets.
    """
    try:
        header = validate_batch(buf)
    except InvalidBatchError:
        with contextlib.suppress(InvalidBatchError):
            check_client_batch(buf)
        return
    assert check_client_batch(buf) == header
    _, records = decode_batch(buf)
    assert [r.offset for r in records] == list(range(header.base_offset, header.next_offset))


@settings(max_examples=100, deadline=None)
@given(records=_record_lists(), base_offset=_base_offsets, now_ms=_timestamps)
def test_encoded_batches_pass_the_append_checks(
    records: list[Record], base_offset: int, now_ms: int
) -> None:
    assume(records)
    buf = encode_batch(records, base_offset, now_ms=now_ms)
    assert validate_batch(buf) == check_client_batch(buf) == check_batch(buf)


def test_mutation_fuzz_reaches_the_record_parser() -> None:
    """Guard for the fuzzer above: resealing really gets mutations past the CRC check."""
    case = TABLE["timestamp-deltas"]
    mutated = _reseal(case.expected[:-1])  # drop the last header-count byte
    assert check_batch(mutated).size == len(mutated)
    with pytest.raises(InvalidBatchError, match="record length"):
        decode_batch(mutated)


def test_header_layout_matches_spec() -> None:
    assert HEADER_SIZE == _RECORDS_AT == 61
    assert LOG_OVERHEAD == _EPOCH_AT == 12


@given(st.lists(_records, min_size=1, max_size=20), _timestamps, _timestamps)
def test_restamp_gives_what_encode_gives_records_without_a_timestamp(
    records: list[Record], placeholder: int, now: int
) -> None:
    """The journal RPC's APPEND: records sent with a placeholder timestamp (in the
    producer id, epoch 0) become byte for byte the batch the journal would encode."""
    bare = [dataclasses.replace(r, timestamp=None) for r in records]
    sent = encode_batch(bare, now_ms=placeholder, producer_id=placeholder, producer_epoch=0)
    stamped = restamp_batch(sent, check_batch(sent), now)
    assert stamped is not None
    assert bytes(stamped) == encode_batch(bare, now_ms=now)


def test_restamp_refuses_batches_it_cannot_stamp_in_place() -> None:
    mixed = encode_batch([Record(b"a"), Record(b"b", timestamp=5)], now_ms=9)
    assert restamp_batch(mixed, check_batch(mixed), 1) is None
    later = encode_batch([Record(b"a", timestamp=9), Record(b"b", timestamp=5)], now_ms=0)
    assert restamp_batch(later, check_batch(later), 1) is None  # max != base
    gzipped = bytearray(encode_batch([Record(b"a")], now_ms=0))
    struct.pack_into(">h", gzipped, _ATTRIBUTES_AT, 1)
    assert restamp_batch(gzipped, parse_header(gzipped, 0), 1) is None
