"""``caducee queue list|retry|delete --home DIR``: the outbound relay queue, for the operator.

``list`` shows what is waiting to leave (``--all``: also what left): job id,
purpose, state, age, recipients and their states, the next attempt and the
last error *codes*. It never shows content: no subject, no body, and no
address (recipient domains only with ``--json``). ``retry ID`` makes a waiting
(or dead-lettered) relay job due now. ``delete ID`` drops a job and its stored
message without telling the sender: no DSN is sent, which the command says.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from caducee.config import load_settings
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.relay import state
from caducee.gateway.runtime import build_gateway
from caducee.storage.db import utcnow
from caducee.storage.jobs import RUNNING


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("queue", help="inspect and repair the outbound relay queue")
    actions = parser.add_subparsers(dest="queue_action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="relay jobs waiting (ids, states, codes; no content)")
    listing.add_argument("--all", action="store_true", help="also the jobs already finished")
    listing.add_argument("--json", action="store_true", help="one JSON object per job")
    add_home_argument(listing)
    listing.set_defaults(handler=run_list)
    retry = actions.add_parser("retry", help="attempt a waiting relay job now")
    retry.add_argument("job_id", type=int, metavar="ID", help="the job id (see 'queue list')")
    add_home_argument(retry)
    retry.set_defaults(handler=run_retry)
    remove = actions.add_parser("delete", help="drop a relay job without notifying the sender")
    remove.add_argument("job_id", type=int, metavar="ID", help="the job id (see 'queue list')")
    add_home_argument(remove)
    remove.set_defaults(handler=run_delete)


def age(since: datetime, now: datetime) -> str:
    """``3d04h``, ``4h12m``, ``5m07s``: short and sortable by eye."""
    seconds = max(int((now - since).total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"


def _states(entry: state.QueueEntry) -> str:
    order = ("queued", "pending", "delivered", "failed")
    parts = [f"{name} {entry.states[name]}" for name in order if entry.states.get(name)]
    return f"{entry.recipients} ({', '.join(parts)})" if parts else str(entry.recipients)


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else "-"


def run_list(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.reading() as session:
            entries = state.list_queue(session, include_done=args.all)
    finally:
        gateway.close()
    now = utcnow()
    if args.json:
        for entry in entries:
            print(
                json.dumps(
                    {
                        "id": entry.job_id,
                        "purpose": entry.purpose,
                        "state": entry.job_state,
                        "created": entry.created_at.isoformat(),
                        "age_seconds": int((now - entry.created_at).total_seconds()),
                        "attempts": entry.attempts,
                        "recipients": entry.recipients,
                        "recipient_states": entry.states,
                        "recipient_domains": list(entry.domains),
                        "next_attempt": entry.next_attempt_at.isoformat()
                        if entry.next_attempt_at
                        else None,
                        "expires": entry.expires_at.isoformat() if entry.expires_at else None,
                        "last_error": entry.last_error,
                    }
                )
            )
        return 0
    what = "relay job(s)" if args.all else "relay job(s) waiting"
    print(f"{len(entries)} {what}")
    if entries:
        print(
            f"{'ID':>7}  {'PURPOSE':<10}  {'STATE':<7}  {'AGE':>7}  {'TRIES':>5}  "
            f"{'RECIPIENTS':<30}  {'NEXT ATTEMPT (UTC)':<19}  LAST ERROR"
        )
    for entry in entries:
        print(
            f"{entry.job_id:>7}  {entry.purpose[:10]:<10}  {entry.job_state:<7}  "
            f"{age(entry.created_at, now):>7}  {entry.attempts:>5}  {_states(entry):<30}  "
            f"{_when(entry.next_attempt_at):<19}  {entry.last_error or '-'}"
        )
    return 0


def run_retry(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            job = state.relay_job(session, args.job_id)
            if job is None:
                raise CommandError(f"no relay job {args.job_id}")
            if not state.retry_now(session, args.job_id, utcnow()):
                raise CommandError(
                    f"relay job {args.job_id} is {job.state}: nothing to retry"
                    + (" (it is being attempted right now)" if job.state == RUNNING else "")
                )
    finally:
        gateway.close()
    print(f"relay job {args.job_id} will be attempted now (by the running gateway's workers)")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            job = state.relay_job(session, args.job_id)
            if job is None:
                raise CommandError(f"no relay job {args.job_id}")
            lease = job.locked_until
            if job.state == RUNNING and lease is not None and lease > utcnow():
                raise CommandError(
                    f"relay job {args.job_id} is being attempted right now; try again in a moment"
                )
            dropped = state.delete_job(session, args.job_id)
            assert dropped is not None
            blob_id, count = dropped
            if blob_id:
                gateway.blobs.delete(session, blob_id)
    finally:
        gateway.close()
    print(
        f"relay job {args.job_id} deleted with its stored message ({count} recipient(s)); "
        "no DSN was sent: the sender is not told"
    )
    return 0
