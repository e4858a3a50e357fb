"""App passwords: generated for the user, stored only as argon2id hashes (C1).

Mail clients keep a password forever, so we never let users choose a reused
one: the gateway generates long random app passwords, one per client, each
revocable on its own. Verification is deliberately slow (argon2id); servers
call it off their event loop.

Parameters, chosen for a login budget. An app password is about 100 random bits:
no offline search of its hash can succeed, whatever the hashing cost, so the hash
only has to make a stolen table useless for *guessed* passwords, which app passwords
never are. We take OWASP's argon2id profile (m = 19 MiB, t = 2, p = 1): about 20 ms of
one core per uncached check on a 2020s server core and 19 MiB of memory per check in
flight (the identity service runs at most a few at a time). Logins of a known client are
then answered from the verified-credential cache of :mod:`caducee.mailboxes.accounts.identity`
(no argon2 at all), so the budget only bites on a client's first login and on wrong
passwords. Hashes made with other parameters (the library's 64 MiB, p = 4 profile of
earlier releases) still verify and are rehashed on the next successful check.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1
_HASHER = PasswordHasher(
    time_cost=TIME_COST, memory_cost=MEMORY_COST_KIB, parallelism=PARALLELISM
)  # argon2id


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


def needs_rehash(stored_hash: str) -> bool:
    """True when ``stored_hash`` was made with other parameters than today's."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except (InvalidHashError, ValueError):
        return False
