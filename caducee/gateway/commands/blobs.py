"""``caducee blobs sweep --home DIR [--delete] [--older-than SECONDS]``: orphaned objects (K2).

A blob's object is stored before the row that points to it is committed, so a
transaction that rolls back, or a process that dies in between, leaves an
object no row refers to: never the reverse. The sweep lists such objects older
than a grace period (``[blobs] orphan_grace_seconds``: an object younger than
that may be waiting for its commit) and, with ``--delete`` only, deletes them.
Without ``--delete`` (or with ``--dry-run``) it only reports.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

from caducee.config import load_settings
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.runtime import build_gateway
from caducee.storage.blob_backends import BlobBackendError


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("blobs", help="maintain the blob store")
    actions = parser.add_subparsers(dest="blobs_action", metavar="ACTION", required=True)
    sweep = actions.add_parser(
        "sweep", help="list (or --delete) stored objects that no blob row refers to"
    )
    add_home_argument(sweep)
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="only list the orphans (the default)")
    mode.add_argument("--delete", action="store_true", help="delete the orphans")
    sweep.add_argument(
        "--older-than",
        type=int,
        metavar="SECONDS",
        help="grace period (default: [blobs] orphan_grace_seconds)",
    )
    sweep.set_defaults(handler=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.home))
    grace = args.older_than if args.older_than is not None else settings.blobs.orphan_grace_seconds
    if grace < 0:
        raise CommandError("--older-than: expected a number of seconds, 0 or more")
    delete = bool(args.delete)
    gateway = build_gateway(settings, handlers={})
    try:
        with gateway.database.reading() as session:
            orphans = gateway.blobs.sweep(
                session, older_than=timedelta(seconds=grace), dry_run=not delete
            )
    except BlobBackendError as error:
        raise CommandError(str(error)) from None
    finally:
        gateway.close()
    where = gateway.blobs.backend.describe()
    for item in orphans:
        label = "deleted" if delete else "orphan "
        print(f"{label}  {item.blob_id}  {item.modified:%Y-%m-%dT%H:%M:%SZ}")
    verb = "Deleted" if delete else "Found"
    print(f"{verb} {len(orphans)} orphaned object(s) older than {grace} s in {where}.")
    if orphans and not delete:
        print("Nothing was deleted (dry run); run again with --delete to delete them.")
    return 0
