"""Hosted mailboxes the IMAP tests create beside the patients of the served home."""

from __future__ import annotations

import uuid

from caducee.mailboxes.accounts.store import AccountKind, add_app_password, create_account
from tests.harness.served import Account, ServedGateway


def new_professional(gateway: ServedGateway) -> Account:
    """A fresh hosted professional mailbox with an app password (tests never share mailboxes).

    The IMAP tests that read real reports mailed over SMTP use one: the samples name other
    patients than any test patient, and a patient's copy has such documents withheld (E3, E5).
    """
    domain = gateway.credentials["professional"]["address"].rpartition("@")[2]
    components = gateway.components()
    try:
        with components.database.transaction() as session:
            account = create_account(
                session, f"imap-{uuid.uuid4().hex[:12]}@{domain}", AccountKind.PROFESSIONAL
            )
            password = add_app_password(session, account, "imap tests")
            return Account(account.address, password, account.id)
    finally:
        components.close()
