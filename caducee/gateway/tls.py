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


# OpenSSL's X509_V_ERR_* codes a peer certificate fails verification with, by name.
_VERIFY_REASONS = {
    2: "unknown-ca",  # unable to get issuer certificate
    9: "not-yet-valid",
    10: "expired",
    18: "unknown-ca",  # self-signed leaf
    19: "unknown-ca",  # self-signed certificate in chain
    20: "unknown-ca",  # unable to get local issuer certificate
    21: "unknown-ca",  # unable to verify the first certificate
    3: "crl-unavailable",
    11: "crl-not-yet-valid",
    12: "crl-expired",
    23: "revoked",
    24: "invalid-ca",
    26: "wrong-purpose",
    62: "hostname-mismatch",
}
# OpenSSL reason codes of handshakes that fail before any certificate is looked at.
_PROTOCOL_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol-too-old",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol-too-old",
    "WRONG_VERSION_NUMBER": "not-tls",
    "HTTP_REQUEST": "not-tls",
    "NO_SHARED_CIPHER": "no-shared-cipher",
    "NO_CIPHERS_AVAILABLE": "no-shared-cipher",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no-client-certificate",
    "TLSV1_ALERT_UNKNOWN_CA": "peer-refused-our-certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "peer-refused-our-certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "peer-refused-our-certificate",
}


def handshake_failure(error: BaseException | None) -> dict[str, str]:
    """Why a TLS handshake failed, as log fields: ``reason`` (a short name) and ``detail``.

    ``detail`` is OpenSSL's verification message or reason code: library text about the
    certificate or the protocol, never anything secret or sent as content (J2).
    """
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        return {
            "reason": _VERIFY_REASONS.get(code, "certificate-invalid"),
            "detail": f"{code}: {error.verify_message}",
        }
    if isinstance(error, ssl.SSLError):
        openssl = str(error.reason or "")
        return {"reason": _PROTOCOL_REASONS.get(openssl, "handshake-failed"), "detail": openssl}
    if isinstance(error, TimeoutError):
        return {"reason": "timeout", "detail": ""}
    if isinstance(error, ConnectionError | EOFError):
        return {"reason": "connection-closed", "detail": type(error).__name__}
    return {"reason": "handshake-failed", "detail": type(error).__name__ if error else ""}
