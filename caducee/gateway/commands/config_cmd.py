"""``caducee config check --home DIR``: validate the configuration file and say so."""

from __future__ import annotations

import argparse
from pathlib import Path

from caducee.config import load_settings
from caducee.gateway.commands import Subcommands, add_home_argument


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("config", help="inspect the configuration")
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate caducee.toml and environment overrides")
    add_home_argument(check)
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.home))
    print(f"{settings.home / 'caducee.toml'}: valid (version {settings.version})")
    return 0
