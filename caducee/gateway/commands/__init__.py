"""One module per CLI command group; each exposes ``register(subcommands)``.

A command handler receives the parsed arguments and returns the process exit
code. Handlers print what an operator needs to read; errors go to stderr as one
sentence.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_home_argument(parser: argparse.ArgumentParser) -> None:
    """Every command that works on a gateway names its home folder the same way."""
    parser.add_argument(
        "--home",
        default=".caducee",
        help="the gateway's home folder (holds caducee.toml); default: .caducee",
    )


class CommandError(Exception):
    """A command could not do its work; the message is shown to the operator (exit 1)."""
