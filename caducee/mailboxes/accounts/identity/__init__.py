"""Who is signing in, on every door (C1): one principal, one password check and cache,
one failure limiter, one OIDC verifier; used by SMTP, IMAP and HTTP alike.

* :mod:`.principal` — :class:`Principal`, the one authenticated-caller type;
* :mod:`.limiter` — growing delays per (account, source IP) and per source IP;
* :mod:`.service` — :class:`IdentityService`, the check with its verified-credential cache;
* :mod:`.audit` — login events written with retries (F4);
* :mod:`.oidc` — OpenID Connect access tokens (Pro Santé Connect).
"""

from caducee.mailboxes.accounts.identity.limiter import Decision, FailureLimiter, LimiterPolicy
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.accounts.identity.service import IdentityService, SignIn

__all__ = [
    "Decision",
    "FailureLimiter",
    "IdentityService",
    "LimiterPolicy",
    "Principal",
    "SignIn",
]
