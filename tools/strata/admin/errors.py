"""Error answers: :class:`ApiError` and the mapping from exceptions to it.

A handler raises :class:`ApiError` for what it rejects itself and lets journal
and user-store errors through; :func:`api_error` turns those into an answer by
class (unknown stream is 404, existing stream 409, ...). An error with a true
``retryable`` attribute (the remote journal is down) is 503 with
``Retry-After: 1``; anything unexpected is a 500 that leaks no detail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from journal.config import InvalidConfigError
from journal.errors import (
    BatchTooLargeError,
    JournalClosedError,
    ObjectStoreError,
    OffsetOutOfRangeError,
    StrataError,
    StreamDeletedError,
    StreamExistsError,
    UnknownStreamError,
)
from meta.errors import (
    InvalidPasswordError,
    InvalidUserNameError,
    UnknownUserError,
    UserExistsError,
)

__all__ = ["ApiError", "api_error"]


class ApiError(Exception):
    """An error answer: status, snake_case code, message, extra headers and fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.details = dict(details or {})


def api_error(exc: Exception) -> ApiError:
    """The answer to an exception a handler let through."""
    if getattr(exc, "retryable", False) is True:
        return ApiError(503, "unavailable", str(exc), headers={"Retry-After": "1"})
    table: list[tuple[type[Exception], int, str]] = [
        (StreamDeletedError, 404, "unknown_stream"),
        (UnknownStreamError, 404, "unknown_stream"),
        (StreamExistsError, 409, "stream_exists"),
        (InvalidConfigError, 400, "invalid_config"),
        (BatchTooLargeError, 413, "batch_too_large"),
        (UnknownUserError, 404, "unknown_user"),
        (UserExistsError, 409, "user_exists"),
        (InvalidUserNameError, 400, "invalid_user_name"),
        (InvalidPasswordError, 400, "invalid_password"),
        (JournalClosedError, 503, "journal_closed"),
        (ObjectStoreError, 503, "object_store_unavailable"),
    ]
    for cls, status, code in table:
        if isinstance(exc, cls):
            return ApiError(status, code, str(exc))
    if isinstance(exc, OffsetOutOfRangeError):
        return ApiError(
            400,
            "offset_out_of_range",
            str(exc),
            details={"first_offset": exc.first_offset, "next_offset": exc.next_offset},
        )
    if isinstance(exc, StrataError) and isinstance(exc, ValueError):
        return ApiError(400, "invalid_argument", str(exc))
    if isinstance(exc, StrataError):
        return ApiError(500, "internal_error", str(exc))
    return ApiError(500, "internal_error", "internal error; the server log has the details")
