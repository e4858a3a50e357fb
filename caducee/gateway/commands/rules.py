"""``caducee rules``: print every rule table as the Markdown page ``docs/refusals.md``.

The page is generated, never written by hand: after a change to a table, run
``caducee rules > docs/refusals.md`` (a test fails until the file matches the tables).
"""

from __future__ import annotations

import argparse
import sys

from caducee.gateway.commands import Subcommands
from caducee.policies.tables import refusals_markdown


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser(
        "rules", help="print every rule table (the page docs/refusals.md) as Markdown"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(refusals_markdown())
    return 0
