"""Errors of the meta service: users (and later ACLs and placement).

They join the project's one hierarchy under :class:`~journal.errors.StrataError`
and, like the journal's argument errors, also subclass the builtin a Python
caller would expect (``KeyError`` for an unknown name, ``ValueError`` for a bad
one).
"""

from __future__ import annotations

from journal.errors import StrataError

__all__ = [
    "InvalidPasswordError",
    "InvalidUserNameError",
    "UnknownUserError",
    "UserError",
    "UserExistsError",
]


class UserError(StrataError):
    """Something is wrong with a user name, a password or the user store's contents."""


class InvalidUserNameError(UserError, ValueError):
    """A user name breaks the naming rules (1-64 characters of ``A-Z a-z 0-9 . _ @ -``)."""


class InvalidPasswordError(UserError, ValueError):
    """A password is too short or too long (8-1024 characters)."""


class UserExistsError(UserError, ValueError):
    """A user with that name already exists."""


class UnknownUserError(UserError, KeyError):
    """No user has that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown user"
