"""The project's one exception hierarchy.

Everything StrataMQ raises on purpose derives from :class:`StrataError`, so a
caller can catch the whole family in one place. The tree splits by who is at
fault and where:

* :class:`StorageError` -- something on disk is wrong; it names the stream, the
  segment file and the byte position so an operator can go and look.
  :class:`ObjectStoreError` is the object tier failing (down, slow, erroring).
* :class:`ProtocolError` -- bytes that break a wire or file format. Like h11 we
  split it into :class:`LocalProtocolError` (we were about to send something
  invalid) and :class:`RemoteProtocolError` (a peer sent something invalid).
  Each carries ``code``, the wire error code of the protocol concerned (a Kafka
  error code, an MQTT reason code, an AMQP reply code).
* Argument errors (unknown stream, bad offset, ...) also subclass the builtin
  exception a Python caller would expect (``KeyError``, ``ValueError``).
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BatchTooLargeError",
    "CorruptSegmentError",
    "InvalidArgumentError",
    "InvalidBatchError",
    "JournalClosedError",
    "JournalConnectionLostError",
    "JournalUnavailableError",
    "LocalProtocolError",
    "ObjectStoreError",
    "ObjectStoreTimeoutError",
    "OffsetOutOfRangeError",
    "ProtocolError",
    "RemoteJournalError",
    "RemoteProtocolError",
    "StorageError",
    "StrataError",
    "StreamDeletedError",
    "StreamExistsError",
    "UnknownStreamError",
    "UnsupportedCompressionError",
    "leaf_exceptions",
]


class StrataError(Exception):
    """Root of every error StrataMQ raises on purpose."""


class ProtocolError(StrataError):
    """Bytes that break a format; ``code`` is the protocol's own error code."""

    code: int = 0

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """We were asked to produce something the format cannot express."""


class RemoteProtocolError(ProtocolError):
    """A peer (or a file) handed us bytes that do not follow the format."""


class InvalidBatchError(RemoteProtocolError, ValueError):
    """A RecordBatch v2 failed validation (Kafka CORRUPT_MESSAGE).

    ``position`` is the byte offset inside the buffer being decoded.
    """

    code = 2

    def __init__(self, message: str, *, position: int = 0) -> None:
        super().__init__(f"{message} (at byte {position})")
        self.reason = message
        self.position = position


class BatchTooLargeError(InvalidBatchError):
    """A batch is larger than the stream accepts (Kafka MESSAGE_TOO_LARGE)."""

    code = 10


class StorageError(StrataError):
    """Data on disk is not what it should be; says where."""

    def __init__(
        self,
        message: str,
        *,
        stream: str | None = None,
        segment: str | None = None,
        position: int | None = None,
    ) -> None:
        where = ", ".join(
            f"{k}={v}"
            for k, v in (("stream", stream), ("segment", segment), ("position", position))
            if v is not None
        )
        super().__init__(f"{message} [{where}]" if where else message)
        self.stream = stream
        self.segment = segment
        self.position = position


class CorruptSegmentError(StorageError):
    """A sealed segment failed its checksum; it is quarantined, never served."""


class ObjectStoreError(StorageError):
    """The object store failed, timed out or could not be reached; names the segment."""


class ObjectStoreTimeoutError(ObjectStoreError):
    """An object-store call gave up at its timeout; its request may still land later."""


class JournalClosedError(StrataError):
    """The journal (or the stream) was closed while the call was waiting."""


class UnknownStreamError(StrataError, KeyError):
    """No stream has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown stream"


class StreamExistsError(StrataError, ValueError):
    """A stream with that name already exists."""


class StreamDeletedError(JournalClosedError):
    """The stream was deleted while the call was waiting on it."""


class OffsetOutOfRangeError(StrataError, IndexError):
    """The offset is before the first retained offset or past the end.

    Carries the valid range so a consumer can reset (Kafka OFFSET_OUT_OF_RANGE).
    """

    code = 1

    def __init__(self, message: str, *, first_offset: int, next_offset: int) -> None:
        super().__init__(f"{message} (valid offsets: {first_offset}..{next_offset})")
        self.first_offset = first_offset
        self.next_offset = next_offset


class UnsupportedCompressionError(InvalidBatchError):
    """A batch uses a codec this build cannot decompress (Kafka code 76)."""

    code = 76


class JournalUnavailableError(StrataError):
    """The journal server cannot take the request now; retrying later is safe.

    The server sends it (RPC code UNAVAILABLE) only for requests it did not
    apply (shutting down, not ready); the remote client raises it for requests
    it could not send because it is not connected. Either way: not applied.
    """

    retryable: ClassVar[bool] = True


class JournalConnectionLostError(JournalUnavailableError):
    """A request was sent but its answer never came: the connection dropped.

    ``maybe_applied`` is True for requests that change state (appends,
    create/delete, roll, retention, migration, verify): the server may or may
    not have applied it, and retrying may apply it twice.
    """

    def __init__(self, message: str, *, maybe_applied: bool) -> None:
        if maybe_applied:
            message += (
                "; the request may or may not have been applied, and retrying it"
                " may apply it twice (an append may be duplicated)"
            )
        else:
            message += "; the request changes nothing, so retrying it is safe"
        super().__init__(message)
        self.maybe_applied = maybe_applied


class InvalidArgumentError(StrataError, ValueError):
    """The journal server rejected an argument (a plain ``ValueError`` on its side)."""


class RemoteJournalError(StrataError):
    """The journal server failed with an error the RPC has no specific code for."""

    def __init__(self, message: str, *, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``[exc]`` itself.

    Nurseries wrap what their tasks raise; callers that report errors to a
    person want the errors, not the groups.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return [exc]
    return [leaf for inner in exc.exceptions for leaf in leaf_exceptions(inner)]
