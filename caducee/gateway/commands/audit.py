"""``caducee audit …``: check and read the hash-chained audit trail (F4).

``verify`` recomputes the whole chain and exits 1 at the first event that was edited or
deleted, naming its position; on success it prints the head hash, which an operator can keep
elsewhere (a ticket, a notary, another system) to anchor the chain. ``list`` shows the latest
events, optionally about one patient; events never hold content, only ids.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.home import open_home
from caducee.mailboxes.access.rights import patient_account, patient_by_ins
from caducee.storage.audit import AuditEvent, history, recent, verify_chain


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("audit", help="verify and read the audit trail")
    actions = parser.add_subparsers(dest="audit_action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check that no event was edited or deleted")
    add_home_argument(verify)
    verify.set_defaults(handler=run_verify)
    listing = actions.add_parser("list", help="the latest events")
    listing.add_argument("--patient", help="only events about this patient (address or INS)")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="one JSON object per event")
    add_home_argument(listing)
    listing.set_defaults(handler=run_list)


def run_verify(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.reading() as session:
        report = verify_chain(session)
    if not report.intact:
        raise CommandError(
            f"audit chain broken at position {report.broken_at}: {report.problem} "
            f"({report.events} event(s) checked before it)"
        )
    print(
        f"audit chain intact: {report.events} event(s), head {report.head_position} "
        f"{report.head_hash}"
    )
    return 0


def _line(event: AuditEvent) -> dict[str, object]:
    return {
        "position": int(event.position),
        "at": event.occurred_at.isoformat(),
        "actor": f"{event.actor_kind}:{event.actor_id}",
        "action": event.action,
        "object": f"{event.object_type}:{event.object_id}",
        "result": event.result,
        "rule": event.rule,
        "subject": event.subject_account_id,
        "channel": event.channel,
    }


def run_list(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.reading() as session:
        if args.patient:
            name = args.patient
            account = (
                patient_account(session, name) if "@" in name else patient_by_ins(session, name)
            )
            if account is None:
                raise CommandError(f"no patient space {name}")
            events = history(session, account.id, limit=args.limit)
        else:
            events = recent(session, limit=args.limit)
        lines = [_line(event) for event in events]
    for line in lines:
        if args.json:
            print(json.dumps(line, ensure_ascii=False))
        else:
            print(
                f"{line['position']:>8}  {line['at']}  {line['actor']:<28} {line['action']:<24} "
                f"{line['object']:<40} {line['result']} {line['rule'] or ''}"
            )
    return 0
