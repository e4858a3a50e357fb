"""pymap's configuration object, filled from our settings instead of its command line.

:class:`pymap.config.IMAPConfig` is built for pymap's own ``argparse`` front end;
we construct it directly with our TLS context (``caducee.gateway.tls``: TLS 1.2+,
strong suites), our host name in the greeting, only the PLAIN and LOGIN SASL
mechanisms (app passwords, C1), the APPEND size limit of the SMTP side, and the
capabilities H1 asks for. Nothing here reads the environment or the command line.
"""

from __future__ import annotations

import ssl
from argparse import Namespace
from collections.abc import Mapping

from proxyprotocol.version import ProxyProtocolVersion
from pymap.config import BackendCapability, IMAPConfig
from pymap.parsing.commands import Commands
from pysasl import SASLAuth
from pysasl.hashing import BuiltinHash

from caducee.gateway.imap.commands import caducee_commands

EXTENSIONS: tuple[bytes, ...] = (b"SPECIAL-USE", b"NAMESPACE", b"ENABLE", b"CONDSTORE")


class CaduceeImapConfig(IMAPConfig):
    """Settings of our IMAP listeners, in pymap's terms."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        hostname: str,
        ssl_context: ssl.SSLContext,
        max_append_len: int,
    ) -> None:
        super().__init__(
            Namespace(passlib_cfg=None, proxy_protocol=None),
            host=host,
            port=port,
            ssl_context=ssl_context,
            tls_enabled=True,
            hash_context=BuiltinHash(),
            proxy_protocol=ProxyProtocolVersion.get(),
            reject_dnsbl=False,
            max_append_len=max_append_len,
            bad_command_limit=10,
            invalid_user_sleep=1.0,
        )
        self._hostname = hostname
        self._commands = caducee_commands()

    @property
    def backend_capability(self) -> BackendCapability:
        return BackendCapability(idle=True, object_id=False, multi_append=True, custom=EXTENSIONS)

    @property
    def commands(self) -> Commands:
        return self._commands

    @property
    def greeting(self) -> bytes:
        return b"Caducee IMAP ready " + self._hostname.encode("ascii", "replace")

    @property
    def tls_auth(self) -> SASLAuth:
        return SASLAuth.named([b"PLAIN", b"LOGIN"])

    @property
    def id_response(self) -> Mapping[bytes, bytes] | None:
        return {b"name": b"Caducee"}
