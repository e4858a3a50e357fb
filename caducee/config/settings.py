"""The schema of ``caducee.toml`` and the one function that loads it.

One versioned TOML file configures a gateway. Every field has a default fit for
a development machine, so a home made by ``caducee init`` needs few lines. Any
field can be overridden by an environment variable ``CADUCEE_<SECTION>__<KEY>``
(for example ``CADUCEE_LISTENERS__HTTP=9090``), which is how containers and CI
adjust a file they do not own. Relative paths are relative to the home folder,
so a home can be moved as a whole.

A bad file must give the operator one clear sentence naming the field and what
was expected, never a traceback: :class:`ConfigError` carries that sentence.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

CONFIG_FILE_NAME = "caducee.toml"
CONFIG_VERSION = 1
ENV_PREFIX = "CADUCEE_"

Port = Annotated[int, Field(ge=0, le=65535)]


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field and the expectation."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Section):
    """Who this gateway is."""

    operator_name: str = "Caducée development operator"
    hostname: str = "mx.caducee.localhost"
    patient_domain: str = "patient.mssante.fr"
    hosted_domains: tuple[str, ...] = ()
    test_mode: bool = False


class DatabaseSettings(_Section):
    """Where the rows live: SQLite by default, PostgreSQL in production."""

    url: str = "sqlite:///caducee.db"
    pool_size: int = Field(default=5, ge=1, le=200)

    @field_validator("url")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("a sqlite:/// or postgresql:// URL")
        return value


class BlobSettings(_Section):
    """Where encrypted message bodies and documents live: a folder or S3-compatible storage."""

    backend: Literal["folder", "s3"] = "folder"
    path: Path = Path("blobs")
    inline_max_bytes: int = Field(default=65536, ge=0, le=1024 * 1024)
    endpoint_url: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = "blobs/"
    access_key_id_env: str = "AWS_ACCESS_KEY_ID"
    secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 - a variable name
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    verify_tls: bool = True
    ca_bundle: str = ""
    max_attempts: int = Field(default=5, ge=1, le=20)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    read_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    multipart_threshold_bytes: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)
    part_size_bytes: int = Field(default=8 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024**3)
    orphan_grace_seconds: int = Field(default=86400, ge=60)

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> BlobSettings:
        if self.backend == "s3" and not self.bucket:
            raise ValueError("a bucket name when backend is s3 ([blobs] bucket)")
        return self


class CryptoSettings(_Section):
    """Encryption at rest: where the key-encryption keys are kept."""

    keyring: Path = Path("keys/kek")


class TlsSettings(_Section):
    """Certificates of our servers and the minimum protocol version."""

    ca_cert: Path = Path("tls/ca.pem")
    cert: Path = Path("tls/server.pem")
    key: Path = Path("tls/server.key")
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    expiry_warning_days: int = Field(default=30, ge=0)


class ListenerSettings(_Section):
    """Ports of every listener; 0 disables one."""

    host: str = "127.0.0.1"
    smtp: Port = 2525
    submission: Port = 2587
    submissions: Port = 2465
    imap: Port = 2143
    imaps: Port = 2993
    http: Port = 8080
    http_tls: bool = False


class SmtpSettings(_Section):
    """The SMTP servers: what operators and local users may send."""

    allow_plaintext: bool = False
    require_dkim: bool = True
    max_message_bytes: int = Field(default=25_000_000, ge=1024)
    max_recipients: int = Field(default=100, ge=1, le=10_000)
    timeout_seconds: int = Field(default=300, ge=10)
    crl_file: str = ""
    processes: int = Field(default=1, ge=1, le=64)
    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_ip: int = Field(default=50, ge=1)
    max_session_seconds: int = Field(default=1800, ge=10)
    max_data_in_flight_bytes: int = Field(default=250_000_000, ge=1024)


class ImapSettings(_Section):
    """Bounds on what an IMAP client may make the gateway read (H1, issue 12)."""

    max_literal_before_login: int = Field(default=8192, ge=256, le=1_048_576)
    max_command_bytes: int = Field(default=50_000_000, ge=1024)
    max_connections: int = Field(default=2000, ge=1)
    max_connections_per_ip: int = Field(default=100, ge=1)
    login_timeout_seconds: int = Field(default=120, ge=5)
    idle_timeout_seconds: int = Field(default=1800, ge=5)
    max_session_seconds: int = Field(default=86400, ge=10)
    change_poll_seconds: float = Field(default=0.25, gt=0, le=3600)
    change_safety_poll_seconds: float = Field(default=5.0, gt=0, le=3600)


class HttpSettings(_Section):
    """Bounds on the HTTP listener's connections and requests (issue 12)."""

    max_connections: int = Field(default=1000, ge=1)
    max_connections_per_ip: int = Field(default=100, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    webmail_upload_max_bytes: int = Field(default=8 * 1_048_576, ge=1024)
    max_header_bytes: int = Field(default=16384, ge=1024, le=1_048_576)
    keep_alive_seconds: int = Field(default=5, ge=1)
    max_connection_seconds: int = Field(default=600, ge=10)


class RecordsSettings(_Section):
    """The patient's document record (E1–E6, G3)."""

    filing_policy: Literal["auto", "patient-choice"] = "auto"
    max_archive_entries: int = Field(default=1000, ge=1)
    max_archive_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    max_compression_ratio: int = Field(default=100, ge=2)


class DkimSettings(_Section):
    """Our DKIM signing keys, and the public keys of peers we verify without DNS."""

    selector: str = "caducee"
    private_key: Path = Path("dkim/caducee.key")
    domain_keys: dict[str, str] = Field(default_factory=dict)
    key_table: dict[str, str] = Field(default_factory=dict)


class RelaySettings(_Section):
    """Outbound relay to other operators (C5, G4)."""

    routes: dict[str, str] = Field(default_factory=dict)
    port: Port = 25
    retry_hours: float = Field(default=120.0, gt=0)
    delay_warning_hours: float = Field(default=4.0, gt=0)
    backoff_base_seconds: float = Field(default=60.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    timeout_seconds: float = Field(default=60.0, gt=0)


class SubmissionSettings(_Section):
    """Submission by local users (C1): authentication and its rate limits."""

    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_jwks_file: str = ""
    oidc_jwks_url: str = ""
    national_id_claim: str = "SubjectRefPro.codeNationalId"
    # Deprecated, unused: failed sign-ins on every door are limited by [identity]; kept so
    # that existing configuration files still load.
    max_failures_per_account: int = Field(default=5, ge=1)
    max_failures_per_ip: int = Field(default=20, ge=1)
    failure_window_seconds: int = Field(default=300, ge=10)


class IdentitySettings(_Section):
    """Sign-in on every door (C1): the failure limiter and the verified-credential cache."""

    free_failures_per_account_ip: int = Field(default=10, ge=1)
    free_failures_per_ip: int = Field(default=100, ge=1)
    failure_delay_seconds: float = Field(default=1.0, gt=0)
    failure_delay_max_seconds: float = Field(default=900.0, gt=0)
    trusted_source_hours: float = Field(default=24.0, ge=0)
    credential_cache_seconds: float = Field(default=900.0, ge=0)
    max_concurrent_checks: int = Field(default=4, ge=1, le=64)


class QueueSettings(_Section):
    """The durable job queue: workers, retries and back-off."""

    workers: int = Field(default=2, ge=0, le=64)
    poll_interval: float = Field(default=0.5, gt=0, le=60)
    lease_seconds: int = Field(default=300, ge=5)
    max_attempts: int = Field(default=8, ge=1)
    backoff_base_seconds: float = Field(default=30.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)


class NotificationsSettings(_Section):
    """Out-of-band notifications to patients (G1): e-mail through a smarthost, SMS."""

    enabled: bool = True
    smarthost_host: str = ""
    smarthost_port: Port = 587
    smarthost_tls: Literal["starttls", "tls", "none"] = "starttls"
    smarthost_username: str = ""
    smarthost_password_file: str = ""
    smarthost_ca_file: str = ""
    smarthost_timeout_seconds: float = Field(default=30.0, gt=0)
    from_address: str = ""
    sms_sender: Literal["none", "file"] = "none"
    sms_file: str = "notifications/sms.jsonl"
    grouping_window_seconds: int = Field(default=300, ge=0)
    default_new_message: bool = True
    default_new_document: bool = True
    default_record_access: bool = True
    default_language: Literal["fr", "en"] = "fr"
    portal_url: str = ""


class AccessSettings(_Section):
    """Professionals' access to the record (F1, F2) and the patient's history (F4)."""

    emergency_access_default: bool = False
    min_reason_length: int = Field(default=10, ge=1)
    notify_record_access: bool = True
    history_page_max: int = Field(default=200, ge=1, le=10_000)


class LifecycleSettings(_Section):
    """Patient spaces from enrolment to deletion (I1, I2) and operator imports."""

    open_after_days: float = Field(default=42.0, ge=0)
    activation_code_days: float = Field(default=42.0, gt=0)
    activation_max_attempts: int = Field(default=5, ge=1, le=100)
    archive_years: float = Field(default=10.0, ge=0)
    deletion_request_days: float = Field(default=90.0, ge=0)
    import_removal_share: float = Field(default=0.1, ge=0, le=1)
    idle_flag_days: float = Field(default=365.0, gt=0)
    idle_disable_days: float = Field(default=30.0, ge=0)
    sweep_interval_hours: float = Field(default=24.0, gt=0)
    trace_retention_days: float = Field(default=183.0, gt=0)
    audit_retention_days: float = Field(default=0.0, ge=0)


class AdminSettings(_Section):
    """The operator's admin HTTP API under /admin (bearer tokens with scopes)."""

    enabled: bool = True
    token_days: float = Field(default=365.0, gt=0)


class LoggingSettings(_Section):
    """JSON log lines on stderr."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Section):
    """The whole configuration, with paths already resolved against the home folder."""

    version: Literal[1] = 1
    home: Path = Path(".")
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    blobs: BlobSettings = Field(default_factory=BlobSettings)
    crypto: CryptoSettings = Field(default_factory=CryptoSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    listeners: ListenerSettings = Field(default_factory=ListenerSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    imap: ImapSettings = Field(default_factory=ImapSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    records: RecordsSettings = Field(default_factory=RecordsSettings)
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    submission: SubmissionSettings = Field(default_factory=SubmissionSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    notifications: NotificationsSettings = Field(default_factory=NotificationsSettings)
    access: AccessSettings = Field(default_factory=AccessSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    def path(self, relative: Path) -> Path:
        """Resolve a configured path against the home folder."""
        return relative if relative.is_absolute() else (self.home / relative)

    def path_of(self, text: str) -> Path:
        """Resolve a path given as text (optional path settings) against the home folder."""
        return self.path(Path(text))

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite file placed in the home folder."""
        url = self.database.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix:
            rest = url[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str((self.home / rest).resolve())
        return url


def _env_value(raw: str) -> Any:
    """Read an environment value as a TOML literal when it is one, else as a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


env_value = _env_value  # public: ``caducee init`` reads CADUCEE_DATABASE__URL the same way


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[tuple[str, str], str]:
    """Apply ``CADUCEE_<SECTION>__<KEY>`` overrides; return which fields they set."""
    applied: dict[tuple[str, str], str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not section or not key:
            continue
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"environment variable {name}: [{section}] is not a section")
        target[key] = _env_value(raw)
        applied[(section, key)] = name
    return applied


def _describe(
    error: Mapping[str, Any], source: str, overrides: Mapping[tuple[str, str], str]
) -> str:
    location = [str(part) for part in error["loc"]]
    if len(location) >= 2 and (location[0], location[1]) in overrides:
        source = f"environment variable {overrides[(location[0], location[1])]}"
    if len(location) > 1:
        field = f"[{location[0]}] {'.'.join(location[1:])}"
    else:
        field = location[0] if location else "(top level)"
    expected = str(error["msg"]).removeprefix("Value error, ")
    expected = expected.replace("Input should be ", "", 1)
    if error["type"] == "extra_forbidden":
        return f"{source}: {field}: unknown field (see config/caducee.example.toml)"
    if error["type"] == "literal_error" and location == ["version"]:
        return f"{source}: version: this gateway reads version {CONFIG_VERSION} files"
    return f"{source}: {field}: expected {expected}, got {error.get('input')!r}"


def load_settings(home: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Load ``home/caducee.toml``, apply environment overrides and validate.

    Raises :class:`ConfigError` with a one-line explanation on any problem.
    """
    environ = os.environ if environ is None else environ
    home = home.resolve()
    config_file = home / CONFIG_FILE_NAME
    source = str(config_file)
    try:
        with config_file.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: no configuration file (run 'caducee init --home {home}')"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML: {error}") from None
    if "home" in data:
        raise ConfigError(f"{source}: home: not a setting (the home is the file's folder)")
    overrides = _apply_env(data, environ)
    data["home"] = home
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        raise ConfigError(_describe(first, source, overrides)) from None
