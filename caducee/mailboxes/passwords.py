"""App passwords: generated for the user, stored only as argon2id hashes (C1).

Mail clients keep a password forever, so we never let users choose a reused
one: the gateway generates long random app passwords, one per client, each
revocable on its own. Verification is deliberately slow (argon2id); servers
call it off their event loop.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_HASHER = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


def generate_app_password(groups: int = 4, group_length: int = 5) -> str:
    """A random password like ``kq7vd-3hxfa-...`` (about 100 bits with the defaults)."""
    return "-".join(
        "".join(secrets.choice(_ALPHABET) for _ in range(group_length)) for _ in range(groups)
    )


def hash_password(password: str) -> str:
    """The argon2id hash to store."""
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when ``password`` matches; False on mismatch or an unusable stored hash."""
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
