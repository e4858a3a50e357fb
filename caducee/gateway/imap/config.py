"""pymap's configuration object, filled from our settings instead of its command line.

:class:`pymap.config.IMAPConfig` is built for pymap's own ``argparse`` front end;
we construct it directly with our TLS context (``caducee.gateway.tls``: TLS 1.2+,
strong suites), our host name in the greeting, only the PLAIN and LOGIN SASL
mechanisms (app passwords, C1), the APPEND size limit of the SMTP side, the literal
limits of ``[imap]`` (enforced by the connection before a literal is read, see
``server``), and the capabilities H1 asks for. Nothing here reads the environment or the
command line. Building one installs our mailbox-name codec into pymap (``names``).
"""

from __future__ import annotations

import ssl
from argparse import Namespace
from collections.abc import Mapping

from proxyprotocol.version import ProxyProtocolVersion
from pymap.config import BackendCapability, IMAPConfig
from pymap.parsing import Params
from pymap.parsing.commands import Commands
from pysasl import SASLAuth
from pysasl.hashing import BuiltinHash

from caducee.gateway.imap.commands import caducee_commands
from caducee.gateway.imap.names import install as install_name_codec

EXTENSIONS: tuple[bytes, ...] = (
    b"SPECIAL-USE",
    b"NAMESPACE",
    b"ENABLE",
    b"CONDSTORE",
    b"QRESYNC",
    b"UNSELECT",
    b"ESEARCH",
    b"LIST-EXTENDED",
    b"LIST-STATUS",
    b"SORT",
    b"THREAD=ORDEREDSUBJECT",
    b"THREAD=REFERENCES",
)


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
        max_literal_before_login: int = 8192,
        max_command_bytes: int = 50_000_000,
    ) -> None:
        install_name_codec()
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
        self.max_literal_before_login = max_literal_before_login
        #: The advertised APPENDLIMIT (RFC 7889): the largest APPEND literal after login.
        self.append_limit = max_append_len
        #: Literal bytes one APPEND may carry in all (MULTIAPPEND), at least one whole message.
        self.max_command_bytes = max(max_command_bytes, max_append_len)
        self._commands = caducee_commands()

    @property
    def parsing_params(self) -> Params:
        # No APPEND size check in the parser: the connection checks every literal against
        # the limit of the session's state before reading it, and answers NO [TOOBIG]
        # (pymap's parser would answer a bare BAD, and only for synchronising literals).
        return Params(max_append_len=None)

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
