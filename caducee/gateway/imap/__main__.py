"""``python -m caducee.gateway.imap --home DIR``: run only the IMAP listeners of a home.

A gateway in production runs several processes against one database (K2);
this entry point is an IMAP-only process (no SMTP, no workers), used by the
cross-process tests and the benchmark. ``caducee serve`` runs IMAP together
with everything else. SIGTERM/SIGINT stop it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from caducee.config import ConfigError, load_settings
from caducee.gateway.imap.server import ImapListeners
from caducee.gateway.logs import configure_logging
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.storage import schema


async def serve_imap(gateway: Gateway) -> None:
    """Run the IMAP listeners until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    listeners = ImapListeners(gateway)
    await listeners.start()
    for name, port in listeners.ports:
        print(f"  IMAP ({name})  {gateway.settings.listeners.host}:{port}", flush=True)
    await stop.wait()
    await listeners.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m caducee.gateway.imap")
    parser.add_argument("--home", default=".caducee", help="the gateway's home folder")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(Path(args.home))
    except ConfigError as error:
        print(f"caducee imap: {error}", file=sys.stderr)
        return 1
    configure_logging(settings.logging.level)
    gateway = build_gateway(settings)
    try:
        if schema.current_revision(gateway.database) != schema.head_revision():
            print("caducee imap: the database schema is not up to date", file=sys.stderr)
            return 1
        asyncio.run(serve_imap(gateway))
    finally:
        gateway.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
