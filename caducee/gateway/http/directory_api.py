"""The directory's JSON API: search and look up professionals (A3).

Mail clients and webmail look up correspondents while composing, so the API
answers the same searches as ``caducee directory search`` and never shows a
red-listed row. Routes:

- ``GET /api/directory/search?q=&profession=&speciality=&postal_code=&department=
  &national_id=&address=&kind=&limit=&offset=``: a page of results,
  ``{"items": [...], "offset", "limit", "has_more", "next_offset"}``;
- ``GET /api/directory/entries/{address_or_id}``: the mailbox at an address, or
  ``{"national_id", "items"}`` for the mailboxes and activities of a national id.

Bad parameters are ``400`` and unknown or red-listed keys ``404``, both as
``application/problem+json`` (RFC 9457). Database work runs in Starlette's thread
pool (the endpoints are plain functions), never on the event loop.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from caducee.directory.search import (
    MAX_LIMIT,
    HitKind,
    SearchError,
    SearchQuery,
    hit_from_entry,
    hit_from_practitioner,
)
from caducee.directory.service import lookup, search
from caducee.storage.db import Database

PROBLEM_JSON = "application/problem+json"
_QUERY_PARAMETERS = frozenset(
    {
        "q",
        "profession",
        "speciality",
        "postal_code",
        "department",
        "national_id",
        "address",
        "kind",
        "limit",
        "offset",
    }
)


def problem(status: int, title: str, detail: str) -> JSONResponse:
    """An RFC 9457 problem response."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    body["detail"] = detail
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


class _BadRequest(Exception):
    pass


def _integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _BadRequest(f"{name} must be between {low} and {high}")
    return value


def _text(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise _BadRequest(f"{name} is given {len(values)} times")
    value = values[0].strip() if values else ""
    if len(value) > 320:
        raise _BadRequest(f"{name} is longer than 320 characters")
    return value or None


def _query(request: Request) -> SearchQuery:
    unknown = sorted(set(request.query_params.keys()) - _QUERY_PARAMETERS)
    if unknown:
        raise _BadRequest(f"unknown parameter {unknown[0]!r}")
    kind = _text(request, "kind")
    if kind is None:
        kinds = frozenset(HitKind)
    else:
        try:
            kinds = frozenset({HitKind(kind)})
        except ValueError:
            raise _BadRequest("kind must be 'mailbox' or 'activity'") from None
    return SearchQuery(
        text=_text(request, "q"),
        profession=_text(request, "profession"),
        speciality=_text(request, "speciality"),
        postal_code=_text(request, "postal_code"),
        department=_text(request, "department"),
        national_id=_text(request, "national_id"),
        address=_text(request, "address"),
        kinds=kinds,
        limit=_integer(request, "limit", 20, 1, MAX_LIMIT),
        offset=_integer(request, "offset", 0, 0, 10_000),
    )


def directory_routes(database: Database) -> list[BaseRoute]:
    """The directory API's routes, bound to ``database``."""

    def search_endpoint(request: Request) -> Response:
        try:
            query = _query(request)
            with database.transaction() as session:
                page = search(session, query)
        except (_BadRequest, SearchError) as error:
            return problem(400, "Invalid directory search", str(error))
        return JSONResponse(page.to_dict())

    def entry_endpoint(request: Request) -> Response:
        key = str(request.path_params["key"]).strip()
        if not key or len(key) > 320:
            return problem(400, "Invalid directory key", "give a mailbox address or a national id")
        with database.transaction() as session:
            found = lookup(session, key)
            entries = [hit_from_entry(entry) for entry in found.entries if not entry.red_list]
            activities = [
                hit_from_practitioner(row) for row in found.practitioners if not row.red_list
            ]
        if "@" in key:
            if not entries:
                return problem(404, "Not in the directory", f"no listed mailbox {key}")
            return JSONResponse(entries[0].to_dict())
        items = entries + activities
        if not items:
            return problem(404, "Not in the directory", f"no listed entry for {key}")
        return JSONResponse(
            {"national_id": key.upper(), "items": [item.to_dict() for item in items]}
        )

    return [
        Route("/api/directory/search", search_endpoint, methods=["GET"]),
        Route("/api/directory/entries/{key:path}", entry_endpoint, methods=["GET"]),
    ]
