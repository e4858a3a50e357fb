"""Where a domain's mail goes: a static route, else DNS MX, else the domain itself (C5).

Static routes (``[relay] routes``, ``"domain" = "host:port"``) come first: a
development trust space, the tests and operators who send through a smart host
use them. Other domains are looked up in DNS (dnspython): MX records by
preference; no MX but an address record → the domain itself (implicit MX,
RFC 5321 §5.1); a null MX (RFC 7505) or a domain that does not exist → the
recipients fail now; a DNS error or timeout → try again later.

The lookup is a plain callable so that tests and callers can replace DNS.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dns.exception
import dns.resolver

from caducee.config import ConfigError
from caducee.directory.trust_models import DomainError, to_ascii_domain
from caducee.gateway.relay import outcomes
from caducee.gateway.relay.outcomes import Outcome

MxLookup = Callable[[str, float], list[str]]
"""``lookup(domain, timeout)`` → host names in order of preference; raises :class:`RouteError`."""


@dataclass(frozen=True)
class Hop:
    """One SMTP server to try."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


class RouteError(Exception):
    """No server to try for a domain; the outcome says whether to retry."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.text or outcome.status)
        self.outcome = outcome


def parse_hop(text: str, default_port: int) -> Hop:
    """``host``, ``host:port`` or ``[v6 address]:port``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":")
        return Hop(host, int(port) if port else default_port)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return Hop(host, int(port))
    return Hop(text, default_port)


def dns_lookup(domain: str, timeout: float) -> list[str]:
    """MX hosts of ``domain`` by preference (equal preferences shuffled), or the domain itself."""
    try:
        resolver = dns.resolver.Resolver()
    except (dns.resolver.NoResolverConfiguration, OSError):
        raise RouteError(outcomes.retry(*outcomes.DNS_TEMPORARY)) from None
    resolver.lifetime = timeout
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise RouteError(outcomes.failed(*outcomes.NO_SUCH_DOMAIN)) from None
    except dns.resolver.NoAnswer:
        return [_implicit_mx(resolver, domain)]
    except dns.exception.DNSException:
        raise RouteError(outcomes.retry(*outcomes.DNS_TEMPORARY)) from None
    records = [(int(r.preference), str(r.exchange).rstrip(".")) for r in answer]
    if len(records) == 1 and records[0][1] in ("", "."):
        raise RouteError(outcomes.failed(*outcomes.NULL_MX))
    random.shuffle(records)  # equal preferences share the load (RFC 5321 §5.1)
    records.sort(key=lambda record: record[0])
    return [host for _, host in records if host not in ("", ".")]


def _implicit_mx(resolver: dns.resolver.Resolver, domain: str) -> str:
    for kind in ("A", "AAAA"):
        try:
            resolver.resolve(domain, kind)
            return domain
        except dns.resolver.NoAnswer:
            continue
        except dns.resolver.NXDOMAIN:
            break
        except dns.exception.DNSException:
            raise RouteError(outcomes.retry(*outcomes.DNS_TEMPORARY)) from None
    raise RouteError(outcomes.failed(*outcomes.NO_SUCH_DOMAIN))


class Router:
    """Static routes first, then the MX lookup."""

    def __init__(
        self,
        routes: Mapping[str, str],
        *,
        port: int,
        timeout: float,
        lookup: MxLookup = dns_lookup,
    ) -> None:
        self.port = port
        self.timeout = timeout
        self.lookup = lookup
        self.routes: dict[str, list[Hop]] = {}
        for domain, target in routes.items():
            try:
                hops = [parse_hop(item, port) for item in target.split(",") if item.strip()]
                self.routes[to_ascii_domain(domain)] = hops
            except ValueError:  # DomainError included
                raise ConfigError(
                    f'[relay] routes."{domain}": expected "host:port" (or "host", '
                    f'"[IPv6]:port"; several separated by commas), got {target!r}'
                ) from None
            if not hops:
                raise ConfigError(f'[relay] routes."{domain}": no host given')

    def hops(self, domain: str) -> list[Hop]:
        """The servers to try for ``domain`` (A-label or Unicode), in order."""
        try:
            ascii_domain = to_ascii_domain(domain)
        except DomainError:
            raise RouteError(outcomes.failed(*outcomes.BAD_ADDRESS)) from None
        static = self.routes.get(ascii_domain)
        if static:
            return list(static)
        return [Hop(host, self.port) for host in self.lookup(ascii_domain, self.timeout)]
