"""OpenID Connect access tokens (C1): Pro Santé Connect in production.

Used by SMTP XOAUTH2/OAUTHBEARER and by HTTP Bearer (the identity service).

A token is accepted when its signature verifies with a key of the issuer's
JWKS (a local file, or the issuer's URL fetched and cached), and ``iss``,
``aud`` and ``exp`` are right. The professional's national id, read from the
configured claim, designates the hosted account through the directory.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt

from caducee.config import Settings

JWKS_CACHE_SECONDS = 3600
ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]


class TokenError(Exception):
    """The token is not acceptable (the message names why, never the token)."""


class TokenVerifier:
    """Verifies access tokens against the configured issuer."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings.submission
        self.home = settings.home
        self._lock = threading.Lock()
        self._keys: jwt.PyJWKSet | None = None
        self._loaded_at = 0.0

    @property
    def enabled(self) -> bool:
        """Token authentication is on when an issuer and a key source are configured."""
        source = self.settings.oidc_jwks_file or self.settings.oidc_jwks_url
        return bool(self.settings.oidc_issuer and self.settings.oidc_audience and source)

    def _load_keys(self) -> jwt.PyJWKSet:
        with self._lock:
            if self._keys is not None and time.monotonic() - self._loaded_at < JWKS_CACHE_SECONDS:
                return self._keys
            if self.settings.oidc_jwks_file:
                path = Path(self.settings.oidc_jwks_file)
                document = json.loads(
                    (path if path.is_absolute() else self.home / path).read_text()
                )
            else:
                url = self.settings.oidc_jwks_url
                if not url.startswith("https://"):
                    raise TokenError("the issuer's JWKS URL must use https")
                with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - https only
                    document = json.loads(response.read())
            self._keys = jwt.PyJWKSet.from_dict(document)
            self._loaded_at = time.monotonic()
            return self._keys

    def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; raises :class:`TokenError`."""
        if not self.enabled:
            raise TokenError("token authentication is not configured")
        try:
            header = jwt.get_unverified_header(token)
            keys = self._load_keys()
            key = next((k for k in keys.keys if k.key_id == header.get("kid")), None)
            if key is None and len(keys.keys) == 1:
                key = keys.keys[0]
            if key is None:
                raise TokenError("the token's key is not in the issuer's key set")
            return dict(
                jwt.decode(
                    token,
                    key=key.key,
                    algorithms=ALGORITHMS,
                    audience=self.settings.oidc_audience,
                    issuer=self.settings.oidc_issuer,
                    options={"require": ["exp", "iss", "aud"]},
                )
            )
        except jwt.PyJWTError as error:
            raise TokenError(f"invalid token ({type(error).__name__})") from None

    def national_id(self, claims: dict[str, Any]) -> str | None:
        """The professional's national id, from the configured (dotted) claim."""
        value: Any = claims
        for part in self.settings.national_id_claim.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value if isinstance(value, str) and value else None
