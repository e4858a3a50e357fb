"""Starlette authentication for the FHIR and patient APIs: one backend, one answer to bad ones.

:class:`IdentityBackend` is a Starlette ``AuthenticationBackend`` run by
``AuthenticationMiddleware`` in front of ``/fhir`` and ``/api/patient``: it tries the
:class:`~caducee.gateway.http.fhir_auth.Authenticator` list in order (HTTP Basic through the
identity service, then Pro Santé Connect bearer tokens) and puts the caller in
``request.user`` (a :class:`PrincipalUser`). The handlers never authenticate: they read the
principal, and the access table decides what it may see. Wrong credentials and throttling
become :class:`CredentialsRejected` / :class:`CredentialsThrottled`, which each API turns into
its own form of refusal (an ``OperationOutcome`` or problem+json) in its ``on_error``.

Requests without credentials pass through unauthenticated: the public routes (``/metadata``,
``/openapi.json``) answer them, the others answer 401 with the challenge.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response

from caducee.gateway.http.fhir_auth import (
    AuthenticationFailed,
    AuthenticationThrottled,
    Authenticator,
    Principal,
)


class CredentialsRejected(AuthenticationError):
    """Credentials were presented and are wrong (401)."""


class CredentialsThrottled(AuthenticationError):
    """Too many failures for these credentials from this address (429 with ``Retry-After``)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed sign-ins")
        self.retry_after = retry_after


class PrincipalUser(BaseUser):
    """``request.user``: the identity service's principal."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.principal.address

    @property
    def identity(self) -> str:
        return str(self.principal.account_id)


def route_path(connection: HTTPConnection) -> str:
    """The path inside the mounted application (``/metadata`` for ``/fhir/metadata``)."""
    path = str(connection.scope.get("path", ""))
    root = str(connection.scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


class IdentityBackend(AuthenticationBackend):
    """Tries each authenticator in order; the first that recognises its credentials decides.

    ``public_paths`` (inside the mount) are never authenticated: a discovery request with stale
    credentials still gets the CapabilityStatement.
    """

    def __init__(
        self, authenticators: Sequence[Authenticator], public_paths: Collection[str] = ()
    ) -> None:
        self.authenticators = list(authenticators)
        self.public_paths = frozenset(public_paths)

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        if route_path(conn) in self.public_paths:
            return None
        principal: Principal | None = None
        try:
            for authenticator in self.authenticators:
                principal = await authenticator.authenticate(conn)
                if principal is not None:
                    break
        except AuthenticationThrottled as throttled:
            raise CredentialsThrottled(throttled.retry_after) from None
        except AuthenticationFailed:
            raise CredentialsRejected("authentication failed") from None
        if principal is None:
            return None
        return AuthCredentials(["authenticated", principal.kind]), PrincipalUser(principal)


def principal_of(connection: HTTPConnection) -> Principal | None:
    """The authenticated caller, ``None`` when the request carried no credentials."""
    user = connection.scope.get("user")
    return user.principal if isinstance(user, PrincipalUser) else None


def authentication(
    backend: IdentityBackend, on_error: Callable[[HTTPConnection, AuthenticationError], Response]
) -> Middleware:
    """The ``AuthenticationMiddleware`` of one API, with its form of refusal."""
    return Middleware(AuthenticationMiddleware, backend=backend, on_error=on_error)
