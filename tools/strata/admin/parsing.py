"""Reading requests: JSON bodies under a size cap, fields, query parameters, records.

Everything here is plain and synchronous except :func:`json_object`, which
reads the whole body (up to :data:`MAX_BODY_BYTES`, checked against
``Content-Length`` first and then as chunks arrive) before parsing it. Every
rejection is an :class:`ApiError` with code ``invalid_request`` (or
``invalid_json``, ``request_too_large``) naming the offending field.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request

from journal.records import Header, Record
from tools.strata.admin.errors import ApiError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_READ_BYTES",
    "check_encoding",
    "field",
    "int_param",
    "json_object",
    "raw_segments",
    "record",
]

MAX_BODY_BYTES = 16 << 20
"""Larger request bodies get 413."""
MAX_READ_BYTES = 64 << 20
"""The largest ``max_bytes`` a records GET may ask for."""
_ENCODINGS = ("utf-8", "base64")


def raw_segments(request: Request) -> list[str]:
    """The path split at ``/`` before percent-decoding, each part then decoded."""
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        path = raw.decode("latin-1").partition("?")[0]
        try:
            return [unquote(part, errors="strict") for part in path.split("/")]
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_request", "the path is not valid UTF-8") from None
    return str(request.scope["path"]).split("/")


async def json_object(request: Request) -> dict[str, Any]:
    """The request body, which must be a JSON object of at most :data:`MAX_BODY_BYTES`."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except ValueError as exc:  # UnicodeDecodeError included
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "the request body must be a JSON object")
    return body


def _too_large() -> ApiError:
    return ApiError(
        413,
        "request_too_large",
        f"request bodies are limited to {MAX_BODY_BYTES} bytes",
        headers={"Connection": "close"},  # the rest of the body is never read
    )


_MISSING = object()
_TYPE_NAMES = {str: "a string", bool: "true or false", dict: "an object", list: "a list"}


def field(body: Mapping[str, Any], key: str, kind: type[Any], default: Any = _MISSING) -> Any:
    """``body[key]``, which must be a ``kind``; required unless a default is given."""
    value = body.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise ApiError(400, "invalid_request", f"the request needs {key!r}")
        return default
    if not isinstance(value, kind):
        raise ApiError(400, "invalid_request", f"{key!r} must be {_TYPE_NAMES[kind]}")
    return value


def int_param(
    text: str | None, name: str, *, default: int, low: int, high: int | None = None
) -> int:
    """A query parameter as an integer from ``low`` to ``high``."""
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        limit = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ApiError(400, "invalid_request", f"{name} must be an integer {limit}, not {text!r}")
    return value


def check_encoding(encoding: str) -> str:
    """``encoding`` if it is one the records routes know (utf-8, base64)."""
    if encoding not in _ENCODINGS:
        raise ApiError(
            400, "invalid_request", f"encoding must be utf-8 or base64, not {encoding!r}"
        )
    return encoding


def _decode(value: object, encoding: str, what: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_request", f"{what} must be a string or null")
    if encoding == "base64":
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_request", f"{what} is not valid base64") from None
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise ApiError(400, "invalid_request", f"{what} is not valid Unicode") from None


def record(item: object, index: int, encoding: str) -> Record:
    """The record ``records[index]`` of an append body describes."""
    where = f"records[{index}]"
    if not isinstance(item, dict):
        raise ApiError(400, "invalid_request", f"{where} must be an object")
    unknown = set(item) - {"key", "value", "headers", "timestamp"}
    if unknown:
        raise ApiError(400, "invalid_request", f"{where} has unknown fields {sorted(unknown)}")
    headers: list[Header] = []
    raw_headers = item.get("headers", [])
    if not isinstance(raw_headers, list):
        raise ApiError(400, "invalid_request", f"{where}.headers must be a list of [name, value]")
    for j, pair in enumerate(raw_headers):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ApiError(
                400, "invalid_request", f"{where}.headers[{j}] must be [name, value or null]"
            )
        headers.append((pair[0], _decode(pair[1], encoding, f"{where}.headers[{j}] value")))
    timestamp = item.get("timestamp")
    if timestamp is not None and (
        not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0
    ):
        raise ApiError(400, "invalid_request", f"{where}.timestamp must be milliseconds >= 0")
    return Record(
        key=_decode(item.get("key"), encoding, f"{where}.key"),
        value=_decode(item.get("value"), encoding, f"{where}.value"),
        headers=headers,
        timestamp=timestamp,
    )
