"""``caducee queue list|show|retry|bounce|delete --home DIR``: the outbound relay queue.

``list`` shows what is waiting to leave (``--all``: also what left): job id,
purpose, state, age, recipients and their states, the next attempt and the
last error *codes*. It never shows content: no subject, no body, and no
address (recipient domains only with ``--json``). ``retry ID`` makes a waiting
(or dead-lettered) relay job due now. ``show ID`` prints one job with each recipient's
domain, state and last status code. ``bounce ID`` fails the recipients still pending and
sends the sender a failure DSN (the relay's own rules). ``delete ID`` drops a job and its
stored message without telling the sender: no DSN is sent, which the command says. The
admin API offers the same operations through the same functions
(:mod:`caducee.gateway.queue_admin`).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

from caducee.config import load_settings
from caducee.gateway import queue_admin
from caducee.gateway.commands import CommandError, Subcommands, add_home_argument
from caducee.gateway.relay import state
from caducee.gateway.runtime import build_gateway
from caducee.storage.db import utcnow


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
    show = actions.add_parser("show", help="one relay job: recipients' domains, states, codes")
    show.add_argument("job_id", type=int, metavar="ID", help="the job id (see 'queue list')")
    add_home_argument(show)
    show.set_defaults(handler=run_show)
    bounce = actions.add_parser(
        "bounce", help="fail a relay job's pending recipients now; the sender gets a DSN"
    )
    bounce.add_argument("job_id", type=int, metavar="ID", help="the job id (see 'queue list')")
    add_home_argument(bounce)
    bounce.set_defaults(handler=run_bounce)
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
            print(json.dumps(queue_admin.entry_view(entry, now)))
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


def run_show(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.reading() as session:
            view = queue_admin.show_job(session, args.job_id)
    except queue_admin.QueueError as error:
        raise CommandError(str(error)) from None
    finally:
        gateway.close()
    print(json.dumps(view, indent=2))
    return 0


def run_retry(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            queue_admin.retry_job(session, args.job_id)
    except queue_admin.QueueError as error:
        message = f"{error}: nothing to retry" if error.status == 409 else str(error)
        raise CommandError(message) from None
    finally:
        gateway.close()
    print(f"relay job {args.job_id} will be attempted now (by the running gateway's workers)")
    return 0


def run_bounce(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            bounced = queue_admin.bounce_job(gateway, session, args.job_id)
    except queue_admin.QueueError as error:
        raise CommandError(str(error)) from None
    finally:
        gateway.close()
    told = (
        "the sender gets a failure DSN" if bounced.dsn else "no DSN (the message had none to go to)"
    )
    print(f"relay job {args.job_id} bounced: {bounced.failed} recipient(s) failed; {told}")
    return 0


def run_delete(args: argparse.Namespace) -> int:
    gateway = build_gateway(load_settings(Path(args.home)))
    try:
        with gateway.database.transaction() as session:
            count = queue_admin.delete_job(gateway, session, args.job_id)
    except queue_admin.QueueError as error:
        raise CommandError(
            f"{error}; try again in a moment" if error.code == "busy" else str(error)
        ) from None
    finally:
        gateway.close()
    print(
        f"relay job {args.job_id} deleted with its stored message ({count} recipient(s)); "
        "no DSN was sent: the sender is not told"
    )
    return 0
