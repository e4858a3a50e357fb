"""``caducee directory …``: load, search and curate the practitioner directory (K3, A3).

The directory decides who may write to a patient (B3), so an operator must be
able to load the national extractions, see what a load changed and refused,
look an entry up, and hide an entry from search. Commands:

- ``directory import FILE [--kind mss|ps] [--mode full|merge] [--json]``: load an
  ``Extraction_Correspondance_MSSante`` or ``PS_LibreAcces`` file (``.txt`` or the
  published ``.zip``). Refused lines are listed with their number and reason; the
  exit code is 0 when the import ran, whatever it refused, and 1 when it could
  not run (unreadable file, unknown format, a full import that would empty the
  directory).
- ``directory search [TEXT] [--profession P] [--speciality S] [--postal-code C]
  [--department D] [--national-id ID] [--address A] [--limit N] [--page N] [--json]``:
  TEXT is a name prefix, an address (with ``@``) or an identifier.
- ``directory show ADDRESS|NATIONAL_ID [--json]``: everything held under that key,
  red-listed rows included (this is the operator's view).
- ``directory redlist ADDRESS|NATIONAL_ID [--off]``: hide (or show again) an entry.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from caducee.directory.formats import SourceKind
from caducee.directory.importer import (
    DirectoryImportError,
    ImportCancelled,
    ImportMode,
    ImportSummary,
    import_file,
)
from caducee.directory.models import DirectoryEntry, Practitioner
from caducee.directory.search import (
    MAX_LIMIT,
    SearchError,
    SearchHit,
    SearchQuery,
    hit_from_entry,
    hit_from_practitioner,
)
from caducee.directory.service import DirectoryError, lookup, search, set_red_list
from caducee.gateway.commands import (
    CommandError,
    Subcommands,
    add_home_argument,
    confirm_removal,
)
from caducee.gateway.home import open_home

_KINDS = {"mss": SourceKind.MSS_EXTRACTION, "ps": SourceKind.PS_LIBREACCES}
_SHOWN_REJECTIONS = 20


def register(subcommands: Subcommands) -> None:
    parser = subcommands.add_parser("directory", help="the practitioner directory")
    actions = parser.add_subparsers(dest="directory_action", metavar="ACTION", required=True)

    importer = actions.add_parser(
        "import", help="import an Extraction_Correspondance_MSSante or PS_LibreAcces file"
    )
    importer.add_argument("file", type=Path, help="the extraction (.txt, or the published .zip)")
    importer.add_argument(
        "--kind",
        choices=sorted(_KINDS),
        help="refuse a file of the other kind (default: recognised from its header)",
    )
    importer.add_argument(
        "--mode",
        choices=[mode.value for mode in ImportMode],
        default=ImportMode.FULL.value,
        help="full: the file is the whole source, entries it lacks are removed (default); "
        "merge: add and update only",
    )
    importer.add_argument("--json", action="store_true", help="print the summary as JSON")
    importer.add_argument(
        "--dry-run", action="store_true", help="say what would change, change nothing"
    )
    importer.add_argument(
        "--yes", action="store_true", help="no confirmation when many entries would be removed"
    )
    add_home_argument(importer)
    importer.set_defaults(handler=run_import)

    finder = actions.add_parser("search", help="search the directory (red-listed rows hidden)")
    finder.add_argument(
        "text", nargs="?", help="a name prefix, an address (with @) or an identifier"
    )
    finder.add_argument("--profession", help="profession code (10) or label (médecin)")
    finder.add_argument("--speciality", help="savoir-faire code (SM54) or label prefix")
    finder.add_argument("--postal-code", help="postal code or its first digits")
    finder.add_argument("--department", help="department code (01, 2A, 974)")
    finder.add_argument("--national-id", help="national id (810001045367)")
    finder.add_argument("--address", help="mailbox address or its beginning")
    finder.add_argument("--limit", type=int, default=20, help=f"results per page (≤ {MAX_LIMIT})")
    finder.add_argument("--page", type=int, default=1, help="page number, from 1")
    finder.add_argument("--json", action="store_true", help="print the page as JSON")
    add_home_argument(finder)
    finder.set_defaults(handler=run_search)

    show = actions.add_parser("show", help="show the entries of an address or national id")
    show.add_argument("key", metavar="ADDRESS|NATIONAL_ID")
    show.add_argument("--json", action="store_true", help="print as JSON")
    add_home_argument(show)
    show.set_defaults(handler=run_show)

    redlist = actions.add_parser("redlist", help="hide an entry from search (red list)")
    redlist.add_argument("key", metavar="ADDRESS|NATIONAL_ID")
    redlist.add_argument("--off", action="store_true", help="take it off the red list")
    add_home_argument(redlist)
    redlist.set_defaults(handler=run_redlist)


def run_import(args: argparse.Namespace) -> int:
    path: Path = args.file
    if not path.is_file():
        raise CommandError(f"{path} is not a readable file")
    with open_home(Path(args.home)) as home:
        try:
            summary = import_file(
                home.database,
                path,
                mode=ImportMode(args.mode),
                expected=_KINDS[args.kind] if args.kind else None,
                hosted_domains=home.settings.gateway.hosted_domains,
                dry_run=args.dry_run,
                confirm_removal=lambda removed, existing: confirm_removal(
                    removed,
                    existing,
                    home.settings.lifecycle.import_removal_share,
                    assume_yes=args.yes,
                ),
            )
        except (DirectoryImportError, ImportCancelled) as error:
            raise CommandError(str(error)) from None
    if args.dry_run and not args.json:
        print("Dry run: nothing changed. The import would do this:")
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
    else:
        _print_summary(summary)
    return 0


def _print_summary(summary: ImportSummary) -> None:
    print(f"Imported {summary.file} ({summary.source}, {summary.mode}) in {summary.seconds:.1f} s:")
    print(
        f"  read {summary.read}, added {summary.added}, changed {summary.changed}, "
        f"unchanged {summary.unchanged}, removed {summary.removed}, "
        f"rejected {summary.rejected}, duplicates {summary.duplicates}"
    )
    for rejection in summary.rejections[:_SHOWN_REJECTIONS]:
        print(f"  line {rejection.line}: {rejection.reason}")
    hidden = summary.rejected - min(len(summary.rejections), _SHOWN_REJECTIONS)
    if hidden > 0:
        print(f"  … and {hidden} more refused lines (--json lists up to 1000)")
    for duplicate in summary.duplicate_lines[:_SHOWN_REJECTIONS]:
        print(
            f"  line {duplicate.line}: duplicate of {duplicate.key}, "
            f"line {duplicate.kept_line} kept"
        )
    if summary.unknown_columns:
        print(f"  columns ignored: {', '.join(summary.unknown_columns)}")


def run_search(args: argparse.Namespace) -> int:
    if args.page < 1:
        raise CommandError("--page counts from 1")
    query = SearchQuery(
        text=args.text,
        profession=args.profession,
        speciality=args.speciality,
        postal_code=args.postal_code,
        department=args.department,
        national_id=args.national_id,
        address=args.address,
        limit=args.limit,
        offset=(args.page - 1) * args.limit,
    )
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            page = search(session, query)
        except SearchError as error:
            raise CommandError(str(error)) from None
    if args.json:
        print(json.dumps(page.to_dict(), ensure_ascii=False, indent=2))
        return 0
    if not page.items:
        print("No entry found." if args.page == 1 else f"No entry on page {args.page}.")
        return 0
    for hit in page.items:
        print(_line(hit))
    more = f"; more with --page {args.page + 1}" if page.has_more else ""
    print(f"-- page {args.page}, {len(page.items)} entries{more}")
    return 0


def _line(hit: SearchHit) -> str:
    where = " ".join(part for part in (hit.postal_code, hit.city) if part)
    what = hit.profession_label or hit.organisation_name or ""
    if hit.speciality_label:
        what = f"{what} ({hit.speciality_label})" if what else hit.speciality_label
    first = hit.address or f"[{hit.national_id} – no mailbox]"
    kind = hit.bal_type or "PS"
    return " | ".join(part for part in (first, kind, hit.display_name, what, where) if part)


def run_show(args: argparse.Namespace) -> int:
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        found = lookup(session, args.key)
        rows = [_row(entry) for entry in found.entries] + [
            _row(practitioner) for practitioner in found.practitioners
        ]
    if not rows:
        raise CommandError(f"{args.key} is not in the directory")
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    for index, row in enumerate(rows):
        if index:
            print()
        for name, value in row.items():
            if value in (None, [], ""):
                continue
            if isinstance(value, dict):
                value = " ".join(str(part) for part in value.values() if part)
            elif isinstance(value, list):
                value = " / ".join(str(part) for part in value)
            print(f"{name:>14}: {value}")
    return 0


def _row(row: DirectoryEntry | Practitioner) -> dict[str, Any]:
    hit = hit_from_entry(row) if isinstance(row, DirectoryEntry) else hit_from_practitioner(row)
    data = hit.to_dict()
    data["red_list"] = row.red_list
    if isinstance(row, Practitioner):
        data["practice_mode"] = row.practice_mode
        data["activity_key"] = row.activity_key
    data["created_at"] = row.created_at.isoformat()
    data["updated_at"] = row.updated_at.isoformat()
    return data


def run_redlist(args: argparse.Namespace) -> int:
    on = not args.off
    with open_home(Path(args.home)) as home, home.database.transaction() as session:
        try:
            count = set_red_list(session, args.key, on)
        except DirectoryError as error:
            raise CommandError(str(error)) from None
    rows = "row" if count == 1 else "rows"
    print(f"{args.key}: {count} {rows} {'on' if on else 'off'} the red list")
    return 0
