"""Authentication: loopback detection, HTTP Basic, and a short verification cache.

:meth:`Authenticator.authorize` applies the rules in order: public routes are
open to loopback clients; while the user store is empty, loopback clients may
use everything and others get 403; otherwise valid Basic credentials are
needed, and a failure is 401 that never says whether the user exists.
Password checks run scrypt in a worker thread; a success is remembered for
:data:`AUTH_CACHE_SECONDS`, keyed by the user and an HMAC of the password
under a per-process random key, and forgotten once any user changes (the
store's ``generation`` moves on).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
from collections import OrderedDict

import trio
from starlette.requests import Request

from meta.users import UserStore
from tools.strata.admin.errors import ApiError

__all__ = ["AUTH_CACHE_SECONDS", "Authenticator", "basic_credentials", "is_loopback"]

AUTH_CACHE_SECONDS = 60.0
_AUTH_CACHE_SIZE = 1024
_REALM = {"WWW-Authenticate": 'Basic realm="strata"'}


class Authenticator:
    """The authentication rules over a user store, with the verification cache."""

    def __init__(self, users: UserStore) -> None:
        self.users = users
        self._cache_key = secrets.token_bytes(32)
        # (user, HMAC of the password) -> (expiry on trio's clock, users.generation)
        self._cache: OrderedDict[tuple[str, bytes], tuple[float, int]] = OrderedDict()

    async def authorize(self, request: Request, *, public: bool) -> None:
        """Return if ``request`` may go on; raise :class:`ApiError` (401 or 403) if not."""
        loopback = is_loopback(request.scope.get("client"))
        if public and loopback:
            return
        if self.users.empty:
            if loopback:
                return
            raise ApiError(
                403,
                "no_users",
                "no user exists yet, so only clients on the server host may use the admin "
                "API: create the first user there with `strata user add NAME`",
            )
        credentials = basic_credentials(request.headers.get("authorization"))
        if credentials is None:
            raise ApiError(
                401, "unauthorized", "this API needs HTTP Basic authentication", headers=_REALM
            )
        if not await self.check_password(*credentials):
            raise ApiError(401, "unauthorized", "wrong user name or password", headers=_REALM)

    async def check_password(self, name: str, password: str) -> bool:
        digest = hmac.new(self._cache_key, password.encode(), hashlib.sha256).digest()
        key = (name, digest)
        now = trio.current_time()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now and cached[1] == self.users.generation:
            return True
        generation = self.users.generation
        ok = await self.users.verify_async(name, password)
        if ok:
            self._cache[key] = (now + AUTH_CACHE_SECONDS, generation)
            self._cache.move_to_end(key)
            while len(self._cache) > _AUTH_CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.pop(key, None)
        return ok


def is_loopback(client: object) -> bool:
    """Whether an ASGI ``client`` (host, port) is on 127.0.0.0/8 or ::1."""
    if not isinstance(client, list | tuple) or not client or not isinstance(client[0], str):
        return False
    try:
        address = ipaddress.ip_address(client[0].split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """The (user, password) of an ``Authorization: Basic`` header, or None."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, ValueError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None
