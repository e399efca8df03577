"""The admin API as the ``strata`` client commands see it: JSON over HTTP, errors typed.

A thin synchronous wrapper over httpx (the CLI is a short-lived, sequential
program). Every failure, from a refused connection to an API error document
(``{"error": {"code", "message"}}``, see ``docs/admin-api.md``), becomes one
:class:`AdminError` whose message is ready to print.
"""

from __future__ import annotations

from typing import Any

import httpx

from journal.errors import StrataError

__all__ = ["DEFAULT_SERVER", "AdminClient", "AdminError"]

DEFAULT_SERVER = "http://127.0.0.1:8080"


class AdminError(StrataError):
    """An admin API call failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class AdminClient:
    """Calls to one server's admin API, with optional HTTP Basic credentials."""

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.server = server.rstrip("/")
        auth = httpx.BasicAuth(user, password or "") if user is not None else None
        self._http = httpx.Client(base_url=self.server, auth=auth, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; returns the decoded JSON body (None for 204)."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the admin API at {self.server}: {exc}") from None
        return _decoded(response)

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def put(self, path: str, body: Any) -> Any:
        return self.call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self.call("DELETE", path)


def _decoded(response: httpx.Response) -> Any:
    if response.status_code == 204:
        return None
    try:
        document = response.json()
    except ValueError:
        document = None
    if response.is_success:
        return document
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        message = str(error.get("message", ""))
        code = str(error.get("code", ""))
    else:
        message, code = response.text.strip()[:200] or response.reason_phrase, ""
    if response.status_code == 401:
        message += " (pass --user NAME, or set STRATA_CLI_USER and STRATA_CLI_PASSWORD)"
    raise AdminError(message, status=response.status_code, code=code)
