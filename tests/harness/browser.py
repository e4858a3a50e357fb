"""A real browser for the webmail tests: Debian's Chromium driven by Playwright, headless.

``chromium`` is one of the Debian packages the suite drives (``tests/debian-packages.txt``);
the fixture waits for ``/usr/bin/chromium`` to exist (a fresh machine may still be
installing it). Pages get a French browser by default (``Accept-Language: fr-FR``), so the
webmail answers in French unless a test asks for English.

:func:`activated_patient` makes a patient space the way a patient gets one — created by the
operator, activated with the code, a password and the first value of an authenticator
(:mod:`caducee.mailboxes.accounts.lifecycle`) — and returns what a browser signs in with. The other
helpers play the demo professional (hosted here: submission to write, IMAP to read what
came back) and the sign-in form.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest

from caducee.mailboxes.accounts.lifecycle import (
    Actor,
    LifecycleError,
    LifecyclePolicy,
    QualifiedIdentity,
    complete_activation,
    create_space,
    start_activation,
    totp_now,
)
from tests.harness.identities import valid_ins
from tests.harness.served import ServedGateway
from tests.harness.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
BIRTH = date(1985, 6, 14)


@dataclass(frozen=True)
class WebPatient:
    """A patient who signs in to the webmail: address, password, TOTP secret."""

    address: str
    password: str
    totp_secret: bytes

    def code(self, ahead: int = 0) -> str:
        """The authenticator's value now, or ``ahead`` steps later (a clock a little fast).

        The webmail accepts a code once (RFC 6238 §5.2): a second sign-in within the same
        30 seconds uses the next step's value, which the one-step drift window accepts.
        """
        return totp_now(self.totp_secret, datetime.now(UTC) + timedelta(seconds=30 * ahead))


def demo_patient(served: ServedGateway) -> WebPatient:
    """The demo patient, from ``demo/credentials.json`` (``web_password``, ``totp_secret``)."""
    data = served.credentials["patient"]
    secret = str(data["totp_secret"])
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return WebPatient(str(data["address"]), str(data["web_password"]), key)


def activated_patient(served: ServedGateway) -> WebPatient:
    """A new patient space, activated with a password and a TOTP secret (I1)."""
    components = served.components()
    password = "Webmail-" + secrets.token_hex(4) + "9!"
    try:
        policy = LifecyclePolicy.from_settings(components.settings)
        identity = QualifiedIdentity(
            ins=valid_ins(),
            oid="1.2.250.1.213.1.4.10",
            birth_name="TEST",
            given_name="WEBMAIL",
            birth_date=BIRTH,
            sex="F",
            birthplace="75056",
        )
        with components.database.transaction() as session:
            created = create_space(session, identity, policy, Actor.operator("test"))
            enrolment = start_activation(
                session, components.blobs, created.address, created.code, BIRTH, policy
            )
            assert not isinstance(enrolment, LifecycleError), enrolment
            encoded = enrolment.secret_base32
            key = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
            done = complete_activation(
                session,
                components.blobs,
                created.address,
                created.code,
                BIRTH,
                password,
                totp_now(key),
                policy,
            )
            assert not isinstance(done, LifecycleError), done
    finally:
        components.close()
    return WebPatient(created.address, password, key)


def base_url(served: ServedGateway) -> str:
    """Where the served gateway's HTTP listener answers."""
    host = served.env.get("CADUCEE_LISTENERS__HOST", "127.0.0.1")
    return f"http://{host}:{served.ports['http']}"


def professional_writes(
    served: ServedGateway,
    to: str,
    subject: str,
    body: str,
    *,
    attachment: tuple[str, bytes, str] | None = None,
    end_exchange: bool = False,
) -> str:
    """The demo professional (hosted here) sends over submission, asking for a read receipt."""
    professional = served.credentials["professional"]["address"]
    message = EmailMessage()
    message["From"] = professional
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message_id = make_msgid(domain="hopital-demo.mssante.fr")
    message["Message-ID"] = message_id
    message["Disposition-Notification-To"] = professional
    if end_exchange:
        message["X-MSS-MES"] = "FIN"
    message.set_content(body)
    if attachment is not None:
        name, data, mime = attachment
        maintype, subtype = mime.split("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    with served.submit("professional") as client:
        refused = client.send_message(message)
    assert not refused
    return message_id


def professional_inbox(served: ServedGateway) -> list[EmailMessage]:
    """Every message in the professional's INBOX, read over IMAP."""
    with served.imap(served.professional) as client:
        status, detail = client.select("INBOX", readonly=True)
        if status != "OK":  # nothing delivered to the professional yet
            assert b"NONEXISTENT" in (detail[0] or b""), detail
            return []
        _, data = client.uid("SEARCH", "ALL")
        found = []
        for uid in data[0].split():
            _, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = fetched[0][1]
            assert isinstance(raw, bytes)
            parsed = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found


def receipt_for(served: ServedGateway, message_id: str) -> EmailMessage | None:
    """The displayed MDN (G2) the professional received about ``message_id``."""
    for message in professional_inbox(served):
        if message.get_content_type() != "multipart/report":
            continue
        for part in message.walk():
            if part.get_content_type() == "message/disposition-notification":
                text = part.as_string()
                if message_id in text and "displayed" in text:
                    return message
    return None


def reply_to(served: ServedGateway, message_id: str) -> EmailMessage | None:
    """The professional's copy of a reply to ``message_id`` (not the read receipt)."""
    for message in professional_inbox(served):
        if message.get_content_type() == "multipart/report":
            continue  # the read receipt answers it too
        if message_id in str(message.get("In-Reply-To", "")):
            return message
    return None


def sign_in(page: Any, served: ServedGateway, patient: WebPatient, *, ahead: int = 0) -> None:
    """Sign in through the French sign-in form (password + current TOTP) and see the list."""
    from playwright.sync_api import expect

    page.goto(base_url(served) + "/")
    page.get_by_label("Adresse de messagerie de santé").fill(patient.address)
    page.get_by_label("Mot de passe").fill(patient.password)
    page.get_by_label("Code à 6 chiffres de mon application d'authentification").fill(
        patient.code(ahead)
    )
    page.get_by_role("button", name="Me connecter").click()
    # The sign-in page has the same heading: what only a signed-in page shows is the
    # conversation list's address and the sign-out button.
    expect(page).to_have_url(re.compile(r"/webmail/conversations$"))
    expect(page.get_by_role("button", name="Me déconnecter")).to_be_visible()
    expect(page.get_by_role("heading", name="Messagerie de santé", level=1)).to_be_visible()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium under Playwright (headless), for one test module.

    Not for the whole run: while it is open, Playwright's synchronous API keeps an event
    loop running in the main thread, and the tests that come after call ``asyncio.run()``.
    """
    from playwright.sync_api import sync_playwright

    wait_until(CHROMIUM.exists, timeout=600, interval=1, message=f"{CHROMIUM} is not installed")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_context(chromium: Any) -> Iterator[Any]:
    """A fresh browser profile (no cookies) speaking French; closed after the test.

    Actions and assertions wait up to 20 s for their condition (Playwright's assertions
    default to 5 s, which a busy CI machine running two suites' gateways can exceed between a
    form's POST and the page it redirects to); a passing condition returns at once.
    """
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    context = chromium.new_context(locale="fr-FR")
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        context.close()
