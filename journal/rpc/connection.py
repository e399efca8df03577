"""The journal RPC connection state machine, one per side, in the h11 style.

How it works. ``receive_data(bytes)`` buffers what the socket delivered (an
empty ``bytes`` means end of stream); ``next_event()`` returns the next typed
message, :data:`NEED_DATA`, or :class:`ConnectionClosed`. ``send(message)``
checks the message against the state and returns the bytes to write. Nothing
here does I/O or imports trio.

Three tables hold the rules (STYLE habit 2):

* :data:`TRANSITIONS` -- the connection state, keyed by
  ``(state, sender role, frame class)``. Both peers walk the same states, so
  one table serves both: a frame not in it is a :class:`LocalProtocolError`
  when we send it and a :class:`RemoteProtocolError` when the peer does.
* :data:`~journal.rpc.frames.RESPONSE_FOR` -- which response answers which
  request; each request id is outstanding until its answer (or an
  ErrorResponse). A duplicate id, or an answer to an unknown id, is an error.
* :data:`SUB_TRANSITIONS` -- the life of a subscription, keyed by
  ``(sub state, sender role, frame type)``; ``None`` means it has ended.

Flow control: a subscription's credit (bytes) starts at ``Subscribe.credit``,
grows with each ``GrantCredit`` and shrinks by each ``Data``'s batch bytes.
A ``Data`` may exceed the credit only when it holds one batch and the credit
is positive (so a batch larger than the grant cannot stall the tail); the
credit then drops to 0. The server can therefore never be made to buffer more
than one batch beyond what the client granted.

Limits: a frame header announcing more than ``max_frame_size`` is refused as
soon as its 9 header bytes arrive, before any body is buffered, and the
receive buffer never holds more than ``max_buffer`` bytes. ``missing`` says
how much of the current frame is still to come, so a reader can ask the
socket for a large frame in large pieces.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from journal.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from journal.rpc.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_HEADER,
    HEADER_SIZE,
    MAGIC,
    PROTOCOL_VERSIONS,
    RESPONSE_FOR,
    Data,
    ErrorCode,
    ErrorResponse,
    FrameType,
    GrantCredit,
    Hello,
    HelloOk,
    Message,
    Request,
    Response,
    Subscribe,
    Unsubscribe,
    check_header,
    decode_body,
    encode_frame,
    error_to_response,
)

MAX_HANDSHAKE_FRAME_SIZE = 4096  # the frame limit before the handshake completes
MAX_ENDED_SUBSCRIPTIONS = 4096  # server: ids of subscriptions it ended, remembered
_MALFORMED = ErrorCode.MALFORMED_FRAME
_LENGTH = struct.Struct(">I")
_DUPLICATE = ErrorCode.DUPLICATE_REQUEST_ID


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    START = "start"  # nothing exchanged yet
    HANDSHAKE = "handshake"  # HELLO sent, HELLO_OK not yet
    READY = "ready"
    CLOSED = "closed"  # a fatal ERROR passed, or end of stream


class SubState(enum.Enum):
    PENDING = "pending"  # SUBSCRIBE sent, SUBSCRIBED not yet
    ACTIVE = "active"
    CLOSING = "closing"  # UNSUBSCRIBE sent, UNSUBSCRIBED not yet


class _Fatal:
    """Table key for an ERROR frame with request id 0 (kills the connection)."""


class _Request:
    """Table key for any request-like frame (requests and subscription control)."""


class _Response:
    """Table key for any answer-like frame (responses, ERROR with an id, DATA)."""


_C, _S = Role.CLIENT, Role.SERVER
_LIVE = (State.START, State.HANDSHAKE, State.READY)

TRANSITIONS: dict[tuple[State, Role, type], State] = {
    (State.START, _C, Hello): State.HANDSHAKE,
    (State.HANDSHAKE, _S, HelloOk): State.READY,
    (State.READY, _C, _Request): State.READY,
    (State.READY, _S, _Response): State.READY,
    **{(state, role, _Fatal): State.CLOSED for state in _LIVE for role in (_C, _S)},
}

_T = FrameType
SUB_TRANSITIONS: dict[tuple[SubState | None, Role, FrameType], SubState | None] = {
    (None, _C, _T.SUBSCRIBE): SubState.PENDING,
    (SubState.PENDING, _S, _T.SUBSCRIBED): SubState.ACTIVE,
    (SubState.PENDING, _S, _T.ERROR): None,
    (SubState.PENDING, _C, _T.CREDIT): SubState.PENDING,
    (SubState.ACTIVE, _C, _T.CREDIT): SubState.ACTIVE,
    (SubState.ACTIVE, _S, _T.DATA): SubState.ACTIVE,
    (SubState.ACTIVE, _S, _T.ERROR): None,
    (SubState.ACTIVE, _C, _T.UNSUBSCRIBE): SubState.CLOSING,
    (SubState.CLOSING, _S, _T.DATA): SubState.CLOSING,  # only in flight, on the client side
    (SubState.CLOSING, _S, _T.UNSUBSCRIBED): None,
    (SubState.CLOSING, _S, _T.ERROR): None,
}
_SUB_FRAMES = frozenset({_T.SUBSCRIBED, _T.DATA, _T.CREDIT, _T.UNSUBSCRIBE, _T.UNSUBSCRIBED})


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
"""``next_event`` has nothing complete yet: feed more bytes."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its end (``receive_data(b"")``) on a frame boundary."""


Event = Message | ConnectionClosed


def _key(message: Message) -> type:
    if isinstance(message, ErrorResponse):
        return _Fatal if message.request_id == 0 else _Response
    if isinstance(message, Request):
        return _Request
    if isinstance(message, Response):
        return _Response
    return type(message)


@dataclass(slots=True)
class _Subscription:
    state: SubState
    credit: int


class Connection:
    """One side of a journal RPC connection; see the module docstring."""

    def __init__(
        self,
        role: Role,
        *,
        name: str = "",
        versions: tuple[int, ...] = PROTOCOL_VERSIONS,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_buffer: int | None = None,
    ) -> None:
        self.role = role
        self.peer_role = Role.SERVER if role is Role.CLIENT else Role.CLIENT
        self.name = name
        self.versions = versions
        self.max_frame_size = max_frame_size
        self.max_buffer = max_buffer if max_buffer is not None else 2 * (max_frame_size + 4)
        self.peer_max_frame_size = DEFAULT_MAX_FRAME_SIZE
        self.version: int | None = None
        self.peer_name: str | None = None
        self.state = State.START
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._outstanding: dict[int, type[Request]] = {}
        self._subs: dict[int, _Subscription] = {}
        # server: subscriptions it ended with an ERROR; the client may not know yet
        self._ended_subs: dict[int, None] = {}  # an ordered set, oldest first
        self._next_id = 0
        self._fatal_sent = False
        self._offered: tuple[int, ...] = versions  # what the client offered

    # ------------------------------------------------------------ inspection

    @property
    def outstanding(self) -> frozenset[int]:
        """Request ids awaiting an answer (subscriptions not included)."""
        return frozenset(self._outstanding)

    @property
    def subscriptions(self) -> dict[int, SubState]:
        return {sid: sub.state for sid, sub in self._subs.items()}

    def credit(self, subscription_id: int) -> int:
        """Bytes the server may still push on a subscription (0 if it has ended)."""
        sub = self._subs.get(subscription_id)
        return sub.credit if sub is not None else 0

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    @property
    def missing(self) -> int:
        """Bytes the frame at the head of the buffer still lacks (0 if its header is
        not in yet): how much a reader may ask the socket for at once."""
        if self.buffered < HEADER_SIZE:
            return 0
        length: int = _LENGTH.unpack_from(self._buf, self._pos)[0]
        return max(0, 4 + length - self.buffered)

    def next_request_id(self) -> int:
        """A request id not in use on this connection (client side)."""
        while True:
            self._next_id = self._next_id % 0xFFFFFFFF + 1
            if self._next_id not in self._outstanding and self._next_id not in self._subs:
                return self._next_id

    # --------------------------------------------------------------- receive

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer closed its end."""
        if self.state is State.CLOSED:
            return
        if not data:
            self._eof = True
            return
        if self._eof:
            raise LocalProtocolError("data received after end of stream")
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        if self.buffered + len(data) > self.max_buffer:
            self.state = State.CLOSED
            raise RemoteProtocolError(
                f"receive buffer over {self.max_buffer} bytes", code=ErrorCode.BUFFER_FULL
            )
        self._buf += data
        if self.buffered >= HEADER_SIZE:  # refuse an oversize frame from its header alone
            self._checked_header()

    def _checked_header(self) -> tuple[int, type[Message], int]:
        length, frame_type, rid = FRAME_HEADER.unpack_from(self._buf, self._pos)
        limit = self.max_frame_size
        if self.state is not State.READY:  # an unknown peer cannot make us buffer much
            limit = min(limit, MAX_HANDSHAKE_FRAME_SIZE)
        try:
            cls = check_header(length, frame_type, limit)
        except ProtocolError:
            self.state = State.CLOSED
            raise
        return length, cls, rid

    def next_event(self) -> Event | _NeedData:
        """The next complete message from the peer, NEED_DATA, or ConnectionClosed.

        Raises :class:`RemoteProtocolError` (with ``code``) if the peer broke the
        protocol; the connection is then CLOSED and :meth:`send_failure` may
        tell the peer why.
        """
        while True:
            if self.state is State.CLOSED:
                return ConnectionClosed()
            if self.buffered < HEADER_SIZE:
                return self._at_short_buffer()
            length, cls, rid = self._checked_header()
            end = self._pos + 4 + length
            if len(self._buf) < end:
                return self._at_short_buffer()
            try:
                with memoryview(self._buf) as view:
                    message = decode_body(cls, rid, view, self._pos + HEADER_SIZE, end)
                self._pos = end
                if self._receive(message):
                    return message
            except ProtocolError as e:
                self.state = State.CLOSED
                if isinstance(e, RemoteProtocolError):
                    raise
                raise RemoteProtocolError(str(e), code=e.code) from e

    def _at_short_buffer(self) -> _NeedData | ConnectionClosed:
        if not self._eof:
            return NEED_DATA
        self.state = State.CLOSED
        if self.buffered:
            raise RemoteProtocolError(
                f"stream ended inside a frame ({self.buffered} bytes left)",
                code=ErrorCode.MALFORMED_FRAME,
            )
        return ConnectionClosed()

    # ------------------------------------------------------------------ send

    def send(self, message: Message) -> bytes:
        """The bytes to write for ``message``; :class:`LocalProtocolError` if it is not allowed."""
        data = encode_frame(message)
        if len(data) - 4 > self.peer_max_frame_size:
            raise LocalProtocolError(
                f"frame of {len(data) - 4} bytes exceeds the peer's limit "
                f"of {self.peer_max_frame_size}",
                code=ErrorCode.FRAME_TOO_LARGE,
            )
        self._apply(message, self.role, LocalProtocolError)
        if isinstance(message, ErrorResponse) and message.request_id == 0:
            self._fatal_sent = True
        return data

    def send_failure(self, exc: ProtocolError) -> bytes:
        """A fatal ERROR frame telling the peer why we are closing (once; else ``b""``)."""
        self.state = State.CLOSED
        if self._fatal_sent:
            return b""
        self._fatal_sent = True
        return encode_frame(error_to_response(0, exc))

    # ----------------------------------------------------------------- rules

    def _receive(self, message: Message) -> bool:
        """Apply a received message; False if it is swallowed (a stale control frame)."""
        if (
            self.role is Role.SERVER
            and isinstance(message, GrantCredit | Unsubscribe)
            and message.request_id in self._ended_subs
        ):
            # we ended this subscription; the client sent this before it knew
            if isinstance(message, Unsubscribe):
                self._ended_subs.pop(message.request_id, None)
            return False
        self._apply(message, self.peer_role, RemoteProtocolError)
        return True

    def _apply(self, message: Message, sender: Role, error: type[ProtocolError]) -> None:
        """Check ``message`` sent by ``sender`` against every table, then update state."""
        new_state = TRANSITIONS.get((self.state, sender, _key(message)))
        if new_state is None:
            raise error(
                f"{type(message).__name__} from the {sender.value} is not allowed "
                f"in state {self.state.value}",
                code=ErrorCode.UNEXPECTED_FRAME,
            )
        if isinstance(message, Hello):
            self._check_hello(message, error)
        elif isinstance(message, HelloOk):
            self._check_hello_ok(message, sender, error)
        elif new_state is State.READY:
            self._track(message, sender, error)
        self.state = new_state

    def _check_hello(self, hello: Hello, error: type[ProtocolError]) -> None:
        if hello.magic != MAGIC:
            raise error(f"bad magic {hello.magic!r}", code=ErrorCode.BAD_MAGIC)
        if self.role is Role.SERVER:
            if not set(hello.versions) & set(self.versions):
                raise error(
                    f"no common version: client offers {list(hello.versions)}, "
                    f"server speaks {list(self.versions)}",
                    code=ErrorCode.UNSUPPORTED_VERSION,
                )
            self.peer_name = hello.client_name
            self._offered = tuple(hello.versions)
        else:
            self._offered = tuple(hello.versions)

    def _check_hello_ok(self, ok: HelloOk, sender: Role, error: type[ProtocolError]) -> None:
        if ok.version not in self.versions or ok.version not in self._offered:
            raise error(
                f"version {ok.version} was not offered ({list(self.versions)})",
                code=ErrorCode.UNSUPPORTED_VERSION,
            )
        if ok.max_frame_size < 64:
            raise error(f"max frame size {ok.max_frame_size} is too small", code=_MALFORMED)
        self.version = ok.version
        if self.role is Role.CLIENT:
            self.peer_max_frame_size = ok.max_frame_size
            self.peer_name = ok.server_name
        else:
            self.max_frame_size = min(self.max_frame_size, ok.max_frame_size)

    def _track(self, message: Message, sender: Role, error: type[ProtocolError]) -> None:
        rid = message.rid
        ftype = message.TYPE
        if rid == 0:
            raise error(
                f"{type(message).__name__} needs a request id", code=ErrorCode.MALFORMED_FRAME
            )
        sub = self._subs.get(rid)
        if (
            ftype in _SUB_FRAMES
            or ftype is FrameType.SUBSCRIBE
            or (ftype is FrameType.ERROR and sub is not None)
        ):
            self._track_subscription(message, sender, error, sub)
            return
        if isinstance(message, Request):
            if rid in self._outstanding or rid in self._subs:
                raise error(
                    f"request id {rid} is already in use", code=ErrorCode.DUPLICATE_REQUEST_ID
                )
            self._ended_subs.pop(rid, None)
            self._outstanding[rid] = type(message)
            return
        request = self._outstanding.get(rid)
        if request is None:
            raise error(f"response to unknown request id {rid}", code=ErrorCode.UNKNOWN_REQUEST_ID)
        if not isinstance(message, ErrorResponse | RESPONSE_FOR[request]):
            raise error(
                f"{type(message).__name__} cannot answer {request.__name__} (id {rid})",
                code=ErrorCode.UNEXPECTED_FRAME,
            )
        del self._outstanding[rid]

    def _track_subscription(
        self,
        message: Message,
        sender: Role,
        error: type[ProtocolError],
        sub: _Subscription | None,
    ) -> None:
        rid = message.rid
        ftype = message.TYPE
        if ftype is FrameType.SUBSCRIBE and rid in self._outstanding:
            raise error(f"request id {rid} is already in use", code=_DUPLICATE)
        state = sub.state if sub is not None else None
        key = (state, sender, ftype)
        if key not in SUB_TRANSITIONS:
            if sub is None and ftype is not FrameType.SUBSCRIBE:
                raise error(
                    f"{type(message).__name__} for unknown subscription {rid}",
                    code=ErrorCode.UNKNOWN_REQUEST_ID,
                )
            if sub is not None and ftype is FrameType.SUBSCRIBE:
                raise error(
                    f"request id {rid} is already in use", code=ErrorCode.DUPLICATE_REQUEST_ID
                )
            raise error(
                f"{type(message).__name__} not allowed on a {state and state.value} subscription",
                code=ErrorCode.UNEXPECTED_FRAME,
            )
        new = SUB_TRANSITIONS[key]
        if isinstance(message, Subscribe):
            self._ended_subs.pop(rid, None)
            self._subs[rid] = _Subscription(SubState.PENDING, message.credit)
            return
        assert sub is not None
        if isinstance(message, GrantCredit):
            sub.credit += message.credit
        elif isinstance(message, Data):
            size = message.size
            if not message.batches:
                raise error("DATA without batches", code=ErrorCode.MALFORMED_FRAME)
            if size > sub.credit and not (len(message.batches) == 1 and sub.credit > 0):
                raise error(
                    f"DATA of {size} bytes exceeds the credit of {sub.credit}",
                    code=ErrorCode.CREDIT_EXCEEDED,
                )
            sub.credit = max(0, sub.credit - size)
        if new is None:
            del self._subs[rid]
            if isinstance(message, ErrorResponse) and self.role is sender is Role.SERVER:
                # the client may still send CREDIT/UNSUBSCRIBE for it (one round trip)
                self._ended_subs[rid] = None
                if len(self._ended_subs) > MAX_ENDED_SUBSCRIPTIONS:
                    del self._ended_subs[next(iter(self._ended_subs))]
        else:
            sub.state = new
