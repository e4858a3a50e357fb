"""Writing from the webmail: the same rule table and accepted path as the submission port (C4).

Whether the reply form is shown, and whether a reply is accepted, is the verdict of
:func:`caducee.gateway.submit.judge_recipient` — the RCPT verdict of the SMTP submission
port — on the address the professional gave (D2: ``Reply-To``, else the sender). An accepted
reply is committed by :func:`caducee.gateway.submit.prepare_submission`, like a message
submitted over SMTP: delivered to a hosted professional (joining the conversation, D1) or
queued for another operator (C5). A copy is then kept in the patient's Sent folder.

When the table refuses, the page says why in the national app's words: the professional
ended the exchange (D3: "<nom> a mis fin à vos échanges."), or "Ce message n'autorise pas la
réponse.".

A new message (``/webmail/new``) goes the same way: its recipient is one of
:meth:`Replies.contacts`, the known professionals the same rule table accepts, and
:meth:`Replies.submit` judges it again when it is sent (a forged recipient is refused).
"""

from __future__ import annotations

import asyncio
import email.policy
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from caducee.gateway.runtime import Gateway
from caducee.gateway.smtp.context import TrustCache
from caducee.gateway.smtp.data import read_headers
from caducee.gateway.smtp.mail import local_domains
from caducee.gateway.submit import judge_recipient, prepare_submission
from caducee.gateway.web.correspondents import inactive
from caducee.gateway.web.mailbox import Mailbox, ReplyTarget
from caducee.mailboxes.access.rights import known_professionals
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.delivery import MailDelivery
from caducee.mailboxes.imap_store import StoreError
from caducee.policies.submission import SENDER_CHAIN, SenderFacts
from caducee.policies.verdict import first_refusal
from caducee.storage.db import utcnow

log = logging.getLogger("caducee.webmail")

MAX_REPLY_CHARS = 50_000
MAX_SUBJECT_CHARS = 250
MAX_CONTACTS = 500
"""Bounded work per page: a patient with more known professionals sees the first ones."""


@dataclass(frozen=True)
class ReplyState:
    """Whether the patient may reply in a conversation, and why not (D3, C4)."""

    allowed: bool
    reason: str | None = None
    """``ended`` (the professional ended the exchange), ``inactive`` (no longer in activity,
    :func:`~caducee.gateway.web.correspondents.inactive`) or ``no-reply``."""
    name: str = ""


@dataclass(frozen=True)
class Contact:
    """A professional the patient may write to: the address they gave (D2), their name."""

    address: str
    name: str


class Replies:
    """Reply decisions and sending for one gateway process."""

    def __init__(self, gateway: Gateway, mailbox: Mailbox) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.mailbox = mailbox
        self.delivery = MailDelivery(gateway.blobs, gateway.queue)
        self.trust = TrustCache(gateway.database)
        self.local_domains = local_domains(
            self.settings.gateway.patient_domain, self.settings.gateway.hosted_domains
        )

    async def may_write(self, principal: Principal, address: str) -> bool:
        """The submission rule table's RCPT verdict (the SMTP port's) on ``address`` (C4)."""
        trust = await self.trust.fresh()

        def judge() -> bool:
            with self.gateway.database.reading() as session:
                verdict, _ = judge_recipient(
                    session,
                    self.settings,
                    principal,
                    address,
                    local_domains=self.local_domains,
                    trust_domains=trust.domains,
                )
            return verdict is None

        return await asyncio.to_thread(judge)

    async def state(self, principal: Principal, target: ReplyTarget) -> ReplyState:
        """Ask the submission rule table (the one the SMTP port asks) about the reply address."""
        name = await asyncio.to_thread(self.mailbox.correspondent_name, target.professional_address)
        if await asyncio.to_thread(self.inactive, target.professional_address):
            return ReplyState(False, "inactive", name)
        if target.reply_address is None:
            return ReplyState(False, "no-reply", name)
        if await self.may_write(principal, target.reply_address):
            return ReplyState(True, None, name)
        return ReplyState(False, "ended" if target.ended else "no-reply", name)

    def inactive(self, address: str) -> bool:
        """The professional is no longer in activity: the page says so, offers no reply.

        A choice of the pages (the national app's warning), not a rule of the table: mail
        to that address sent another way is judged by the table as ever.
        """
        with self.gateway.database.reading() as session:
            return inactive(session, address)

    async def contacts(self, principal: Principal) -> list[Contact]:
        """Who the patient may start a conversation with (C4, D2, D3), médecin traitant first.

        The candidates are the patient's known professionals (:func:`~caducee.mailboxes.
        rights.known_professionals`, at the address each gave, D2); each is kept only when the
        submission rule table accepts it, so that the list and the sending agree by
        construction and the rule is written once (:func:`~caducee.mailboxes.access.contacts.
        patient_may_write`, asked by :func:`~caducee.gateway.submit.judge_recipient`).
        """

        def candidates() -> list[tuple[str, str]]:
            with self.gateway.database.reading() as session:
                listed = known_professionals(session, principal.account_id)
            seen: set[str] = set()
            found = []
            for item in listed[:MAX_CONTACTS]:
                if item.reply_address and item.reply_address not in seen:
                    seen.add(item.reply_address)
                    found.append((item.address, item.reply_address))
            return found

        contacts = []
        for professional, address in await asyncio.to_thread(candidates):
            if await asyncio.to_thread(self.inactive, professional):
                continue
            if await self.may_write(principal, address):
                name = await asyncio.to_thread(self.mailbox.correspondent_name, professional)
                contacts.append(Contact(address, name))
        return contacts

    async def submit(self, principal: Principal, address: str, content: bytes) -> str | None:
        """Submit ``content`` to ``address`` as the SMTP port would (C2, C4, C5, D1).

        ``refused`` when the sender checks or the recipient table refuse: nothing is then
        delivered nor queued. Accepted, a copy is kept in the patient's Sent folder.
        """
        headers = read_headers(content)
        owned = headers.parses and headers.from_addresses == (principal.address,)
        if first_refusal(SENDER_CHAIN, SenderFacts(principal.address, owned)) is not None:
            return "refused"
        trust = await self.trust.fresh()

        def commit() -> str | None:
            with self.gateway.database.transaction() as session:
                verdict, recipient = judge_recipient(
                    session,
                    self.settings,
                    principal,
                    address,
                    local_domains=self.local_domains,
                    trust_domains=trust.domains,
                )
                if verdict is not None:
                    return "refused"
                submission = prepare_submission(
                    self.settings,
                    principal,
                    content,
                    headers,
                    client_name="webmail",
                    queue_id=secrets.token_hex(6).upper(),
                    protocol="HTTPS",
                    local_domains=self.local_domains,
                    trust_domains=trust.domains,
                    resolved=[recipient] if recipient is not None else [],
                    outgoing=[] if recipient is not None else [address.lower()],
                    blobs=self.gateway.blobs,
                    queue=self.gateway.queue,
                    delivery=self.delivery,
                )
                submission.commit(session)
            return None

        error = await asyncio.to_thread(commit)
        if error is None:
            try:
                await asyncio.to_thread(self.mailbox.keep_sent, principal, content)
            except StoreError:  # an account without a Sent folder: sent all the same
                log.warning("no Sent folder", extra={"account": principal.account_id})
        return error


def compose_message(
    principal: Principal,
    display_name: str | None,
    to: str,
    subject: str,
    text: str,
    *,
    hostname: str,
    in_reply_to: str | None = None,
    references: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
) -> bytes:
    """A plain-text message from the patient (a reply when ``in_reply_to`` is given, D1).

    ``attachments`` are (file name, content type, bytes): the message is then
    ``multipart/mixed``, each file a base64 ``attachment`` part.
    """
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = Address(display_name=display_name or "", addr_spec=principal.address)
    if to:  # a draft may not have its recipient yet
        message["To"] = to
    message["Subject"] = " ".join(subject.split())
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=hostname)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = references or in_reply_to
    message.set_content(text.replace("\r\n", "\n"), charset="utf-8", cte="quoted-printable")
    for name, content_type, data in attachments:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes(policy=email.policy.SMTP)
