"""``caducee patient …``: what the operator does for a patient space (A2, C4, I1–I3).

``create|show|activation-code|oppose|opposition-proof|close|reopen|export|delete|run-due``
drive :mod:`caducee.mailboxes.accounts.lifecycle` (see ``docs/lifecycle.md``); ``declare-pharmacy``
lets a patient write to their pharmacy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from caducee.config import load_settings
from caducee.directory.models import DirectoryEntry
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.export import export_to_file
from caducee.gateway.home import open_home
from caducee.gateway.lifecycle import (
    deliver_activation_code,
    policy_of,
    purge_space,
    run_due,
    schedule_opening,
    schedule_purge,
    set_contact,
)
from caducee.gateway.runtime import Gateway, build_gateway
from caducee.mailboxes.access.contacts import declare_pharmacy
from caducee.mailboxes.access.rights import Actor, add_representative
from caducee.mailboxes.accounts.lifecycle import Actor as LifecycleActor
from caducee.mailboxes.accounts.lifecycle import (
    LifecycleError,
    QualifiedIdentity,
    SpaceStatus,
    audit,
    close_space,
    create_space,
    new_activation_code,
    oppose,
    opposition_proof,
    reopen_space,
    show_space,
)
from caducee.mailboxes.accounts.store import AccountKind, find_account, normalise_address
from caducee.mailboxes.notifications.patients import PreferenceError


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
    register_lifecycle(actions)


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


# ---------------------------------------------------------------------------------------------
# The lifecycle of a space (A2, I1, I2, I3): caducee.mailboxes.accounts.lifecycle does the work.


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date YYYY-MM-DD") from None


def register_lifecycle(actions: Any) -> None:
    create = actions.add_parser("create", help="create a patient space from a qualified INS (A2)")
    create.add_argument("--ins", required=True, help="INS matricule (15 characters)")
    create.add_argument(
        "--oid", default="1.2.250.1.213.1.4.8", help="INS OID (default: NIR .8; .9 NIA)"
    )
    create.add_argument("--birth-name", required=True)
    create.add_argument("--given-name", required=True, help="first given name")
    create.add_argument("--birth-date", required=True, type=_date, help="YYYY-MM-DD")
    create.add_argument("--sex", required=True, choices=("M", "F"))
    create.add_argument("--birthplace", required=True, help="INSEE code of the birthplace")
    create.add_argument("--email", help="the patient's personal e-mail (code, notifications)")
    create.add_argument("--phone", help="the patient's mobile phone, +33…")
    create.add_argument(
        "--representative",
        action="append",
        default=[],
        help="a legal representative's patient address (F3; required for a minor; repeatable)",
    )
    create.add_argument(
        "--print-code", action="store_true", help="also print the activation code here"
    )
    add_home_argument(create)
    create.set_defaults(handler=run_create)

    show = actions.add_parser("show", help="a space's identity, state and deadlines")
    show.add_argument("patient", help="the patient's address")
    show.add_argument("--json", action="store_true")
    add_home_argument(show)
    show.set_defaults(handler=run_show)

    code = actions.add_parser("activation-code", help="issue a new activation code (old one void)")
    code.add_argument("patient", help="the patient's address")
    code.add_argument("--print-code", action="store_true", help="also print the code here")
    add_home_argument(code)
    code.set_defaults(handler=run_activation_code)

    oppose = actions.add_parser("oppose", help="record the patient's opposition (never opens)")
    oppose.add_argument("patient", help="the patient's address")
    oppose.add_argument("--proof", help="write the proof PDF to this file")
    add_home_argument(oppose)
    oppose.set_defaults(handler=run_oppose)

    proof = actions.add_parser("opposition-proof", help="write the proof PDF of an opposition")
    proof.add_argument("patient", help="the patient's address")
    proof.add_argument("output", help="the PDF file to write")
    add_home_argument(proof)
    proof.set_defaults(handler=run_proof)

    close = actions.add_parser("close", help="close a space: mail refused, data archived (I2)")
    close.add_argument("patient", help="the patient's address")
    close.add_argument(
        "--delete", action="store_true", help="with a deletion request (honoured within the delay)"
    )
    add_home_argument(close)
    close.set_defaults(handler=run_close)

    reopen = actions.add_parser("reopen", help="reopen a closed space; everything comes back")
    reopen.add_argument("patient", help="the patient's address")
    add_home_argument(reopen)
    reopen.set_defaults(handler=run_reopen)

    export = actions.add_parser("export", help="write a space's zip export (I3)")
    export.add_argument("patient", help="the patient's address")
    export.add_argument("--output", "-o", required=True, help="the zip file to write")
    export.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_home_argument(export)
    export.set_defaults(handler=run_export)

    remove = actions.add_parser(
        "delete", help="request deletion (closes the space); --now deletes a closed space at once"
    )
    remove.add_argument("patient", help="the patient's address")
    remove.add_argument("--now", action="store_true", help="delete now (the space must be closed)")
    remove.add_argument("--yes", action="store_true", help="do not ask for a confirmation")
    add_home_argument(remove)
    remove.set_defaults(handler=run_delete)

    due = actions.add_parser(
        "run-due", help="open and delete the spaces whose deadlines passed (the jobs do it too)"
    )
    add_home_argument(due)
    due.set_defaults(handler=run_due_command)


def _gateway(args: argparse.Namespace) -> Gateway:
    return build_gateway(load_settings(Path(args.home)))


def _fail(error: LifecycleError) -> CommandError:
    return CommandError(str(error))


def run_create(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    policy = policy_of(gateway)
    identity = QualifiedIdentity(
        ins=args.ins,
        oid=args.oid,
        birth_name=args.birth_name,
        given_name=args.given_name,
        birth_date=args.birth_date,
        sex=args.sex,
        birthplace=args.birthplace,
    )
    try:
        with gateway.database.transaction() as session:
            representatives = []
            for address in args.representative:
                holder = find_account(session, address)
                if holder is None or holder.kind != AccountKind.PATIENT.value:
                    raise CommandError(f"no patient space {address} (representative)")
                representatives.append(holder.id)
            created = create_space(
                session,
                identity,
                policy,
                LifecycleActor.operator(),
                representatives=tuple(representatives),
            )
            for representative_id in representatives:
                add_representative(session, created.account_id, representative_id, Actor.operator())
            set_contact(session, created.account_id, email=args.email, phone=args.phone)
            schedule_opening(gateway, session, created.account_id, created.opens_at)
        channels = deliver_activation_code(
            gateway, created.account_id, created.code, created.code_expires_at
        )
    except LifecycleError as error:
        raise _fail(error) from None
    except PreferenceError as error:
        raise CommandError(str(error)) from None
    finally:
        gateway.close()
    print(f"{created.address}: created; opens by itself on {created.opens_at:%Y-%m-%d %H:%M} UTC")
    _print_delivery(channels, created.code, created.code_expires_at, args.print_code)
    return 0


def _print_delivery(channels: list[str], code: str, expires: datetime, show: bool) -> None:
    if channels:
        print(f"activation code sent by {', '.join(channels)}; valid until {expires:%Y-%m-%d}")
    else:
        print("no channel to send the activation code (no e-mail or SMS configured for it)")
    if show or not channels:
        print(f"activation code: {code}")


def run_show(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            view = show_space(session, args.patient)
        except LifecycleError as error:
            raise _fail(error) from None
    data = view.public()
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
        return 0
    for key, value in data.items():
        if value is not None:
            print(f"{key:<28} {value}")
    return 0


def run_activation_code(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    try:
        with gateway.database.transaction() as session:
            account_id, code, expires = new_activation_code(
                session, args.patient, policy_of(gateway), LifecycleActor.operator()
            )
        channels = deliver_activation_code(gateway, account_id, code, expires)
    except LifecycleError as error:
        raise _fail(error) from None
    finally:
        gateway.close()
    _print_delivery(channels, code, expires, args.print_code)
    return 0


def run_oppose(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    try:
        with gateway.database.transaction() as session:
            reference = oppose(session, args.patient, LifecycleActor.operator(), policy_of(gateway))
            if isinstance(reference, LifecycleError):
                raise reference
            proof = opposition_proof(session, args.patient) if args.proof else None
    except LifecycleError as error:
        raise _fail(error) from None
    finally:
        gateway.close()
    print(f"{args.patient}: opposed (reference {reference}); the space will not open.")
    if proof is not None:
        _write_private(Path(args.proof), proof)
        print(f"proof written to {args.proof}")
    return 0


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def run_proof(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            proof = opposition_proof(session, args.patient)
        except LifecycleError as error:
            raise _fail(error) from None
    _write_private(Path(args.output), proof)
    print(f"proof written to {args.output}")
    return 0


def run_close(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    try:
        with gateway.database.transaction() as session:
            space = close_space(
                session,
                args.patient,
                LifecycleActor.operator(),
                policy_of(gateway),
                deletion_requested=args.delete,
            )
            deadline = space.purge_after
            schedule_purge(gateway, session, space.account_id)
    except LifecycleError as error:
        raise _fail(error) from None
    finally:
        gateway.close()
    when = f"{deadline:%Y-%m-%d}" if deadline else "never"
    print(f"{args.patient}: closed; mail refused, data kept until {when}.")
    return 0


def run_reopen(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            reopen_space(session, args.patient, LifecycleActor.operator())
        except LifecycleError as error:
            raise _fail(error) from None
    print(f"{args.patient}: reopened; everything archived is back.")
    return 0


def run_export(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    output = Path(args.output)
    try:
        with gateway.database.reading() as session:
            account = find_account(session, args.patient)
            if account is None or account.kind != AccountKind.PATIENT.value:
                raise CommandError(f"no patient space {args.patient}")
            account_id = account.id

        def progress(done: int, total: int) -> None:
            if not args.quiet:
                print(f"\rexported {done}/{total} items", end="", file=sys.stderr, flush=True)

        summary = export_to_file(
            gateway.database,
            gateway.blobs,
            account_id,
            output,
            base_url=f"https://{gateway.settings.gateway.hostname}/fhir/",
            progress=progress,
        )
        with gateway.database.transaction() as session:
            audit(session, LifecycleActor.operator(), "space.export", account_id)
    finally:
        gateway.close()
    if not args.quiet:
        print(file=sys.stderr)
    print(
        f"{output}: {summary.messages} message(s) in {len(summary.folders)} folder(s), "
        f"{summary.documents} document(s)"
    )
    return 0


def run_delete(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    try:
        if args.now and not args.yes:
            answer = input(f"Delete {args.patient} and all its mail and documents now? [y/N] ")
            if answer.strip().lower() not in ("y", "yes", "o", "oui"):
                raise CommandError("nothing deleted")
        with gateway.database.transaction() as session:
            if args.now:
                view = show_space(session, args.patient)
                if view.status not in (SpaceStatus.CLOSED.value, SpaceStatus.OPPOSED.value):
                    raise CommandError(f"{args.patient} is {view.status}: close it first")
                purge_space(gateway, session, view.account_id)
                message = f"{args.patient}: deleted."
            else:
                space = close_space(
                    session,
                    args.patient,
                    LifecycleActor.operator(),
                    policy_of(gateway),
                    deletion_requested=True,
                )
                schedule_purge(gateway, session, space.account_id)
                deadline = space.purge_after
                message = f"{args.patient}: closed, deleted on {deadline:%Y-%m-%d} at the latest."
    except LifecycleError as error:
        raise _fail(error) from None
    finally:
        gateway.close()
    print(message)
    return 0


def run_due_command(args: argparse.Namespace) -> int:
    gateway = _gateway(args)
    try:
        opened, deleted = run_due(gateway)
    finally:
        gateway.close()
    print(f"{opened} space(s) opened, {deleted} space(s) deleted.")
    return 0
