"""Connection and TLS stage (B1): the operators' port asks for a client certificate.

The TLS context requests a certificate (``CERT_OPTIONAL``) and verifies it
against the trust anchors, dates included (and a CRL when configured): a
certificate that does not verify fails the handshake. A peer without a
certificate gets through the handshake but not past MAIL (rule
``B1.client-certificate``), so it is told why in SMTP terms.
"""

from __future__ import annotations

import ssl
from typing import Any

from caducee.config import Settings
from caducee.gateway.smtp.protocol import PeerIdentity
from caducee.gateway.tls import server_context


def operator_tls_context(settings: Settings, anchors_pem: str) -> ssl.SSLContext:
    """The server context of the operators' port: our certificate, peers verified."""
    context = server_context(settings)
    if anchors_pem.strip():
        context.load_verify_locations(cadata=anchors_pem)
        context.verify_mode = ssl.CERT_OPTIONAL
        if settings.smtp.crl_file:
            context.load_verify_locations(cafile=str(settings.path_of(settings.smtp.crl_file)))
            context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def peer_identity(ssl_extra: dict[str, Any] | None) -> PeerIdentity:
    """What the TLS layer proved about the peer (nothing when the session is in clear)."""
    if not ssl_extra:
        return PeerIdentity()
    ssl_object: ssl.SSLObject | None = ssl_extra.get("ssl_object")
    peercert = ssl_extra.get("peercert") or {}
    domains = tuple(
        value.lower().rstrip(".")
        for kind, value in peercert.get("subjectAltName", ())
        if kind == "DNS"
    )
    subject = ", ".join(
        f"{key}={value}" for rdn in peercert.get("subject", ()) for key, value in rdn
    )
    cipher = ssl_object.cipher() if ssl_object is not None else None
    return PeerIdentity(
        tls=True,
        client_certificate=bool(peercert),
        certificate_domains=domains,
        subject=subject or None,
        cipher=cipher[0] if cipher else None,
        tls_version=ssl_object.version() if ssl_object is not None else None,
    )
