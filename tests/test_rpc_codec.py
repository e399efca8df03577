"""Tests for :mod:`journal.rpc`, the sans-I/O journal RPC codec and connection.

What is covered:

* byte tables: frames written out by hand, checked against ``encode_frame`` and
  ``decode_frame`` and fed one byte at a time through a ``Connection``;
* hypothesis round trips of every message, and of request/response pairs
  through a client and a server connection;
* the fuzzing rule: arbitrary bytes fed to client- and server-side connections
  give events or raise ``ProtocolError``, never anything else, and never buffer
  beyond the cap;
* limits and handshake: oversize frames refused from the header, bad magic,
  no common version, frames before the handshake, a second HELLO;
* request ids: pipelined out-of-order answers, duplicates, unknown ids, wrong
  answer types;
* the error table both ways, and credit accounting of subscriptions.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal import (
    BatchTooLargeError,
    CorruptSegmentError,
    InvalidBatchError,
    InvalidConfigError,
    JournalClosedError,
    LocalProtocolError,
    ObjectStoreError,
    ObjectStoreTimeoutError,
    OffsetOutOfRangeError,
    ProtocolError,
    Record,
    RemoteProtocolError,
    SegmentInfo,
    StorageError,
    StrataError,
    StreamConfig,
    StreamDeletedError,
    StreamExistsError,
    StreamInfo,
    UnknownStreamError,
    UnsupportedCompressionError,
)
from journal.rpc import (
    DEFAULT_MAX_FRAME_SIZE,
    ERROR_TABLE,
    MESSAGE_TYPES,
    NEED_DATA,
    RESPONSE_FOR,
    Append,
    AppendBatch,
    Appended,
    Batches,
    Connection,
    ConnectionClosed,
    Count,
    CreateStream,
    Data,
    Done,
    ErrorCode,
    ErrorResponse,
    Event,
    GetStreamInfo,
    GrantCredit,
    Hello,
    HelloOk,
    InvalidArgumentError,
    JournalUnavailableError,
    ListStreams,
    Message,
    OffsetResult,
    Problems,
    ReadBatches,
    RemoteJournalError,
    Request,
    Role,
    SegmentList,
    State,
    StatisticsResult,
    StreamInfoResult,
    StreamList,
    Subscribe,
    Subscribed,
    SubState,
    Unsubscribe,
    Unsubscribed,
    Wait,
    decode_frame,
    encode_frame,
    error_code_of,
    error_from_response,
    error_to_response,
)
from journal.rpc.connection import MAX_HANDSHAKE_FRAME_SIZE
from journal.rpc.frames import Kind
from journal.segments.batch import decode_batch

# ------------------------------------------------------------------- helpers


def handshake(
    client: Connection | None = None, server: Connection | None = None
) -> tuple[Connection, Connection]:
    client = client or Connection(Role.CLIENT, name="c")
    server = server or Connection(Role.SERVER, name="s")
    deliver(client, server, Hello(client_name="c"))
    deliver(server, client, HelloOk(1, "s", DEFAULT_MAX_FRAME_SIZE))
    return client, server


def events(conn: Connection) -> list[Event]:
    out: list[Event] = []
    while True:
        ev = conn.next_event()
        if not isinstance(ev, Message | ConnectionClosed):
            assert ev is NEED_DATA
            return out
        out.append(ev)
        if isinstance(ev, ConnectionClosed):
            return out


def deliver(sender: Connection, receiver: Connection, message: Message) -> None:
    receiver.receive_data(sender.send(message))
    assert events(receiver) == [message]


def feed_bytewise(conn: Connection, data: bytes) -> list[Event]:
    out: list[Event] = []
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        got = events(conn)
        if i < len(data) - 1:
            assert got == []
        out += got
    return out


def receiver_for(message: Message) -> Connection:
    """A connection in a state where ``message`` from its peer is valid."""
    if isinstance(message, Hello):
        return Connection(Role.SERVER)
    if isinstance(message, HelloOk):
        client = Connection(Role.CLIENT)
        client.send(Hello(versions=(message.version,)))
        return client
    client, server = handshake()
    rid = message.rid
    if isinstance(message, GrantCredit | Unsubscribe):
        deliver(client, server, Subscribe(rid, "s", 0))
        deliver(server, client, Subscribed(rid))
        return server
    if isinstance(message, Request):
        return server
    if isinstance(message, Subscribed):
        deliver(client, server, Subscribe(rid, "s", 0))
    elif isinstance(message, Data):
        deliver(client, server, Subscribe(rid, "s", 1 << 40))
        deliver(server, client, Subscribed(rid))
    elif isinstance(message, Unsubscribed):
        deliver(client, server, Subscribe(rid, "s", 0))
        deliver(server, client, Subscribed(rid))
        deliver(client, server, Unsubscribe(rid))
    else:
        request = next(
            (req for req, resp in RESPONSE_FOR.items() if resp is type(message)), ListStreams
        )
        deliver(client, server, _dummy_request(request, rid))
    return client


def _dummy_request(cls: type[Request], rid: int) -> Request:
    values: dict[str, Any] = {"request_id": rid}
    for name, kind in cls.FIELDS:
        values[name] = {
            Kind.STR: "s",
            Kind.OPT_STR: None,
            Kind.I64: 0,
            Kind.U32: 0,
            Kind.U64: 0,
            Kind.BYTES: b"",
            Kind.BOOL: False,
        }[kind]
    return cls(**values)


# ------------------------------------------------------------------- byte tables


def frame(ftype: int, rid: int, body: str) -> bytes:
    raw = bytes.fromhex(body)
    return struct.pack(">IBI", 5 + len(raw), ftype, rid) + raw


BYTE_TABLE: list[tuple[Message, bytes]] = [
    # magic, versions [1, 2], name "c"
    (Hello((1, 2), "c"), frame(0x01, 0, "5354524a 00000002 0001 0002 0001 63")),
    # version 1, name "s", max frame 1024
    (HelloOk(1, "s", 1024), frame(0x02, 0, "0001 0001 73 00000400")),
    # code 2, message "x", no stream/segment/position/first/next
    (
        ErrorResponse(7, ErrorCode.UNKNOWN_STREAM, "x"),
        frame(0x03, 7, "0002 0001 78 00 00 00 00 00"),
    ),
    (
        ErrorResponse(8, ErrorCode.OFFSET_OUT_OF_RANGE, "", first_offset=1, next_offset=2),
        frame(0x03, 8, "0006 0000 00 00 00 01 0000000000000001 01 0000000000000002"),
    ),
    (CreateStream(1, "s", b"{}", True), frame(0x10, 1, "0001 73 00000002 7b7d 01")),
    (ListStreams(9), frame(0x12, 9, "")),
    (StreamList(9, ("a", "bc")), frame(0x31, 9, "00000002 0001 61 0002 6263")),
    (StatisticsResult(9, b"{}"), frame(0x36, 9, "00000002 7b7d")),
    (AppendBatch(3, "ab", b"\x00\xff"), frame(0x14, 3, "0002 6162 00000002 00ff")),
    (ReadBatches(2, "s", 5, 100), frame(0x16, 2, "0001 73 0000000000000005 00000064")),
    (Subscribe(4, "s", -1, 4096), frame(0x50, 4, "0001 73 ffffffffffffffff 0000000000001000")),
    (GrantCredit(4, 256), frame(0x53, 4, "0000000000000100")),
    (Unsubscribe(4), frame(0x54, 4, "")),
    (Done(1), frame(0x30, 1, "")),
    (Appended(3, 10, 12), frame(0x33, 3, "000000000000000a 000000000000000c")),
    (Batches(2, (b"ab", b"c")), frame(0x34, 2, "00000002 00000002 6162 00000001 63")),
    (OffsetResult(5, None), frame(0x35, 5, "00")),
    (OffsetResult(5, 9), frame(0x35, 5, "01 0000000000000009")),
    (Count(6, 3), frame(0x38, 6, "0000000000000003")),
    (
        Problems(6, (ErrorResponse(0, ErrorCode.CORRUPT_SEGMENT, "", segment="a"),)),
        frame(0x39, 6, "00000001 000b 0000 00 01 0001 61 00 00 00"),
    ),
    (
        SegmentList(6, (SegmentInfo(0, 9, "local", 100, None, "crc"),)),
        frame(
            0x37,
            6,
            "00000001 0000000000000000 0000000000000009 0005 6c6f63616c"
            " 0000000000000064 00 01 0003 637263",
        ),
    ),
    (Subscribed(4), frame(0x51, 4, "")),
    (Data(4, (b"xyz",)), frame(0x52, 4, "00000001 00000003 78797a")),
    (Unsubscribed(4), frame(0x55, 4, "")),
]
_IDS = [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(BYTE_TABLE)]


@pytest.mark.parametrize(("message", "data"), BYTE_TABLE, ids=_IDS)
def test_byte_table_encodes(message: Message, data: bytes) -> None:
    assert encode_frame(message) == data


@pytest.mark.parametrize(("message", "data"), BYTE_TABLE, ids=_IDS)
def test_byte_table_decodes(message: Message, data: bytes) -> None:
    assert decode_frame(data) == (message, len(data))
    for n in range(len(data)):
        assert decode_frame(data[:n]) is None


@pytest.mark.parametrize(("message", "data"), BYTE_TABLE, ids=_IDS)
def test_byte_table_one_byte_at_a_time_through_a_connection(message: Message, data: bytes) -> None:
    conn = receiver_for(message)
    assert feed_bytewise(conn, data) == [message]
    assert conn.buffered == 0


def test_byte_table_covers_every_non_request_frame() -> None:
    covered = {type(m) for m, _ in BYTE_TABLE}
    others = {t for t in MESSAGE_TYPES.values() if not issubclass(t, Request)}
    missing = others - covered - {StreamInfoResult}
    assert not missing, missing


# ------------------------------------------------------------------- round trips

_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
_u16 = st.integers(0, 0xFFFF)
_u32 = st.integers(0, 0xFFFFFFFF)
_u64 = st.integers(0, 2**64 - 1)
_i64 = st.integers(-(2**63), 2**63 - 1)
_rid = st.integers(1, 0xFFFFFFFF)
_segment = st.builds(
    SegmentInfo,
    base_offset=_i64,
    last_offset=_i64,
    tier=_text,
    size_bytes=_u64,
    key=st.none() | _text,
    quarantined=st.none() | _text,
)
_KIND_STRATEGIES: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.BOOL: st.booleans(),
    Kind.U16: _u16,
    Kind.U32: _u32,
    Kind.U64: _u64,
    Kind.I64: _i64,
    Kind.STR: _text,
    Kind.BYTES: st.binary(max_size=40),
    Kind.MAGIC: st.binary(min_size=4, max_size=4),
    Kind.OPT_STR: st.none() | _text,
    Kind.OPT_I64: st.none() | _i64,
    Kind.U16_LIST: st.lists(_u16, max_size=4).map(tuple),
    Kind.STR_LIST: st.lists(_text, max_size=4).map(tuple),
    Kind.BYTES_LIST: st.lists(st.binary(max_size=20), max_size=4).map(tuple),
    Kind.SEGMENTS: st.lists(_segment, max_size=3).map(tuple),
}
_KIND_STRATEGIES[Kind.ERRORS] = st.lists(
    st.builds(
        ErrorResponse,
        request_id=st.just(0),
        code=_u16,
        message=_text,
        stream=st.none() | _text,
        segment=st.none() | _text,
        position=st.none() | _i64,
        first_offset=st.none() | _i64,
        next_offset=st.none() | _i64,
    ),
    max_size=3,
).map(tuple)


def message_strategy(cls: type[Message], rid: st.SearchStrategy[int] = _rid) -> Any:
    kwargs = {name: _KIND_STRATEGIES[kind] for name, kind in cls.FIELDS}
    if "request_id" in {f for f in getattr(cls, "__dataclass_fields__", {})}:
        kwargs["request_id"] = rid
    return st.builds(cls, **kwargs)


any_message = st.sampled_from(sorted(MESSAGE_TYPES.values(), key=lambda c: c.TYPE)).flatmap(
    message_strategy
)


@given(any_message)
def test_every_message_round_trips(message: Message) -> None:
    data = encode_frame(message)
    assert decode_frame(data) == (message, len(data))


@given(
    st.sampled_from(sorted(RESPONSE_FOR, key=lambda c: c.TYPE)).flatmap(
        lambda req: st.tuples(
            message_strategy(req, st.just(77)), message_strategy(RESPONSE_FOR[req], st.just(77))
        )
    )
)
def test_requests_and_answers_round_trip_through_connections(pair: tuple[Message, Message]) -> None:
    request, response = pair
    client, server = handshake()
    deliver(client, server, request)
    assert server.outstanding == {77} or isinstance(request, Subscribe)
    deliver(server, client, response)
    assert client.outstanding == frozenset()
    assert server.outstanding == frozenset()


def test_append_carries_records_as_one_batch() -> None:
    records = [Record(value=b"a", key=b"k"), Record(value=None, timestamp=5)]
    message = Append.of(1, "s", records, now_ms=1000)
    decoded = decode_frame(encode_frame(message))
    assert decoded is not None
    assert isinstance(decoded[0], Append)
    _, back = decode_batch(decoded[0].batch)
    assert [(r.key, r.value) for r in back] == [(b"k", b"a"), (None, None)]


def test_stream_info_round_trips() -> None:
    info = StreamInfo("s", 3, 10, 4096, 2, StreamConfig(), ("00000000000000000000.log",))
    message = StreamInfoResult.of(5, info)
    decoded = decode_frame(encode_frame(message))
    assert decoded is not None
    assert isinstance(decoded[0], StreamInfoResult)
    assert decoded[0].to_info() == info
    assert CreateStream.of(1, "s", StreamConfig(), exist_ok=True).config == StreamConfig().to_json()


@pytest.mark.parametrize(
    "message",
    [
        Appended(1, 2**63, 0),  # i64 overflow
        ReadBatches(1, "s", 0, -1),  # u32 underflow
        CreateStream(1, "x" * 70000),  # string over u16
        Hello(magic=b"ST"),
        Done(2**32),
    ],
)
def test_unencodable_values_raise_local_protocol_error(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(message)


# ------------------------------------------------------------------- fuzzing

SMALL = 512


def _fuzz_targets() -> list[Connection]:
    fresh_server = Connection(Role.SERVER, max_frame_size=SMALL)
    fresh_client = Connection(Role.CLIENT, max_frame_size=SMALL)
    fresh_client.send(Hello())
    client, server = handshake(
        Connection(Role.CLIENT, max_frame_size=SMALL), Connection(Role.SERVER, max_frame_size=SMALL)
    )
    for req in (ListStreams(1), Wait(2, "s", 0), ReadBatches(3, "s", 0)):
        client.send(req)
    client.send(Subscribe(9, "s", 0, 100))
    return [fresh_server, fresh_client, client, server]


def _drive(conn: Connection, chunks: list[bytes]) -> None:
    error: ProtocolError | None = None
    try:
        for chunk in chunks:
            conn.receive_data(chunk)
            assert conn.buffered <= conn.max_buffer
            events(conn)
        conn.receive_data(b"")
        events(conn)
    except ProtocolError as e:
        error = e
    assert conn.buffered <= conn.max_buffer
    if error is None:
        return
    assert isinstance(error, RemoteProtocolError)
    assert error.code >= ErrorCode.MALFORMED_FRAME
    assert conn.state is State.CLOSED
    decoded = decode_frame(conn.send_failure(error))
    assert decoded is not None
    assert isinstance(decoded[0], ErrorResponse)
    assert decoded[0].code == error.code


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(0, 3))
def test_fuzz_arbitrary_bytes(chunks: list[bytes], which: int) -> None:
    _drive(_fuzz_targets()[which], chunks)


_frames = st.builds(
    lambda t, rid, body: struct.pack(">IBI", 5 + len(body), t, rid) + body,
    st.sampled_from([int(t) for t in MESSAGE_TYPES] + [0, 0x7F]),
    st.sampled_from([0, 1, 2, 3, 9, 10]),
    st.binary(max_size=60),
)


@settings(max_examples=300)
@given(st.lists(_frames, max_size=6), st.integers(0, 3), st.booleans())
def test_fuzz_well_framed_garbage(frames: list[bytes], which: int, with_hello: bool) -> None:
    conn = _fuzz_targets()[which]
    prefix = [encode_frame(Hello())] if with_hello and which == 0 else []
    _drive(conn, prefix + frames)


# ------------------------------------------------------------------- limits, handshake


def test_oversize_frame_is_refused_from_its_header_alone() -> None:
    client, server = handshake(None, Connection(Role.SERVER, max_frame_size=1024))
    header = struct.pack(">IBI", 1025, 0x14, 1)
    for b in header[:-1]:
        server.receive_data(bytes([b]))
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(header[-1:])
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    assert server.buffered <= len(header)
    client.receive_data(server.send_failure(info.value))
    err, closed = events(client)
    assert closed == ConnectionClosed()
    assert isinstance(err, ErrorResponse)
    assert (err.request_id, err.code) == (0, ErrorCode.FRAME_TOO_LARGE)
    assert client.state is State.CLOSED


def test_frames_before_the_handshake_are_small() -> None:
    server = Connection(Role.SERVER)  # 64 MiB frames once READY, 4 KiB before
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(struct.pack(">IBI", MAX_HANDSHAKE_FRAME_SIZE + 1, 0x01, 0))
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE
    client = Connection(Role.CLIENT)
    client.send(Hello())
    client.receive_data(encode_frame(HelloOk(1, "s", 10)))
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.code == ErrorCode.MALFORMED_FRAME


def test_sender_respects_the_peers_max_frame_size() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    deliver(client, server, Hello())
    deliver(server, client, HelloOk(1, "s", 100))
    with pytest.raises(LocalProtocolError) as info:
        client.send(AppendBatch(1, "s", b"x" * 100))
    assert info.value.code == ErrorCode.FRAME_TOO_LARGE


def test_receive_buffer_is_capped() -> None:
    server = Connection(Role.SERVER, max_frame_size=64, max_buffer=100)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(encode_frame(ListStreams(1)) * 20)
    assert info.value.code == ErrorCode.BUFFER_FULL
    assert server.buffered <= 100


def test_bad_magic_gets_an_error_code() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(encode_frame(Hello(magic=b"XXXX")))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == ErrorCode.BAD_MAGIC
    with pytest.raises(LocalProtocolError):
        client.send(Hello(magic=b"XXXX"))


def test_no_common_version_gets_an_error_code() -> None:
    client, server = Connection(Role.CLIENT, versions=(7,)), Connection(Role.SERVER)
    server.receive_data(client.send(Hello(versions=(7, 8))))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION
    client.receive_data(server.send_failure(info.value))
    err, closed = events(client)
    assert closed == ConnectionClosed()
    assert isinstance(err, ErrorResponse)
    exc = error_from_response(err)
    assert isinstance(exc, ProtocolError)
    assert exc.code == ErrorCode.UNSUPPORTED_VERSION


def test_server_must_choose_an_offered_version() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER, versions=(1, 2))
    deliver(client, server, Hello(versions=(1,)))
    with pytest.raises(LocalProtocolError):
        server.send(HelloOk(2))
    client.receive_data(encode_frame(HelloOk(2)))
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.code == ErrorCode.UNSUPPORTED_VERSION


def test_requests_before_the_handshake_and_second_hello_are_errors() -> None:
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError) as local:
        client.send(ListStreams(1))
    assert local.value.code == ErrorCode.UNEXPECTED_FRAME
    server.receive_data(encode_frame(ListStreams(1)))
    with pytest.raises(RemoteProtocolError) as remote:
        server.next_event()
    assert remote.value.code == ErrorCode.UNEXPECTED_FRAME

    client, server = handshake()
    with pytest.raises(LocalProtocolError):
        client.send(Hello())
    server.receive_data(encode_frame(Hello()))
    with pytest.raises(RemoteProtocolError) as remote:
        server.next_event()
    assert remote.value.code == ErrorCode.UNEXPECTED_FRAME


def test_frames_in_the_wrong_direction_are_errors() -> None:
    client, server = handshake()
    with pytest.raises(LocalProtocolError):
        server.send(ListStreams(1))
    with pytest.raises(LocalProtocolError):
        client.send(Done(1))


def test_end_of_stream() -> None:
    client, server = handshake()
    server.receive_data(b"")
    assert events(server) == [ConnectionClosed()]
    client.receive_data(encode_frame(Done(1))[:5])
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        client.next_event()


# ------------------------------------------------------------------- request ids


def test_pipelined_requests_answered_out_of_order() -> None:
    client, server = handshake()
    requests = [
        ListStreams(client.next_request_id()),
        Wait(client.next_request_id(), "s", 10),
        AppendBatch(client.next_request_id(), "s", b"batch"),
        GetStreamInfo(client.next_request_id(), "nope"),
    ]
    server.receive_data(b"".join(client.send(r) for r in requests))
    assert events(server) == requests
    assert client.outstanding == server.outstanding == {1, 2, 3, 4}
    answers: list[Message] = [
        Appended(3, 0, 0),
        ErrorResponse(4, ErrorCode.UNKNOWN_STREAM, "nope"),
        Done(2),
        Batches(1, ()),  # the wrong type of answer for ListStreams
    ]
    wire = b"".join(server.send(a) for a in answers[:3])
    assert server.outstanding == {1}
    client.receive_data(wire)
    assert events(client) == answers[:3]
    assert client.outstanding == {1}
    with pytest.raises(LocalProtocolError) as info:
        server.send(answers[3])
    assert info.value.code == ErrorCode.UNEXPECTED_FRAME
    client.receive_data(encode_frame(answers[3]))
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_duplicate_request_ids_are_errors() -> None:
    client, server = handshake()
    client.send(ListStreams(5))
    with pytest.raises(LocalProtocolError) as local:
        client.send(Wait(5, "s", 0))
    assert local.value.code == ErrorCode.DUPLICATE_REQUEST_ID
    with pytest.raises(LocalProtocolError):
        client.send(Subscribe(5, "s", 0))
    server.receive_data(encode_frame(ListStreams(5)) + encode_frame(ListStreams(5)))
    assert events_until_error(server) == ([ListStreams(5)], ErrorCode.DUPLICATE_REQUEST_ID)


def events_until_error(conn: Connection) -> tuple[list[Event], int]:
    out: list[Event] = []
    while True:
        try:
            ev = conn.next_event()
        except RemoteProtocolError as e:
            return out, e.code
        assert isinstance(ev, Message | ConnectionClosed)
        out.append(ev)


def test_answers_to_unknown_ids_are_errors() -> None:
    client, server = handshake()
    with pytest.raises(LocalProtocolError) as local:
        server.send(Done(3))
    assert local.value.code == ErrorCode.UNKNOWN_REQUEST_ID
    client.receive_data(encode_frame(Done(3)))
    with pytest.raises(RemoteProtocolError) as remote:
        client.next_event()
    assert remote.value.code == ErrorCode.UNKNOWN_REQUEST_ID


def test_request_id_zero_is_reserved() -> None:
    client, _ = handshake()
    with pytest.raises(LocalProtocolError):
        client.send(ListStreams(0))


# ------------------------------------------------------------------- error table

ERRORS: list[StrataError] = [
    UnknownStreamError("no stream 'x'"),
    StreamExistsError("stream 'x' exists"),
    StreamDeletedError("deleted"),
    JournalClosedError("closed"),
    OffsetOutOfRangeError("offset 99", first_offset=3, next_offset=10),
    InvalidBatchError("bad crc", position=17),
    BatchTooLargeError("too big", position=0),
    UnsupportedCompressionError("zstd", position=4),
    StorageError("torn", stream="s", segment="00000000000000000000.log", position=61),
    CorruptSegmentError("crc", stream="s", segment="x.log", position=None),
    ObjectStoreError("down", stream=None, segment="y.log", position=None),
    ObjectStoreTimeoutError("slow", stream="s", segment=None, position=None),
    InvalidConfigError("fsync must be one of ..."),
    InvalidArgumentError("max_bytes must be positive"),
    JournalUnavailableError("shutting down"),
    RemoteJournalError("something else"),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_survive_the_wire(exc: StrataError) -> None:
    response = error_to_response(12, exc)
    decoded = decode_frame(encode_frame(response))
    assert decoded is not None
    assert isinstance(decoded[0], ErrorResponse)
    back = error_from_response(decoded[0])
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    for attr in ("stream", "segment", "position", "first_offset", "next_offset", "reason"):
        assert getattr(back, attr, None) == getattr(exc, attr, None)


def test_error_table_maps_both_ways() -> None:
    assert len({code for code, _ in ERROR_TABLE}) == len(ERROR_TABLE)
    assert len({cls for _, cls in ERROR_TABLE}) == len(ERROR_TABLE)
    for code, cls in ERROR_TABLE:
        back = error_from_response(ErrorResponse(1, code, "m"))
        assert isinstance(back, cls)
        assert error_code_of(back) == code
    for exc in ERRORS:
        assert error_from_response(error_to_response(1, exc)).__class__ is type(exc)


def test_verify_problems_survive_the_wire() -> None:
    found = [ERRORS[9], ERRORS[8]]  # a corrupt segment, a torn batch
    decoded = decode_frame(encode_frame(Problems.of(3, found)))
    assert decoded is not None
    assert isinstance(decoded[0], Problems)
    back = decoded[0].to_exceptions()
    assert [(type(e), str(e)) for e in back] == [(type(e), str(e)) for e in found]


def test_unlisted_errors_fall_back() -> None:
    assert error_code_of(KeyError("x")) == ErrorCode.UNKNOWN
    assert error_code_of(ValueError("x")) == ErrorCode.INVALID_ARGUMENT
    assert isinstance(error_from_response(ErrorResponse(1, 50, "m")), RemoteJournalError)
    assert error_to_response(1, OSError("disk")).message == "OSError: disk"
    wire = error_to_response(0, LocalProtocolError("x", code=ErrorCode.CREDIT_EXCEEDED))
    assert wire.code == ErrorCode.CREDIT_EXCEEDED


def test_only_unavailable_is_retryable() -> None:
    assert ErrorResponse(1, ErrorCode.UNAVAILABLE).retryable
    assert not ErrorResponse(1, ErrorCode.JOURNAL_CLOSED).retryable
    assert JournalUnavailableError.retryable


# ------------------------------------------------------------------- subscriptions


def subscribed(credit: int) -> tuple[Connection, Connection]:
    client, server = handshake()
    deliver(client, server, Subscribe(7, "s", 0, credit))
    deliver(server, client, Subscribed(7))
    assert client.subscriptions == server.subscriptions == {7: SubState.ACTIVE}
    return client, server


def test_credit_is_spent_and_granted() -> None:
    client, server = subscribed(100)
    deliver(server, client, Data(7, (b"x" * 60,)))
    assert client.credit(7) == server.credit(7) == 40
    with pytest.raises(LocalProtocolError) as info:
        server.send(Data(7, (b"x" * 30, b"y" * 30)))  # two batches over the credit
    assert info.value.code == ErrorCode.CREDIT_EXCEEDED
    deliver(server, client, Data(7, (b"x" * 50,)))  # one batch may overshoot
    assert client.credit(7) == server.credit(7) == 0
    with pytest.raises(LocalProtocolError):
        server.send(Data(7, (b"x",)))
    deliver(client, server, GrantCredit(7, 30))
    assert client.credit(7) == server.credit(7) == 30
    deliver(server, client, Data(7, (b"a" * 10, b"b" * 20)))
    assert client.credit(7) == server.credit(7) == 0


def test_client_rejects_data_over_its_credit() -> None:
    client, _ = subscribed(10)
    client.receive_data(encode_frame(Data(7, (b"12345", b"678901"))))
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert info.value.code == ErrorCode.CREDIT_EXCEEDED


def test_data_needs_an_active_subscription() -> None:
    client, server = handshake()
    deliver(client, server, Subscribe(7, "s", 0, 100))
    with pytest.raises(LocalProtocolError):
        server.send(Data(7, (b"x",)))  # before SUBSCRIBED
    with pytest.raises(LocalProtocolError) as info:
        server.send(Data(8, (b"x",)))
    assert info.value.code == ErrorCode.UNKNOWN_REQUEST_ID


def test_unsubscribe_with_data_in_flight() -> None:
    client, server = subscribed(100)
    in_flight = server.send(Data(7, (b"x" * 10,)))
    server.receive_data(client.send(Unsubscribe(7)))
    assert events(server) == [Unsubscribe(7)]
    assert client.subscriptions == server.subscriptions == {7: SubState.CLOSING}
    client.receive_data(in_flight + server.send(Unsubscribed(7)))
    assert events(client) == [Data(7, (b"x" * 10,)), Unsubscribed(7)]
    assert client.subscriptions == server.subscriptions == {}
    assert client.credit(7) == 0
    with pytest.raises(LocalProtocolError):
        client.send(GrantCredit(7, 1))


def test_server_ends_a_subscription_while_the_client_unsubscribes() -> None:
    client, server = subscribed(100)
    ended = server.send(ErrorResponse(7, ErrorCode.STREAM_DELETED, "gone"))
    server.receive_data(client.send(GrantCredit(7, 5)) + client.send(Unsubscribe(7)))
    assert events(server) == []  # stale control frames are swallowed
    client.receive_data(ended)
    [err] = events(client)
    assert isinstance(err, ErrorResponse)
    assert isinstance(error_from_response(err), StreamDeletedError)
    assert client.subscriptions == server.subscriptions == {}
    deliver(client, server, Subscribe(7, "t", 0))  # the id is free again
    server.receive_data(encode_frame(Unsubscribe(8)))
    with pytest.raises(RemoteProtocolError) as info:
        server.next_event()
    assert info.value.code == ErrorCode.UNKNOWN_REQUEST_ID


def test_subscribe_refused_with_an_error() -> None:
    client, server = handshake()
    deliver(client, server, Subscribe(3, "s", 5))
    deliver(
        server,
        client,
        error_to_response(3, OffsetOutOfRangeError("x", first_offset=0, next_offset=1)),
    )
    assert client.subscriptions == server.subscriptions == {}
