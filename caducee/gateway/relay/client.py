"""One SMTP transaction towards another operator, over mutually authenticated TLS (C5, B1).

Between operators of the trust space, TLS is not optional (référentiel #2,
ECO.1.1.x): the client connects, says EHLO and **requires** STARTTLS; the
session uses TLS 1.2 or later with the suites of B1, presents our certificate
as client certificate, and verifies the server's certificate against the trust
anchors (chain and dates, and the CRL when one is configured). The server's
certificate must also name, as a DNS subject alternative name, the recipient's
domain or another domain of the trust space: an operator's certificate names
the operator's domains, not the host name of its MX, so the host name itself is
not what is checked. Anything short of that ends the attempt before MAIL FROM,
and the message is never sent in clear.

Hosts of a route are tried in order until one answers the transaction; a
refused connection, a timeout or a TLS failure moves to the next one. Once a
server has answered MAIL FROM, its replies decide, per recipient
(:mod:`.outcomes`).
"""

from __future__ import annotations

import ssl
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import aiosmtplib

from caducee.config import Settings
from caducee.gateway.relay import outcomes
from caducee.gateway.relay.outcomes import Outcome
from caducee.gateway.relay.routes import Hop
from caducee.gateway.tls import TLS12_CIPHERS


def client_context(settings: Settings, anchors_pem: str) -> ssl.SSLContext:
    """Our client TLS context: minimum version, B1 suites, our certificate, anchors only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.tls.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION
    # The peer's identity is checked against the trust space after the handshake
    # (its certificate names operator domains, not MX host names).
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=anchors_pem)
    if settings.smtp.crl_file:
        context.load_verify_locations(cafile=str(settings.path_of(settings.smtp.crl_file)))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.load_cert_chain(settings.path(settings.tls.cert), settings.path(settings.tls.key))
    return context


@dataclass(frozen=True)
class Transfer:
    """One message for the recipients of one domain."""

    domain: str
    """The recipients' domain (A-label)."""
    sender: str
    """Envelope sender; ``""`` for the null sender."""
    recipients: tuple[str, ...]
    content: bytes
    """Signed, CRLF line ends."""


@dataclass(frozen=True)
class TlsPolicy:
    """What the server's certificate is checked against."""

    context: ssl.SSLContext
    trusted_domains: Collection[str]


def certificate_domains(peercert: dict[str, Any] | None) -> list[str]:
    """The DNS subject alternative names of a verified peer certificate, lower-case."""
    if not peercert:
        return []
    return [
        str(value).lower().rstrip(".")
        for kind, value in peercert.get("subjectAltName", ())
        if kind == "DNS"
    ]


def names_trusted_domain(names: Sequence[str], domain: str, trusted: Collection[str]) -> bool:
    """B1/C5: the certificate names the recipient's domain or another trust-space domain."""
    return any(name == domain or name in trusted for name in names)


class _HopFailed(Exception):
    """This host could not be used (before MAIL FROM); the next one may."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


def _needs_utf8(address: str) -> bool:
    return not address.isascii()


async def _open(hop: Hop, policy: TlsPolicy, domain: str, helo: str, timeout: float) -> Any:
    """Connect, EHLO, STARTTLS (required), check the peer's certificate, EHLO again."""
    client = aiosmtplib.SMTP(
        hostname=hop.host,
        port=hop.port,
        local_hostname=helo,
        timeout=timeout,
        use_tls=False,
        start_tls=False,
        tls_context=policy.context,
    )
    host = hop.host
    try:
        await client.connect()
        await client.ehlo()
        if not client.supports_extension("starttls"):
            raise _HopFailed(outcomes.retry(*outcomes.NO_STARTTLS, remote_mta=host))
        try:
            await client.starttls(server_hostname=hop.host, tls_context=policy.context)
        except ssl.SSLError as error:
            reason = getattr(error, "verify_message", None) or getattr(error, "reason", None)
            status, text = outcomes.TLS_FAILED
            raise _HopFailed(
                outcomes.retry(status, f"{text} ({reason or 'handshake failed'})", host)
            ) from None
        except aiosmtplib.SMTPResponseException as error:  # STARTTLS refused: never final
            raise _HopFailed(
                outcomes.as_retry(outcomes.from_reply(error.code, error.message, host))
            ) from None
        names = certificate_domains(client.get_transport_info("peercert"))
        if not names_trusted_domain(names, domain, policy.trusted_domains):
            raise _HopFailed(outcomes.retry(*outcomes.TLS_NAME, remote_mta=host))
        await client.ehlo()
    except _HopFailed:
        client.close()
        raise
    except aiosmtplib.SMTPConnectResponseError as error:
        client.close()
        # A greeting other than 220 (421, 554 "no service here"): try the next host.
        raise _HopFailed(
            outcomes.as_retry(outcomes.from_reply(error.code, error.message, host))
        ) from None
    except aiosmtplib.SMTPHeloError as error:
        client.close()
        raise _HopFailed(outcomes.retry("4.0.0", f"{error.code} {error.message}", host)) from None
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPConnectTimeoutError):
        client.close()
        raise _HopFailed(outcomes.retry(*outcomes.CONNECT_FAILED, remote_mta=host)) from None
    except (aiosmtplib.SMTPException, OSError):
        client.close()
        raise _HopFailed(outcomes.retry(*outcomes.CONNECTION_LOST, remote_mta=host)) from None
    return client


async def _transaction(client: Any, transfer: Transfer, host: str) -> dict[str, Outcome]:
    """MAIL, RCPT per recipient, DATA; every recipient gets an outcome."""
    results: dict[str, Outcome] = {}
    utf8 = _needs_utf8(transfer.sender) or any(_needs_utf8(r) for r in transfer.recipients)
    options: list[str] = []
    if client.supports_extension("size"):
        options.append(f"SIZE={len(transfer.content)}")
    if client.supports_extension("8bitmime") and not transfer.content.isascii():
        options.append("BODY=8BITMIME")
    recipients = list(transfer.recipients)
    if utf8:
        if not client.supports_extension("smtputf8"):
            if _needs_utf8(transfer.sender):
                refusal = outcomes.failed(*outcomes.NO_SMTPUTF8, remote_mta=host)
                return dict.fromkeys(recipients, refusal)
            for r in [r for r in recipients if _needs_utf8(r)]:
                results[r] = outcomes.failed(*outcomes.NO_SMTPUTF8, remote_mta=host)
                recipients.remove(r)
            utf8 = False
        else:
            options.append("SMTPUTF8")
    encoding = "utf-8" if utf8 else "ascii"
    try:
        try:
            await client.mail(transfer.sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPSenderRefused as error:
            outcome = outcomes.from_reply(error.code, error.message, host)
            return {**results, **{r: outcome for r in recipients}}
        accepted: list[str] = []
        for recipient in recipients:
            try:
                await client.rcpt(recipient, encoding=encoding)
                accepted.append(recipient)
            except aiosmtplib.SMTPRecipientRefused as error:
                results[recipient] = outcomes.from_reply(error.code, error.message, host)
        if not accepted:
            return results
        try:
            reply = await client.data(transfer.content)
            outcome = outcomes.from_reply(reply.code, reply.message, host)
        except aiosmtplib.SMTPDataError as error:
            outcome = outcomes.from_reply(error.code, error.message, host)
        for recipient in accepted:
            results[recipient] = outcome
        return results
    except (aiosmtplib.SMTPException, OSError):
        # The connection broke mid-transaction: whoever has no answer yet is retried
        # (if DATA's reply was lost, the message may arrive twice: SMTP's at-least-once).
        lost = outcomes.retry(*outcomes.CONNECTION_LOST, remote_mta=host)
        return {r: results.get(r, lost) for r in transfer.recipients}
    finally:
        try:
            if client.is_connected:
                await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()


async def deliver(
    hops: Sequence[Hop],
    transfer: Transfer,
    *,
    policy: TlsPolicy,
    helo: str,
    timeout: float,
) -> dict[str, Outcome]:
    """Try the hosts in order; the first that takes the transaction decides each recipient."""
    last = outcomes.retry(*outcomes.CONNECT_FAILED)
    for hop in hops:
        try:
            client = await _open(hop, policy, transfer.domain, helo, timeout)
        except _HopFailed as failure:
            last = failure.outcome
            continue
        results = await _transaction(client, transfer, hop.host)
        return {r: results.get(r, last) for r in transfer.recipients}
    return dict.fromkeys(transfer.recipients, last)
