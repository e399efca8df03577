"""The meta service: users so far (membership, placement and ACLs come with Raft).

Public names are re-exported here::

    from meta import UserStore

    with UserStore.open("strata-data/users") as users:
        users.add("alice", "correct horse battery staple")
        assert users.verify("alice", "correct horse battery staple")
"""

from meta.errors import (
    InvalidPasswordError,
    InvalidUserNameError,
    UnknownUserError,
    UserError,
    UserExistsError,
)
from meta.users import (
    DEFAULT_SCRYPT,
    MAX_NAME_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    ScryptParams,
    UserInfo,
    UserStore,
    check_name,
    check_password,
)

__all__ = [
    "DEFAULT_SCRYPT",
    "MAX_NAME_LENGTH",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "InvalidPasswordError",
    "InvalidUserNameError",
    "ScryptParams",
    "UnknownUserError",
    "UserError",
    "UserExistsError",
    "UserInfo",
    "UserStore",
    "check_name",
    "check_password",
]
