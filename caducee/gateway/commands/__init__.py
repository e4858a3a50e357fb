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


def confirm_removal(would_remove: int, existing: int, share: float, *, assume_yes: bool) -> bool:
    """Ask before an import removes more than ``share`` of ``existing`` rows (or ``--yes``).

    Without a terminal on standard input the answer is no: a script passes ``--yes``.
    """
    import sys

    from caducee.gateway.imports import removal_exceeds_share

    if assume_yes or not removal_exceeds_share(would_remove, existing, share):
        return True
    question = (
        f"This import would remove {would_remove} of {existing} entries "
        f"({would_remove / existing:.0%}, more than {share:.0%}). Continue? [y/N] "
    )
    if not sys.stdin.isatty():
        print(question + "no (not a terminal; pass --yes)", file=sys.stderr)
        return False
    return input(question).strip().lower() in ("y", "yes", "o", "oui")
