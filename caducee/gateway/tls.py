"""TLS contexts for our servers and clients: TLS 1.2 minimum, strong suites only (B1)."""

from __future__ import annotations

import ssl

from caducee.config import Settings

# ECDHE with AES-GCM, or AES-CBC with SHA-2 MACs (B1); TLS 1.3 suites are always strong.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-SHA384",
        "ECDHE-RSA-AES256-SHA384",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-RSA-AES128-SHA256",
    ]
)


def _minimum(settings: Settings) -> ssl.TLSVersion:
    return (
        ssl.TLSVersion.TLSv1_3 if settings.tls.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )


def server_context(settings: Settings) -> ssl.SSLContext:
    """A server context with our certificate; client certificates are not requested."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _minimum(settings)
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(settings.path(settings.tls.cert), settings.path(settings.tls.key))
    return context
