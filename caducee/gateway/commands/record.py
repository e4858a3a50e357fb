"""``caducee record offered|add``: documents offered under the ``patient-choice`` policy (E1).

``offered ADDRESS`` lists the documents of a patient's record waiting to be added (ids, types,
sizes; no titles); ``add ADDRESS ID`` adds one for the patient (audited as the operator's act).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sqlalchemy.orm import Session

from caducee.config import load_settings
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.accounts.store import AccountKind, find_account
from caducee.records.filing import add_offered_document, offered_documents
from caducee.storage.audit import Action, ActorKind, Result, record_event


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("record", help="a patient's document record (E1)")
    actions = parser.add_subparsers(dest="record_action", metavar="ACTION", required=True)
    offered = actions.add_parser("offered", help="documents waiting for the patient to add them")
    offered.add_argument("address", help="the patient's mailbox address")
    offered.add_argument("--json", action="store_true", help="one JSON object per document")
    add_home_argument(offered)
    offered.set_defaults(handler=run_offered)
    add = actions.add_parser("add", help="add an offered document to the patient's record")
    add.add_argument("address", help="the patient's mailbox address")
    add.add_argument("id", help="the document id (from 'record offered')")
    add_home_argument(add)
    add.set_defaults(handler=run_add)


def _patient_id(session: Session, address: str) -> int:
    account = find_account(session, address)
    if account is None or account.kind != AccountKind.PATIENT.value:
        raise CommandError(f"no patient space {address}")
    return int(account.id)


def run_offered(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.reading() as session:
            documents = [
                {
                    "id": document.public_id,
                    "type": document.type_code,
                    "mime_type": document.mime_type,
                    "size": document.size,
                    "message": document.message_id,
                    "received_at": document.received_at.isoformat(),
                }
                for document in offered_documents(session, _patient_id(session, args.address))
            ]
    finally:
        gateway.close()
    if args.json:
        for document in documents:
            print(json.dumps(document))
        return 0
    print(f"{len(documents)} document(s) offered to {args.address}")
    for document in documents:
        print(
            f"{document['id']}  {document['type'] or '-':<12} {document['mime_type']:<24} "
            f"{document['size']:>9}  {document['received_at']}"
        )
    return 0


def run_add(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            patient_id = _patient_id(session, args.address)
            if add_offered_document(session, patient_id, args.id) is None:
                raise CommandError(f"no offered document {args.id} for {args.address}")
            record_event(
                session,
                actor_kind=ActorKind.OPERATOR.value,
                actor_id="cli",
                action=Action.DOCUMENT_FILE.value,
                object_type="document",
                object_id=args.id,
                result=Result.OK.value,
                rule="E1.patient-choice",
                subject_account_id=patient_id,
                channel="cli",
            )
    finally:
        gateway.close()
    print(f"document {args.id} added to the record of {args.address}")
    return 0
