"""The admin HTTP API and ``/metrics``: a Starlette app served by Hypercorn's trio worker.

:func:`create_app` builds the app over any :class:`~journal.service.JournalService`
(the in-process journal or the remote client) and a :class:`~meta.users.UserStore`;
:func:`serve_admin` serves it on a listening socket until cancelled. Every
answer is JSON (``/metrics`` excepted); every error is
``{"error": {"code": "<snake_case>", "message": "..."}}`` with a fitting status,
never a traceback. ``docs/admin-api.md`` lists the routes.

Authentication (HTTP Basic against the user store):

* ``/health``, ``/ready`` and ``/metrics`` are open to loopback clients
  (127.0.0.0/8, ::1); from any other address they need credentials like the rest.
* While the user store is empty (a fresh install) loopback clients may use
  every route anonymously, so that ``strata user add NAME`` on the server host
  can create the first user; other clients get 403 saying so.
* Once a user exists, every ``/api`` route needs valid Basic credentials: 401
  (with ``WWW-Authenticate: Basic realm="strata"``) without them or with wrong
  ones, and the message never says whether the user exists.

The client address is the ASGI scope's ``client``: put no proxy in front of the
admin port, or every request looks local. Password checks run scrypt in a
worker thread (a few at a time); a successful check is remembered for a minute,
keyed by the user and an HMAC of the password under a per-process random key,
and forgotten as soon as any user changes.

Journal errors map to statuses by class; an error with a true ``retryable``
attribute (the remote journal is down) is 503 with ``Retry-After: 1``.

The package's modules: :mod:`.errors` (:class:`ApiError` and the exception
mapping), :mod:`.auth` (the rules above), :mod:`.parsing` (request bodies,
fields and records), :mod:`.views` (the JSON answers), :mod:`.app` (the
handlers and :func:`create_app`) and :mod:`.serve` (:func:`serve_admin`).
"""

from tools.strata.admin.app import create_app
from tools.strata.admin.auth import AUTH_CACHE_SECONDS
from tools.strata.admin.errors import ApiError
from tools.strata.admin.parsing import MAX_BODY_BYTES, MAX_READ_BYTES
from tools.strata.admin.serve import serve_admin

__all__ = [
    "AUTH_CACHE_SECONDS",
    "MAX_BODY_BYTES",
    "MAX_READ_BYTES",
    "ApiError",
    "create_app",
    "serve_admin",
]
