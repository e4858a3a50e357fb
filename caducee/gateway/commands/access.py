"""``caducee access …``: the operator's hand on a patient's access rights (F1, F2, F3, G1).

What the patient does through ``/api/patient`` the operator can do here, for support and for
what only the operator may do: register a legal representative (F3), name a médecin traitant
who never wrote to the patient, clear the médecin traitant. Every change is an audit event
whose actor is ``operator`` (F4). A patient is named by their address or INS; a professional
by the address they wrote from (or the one they gave as ``Reply-To``), or by the id ``list``
shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.home import open_home
from caducee.mailboxes.access.rights import (
    AccessSettings,
    Actor,
    RightsError,
    add_representative,
    clear_medecin_traitant,
    emergency_access,
    known_professionals,
    patient_account,
    patient_by_ins,
    remove_representative,
    representatives_of,
    represented_by,
    set_emergency_access,
    set_medecin_traitant,
    set_professional_status,
)
from caducee.mailboxes.accounts.store import Account
from caducee.mailboxes.notifications.patients import (
    NotificationSettings,
    PreferenceError,
    preferences,
    update_preferences,
)
from caducee.policies.access import ProfessionalStatus


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("access", help="patients' access rights and representatives")
    actions = parser.add_subparsers(dest="access_action", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="a patient's professionals and access settings")
    listing.add_argument("patient", help="the patient's address or INS")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    add_home_argument(listing)
    listing.set_defaults(handler=run_list)

    for name, status, text in (
        ("block", ProfessionalStatus.BLOCKED, "block a known professional (F1)"),
        ("authorise", ProfessionalStatus.AUTHORISED, "authorise a known professional again"),
    ):
        change = actions.add_parser(name, help=text)
        change.add_argument("patient", help="the patient's address or INS")
        change.add_argument("professional", help="the professional's address or list id")
        add_home_argument(change)
        change.set_defaults(handler=run_status, status=status)

    doctor = actions.add_parser("medecin-traitant", help="name or clear the médecin traitant")
    doctor.add_argument("patient", help="the patient's address or INS")
    doctor.add_argument("professional", nargs="?", help="the professional's address or list id")
    doctor.add_argument("--clear", action="store_true", help="the patient has none any more")
    add_home_argument(doctor)
    doctor.set_defaults(handler=run_medecin_traitant)

    emergency = actions.add_parser("emergency", help="switch emergency access on or off (F2)")
    emergency.add_argument("patient", help="the patient's address or INS")
    emergency.add_argument("state", choices=("on", "off"))
    add_home_argument(emergency)
    emergency.set_defaults(handler=run_emergency)

    representative = actions.add_parser("representative", help="legal representatives (F3)")
    rep_actions = representative.add_subparsers(
        dest="representative_action", metavar="ACTION", required=True
    )
    for name, text in (("add", "register"), ("remove", "end")):
        item = rep_actions.add_parser(name, help=f"{text} a parent's delegation for a minor")
        item.add_argument("minor", help="the minor's address or INS")
        item.add_argument("representative", help="the representative's patient address or INS")
        add_home_argument(item)
        item.set_defaults(handler=run_representative, add=name == "add")
    rep_list = rep_actions.add_parser("list", help="who represents a patient, whom they represent")
    rep_list.add_argument("patient", help="the patient's address or INS")
    add_home_argument(rep_list)
    rep_list.set_defaults(handler=run_representative_list)

    contact = actions.add_parser("notifications", help="a patient's notification contact (G1)")
    contact.add_argument("patient", help="the patient's address or INS")
    contact.add_argument("--email", help="personal e-mail ('' to remove)")
    contact.add_argument("--phone", help="mobile number in E.164 form ('' to remove)")
    contact.add_argument("--language", choices=("fr", "en"))
    add_home_argument(contact)
    contact.set_defaults(handler=run_notifications)


def _patient(session: Session, name: str) -> Account:
    account = patient_account(session, name) if "@" in name else patient_by_ins(session, name)
    if account is None:
        raise CommandError(f"no patient space {name}")
    return account


def _professional(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def _rights_error(error: RightsError) -> CommandError:
    return CommandError(f"refused ({error.rule}): {error}")


def run_list(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        patient = _patient(session, args.patient)
        access = AccessSettings.from_settings(home.settings)
        professionals = known_professionals(session, patient.id)
        emergency = emergency_access(session, patient.id, access)
        representatives = representatives_of(session, patient.id)
    if args.json:
        document: dict[str, Any] = {
            "patient": patient.address,
            "emergency_access": emergency,
            "professionals": [
                {
                    "id": item.id,
                    "address": item.address,
                    "reply_address": item.reply_address,
                    "status": item.status,
                    "medecin_traitant": item.medecin_traitant,
                    "can_reply": item.can_reply,
                    "first_contact_at": item.first_contact_at.isoformat(),
                    "last_message_at": item.last_message_at.isoformat(),
                }
                for item in professionals
            ],
            "representatives": [item.representative_address for item in representatives],
        }
        print(json.dumps(document, ensure_ascii=False))
        return 0
    print(f"{patient.address}: emergency access {'on' if emergency else 'off'}")
    print(f"{len(professionals)} known professional(s)")
    for item in professionals:
        role = " médecin traitant" if item.medecin_traitant else ""
        reply = "" if item.can_reply else " (exchange ended)"
        print(
            f"{item.id:>6}  {item.status:<10} {item.address}{role}{reply}  "
            f"last message {item.last_message_at:%Y-%m-%d}"
        )
    for representative in representatives:
        print(f"represented by {representative.representative_address}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    status: ProfessionalStatus = args.status
    refused: RightsError | None = None
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        patient = _patient(session, args.patient)
        try:
            view = set_professional_status(
                session, patient.id, _professional(args.professional), status, Actor.operator()
            )
        except RightsError as error:
            refused = error  # committed: the refusal's audit event stays
    if refused is not None:
        raise _rights_error(refused)
    print(f"{view.address} is now {view.status} for {patient.address}.")
    return 0


def run_medecin_traitant(args: argparse.Namespace) -> int:
    if args.clear == bool(args.professional):
        raise CommandError("name a professional, or give --clear")
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        patient = _patient(session, args.patient)
        if args.clear:
            cleared = clear_medecin_traitant(session, patient.id, Actor.operator())
            message = "médecin traitant cleared" if cleared else "no médecin traitant to clear"
            print(f"{patient.address}: {message}.")
            return 0
        try:
            view = set_medecin_traitant(
                session,
                patient.id,
                _professional(args.professional),
                Actor.operator(),
                create=True,
            )
        except RightsError as error:
            raise _rights_error(error) from None
    print(f"{view.address} is the médecin traitant of {patient.address}.")
    return 0


def run_emergency(args: argparse.Namespace) -> int:
    enabled = args.state == "on"
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        patient = _patient(session, args.patient)
        set_emergency_access(session, patient.id, enabled, Actor.operator())
    print(f"{patient.address}: emergency access {args.state}.")
    return 0


def run_representative(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        minor = _patient(session, args.minor)
        parent = _patient(session, args.representative)
        try:
            if args.add:
                add_representative(session, minor.id, parent.id, Actor.operator())
                print(f"{parent.address} now represents {minor.address} until their 18th birthday.")
            elif remove_representative(session, minor.id, parent.id, Actor.operator()):
                print(f"{parent.address} no longer represents {minor.address}.")
            else:
                raise CommandError(f"{parent.address} does not represent {minor.address}")
        except RightsError as error:
            raise _rights_error(error) from None
    return 0


def run_representative_list(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        patient = _patient(session, args.patient)
        representatives = representatives_of(session, patient.id)
        represented = represented_by(session, patient.id)
    for item in representatives:
        print(f"represented by {item.representative_address} (since {item.created_at:%Y-%m-%d})")
    for item in represented:
        print(f"represents {item.minor_address} (since {item.created_at:%Y-%m-%d})")
    if not representatives and not represented:
        print(f"{patient.address}: no legal representation registered")
    return 0


def run_notifications(args: argparse.Namespace) -> int:
    changes: dict[str, Any] = {}
    if args.email is not None:
        changes["email"] = args.email or None
    if args.phone is not None:
        changes["phone"] = args.phone or None
    if args.language is not None:
        changes["language"] = args.language
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        patient = _patient(session, args.patient)
        settings = NotificationSettings.from_settings(home.settings)
        try:
            if changes:
                prefs = update_preferences(
                    session,
                    patient.id,
                    changes,
                    settings,
                    actor_kind="operator",
                    actor_id="operator",
                    channel="cli",
                )
            else:
                prefs = preferences(session, patient.id, settings)
        except PreferenceError as error:
            raise CommandError(str(error)) from None
    print(json.dumps(prefs.public(), ensure_ascii=False))
    return 0
