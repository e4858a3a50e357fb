"""``caducee patient …``: what the operator does for a patient space (A2, C4)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import select

from caducee.directory.models import DirectoryEntry
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.home import open_home
from caducee.mailboxes.accounts import AccountKind, find_account, normalise_address
from caducee.mailboxes.contacts import declare_pharmacy


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("patient", help="manage patient spaces")
    actions = parser.add_subparsers(dest="patient_action", metavar="ACTION", required=True)
    pharmacy = actions.add_parser(
        "declare-pharmacy", help="let a patient write to their pharmacy (C4)"
    )
    pharmacy.add_argument("patient", help="the patient's address (<INS>@<patient domain>)")
    pharmacy.add_argument("pharmacy", help="the pharmacy's mailbox address (directory, ORG)")
    add_home_argument(pharmacy)
    pharmacy.set_defaults(handler=run_declare_pharmacy)


def run_declare_pharmacy(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        patient = find_account(session, args.patient)
        if patient is None or patient.kind != AccountKind.PATIENT.value:
            raise CommandError(f"no patient space {args.patient}")
        entry = session.scalar(
            select(DirectoryEntry).where(DirectoryEntry.address == normalise_address(args.pharmacy))
        )
        if entry is None or not entry.pharmacy:
            raise CommandError(f"{args.pharmacy} is not a pharmacy mailbox of the directory")
        declare_pharmacy(session, patient.id, entry.address)
    print(f"{args.patient} may now write to {entry.address}.")
    return 0
