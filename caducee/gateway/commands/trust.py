"""``caducee trust …``: manage the trust space of a gateway (A5).

The trust space is what lets another operator exchange mail with this gateway:
its domain must be listed (the national whitelist, or a domain added by hand)
and its TLS certificate must chain to a trust anchor. These commands import the
whitelist, manage the anchors, add a domain by hand and tell whether a domain
is trusted, so that an operator can see and fix why a peer is refused.

- ``trust import FILE [--dry-run] [--yes]``: replace the whitelist rows with the file's
  content (``--dry-run``: say what would change; a confirmation when more than
  ``[lifecycle] import_removal_share`` of the domains would go).
  A truncated file is normal for the published list: the report says what was
  lost and the exit code is 0; it is 1 only when nothing could be imported.
- ``trust add-anchor FILE``, ``trust anchors``, ``trust remove-anchor FINGERPRINT``.
- ``trust add-domain DOMAIN [--operator-dn DN]``.
- ``trust check DOMAIN``: exit 0 when the domain is in the trust space, 1 otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sqlalchemy import select

from caducee.directory.anchors import AnchorError, add_anchor_file, list_anchors, remove_anchor
from caducee.directory.trust_models import (
    DomainError,
    TrustDomain,
    add_trust_domain,
    is_trusted_domain,
    to_ascii_domain,
)
from caducee.gateway.commands import (
    CommandError,
    Subcommands,
    add_home_argument,
    confirm_removal,
)
from caducee.gateway.home import open_home
from caducee.gateway.imports import import_trust
from caducee.storage.db import utcnow


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("trust", help="manage the trust space (domains, anchors)")
    actions = parser.add_subparsers(dest="trust_action", metavar="ACTION", required=True)

    importer = actions.add_parser("import", help="import the national MSSanté whitelist XML")
    importer.add_argument("file", type=Path, help="the whitelist file (listeblanchemssante.xml)")
    importer.add_argument(
        "--dry-run", action="store_true", help="say what would change, change nothing"
    )
    importer.add_argument(
        "--yes", action="store_true", help="no confirmation when many domains would be removed"
    )
    add_home_argument(importer)
    importer.set_defaults(handler=run_import)

    add_anchor = actions.add_parser("add-anchor", help="add CA certificates from a PEM file")
    add_anchor.add_argument("file", type=Path, help="PEM file with one or more CA certificates")
    add_home_argument(add_anchor)
    add_anchor.set_defaults(handler=run_add_anchor)

    anchors = actions.add_parser("anchors", help="list the trust anchors")
    add_home_argument(anchors)
    anchors.set_defaults(handler=run_anchors)

    remove = actions.add_parser("remove-anchor", help="remove a trust anchor")
    remove.add_argument("fingerprint", help="SHA-256 fingerprint, or a unique prefix of it")
    add_home_argument(remove)
    remove.set_defaults(handler=run_remove_anchor)

    add_domain = actions.add_parser("add-domain", help="add an operator domain by hand")
    add_domain.add_argument("domain", help="the domain (Unicode or A-label)")
    add_domain.add_argument(
        "--operator-dn", default="", help="the operator certificate DN (optional)"
    )
    add_home_argument(add_domain)
    add_domain.set_defaults(handler=run_add_domain)

    check = actions.add_parser("check", help="is a domain in the trust space? (exit 0 if so)")
    check.add_argument("domain", help="the domain (Unicode or A-label)")
    add_home_argument(check)
    check.set_defaults(handler=run_check)


def run_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CommandError(f"{path} is not a readable file")
    with open_home(Path(args.home)) as home:
        share = home.settings.lifecycle.import_removal_share
        outcome = import_trust(
            home.database,
            path,
            dry_run=args.dry_run,
            confirm=lambda removed, existing: confirm_removal(
                removed, existing, share, assume_yes=args.yes
            ),
        )
    if args.dry_run:
        print("Dry run: nothing changed. The import would do this:")
    for line in outcome.report.summary_lines():
        print(line)
    if not outcome.report.imported:
        print("Nothing could be imported; the trust space is unchanged.")
        return 1
    if outcome.cancelled:
        print("Cancelled: the trust space is unchanged.")
        return 1
    return 0


def run_add_anchor(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home:
        try:
            with home.database.transaction() as session:
                report = add_anchor_file(session, Path(args.file))
        except AnchorError as error:
            raise CommandError(str(error)) from None
    for info in report.added:
        print(f"added    {info.fingerprint}  {info.subject}")
    for info in report.already_present:
        print(f"present  {info.fingerprint}  {info.subject}")
    for refused in report.refused:
        subject = refused.subject or "?"
        print(f"REFUSED  certificate {refused.position} ({subject}): {refused.reason}")
    for label in report.ignored_blocks:
        print(f"ignored  a PEM block {label!r} (not a certificate; not stored)")
    print(
        f"Added {len(report.added)}, already present {len(report.already_present)}, "
        f"refused {len(report.refused)}."
    )
    return 1 if report.refused or not report.accepted else 0


def run_anchors(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        anchors = list_anchors(session)
    now = utcnow()
    for info in anchors:
        state = "EXPIRED" if info.not_after <= now else "valid"
        print(f"{info.fingerprint}  {state} until {info.not_after:%Y-%m-%d}  {info.subject}")
    print(f"{len(anchors)} trust anchor(s).")
    return 0


def run_remove_anchor(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home:
        try:
            with home.database.transaction() as session:
                info = remove_anchor(session, args.fingerprint)
        except AnchorError as error:
            raise CommandError(str(error)) from None
    print(f"Removed trust anchor {info.fingerprint} ({info.subject}).")
    return 0


def run_add_domain(args: argparse.Namespace) -> int:
    operator_dn: str = args.operator_dn.strip()
    if len(operator_dn) > 500:
        raise CommandError("the operator DN is longer than 500 characters")
    try:
        ascii_domain = to_ascii_domain(args.domain)
    except DomainError as error:
        raise CommandError(f"{args.domain!r}: {error}") from None
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        existing = session.scalar(
            select(TrustDomain.id).where(
                TrustDomain.domain == ascii_domain, TrustDomain.operator_dn == operator_dn
            )
        )
        if existing is None:
            add_trust_domain(session, ascii_domain, source="manual", operator_dn=operator_dn)
    if existing is None:
        print(f"Added {ascii_domain} to the trust space.")
    else:
        print(f"{ascii_domain} is already in the trust space for this operator.")
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        ascii_domain = to_ascii_domain(args.domain)
    except DomainError as error:
        print(f"{args.domain!r} is not a valid domain name ({error}): not in the trust space.")
        return 1
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        trusted = is_trusted_domain(session, ascii_domain)
        rows = session.execute(
            select(TrustDomain.operator_dn, TrustDomain.source)
            .where(TrustDomain.domain == ascii_domain)
            .order_by(TrustDomain.operator_dn)
        ).all()
    if not trusted:
        print(f"{ascii_domain} is NOT in the trust space.")
        return 1
    print(f"{ascii_domain} is in the trust space:")
    for operator_dn, source in rows:
        print(f"  {source}: {operator_dn or '(no operator DN)'}")
    return 0
