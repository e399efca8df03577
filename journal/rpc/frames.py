"""Journal RPC wire format: frames, bodies, and the error-code table.

How it works. Every frame is ``u32 length | u8 type | u32 request id | body``
where ``length`` counts everything after itself (so at least 5). All integers
are big-endian. Each message class is a frozen dataclass that names its frame
type and lists its body as a tuple of ``(field, Kind)`` pairs; one generic
encoder and one generic decoder walk that schema (STYLE habit 2: format as
data). Records travel as raw RecordBatch v2 bytes, the journal's own batch
format, so appends and reads pay no per-record work in the codec.

Body field kinds: fixed-width ints, ``bool`` (u8 0/1), ``str`` (u16 length +
UTF-8), ``bytes`` (u32 length + bytes), optionals (u8 0/1 flag + value) and
lists (u32 count + items). A body must be consumed exactly; anything short,
long or ill-formed raises :class:`~journal.errors.RemoteProtocolError` with
:data:`ErrorCode.MALFORMED_FRAME`. Values that cannot be encoded raise
:class:`~journal.errors.LocalProtocolError`.

The error table maps the journal's exception classes to wire codes and back;
see :func:`error_to_response` and :func:`error_from_response`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from journal.config import MAX_BATCH_BYTES, InvalidConfigError, StreamConfig
from journal.errors import (
    BatchTooLargeError,
    CorruptSegmentError,
    InvalidArgumentError,
    InvalidBatchError,
    JournalClosedError,
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
from journal.journal import SegmentInfo, StreamInfo
from journal.records import Record
from journal.segments.batch import encode_batch

MAGIC = b"STRJ"
PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
FRAME_HEADER = struct.Struct(">IBI")  # length, frame type, request id
HEADER_SIZE = FRAME_HEADER.size  # 9
MIN_LENGTH = HEADER_SIZE - 4  # type + request id
# The ``length`` field's upper bound: the largest batch a stream may take
# (journal.config.MAX_BATCH_BYTES) plus room for the rest of an APPEND frame.
DEFAULT_MAX_FRAME_SIZE = MAX_BATCH_BYTES + (64 << 10)
MAX_MESSAGE_CHARS = 4096  # error messages are truncated to this on the wire

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class ErrorCode(enum.IntEnum):
    """Wire error codes (u16). 1-99: the journal call failed; 100+: the connection is dead."""

    UNKNOWN = 1
    UNKNOWN_STREAM = 2
    STREAM_EXISTS = 3
    STREAM_DELETED = 4
    JOURNAL_CLOSED = 5
    OFFSET_OUT_OF_RANGE = 6
    INVALID_BATCH = 7
    BATCH_TOO_LARGE = 8
    UNSUPPORTED_COMPRESSION = 9
    STORAGE = 10
    CORRUPT_SEGMENT = 11
    OBJECT_STORE = 12
    OBJECT_STORE_TIMEOUT = 13
    INVALID_CONFIG = 14
    INVALID_ARGUMENT = 15
    UNAVAILABLE = 16  # retryable: the server did not apply the request
    MALFORMED_FRAME = 100
    FRAME_TOO_LARGE = 101
    BAD_MAGIC = 102
    UNSUPPORTED_VERSION = 103
    UNEXPECTED_FRAME = 104
    DUPLICATE_REQUEST_ID = 105
    UNKNOWN_REQUEST_ID = 106
    CREDIT_EXCEEDED = 107
    BUFFER_FULL = 108


RETRYABLE_CODES = frozenset({ErrorCode.UNAVAILABLE})


class FrameType(enum.IntEnum):
    HELLO = 0x01
    HELLO_OK = 0x02
    ERROR = 0x03
    CREATE_STREAM = 0x10
    DELETE_STREAM = 0x11
    LIST_STREAMS = 0x12
    GET_STREAM_INFO = 0x13
    APPEND_BATCH = 0x14
    APPEND = 0x15
    READ_BATCHES = 0x16
    OFFSET_FOR_TIME = 0x17
    WAIT = 0x18
    ROLL = 0x19
    GET_STATISTICS = 0x1A
    LIST_SEGMENTS = 0x1B
    APPLY_RETENTION = 0x1C
    MIGRATE = 0x1D
    VERIFY = 0x1E
    DONE = 0x30
    STREAM_LIST = 0x31
    STREAM_INFO = 0x32
    APPENDED = 0x33
    BATCHES = 0x34
    OFFSET = 0x35
    STATISTICS = 0x36
    SEGMENT_LIST = 0x37
    COUNT = 0x38
    PROBLEMS = 0x39
    SUBSCRIBE = 0x50
    SUBSCRIBED = 0x51
    DATA = 0x52
    CREDIT = 0x53
    UNSUBSCRIBE = 0x54
    UNSUBSCRIBED = 0x55


class Kind(enum.Enum):
    """Body field encodings."""

    BOOL = "bool"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    I64 = "i64"
    STR = "str"
    BYTES = "bytes"
    MAGIC = "magic"  # exactly 4 raw bytes
    OPT_STR = "opt_str"
    OPT_I64 = "opt_i64"
    U16_LIST = "u16_list"
    STR_LIST = "str_list"
    BYTES_LIST = "bytes_list"
    SEGMENTS = "segments"
    ERRORS = "errors"  # a list of ERROR bodies (code, message, where)


# --------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class Message:
    """Base of every frame. ``request_id`` is 0 for connection-level frames."""

    TYPE: ClassVar[FrameType]
    FIELDS: ClassVar[tuple[tuple[str, Kind], ...]]

    @property
    def rid(self) -> int:
        return int(getattr(self, "request_id", 0))


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """Client -> server, first frame: the versions it speaks, newest last."""

    TYPE = FrameType.HELLO
    FIELDS = (("magic", Kind.MAGIC), ("versions", Kind.U16_LIST), ("client_name", Kind.STR))
    versions: tuple[int, ...] = PROTOCOL_VERSIONS
    client_name: str = ""
    magic: bytes = MAGIC


@dataclass(frozen=True, slots=True)
class HelloOk(Message):
    """Server -> client: the chosen version and the largest frame it accepts."""

    TYPE = FrameType.HELLO_OK
    FIELDS = (("version", Kind.U16), ("server_name", Kind.STR), ("max_frame_size", Kind.U32))
    version: int
    server_name: str = ""
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE


@dataclass(frozen=True, slots=True)
class ErrorResponse(Message):
    """A failed request (``request_id`` != 0) or a fatal connection error (0).

    Also ends a subscription when sent with its id.
    """

    TYPE = FrameType.ERROR
    FIELDS = (
        ("code", Kind.U16),
        ("message", Kind.STR),
        ("stream", Kind.OPT_STR),
        ("segment", Kind.OPT_STR),
        ("position", Kind.OPT_I64),
        ("first_offset", Kind.OPT_I64),
        ("next_offset", Kind.OPT_I64),
    )
    request_id: int
    code: int
    message: str = ""
    stream: str | None = None
    segment: str | None = None
    position: int | None = None
    first_offset: int | None = None
    next_offset: int | None = None

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE_CODES

    def to_exception(self) -> StrataError:
        return error_from_response(self)


# requests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request(Message):
    request_id: int


@dataclass(frozen=True, slots=True)
class CreateStream(Request):
    TYPE = FrameType.CREATE_STREAM
    FIELDS = (("stream", Kind.STR), ("config", Kind.BYTES), ("exist_ok", Kind.BOOL))
    stream: str
    config: bytes = b"{}"  # StreamConfig.to_json()
    exist_ok: bool = False

    @classmethod
    def of(
        cls, request_id: int, stream: str, config: StreamConfig, *, exist_ok: bool = False
    ) -> CreateStream:
        return cls(request_id, stream, config.to_json(), exist_ok)


@dataclass(frozen=True, slots=True)
class DeleteStream(Request):
    TYPE = FrameType.DELETE_STREAM
    FIELDS = (("stream", Kind.STR),)
    stream: str


@dataclass(frozen=True, slots=True)
class ListStreams(Request):
    TYPE = FrameType.LIST_STREAMS
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class GetStreamInfo(Request):
    TYPE = FrameType.GET_STREAM_INFO
    FIELDS = (("stream", Kind.STR),)
    stream: str


@dataclass(frozen=True, slots=True)
class AppendBatch(Request):
    """One client-encoded RecordBatch v2; the server validates it and assigns offsets."""

    TYPE = FrameType.APPEND_BATCH
    FIELDS = (("stream", Kind.STR), ("batch", Kind.BYTES))
    stream: str
    batch: bytes


@dataclass(frozen=True, slots=True)
class Append(Request):
    """``Journal.append``: the records travel as one batch encoded by the client."""

    TYPE = FrameType.APPEND
    FIELDS = (("stream", Kind.STR), ("batch", Kind.BYTES))
    stream: str
    batch: bytes

    @classmethod
    def of(cls, request_id: int, stream: str, records: Sequence[Record], *, now_ms: int) -> Append:
        return cls(request_id, stream, encode_batch(records, now_ms=now_ms))


@dataclass(frozen=True, slots=True)
class ReadBatches(Request):
    TYPE = FrameType.READ_BATCHES
    FIELDS = (("stream", Kind.STR), ("offset", Kind.I64), ("max_bytes", Kind.U32))
    stream: str
    offset: int
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class OffsetForTime(Request):
    TYPE = FrameType.OFFSET_FOR_TIME
    FIELDS = (("stream", Kind.STR), ("timestamp_ms", Kind.I64))
    stream: str
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Wait(Request):
    TYPE = FrameType.WAIT
    FIELDS = (("stream", Kind.STR), ("offset", Kind.I64))
    stream: str
    offset: int


@dataclass(frozen=True, slots=True)
class Roll(Request):
    TYPE = FrameType.ROLL
    FIELDS = (("stream", Kind.STR),)
    stream: str


@dataclass(frozen=True, slots=True)
class GetStatistics(Request):
    """``stream=None`` asks for the whole journal's statistics."""

    TYPE = FrameType.GET_STATISTICS
    FIELDS = (("stream", Kind.OPT_STR),)
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class ListSegments(Request):
    TYPE = FrameType.LIST_SEGMENTS
    FIELDS = (("stream", Kind.STR),)
    stream: str


@dataclass(frozen=True, slots=True)
class ApplyRetention(Request):
    TYPE = FrameType.APPLY_RETENTION
    FIELDS = (("stream", Kind.OPT_STR),)
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class Migrate(Request):
    TYPE = FrameType.MIGRATE
    FIELDS = (("stream", Kind.OPT_STR),)
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class Verify(Request):
    """``Journal.verify``: check every segment's batches; answered by Problems."""

    TYPE = FrameType.VERIFY
    FIELDS = (("stream", Kind.STR),)
    stream: str


@dataclass(frozen=True, slots=True)
class Subscribe(Request):
    """Open a pushed tail; ``request_id`` becomes the subscription id.

    ``credit`` is the first grant of bytes the server may push.
    """

    TYPE = FrameType.SUBSCRIBE
    FIELDS = (("stream", Kind.STR), ("from_offset", Kind.I64), ("credit", Kind.U64))
    stream: str
    from_offset: int
    credit: int = 1 << 20


@dataclass(frozen=True, slots=True)
class GrantCredit(Request):
    """Client -> server: ``credit`` more bytes for subscription ``request_id``."""

    TYPE = FrameType.CREDIT
    FIELDS = (("credit", Kind.U64),)
    credit: int


@dataclass(frozen=True, slots=True)
class Unsubscribe(Request):
    """Client -> server: end subscription ``request_id``; answered by Unsubscribed."""

    TYPE = FrameType.UNSUBSCRIBE
    FIELDS = ()


# responses -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response(Message):
    request_id: int


@dataclass(frozen=True, slots=True)
class Done(Response):
    TYPE = FrameType.DONE
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class StreamList(Response):
    TYPE = FrameType.STREAM_LIST
    FIELDS = (("streams", Kind.STR_LIST),)
    streams: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StreamInfoResult(Response):
    TYPE = FrameType.STREAM_INFO
    FIELDS = (
        ("name", Kind.STR),
        ("first_offset", Kind.I64),
        ("next_offset", Kind.I64),
        ("size_bytes", Kind.U64),
        ("segment_count", Kind.U32),
        ("config", Kind.BYTES),
        ("quarantined", Kind.STR_LIST),
    )
    name: str
    first_offset: int
    next_offset: int
    size_bytes: int
    segment_count: int
    config: bytes
    quarantined: tuple[str, ...] = ()

    @classmethod
    def of(cls, request_id: int, info: StreamInfo) -> StreamInfoResult:
        return cls(
            request_id,
            info.name,
            info.first_offset,
            info.next_offset,
            info.size_bytes,
            info.segment_count,
            info.config.to_json(),
            tuple(info.quarantined),
        )

    def to_info(self) -> StreamInfo:
        return StreamInfo(
            self.name,
            self.first_offset,
            self.next_offset,
            self.size_bytes,
            self.segment_count,
            StreamConfig.from_json(self.config),
            self.quarantined,
        )


@dataclass(frozen=True, slots=True)
class Appended(Response):
    TYPE = FrameType.APPENDED
    FIELDS = (("base_offset", Kind.I64), ("last_offset", Kind.I64))
    base_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class Batches(Response):
    """Raw RecordBatch v2 bytes, as ``Journal.read_batches`` returns them."""

    TYPE = FrameType.BATCHES
    FIELDS = (("batches", Kind.BYTES_LIST),)
    batches: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class OffsetResult(Response):
    TYPE = FrameType.OFFSET
    FIELDS = (("offset", Kind.OPT_I64),)
    offset: int | None


@dataclass(frozen=True, slots=True)
class StatisticsResult(Response):
    """Statistics as UTF-8 JSON (the ``dataclasses.asdict`` of the record)."""

    TYPE = FrameType.STATISTICS
    FIELDS = (("statistics", Kind.BYTES),)
    statistics: bytes


@dataclass(frozen=True, slots=True)
class SegmentList(Response):
    TYPE = FrameType.SEGMENT_LIST
    FIELDS = (("segments", Kind.SEGMENTS),)
    segments: tuple[SegmentInfo, ...]


@dataclass(frozen=True, slots=True)
class Count(Response):
    """Segments deleted by retention or moved by migration."""

    TYPE = FrameType.COUNT
    FIELDS = (("count", Kind.U64),)
    count: int


@dataclass(frozen=True, slots=True)
class Problems(Response):
    """What ``Journal.verify`` found: one ERROR body (request id 0) per problem."""

    TYPE = FrameType.PROBLEMS
    FIELDS = (("errors", Kind.ERRORS),)
    errors: tuple[ErrorResponse, ...]

    @classmethod
    def of(cls, request_id: int, errors: Sequence[BaseException]) -> Problems:
        return cls(request_id, tuple(error_to_response(0, e) for e in errors))

    def to_exceptions(self) -> list[StrataError]:
        return [error_from_response(e) for e in self.errors]


@dataclass(frozen=True, slots=True)
class Subscribed(Response):
    TYPE = FrameType.SUBSCRIBED
    FIELDS = ()


@dataclass(frozen=True, slots=True)
class Data(Response):
    """Server -> client: raw batches for subscription ``request_id``; spends credit."""

    TYPE = FrameType.DATA
    FIELDS = (("batches", Kind.BYTES_LIST),)
    batches: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.batches)


@dataclass(frozen=True, slots=True)
class Unsubscribed(Response):
    TYPE = FrameType.UNSUBSCRIBED
    FIELDS = ()


MESSAGE_TYPES: dict[FrameType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        HelloOk,
        ErrorResponse,
        CreateStream,
        DeleteStream,
        ListStreams,
        GetStreamInfo,
        AppendBatch,
        Append,
        ReadBatches,
        OffsetForTime,
        Wait,
        Roll,
        GetStatistics,
        ListSegments,
        ApplyRetention,
        Migrate,
        Verify,
        Subscribe,
        GrantCredit,
        Unsubscribe,
        Done,
        StreamList,
        StreamInfoResult,
        Appended,
        Batches,
        OffsetResult,
        StatisticsResult,
        SegmentList,
        Count,
        Problems,
        Subscribed,
        Data,
        Unsubscribed,
    )
}

# Which response answers which request (an ErrorResponse answers any of them).
RESPONSE_FOR: dict[type[Request], type[Response]] = {
    CreateStream: Done,
    DeleteStream: Done,
    ListStreams: StreamList,
    GetStreamInfo: StreamInfoResult,
    AppendBatch: Appended,
    Append: Appended,
    ReadBatches: Batches,
    OffsetForTime: OffsetResult,
    Wait: Done,
    Roll: Done,
    GetStatistics: StatisticsResult,
    ListSegments: SegmentList,
    ApplyRetention: Count,
    Migrate: Count,
    Verify: Problems,
    Subscribe: Subscribed,
}


# ------------------------------------------------------------------ body codec


def _malformed(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=ErrorCode.MALFORMED_FRAME)


class _Reader:
    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: memoryview, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def take(self, n: int) -> memoryview:
        if n > self.end - self.pos:
            raise _malformed(f"body ends {n - (self.end - self.pos)} bytes early")
        start = self.pos
        self.pos += n
        return self.buf[start : self.pos]

    def unpack(self, s: struct.Struct) -> int:
        value: int = s.unpack(self.take(s.size))[0]
        return value

    def flag(self) -> bool:
        b = self.take(1)[0]
        if b > 1:
            raise _malformed(f"flag byte is {b}, not 0 or 1")
        return b == 1

    def str_(self) -> str:
        raw = self.take(self.unpack(_U16))
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError:
            raise _malformed("string is not UTF-8") from None

    def bytes_(self) -> bytes:
        return bytes(self.take(self.unpack(_U32)))

    def count(self, min_item: int) -> int:
        n = self.unpack(_U32)
        if n * min_item > self.end - self.pos:  # refuse absurd counts before looping
            raise _malformed(f"list of {n} items cannot fit in the body")
        return n


def _read_segment(r: _Reader) -> SegmentInfo:
    base = r.unpack(_I64)
    last = r.unpack(_I64)
    tier = r.str_()
    size = r.unpack(_U64)
    key = r.str_() if r.flag() else None
    quarantined = r.str_() if r.flag() else None
    return SegmentInfo(base, last, tier, size, key, quarantined)


def _read_error(r: _Reader) -> ErrorResponse:
    return ErrorResponse(0, **{name: _READERS[kind](r) for name, kind in ErrorResponse.FIELDS})


_READERS: dict[Kind, Callable[[_Reader], Any]] = {
    Kind.BOOL: _Reader.flag,
    Kind.U16: lambda r: r.unpack(_U16),
    Kind.U32: lambda r: r.unpack(_U32),
    Kind.U64: lambda r: r.unpack(_U64),
    Kind.I64: lambda r: r.unpack(_I64),
    Kind.STR: _Reader.str_,
    Kind.BYTES: _Reader.bytes_,
    Kind.MAGIC: lambda r: bytes(r.take(4)),
    Kind.OPT_STR: lambda r: r.str_() if r.flag() else None,
    Kind.OPT_I64: lambda r: r.unpack(_I64) if r.flag() else None,
    Kind.U16_LIST: lambda r: tuple(r.unpack(_U16) for _ in range(r.count(2))),
    Kind.STR_LIST: lambda r: tuple(r.str_() for _ in range(r.count(2))),
    Kind.BYTES_LIST: lambda r: tuple(r.bytes_() for _ in range(r.count(4))),
    Kind.SEGMENTS: lambda r: tuple(_read_segment(r) for _ in range(r.count(28))),
    Kind.ERRORS: lambda r: tuple(_read_error(r) for _ in range(r.count(9))),
}


def _pack(s: struct.Struct, value: object, name: str) -> bytes:
    try:
        return s.pack(value)
    except struct.error as e:
        raise LocalProtocolError(f"{name}={value!r}: {e}", code=ErrorCode.MALFORMED_FRAME) from None


def _w_str(value: object, name: str) -> list[bytes]:
    if not isinstance(value, str):
        raise LocalProtocolError(f"{name} must be str", code=ErrorCode.MALFORMED_FRAME)
    raw = value.encode("utf-8", "surrogatepass")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise LocalProtocolError(
            f"{name} is not encodable as UTF-8", code=ErrorCode.MALFORMED_FRAME
        ) from None
    return [_pack(_U16, len(raw), f"len({name})"), raw]


def _w_bytes(value: object, name: str) -> list[bytes]:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"{name} must be bytes", code=ErrorCode.MALFORMED_FRAME)
    return [_pack(_U32, len(value), f"len({name})"), bytes(value)]


def _w_flag(value: object, name: str) -> list[bytes]:
    if not isinstance(value, bool):
        raise LocalProtocolError(f"{name} must be bool", code=ErrorCode.MALFORMED_FRAME)
    return [b"\x01" if value else b"\x00"]


def _w_opt(inner: Callable[[object, str], list[bytes]]) -> Callable[[object, str], list[bytes]]:
    def write(value: object, name: str) -> list[bytes]:
        return [b"\x00"] if value is None else [b"\x01", *inner(value, name)]

    return write


def _w_int(s: struct.Struct) -> Callable[[object, str], list[bytes]]:
    def write(value: object, name: str) -> list[bytes]:
        if not isinstance(value, int) or isinstance(value, bool):
            raise LocalProtocolError(f"{name} must be int", code=ErrorCode.MALFORMED_FRAME)
        return [_pack(s, value, name)]

    return write


def _w_list(item: Callable[[object, str], list[bytes]]) -> Callable[[object, str], list[bytes]]:
    def write(value: object, name: str) -> list[bytes]:
        if not isinstance(value, tuple | list):
            raise LocalProtocolError(f"{name} must be a tuple", code=ErrorCode.MALFORMED_FRAME)
        parts = [_pack(_U32, len(value), f"len({name})")]
        for v in value:
            parts += item(v, name)
        return parts

    return write


def _w_magic(value: object, name: str) -> list[bytes]:
    if not isinstance(value, bytes) or len(value) != 4:
        raise LocalProtocolError(f"{name} must be 4 bytes", code=ErrorCode.MALFORMED_FRAME)
    return [value]


def _w_segment(value: object, name: str) -> list[bytes]:
    if not isinstance(value, SegmentInfo):
        raise LocalProtocolError(f"{name} must hold SegmentInfo", code=ErrorCode.MALFORMED_FRAME)
    return [
        *_w_int(_I64)(value.base_offset, "base_offset"),
        *_w_int(_I64)(value.last_offset, "last_offset"),
        *_w_str(value.tier, "tier"),
        *_w_int(_U64)(value.size_bytes, "size_bytes"),
        *_w_opt(_w_str)(value.key, "key"),
        *_w_opt(_w_str)(value.quarantined, "quarantined"),
    ]


def _w_error(value: object, name: str) -> list[bytes]:
    if not isinstance(value, ErrorResponse):
        raise LocalProtocolError(f"{name} must hold ErrorResponse", code=ErrorCode.MALFORMED_FRAME)
    parts: list[bytes] = []
    for field, kind in ErrorResponse.FIELDS:
        parts += _WRITERS[kind](getattr(value, field), field)
    return parts


_WRITERS: dict[Kind, Callable[[object, str], list[bytes]]] = {
    Kind.BOOL: _w_flag,
    Kind.U16: _w_int(_U16),
    Kind.U32: _w_int(_U32),
    Kind.U64: _w_int(_U64),
    Kind.I64: _w_int(_I64),
    Kind.STR: _w_str,
    Kind.BYTES: _w_bytes,
    Kind.MAGIC: _w_magic,
    Kind.OPT_STR: _w_opt(_w_str),
    Kind.OPT_I64: _w_opt(_w_int(_I64)),
    Kind.U16_LIST: _w_list(_w_int(_U16)),
    Kind.STR_LIST: _w_list(_w_str),
    Kind.BYTES_LIST: _w_list(_w_bytes),
    Kind.SEGMENTS: _w_list(_w_segment),
    Kind.ERRORS: _w_list(lambda v, n: _w_error(v, n)),
}


def encode_frame(message: Message) -> bytes:
    """The whole frame for ``message``; :class:`LocalProtocolError` if it cannot be encoded."""
    parts: list[bytes] = []
    for name, kind in message.FIELDS:
        parts += _WRITERS[kind](getattr(message, name), name)
    rid = message.rid
    if not isinstance(rid, int) or not 0 <= rid <= 0xFFFFFFFF:
        raise LocalProtocolError(f"request id {rid!r} is not a u32", code=ErrorCode.MALFORMED_FRAME)
    length = MIN_LENGTH + sum(len(p) for p in parts)
    if length > 0xFFFFFFFF:
        raise LocalProtocolError("frame over 4 GiB", code=ErrorCode.FRAME_TOO_LARGE)
    # one copy of the payload (batches are joined straight into the frame)
    return b"".join([FRAME_HEADER.pack(length, message.TYPE, rid), *parts])


def check_header(length: int, frame_type: int, max_frame_size: int) -> type[Message]:
    """Validate a frame header before its body is buffered; returns the message class."""
    if length < MIN_LENGTH:
        raise _malformed(f"frame length {length} is below the minimum {MIN_LENGTH}")
    if length > max_frame_size:
        raise RemoteProtocolError(
            f"frame of {length} bytes exceeds the limit of {max_frame_size}",
            code=ErrorCode.FRAME_TOO_LARGE,
        )
    try:
        return MESSAGE_TYPES[FrameType(frame_type)]
    except ValueError:
        raise _malformed(f"unknown frame type 0x{frame_type:02x}") from None


def decode_body(
    cls: type[Message], request_id: int, buf: memoryview, pos: int, end: int
) -> Message:
    """Decode the body ``buf[pos:end]`` of a frame of class ``cls``."""
    r = _Reader(buf, pos, end)
    values: dict[str, Any] = {name: _READERS[kind](r) for name, kind in cls.FIELDS}
    if r.pos != end:
        raise _malformed(f"{end - r.pos} unexpected bytes after the body")
    if issubclass(cls, Request | Response | ErrorResponse):
        values["request_id"] = request_id
    elif request_id != 0:
        raise _malformed(f"{cls.__name__} must carry request id 0, not {request_id}")
    return cls(**values)


# ------------------------------------------------------------------ error table

# Most specific first is not needed: lookup walks the exception's MRO.
ERROR_TABLE: tuple[tuple[ErrorCode, type[Exception]], ...] = (
    (ErrorCode.UNKNOWN, StrataError),
    (ErrorCode.UNKNOWN_STREAM, UnknownStreamError),
    (ErrorCode.STREAM_EXISTS, StreamExistsError),
    (ErrorCode.STREAM_DELETED, StreamDeletedError),
    (ErrorCode.JOURNAL_CLOSED, JournalClosedError),
    (ErrorCode.OFFSET_OUT_OF_RANGE, OffsetOutOfRangeError),
    (ErrorCode.INVALID_BATCH, InvalidBatchError),
    (ErrorCode.BATCH_TOO_LARGE, BatchTooLargeError),
    (ErrorCode.UNSUPPORTED_COMPRESSION, UnsupportedCompressionError),
    (ErrorCode.STORAGE, StorageError),
    (ErrorCode.CORRUPT_SEGMENT, CorruptSegmentError),
    (ErrorCode.OBJECT_STORE, ObjectStoreError),
    (ErrorCode.OBJECT_STORE_TIMEOUT, ObjectStoreTimeoutError),
    (ErrorCode.INVALID_CONFIG, InvalidConfigError),
    (ErrorCode.INVALID_ARGUMENT, InvalidArgumentError),
    (ErrorCode.UNAVAILABLE, JournalUnavailableError),
)
_CODE_OF: dict[type[Exception], ErrorCode] = {cls: code for code, cls in ERROR_TABLE}
_CODE_OF[ValueError] = ErrorCode.INVALID_ARGUMENT  # a server-side plain ValueError
_CODE_OF[RemoteJournalError] = ErrorCode.UNKNOWN
_CLASS_OF: dict[int, type[Exception]] = {code: cls for code, cls in ERROR_TABLE}
_CLASS_OF[ErrorCode.UNKNOWN] = RemoteJournalError


def _plain_message(exc: BaseException) -> str:
    """The message an exception was built with, without the suffix its __init__ adds."""
    if isinstance(exc, InvalidBatchError):
        return exc.reason
    text = str(exc.args[0]) if exc.args else ""
    if isinstance(exc, OffsetOutOfRangeError):
        suffix = f" (valid offsets: {exc.first_offset}..{exc.next_offset})"
        text = text.removesuffix(suffix)
    elif isinstance(exc, StorageError):
        where = ", ".join(
            f"{k}={v}"
            for k, v in (
                ("stream", exc.stream),
                ("segment", exc.segment),
                ("position", exc.position),
            )
            if v is not None
        )
        if where:
            text = text.removesuffix(f" [{where}]")
    return text


def error_code_of(exc: BaseException) -> int:
    """The wire code for an exception (nearest class in its MRO that the table knows)."""
    if isinstance(exc, ProtocolError) and not isinstance(exc, InvalidBatchError):
        return exc.code if exc.code >= ErrorCode.MALFORMED_FRAME else ErrorCode.MALFORMED_FRAME
    if isinstance(exc, RemoteJournalError):
        return exc.code
    for cls in type(exc).__mro__:
        code = _CODE_OF.get(cls)
        if code is not None:
            return code
    return ErrorCode.UNKNOWN


def error_to_response(request_id: int, exc: BaseException) -> ErrorResponse:
    """The ERROR frame that reports ``exc`` (any exception) to the peer."""
    code = error_code_of(exc)
    message = (
        _plain_message(exc) if isinstance(exc, StrataError) else f"{type(exc).__name__}: {exc}"
    )
    fields: dict[str, Any] = {}
    if isinstance(exc, StorageError):
        fields = {"stream": exc.stream, "segment": exc.segment, "position": exc.position}
    elif isinstance(exc, OffsetOutOfRangeError):
        fields = {"first_offset": exc.first_offset, "next_offset": exc.next_offset}
    elif isinstance(exc, InvalidBatchError):
        fields = {"position": exc.position}
    return ErrorResponse(request_id, code, message[:MAX_MESSAGE_CHARS], **fields)


def error_from_response(error: ErrorResponse) -> StrataError:
    """The exception a caller of the remote journal sees for an ERROR frame."""
    if error.code >= ErrorCode.MALFORMED_FRAME:
        return ProtocolError(error.message, code=error.code)
    cls = _CLASS_OF.get(error.code, RemoteJournalError)
    msg = error.message
    if cls is RemoteJournalError:
        return RemoteJournalError(msg, code=error.code)
    if issubclass(cls, OffsetOutOfRangeError):
        return cls(msg, first_offset=error.first_offset or 0, next_offset=error.next_offset or 0)
    if issubclass(cls, InvalidBatchError):
        return cls(msg, position=error.position or 0)
    if issubclass(cls, StorageError):
        return cls(msg, stream=error.stream, segment=error.segment, position=error.position)
    exc = cls(msg)
    assert isinstance(exc, StrataError)
    return exc


def decode_frame(
    data: bytes | bytearray | memoryview, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> tuple[Message, int] | None:
    """The first frame of ``data`` and its size, or None if it is not complete yet.

    Stateless: no handshake or request-id rules (those live in the connection).
    """
    if len(data) < HEADER_SIZE:
        return None
    length, frame_type, rid = FRAME_HEADER.unpack_from(data, 0)
    cls = check_header(length, frame_type, max_frame_size)
    end = 4 + length
    if len(data) < end:
        return None
    with memoryview(data) as view:
        return decode_body(cls, rid, view, HEADER_SIZE, end), end
