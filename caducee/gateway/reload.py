"""``SIGHUP``: apply the configuration changes that can take effect while the gateway serves.

An operator edits ``caducee.toml`` and sends ``kill -HUP``; nothing is dropped and no
connection is cut. What can change live is listed in :data:`LIVE` by section and field:
relay routes and timing, notification senders, SMTP limits and the CRL file, IMAP and
HTTP connection caps, the identity service's failure limiter, credential cache and OIDC
settings, the log level. Everything else (listeners, database, blob store, keys,
certificates, queue workers, ...) is read at start: a change there is reported in the
log as waiting for a restart, and the running value stays in force, so the settings the
process holds always describe what it does.

A file that does not load (bad TOML, a value out of range) changes nothing: the error
is logged in the same one-line form ``caducee config check`` prints, and the gateway
keeps serving with what it had.

Components do not poll the settings; the parts that hold copies register an applier
(:meth:`Reloader.on_reload`) which ``serve`` wires next to where it builds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel

from caducee.config import Settings
from caducee.config.settings import ConfigError, load_settings
from caducee.gateway.runtime import Gateway

log = logging.getLogger("caducee.reload")

ALL_FIELDS = "*"

LIVE: dict[str, frozenset[str]] = {
    "relay": frozenset({ALL_FIELDS}),
    "notifications": frozenset({ALL_FIELDS}),
    "identity": frozenset(
        {
            "free_failures_per_account_ip",
            "free_failures_per_ip",
            "failure_delay_seconds",
            "failure_delay_max_seconds",
            "trusted_source_hours",
            "credential_cache_seconds",
        }
    ),
    "submission": frozenset(
        {"oidc_issuer", "oidc_audience", "oidc_jwks_file", "oidc_jwks_url", "national_id_claim"}
    ),
    "smtp": frozenset(
        {
            "max_message_bytes",
            "max_recipients",
            "timeout_seconds",
            "crl_file",
            "max_connections",
            "max_connections_per_ip",
            "max_session_seconds",
            "max_data_in_flight_bytes",
        }
    ),
    "imap": frozenset({"max_connections", "max_connections_per_ip"}),
    "http": frozenset({"max_connections", "max_connections_per_ip"}),
    "logging": frozenset({ALL_FIELDS}),
}
"""Per section, the fields a reload applies (``*``: the whole section)."""

Applier = Callable[[Settings, frozenset[str]], None]
"""Called with the new settings and the names of the sections whose live fields changed."""


@dataclass(frozen=True)
class ReloadOutcome:
    """What one reload did: applied ``section.field`` names, those waiting for a restart."""

    applied: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    error: str = ""


def _changed_fields(old: BaseModel, new: BaseModel) -> list[str]:
    return [name for name in type(old).model_fields if getattr(old, name) != getattr(new, name)]


def merge(old: Settings, new: Settings) -> tuple[Settings, ReloadOutcome]:
    """``old`` with the live fields of ``new``; what was applied and what waits for a restart."""
    applied: list[str] = []
    waiting: list[str] = []
    sections: dict[str, BaseModel] = {}
    for section in _changed_fields(old, new):
        old_value, new_value = getattr(old, section), getattr(new, section)
        live = LIVE.get(section, frozenset())
        if not isinstance(old_value, BaseModel):
            waiting.append(section)
            continue
        changed = _changed_fields(old_value, new_value)
        take = [name for name in changed if ALL_FIELDS in live or name in live]
        waiting += [f"{section}.{name}" for name in changed if name not in take]
        if take:
            applied += [f"{section}.{name}" for name in take]
            sections[section] = old_value.model_copy(
                update={name: getattr(new_value, name) for name in take}
            )
    merged = old.model_copy(update=sections) if sections else old
    return merged, ReloadOutcome(tuple(applied), tuple(waiting))


@dataclass
class Reloader:
    """Loads the home's configuration again and hands the live changes to the components."""

    gateway: Gateway
    appliers: list[Applier] = field(default_factory=list)

    def on_reload(self, applier: Applier) -> None:
        """Register a component's applier; it runs on every reload that changed something."""
        self.appliers.append(applier)

    def reload(self) -> ReloadOutcome:
        """Read ``caducee.toml`` (and the environment overrides) again and apply what is live."""
        old = self.gateway.settings
        try:
            new = load_settings(old.home)
        except ConfigError as error:
            log.error("configuration not reloaded: %s", error)
            return ReloadOutcome(error=str(error))
        merged, outcome = merge(old, new)
        if outcome.restart_needed:
            log.warning(
                "configuration changes wait for a restart: %s",
                ", ".join(outcome.restart_needed),
            )
        if not outcome.applied:
            log.info("configuration reloaded: nothing to apply live")
            return outcome
        self.gateway.settings = merged
        sections = frozenset(name.split(".", 1)[0] for name in outcome.applied)
        for applier in self.appliers:
            applier(merged, sections)
        log.info("configuration reloaded: %s", ", ".join(outcome.applied))
        return outcome
