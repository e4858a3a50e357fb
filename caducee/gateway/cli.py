"""The ``caducee`` command: parses arguments and dispatches to command modules.

The command names and options are a contract that scripts and later work rely
on: extend them, do not rename them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from caducee import __version__
from caducee.config import ConfigError
from caducee.gateway.commands import (
    CommandError,
    access,
    account,
    admin,
    audit,
    blobs,
    config_cmd,
    directory,
    doctor,
    init,
    keys,
    mailbox,
    patient,
    quarantine,
    queue,
    record,
    rules,
    serve,
    trust,
)

COMMAND_GROUPS = (
    init,
    serve,
    doctor,
    config_cmd,
    keys,
    blobs,
    trust,
    mailbox,
    directory,
    patient,
    account,
    queue,
    quarantine,
    record,
    access,
    audit,
    admin,
    rules,
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered command group."""
    parser = argparse.ArgumentParser(
        prog="caducee", description="Caducée secure health messaging gateway."
    )
    parser.add_argument("--version", action="version", version=f"caducee {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as error:
        print(f"caducee: configuration error: {error}", file=sys.stderr)
        return 2
    except CommandError as error:
        print(f"caducee: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
