"""The one principal type of every door: who authenticated, and how."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the account it acts for and how it proved who it is.

    ``method`` names the proof in the audit vocabulary (``app-password``, ``oidc``,
    ``certificate``). ``acting_account_id`` is set when the caller acts for a
    mailbox delegated to it (C2): ``account_id``/``address`` are then the delegated
    mailbox's and ``acting_account_id`` the account whose credentials were checked.
    """

    account_id: int
    address: str
    kind: str
    method: str = "app-password"
    acting_account_id: int | None = None

    @property
    def login(self) -> bytes:
        """The address as bytes (what aiosmtpd calls the login)."""
        return self.address.encode()

    @property
    def authenticated_account_id(self) -> int:
        """The account whose credentials were checked."""
        return self.acting_account_id if self.acting_account_id is not None else self.account_id
