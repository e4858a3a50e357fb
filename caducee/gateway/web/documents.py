"""The webmail's documents pages: the patient's record, its documents, adding to it (issue 17).

=====  ==========================================  ==========================================
GET    ``/webmail/documents``                      the record: filters (type, dates, author,
                                                   words of the title), sort, pages
GET    ``/webmail/documents/add``                  offered documents (E1 ``patient-choice``)
                                                   and the form for a file of one's own
POST   ``/webmail/documents/add``                  add a file of one's own (≤ 5 MB, E1 formats)
POST   ``/webmail/documents/offered/{id}/add``     add an offered document to the record
GET    ``/webmail/documents/{id}``                 one document: shown (PDF, image, text, a
                                                   CDA's narrative), versions, visibility
GET    ``/webmail/documents/{id}/content``         its bytes (``?inline=1`` to frame a PDF or
                                                   an image, ``?rendition=1`` a CDA's rendition)
POST   ``/webmail/documents/{id}/visibility``      hide from professionals / show again (E5)
GET    ``/webmail/documents/{id}/send``            "Envoyer à un professionnel": the new-
                                                   message page with this document attached
                                                   (:mod:`.compose`; :func:`record_file`)
=====  ==========================================  ==========================================

The rules live in :mod:`caducee.records` (what the patient may see: ``service.visible``;
the changes and their audit events: :mod:`caducee.records.patient_view`). A document that is
not the signed-in patient's — or does not exist — is the same 404 page. Every change is a
POST with the session's CSRF token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from caducee.directory.service import find_by_address
from caducee.gateway.web.mailbox import attachment_bytes
from caducee.gateway.web.privacy import (
    ActingFor,
    acting_for,
    form_day,
    privacy_routes,
    refuse_caregiver,
    today_in_france,
)
from caducee.gateway.web.security import DOWNLOAD_POLICY, same_origin
from caducee.gateway.web.sessions import Signed, csrf_matches
from caducee.mailboxes.access.caregivers import caregiver_profiles
from caducee.mailboxes.access.rights import represented_by
from caducee.records.filing import offered_documents
from caducee.records.model import SourceFormat
from caducee.records.models import RecordDocument
from caducee.records.patient_view import (
    MAX_OWN_FILE,
    MAX_TITLE,
    ListQuery,
    OwnFileRefusal,
    Sort,
    add_offered,
    add_own_file,
    author_label,
    cda_text,
    document_bytes,
    find_document,
    is_superseded,
    is_withdrawn,
    list_documents,
    newer_version,
    set_pinned,
    set_professional_visibility,
)
from caducee.records.service import Viewer

if TYPE_CHECKING:
    from caducee.gateway.web.app import Webmail

FRAMED_POLICY = "default-src 'none'; img-src 'self'; frame-ancestors 'self'"
"""A PDF or an image shown in the document page's frame: nothing loaded, framed by us only."""
SANDBOXED_FRAME_POLICY = "sandbox; default-src 'none'; frame-ancestors 'self'"
INLINE_TYPES = frozenset({"application/pdf", "image/jpeg", "image/png"})
UPLOAD_SLACK = 64 * 1024
"""Room for the form's other fields and multipart framing around a 5 MB file."""
MAX_TEXT_SHOWN = 200_000


def _not_found() -> HTTPException:
    return HTTPException(404)


def viewer_of(acting: ActingFor) -> Viewer:
    """Who reads the record shown: the patient, a legal representative or a caregiver (F3;
    what each may see is the E5 table's, :func:`caducee.records.service.shown_to`)."""
    if acting.caregiver:
        return Viewer.CAREGIVER
    return Viewer.REPRESENTATIVE if acting.representative else Viewer.PATIENT


def _public_id(request: Request) -> str:
    value = str(request.path_params["id"])
    if not (0 < len(value) <= 32 and value.isalnum()):
        raise _not_found()
    return value


_EXTENSIONS = {
    "application/pdf": "pdf",
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/tiff": "tiff",
    "text/plain": "txt",
    "application/rtf": "rtf",
    "application/msword": "doc",
    "text/xml": "xml",
    "application/xml": "xml",
}


@dataclass(frozen=True)
class RecordFile:
    """A document of the record as a file to attach to a message (H2: "sending a record
    document to a professional")."""

    public_id: str
    name: str
    content_type: str
    data: bytes


def _file_name(document: RecordDocument) -> str:
    """The name the professional receives: the name it was filed under, else its title with
    the extension of its type."""
    if document.entry_name:
        return document.entry_name.replace("\\", "/").rsplit("/", 1)[-1]
    title = _shown_title(document) or "document"
    extension = _EXTENSIONS.get(document.mime_type or "", "")
    return f"{title}.{extension}" if extension and not title.endswith(f".{extension}") else title


async def record_file(
    web: Webmail, request: Request, signed: Signed, public_id: str
) -> RecordFile | None:
    """The bytes of one document of the record the documents pages show now, for a message.

    Through the documents pages' own path: the profile chosen (a representative's view leaves
    out ``INVISIBLE_REPRESENTANTS_LEGAUX`` documents, F3/E5), :func:`find_document` and
    :func:`document_bytes` (the read audited, F4). A document masked from professionals may be
    sent: hiding it is the patient's choice, and so is sending it. A withdrawn document, one
    not in the record shown, or a malformed id is None (the caller's 404).
    """
    if not (0 < len(public_id) <= 32 and public_id.isalnum()):
        return None
    acting = await acting_for(web, request, signed)
    viewer = viewer_of(acting)

    def read() -> RecordFile | None:
        with web.gateway.database.transaction() as session:
            document = find_document(session, acting.record_id, public_id, viewer)
            if document is None or is_withdrawn(document):
                return None
            data = document_bytes(
                session,
                web.gateway.blobs,
                document,
                reader_account_id=signed.account_id,
                viewer=viewer,
            )
            if data is None:
                return None
            mime = document.mime_type or "application/octet-stream"
            if "/" not in mime or any(char in mime for char in "\r\n;,"):
                mime = "application/octet-stream"
            return RecordFile(public_id, _file_name(document), mime, data)

    return await run_in_threadpool(read)


def _query(request: Request) -> ListQuery:
    params = request.query_params
    raw_page = params.get("page", "1")
    sort_value = params.get("sort", Sort.NEWEST.value)
    return ListQuery(
        type_code=params.get("type", "")[:64],
        author=params.get("author", "")[:64],
        since=form_day(params.get("from")),
        until=form_day(params.get("to")),
        words=params.get("q", "")[:100],
        sort=Sort(sort_value) if sort_value in Sort._value2member_map_ else Sort.NEWEST,
        page=int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1,
        pinned_only=params.get("pinned") == "1",
    )


def _sender_names(session: Session, documents: Iterable[RecordDocument]) -> dict[str, str]:
    """Directory names of the senders of documents that name no author (E2: from the mail)."""
    names: dict[str, str] = {}
    for document in documents:
        sender = document.sender
        if not sender or sender in names or author_label(document):
            continue
        entry = find_by_address(session, sender)
        person = (
            " ".join(part for part in (entry.given_name, entry.family_name) if part)
            if entry is not None
            else ""
        )
        names[sender] = person or (entry.organisation_name if entry is not None else "") or ""
    return names


def _shown_title(document: RecordDocument) -> str:
    title = " ".join((document.title or document.type_display or "").split())
    return title


class DocumentPages:
    """The handlers of the documents pages, bound to the webmail."""

    def __init__(self, web: Webmail) -> None:
        self.web = web
        self.gateway = web.gateway
        self.upload_limit = max(
            0, min(MAX_OWN_FILE, web.settings.http.webmail_upload_max_bytes - UPLOAD_SLACK)
        )
        """5 MB, or less when the webmail takes smaller forms (``[http] webmail_upload_max_bytes``):
        a body over that limit is refused before the webmail sees it."""

    # -- the list -----------------------------------------------------------------------------

    async def listing(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        query = _query(request)
        acting = await acting_for(self.web, request, signed)
        viewer = viewer_of(acting)

        def read() -> tuple[Any, int, dict[str, str], bool]:
            with self.gateway.database.reading() as session:
                page = list_documents(session, acting.record_id, query, viewer)
                offered = (
                    0 if acting.for_someone else len(offered_documents(session, signed.account_id))
                )
                senders = _sender_names(session, page.documents)
                for document in page.documents:
                    session.expunge(document)
                represents = bool(represented_by(session, signed.account_id)) or bool(
                    caregiver_profiles(session, signed.account_id, today_in_france())
                )
                return page, offered, senders, represents

        page, offered, senders, represents = await run_in_threadpool(read)
        filters = {
            "type": query.type_code,
            "author": query.author,
            "from": query.since.isoformat() if query.since else "",
            "to": query.until.isoformat() if query.until else "",
            "q": query.words,
            "sort": query.sort.value,
            "pinned": "1" if query.pinned_only else "",
        }
        kept = {key: value for key, value in filters.items() if value}

        def page_href(number: int) -> str:
            return "/webmail/documents?" + urlencode({**kept, "page": number})

        return self._render(
            request,
            "documents.html",
            {
                "listing": page,
                "rows": [self._row(document, senders) for document in page.documents],
                "filters": filters,
                "filtered": any(
                    kept.get(key) for key in ("type", "author", "from", "to", "q", "pinned")
                ),
                "page_href": page_href,
                "offered": offered,
                "added": request.query_params.get("added") == "1",
                "acting": acting,
                "represents": represents,
            },
            signed,
        )

    @staticmethod
    def _row(document: RecordDocument, senders: dict[str, str] | None = None) -> dict[str, Any]:
        author = author_label(document)
        if not author and document.message_id is not None and document.sender:
            author = (senders or {}).get(document.sender, "")
        return {
            "id": document.public_id,
            "title": _shown_title(document),
            "type": document.type_display or document.type_code or "",
            "author": author,
            "date": document.document_date,
            "withdrawn": is_withdrawn(document),
            "superseded": is_superseded(document),
            "hidden": document.hidden_from_professionals,
            "pinned": document.pinned,
            "own": document.message_id is None,
        }

    def _render(
        self,
        request: Request,
        template: str,
        context: dict[str, Any],
        signed: Signed,
        status: int = 200,
    ) -> Response:
        return self.web._render(
            request,
            template,
            {"section": "documents", "max_title": MAX_TITLE, **context},
            status=status,
            signed=signed,
        )

    # -- one document -------------------------------------------------------------------------

    async def document(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        public_id = _public_id(request)
        acting = await acting_for(self.web, request, signed)
        viewer = viewer_of(acting)

        def read() -> dict[str, Any] | None:
            with self.gateway.database.transaction() as session:
                document = find_document(session, acting.record_id, public_id, viewer)
                if document is None:
                    return None
                newer = newer_version(session, document)
                shown: dict[str, Any] = {
                    "row": self._row(document, _sender_names(session, [document])),
                    "full_title": _shown_title(document),
                    "mime_type": document.mime_type,
                    "size": document.size,
                    "newer": newer.public_id if newer is not None else None,
                    "sender": document.sender if document.message_id is None else None,
                    "organisation": document.organisation_name,
                    "view": None,
                    "text": None,
                    "rendition": document.rendition_blob_id is not None,
                }
                if is_withdrawn(document):
                    return shown
                base = f"/webmail/documents/{public_id}/content"
                if document.mime_type in INLINE_TYPES:
                    kind = "pdf" if document.mime_type == "application/pdf" else "image"
                    shown["view"] = {"kind": kind, "src": base + "?inline=1"}
                elif document.source_format == SourceFormat.TEXT.value:
                    data = document_bytes(
                        session,
                        self.gateway.blobs,
                        document,
                        reader_account_id=signed.account_id,
                        viewer=viewer,
                    )
                    if data is not None:
                        shown["text"] = data[:MAX_TEXT_SHOWN].decode("utf-8", "replace")
                elif document.source_format == SourceFormat.CDA.value:
                    if document.rendition_mime_type == "application/pdf":
                        shown["view"] = {"kind": "pdf", "src": base + "?inline=1&rendition=1"}
                    data = document_bytes(
                        session,
                        self.gateway.blobs,
                        document,
                        reader_account_id=signed.account_id,
                        viewer=viewer,
                    )
                    if data is not None:
                        shown["text"] = cda_text(data)
                return shown

        shown = await run_in_threadpool(read)
        if shown is None:
            raise _not_found()
        return self._render(
            request,
            "document.html",
            {**shown, "changed": request.query_params.get("changed", ""), "acting": acting},
            signed,
        )

    async def content(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        public_id = _public_id(request)
        inline = request.query_params.get("inline") == "1"
        rendition = request.query_params.get("rendition") == "1"
        acting = await acting_for(self.web, request, signed)
        viewer = viewer_of(acting)

        def read() -> tuple[bytes, str, str] | None:
            with self.gateway.database.transaction() as session:
                document = find_document(session, acting.record_id, public_id, viewer)
                if document is None:
                    return None
                if rendition and document.rendition_blob_id is None:
                    return None
                data = document_bytes(
                    session,
                    self.gateway.blobs,
                    document,
                    rendition=rendition,
                    reader_account_id=signed.account_id,
                    viewer=viewer,
                )
                if data is None:
                    return None
                mime = (
                    document.rendition_mime_type if rendition else document.mime_type
                ) or "application/octet-stream"
                name = document.entry_name or _shown_title(document) or "document"
                return data, mime, name

        found = await run_in_threadpool(read)
        if found is None:
            raise _not_found()
        data, mime, name = found
        if "/" not in mime or any(char in mime for char in "\r\n;,"):
            mime = "application/octet-stream"
        if inline and mime in INLINE_TYPES:
            return Response(
                data,
                media_type=mime,
                headers={
                    "Content-Disposition": "inline",
                    "Content-Security-Policy": FRAMED_POLICY
                    if mime == "application/pdf"
                    else SANDBOXED_FRAME_POLICY,
                },
            )
        return Response(
            data,
            media_type=mime,
            headers={
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
                "Content-Security-Policy": DOWNLOAD_POLICY,
            },
        )

    async def _own_document_change(
        self,
        request: Request,
        field: str,
        change: Callable[[Session, int, str, bool], bool],
        said: tuple[str, str],
        anchor: str,
    ) -> Response:
        """A yes/no change the patient makes to a document of their own record (the form's
        ``field`` is "1" for yes): a caregiver gets the national app's refusal (403, the
        helped person's name), a document not in the patient's list a 404."""
        signed, form = await self.web._post(request)
        public_id = _public_id(request)
        acting = await acting_for(self.web, request, signed)
        if acting.caregiver:
            return refuse_caregiver(
                self.web, request, signed, acting, f"/webmail/documents/{public_id}"
            )
        wanted = form.get(field) == "1"

        def write() -> bool:
            with self.gateway.database.transaction() as session:
                return change(session, signed.account_id, public_id, wanted)

        if not await run_in_threadpool(write):
            raise _not_found()
        changed = said[0] if wanted else said[1]
        return RedirectResponse(
            f"/webmail/documents/{public_id}?changed={changed}#{anchor}", status_code=303
        )

    async def visibility(self, request: Request) -> Response:
        """E5: the patient hides a document from professionals, or shows it again."""
        return await self._own_document_change(
            request, "hidden", set_professional_visibility, ("hidden", "shown"), "visibility"
        )

    async def pin(self, request: Request) -> Response:
        """H2: the patient pins a document or unpins it (the national app's "Épingle
        ajoutée" / "Épingle retirée")."""
        return await self._own_document_change(
            request, "pinned", set_pinned, ("pinned", "unpinned"), "pin"
        )

    # -- adding -------------------------------------------------------------------------------

    def _add_context(self, signed: Signed) -> dict[str, Any]:
        with self.gateway.database.reading() as session:
            documents = offered_documents(session, signed.account_id)
            senders = _sender_names(session, documents)
            return {
                "offered_rows": [
                    {
                        **self._row(document, senders),
                        "size": document.size,
                        "message_id": document.message_id,
                    }
                    for document in documents
                ],
                "max_size": self.upload_limit,
            }

    async def add_page(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        context = await run_in_threadpool(self._add_context, signed)
        return self._render(
            request,
            "documents_add.html",
            {**context, "error": None, "title": "", "added": None},
            signed,
        )

    async def add_offered(self, request: Request) -> Response:
        signed, _form = await self.web._post(request)
        public_id = _public_id(request)

        def change() -> bool:
            with self.gateway.database.transaction() as session:
                return add_offered(session, signed.account_id, public_id)

        if not await run_in_threadpool(change):
            raise _not_found()
        return RedirectResponse(f"/webmail/documents/{public_id}?changed=added", status_code=303)

    async def add_file(self, request: Request) -> Response:
        """A file of one's own; over 5 MB it is refused before it is read (413, clear text)."""
        if not same_origin(request):
            return await self.web.forbidden(request, Exception())
        signed = await self.web._page_session(request)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.upload_limit + UPLOAD_SLACK:
            return await self._refuse(request, signed, OwnFileRefusal.TOO_LARGE, "", 413)
        form = await request.form(max_files=1, max_fields=5)
        try:
            given = form.get("csrf")
            if not csrf_matches(signed.csrf_token, given if isinstance(given, str) else None):
                return await self.web.forbidden(request, Exception())
            upload = form.get("file")
            raw_title = form.get("title")
            title = raw_title if isinstance(raw_title, str) else ""
            if not isinstance(upload, UploadFile):
                return await self._refuse(request, signed, OwnFileRefusal.EMPTY, title, 422)
            data = await upload.read(self.upload_limit + 1)
            name = (upload.filename or "document")[:255]
            content_type = upload.content_type
        finally:
            await form.close()

        def change() -> str | OwnFileRefusal:
            with self.gateway.database.transaction() as session:
                outcome = add_own_file(
                    session,
                    self.gateway.blobs,
                    signed.account_id,
                    file_name=name,
                    content_type=content_type,
                    data=data,
                    title=title,
                    sender=signed.address,
                    max_bytes=self.upload_limit,
                )
                return outcome if isinstance(outcome, OwnFileRefusal) else outcome.public_id

        outcome = await run_in_threadpool(change)
        if isinstance(outcome, OwnFileRefusal):
            status = 413 if outcome is OwnFileRefusal.TOO_LARGE else 422
            return await self._refuse(request, signed, outcome, title, status)
        return RedirectResponse(f"/webmail/documents/{outcome}?changed=added", status_code=303)

    async def _refuse(
        self, request: Request, signed: Signed, error: OwnFileRefusal, title: str, status: int
    ) -> Response:
        context = await run_in_threadpool(self._add_context, signed)
        return self._render(
            request,
            "documents_add.html",
            {**context, "error": error.value, "title": title[:MAX_TITLE]},
            signed,
            status=status,
        )

    # -- a received attachment ("Enregistrer dans mes documents de santé") --------------------

    async def _received(self, request: Request) -> tuple[Signed, str, str, bytes]:
        """The signed-in patient's received attachment (file name, type, bytes), or 404."""
        from caducee.gateway.web.app import _path_id, _principal

        signed = await self.web._page_session(request)
        entry_id = _path_id(request, "id")
        index = request.path_params["index"]
        if not isinstance(index, int) or index > 10_000:
            raise _not_found()
        principal = _principal(signed)
        entry = await run_in_threadpool(self.web.mailbox.entry, principal, entry_id)
        if entry is None or entry.mine:
            raise _not_found()
        raw = await run_in_threadpool(self.web.mailbox.raw, principal, entry)
        found = None if raw is None else await run_in_threadpool(attachment_bytes, raw, index)
        if found is None:
            raise _not_found()
        name, content_type, data = found
        return signed, name, content_type, data

    def _save_page(
        self,
        request: Request,
        signed: Signed,
        name: str,
        data: bytes,
        *,
        title: str,
        error: str | None,
        status: int = 200,
    ) -> Response:
        return self._render(
            request,
            "documents_save.html",
            {
                "file_name": name,
                "size": len(data),
                "too_large": len(data) > MAX_OWN_FILE,
                "title": title[:MAX_TITLE],
                "error": error,
                "action": request.url.path,
            },
            signed,
            status=status,
        )

    async def save_page(self, request: Request) -> Response:
        signed, name, _content_type, data = await self._received(request)
        return self._save_page(request, signed, name, data, title=name, error=None)

    async def save(self, request: Request) -> Response:
        signed, form = await self.web._post(request)
        signed, name, content_type, data = await self._received(request)
        raw_title = form.get("title")
        title = raw_title if isinstance(raw_title, str) else ""

        def change() -> str | OwnFileRefusal:
            with self.gateway.database.transaction() as session:
                outcome = add_own_file(
                    session,
                    self.gateway.blobs,
                    signed.account_id,
                    file_name=name,
                    content_type=content_type,
                    data=data,
                    title=title,
                    sender=signed.address,
                )
                return outcome if isinstance(outcome, OwnFileRefusal) else outcome.public_id

        outcome = await run_in_threadpool(change)
        if isinstance(outcome, OwnFileRefusal):
            status = 413 if outcome is OwnFileRefusal.TOO_LARGE else 422
            return self._save_page(
                request, signed, name, data, title=title, error=outcome.value, status=status
            )
        return RedirectResponse(f"/webmail/documents/{outcome}?changed=added", status_code=303)


def document_routes(web: Webmail) -> list[BaseRoute]:
    """The documents pages' routes, for ``webmail_app`` to include."""
    pages = DocumentPages(web)
    return [
        Route("/documents", pages.listing, methods=["GET"]),
        Route("/documents/add", pages.add_page, methods=["GET"]),
        Route("/documents/add", pages.add_file, methods=["POST"]),
        Route("/documents/offered/{id}/add", pages.add_offered, methods=["POST"]),
        Route("/documents/from-message/{id:int}/{index:int}", pages.save_page, methods=["GET"]),
        Route("/documents/from-message/{id:int}/{index:int}", pages.save, methods=["POST"]),
        Route("/documents/{id}", pages.document, methods=["GET"]),
        Route("/documents/{id}/content", pages.content, methods=["GET"]),
        Route("/documents/{id}/visibility", pages.visibility, methods=["POST"]),
        Route("/documents/{id}/pin", pages.pin, methods=["POST"]),
    ]


def documents_and_privacy_routes(web: Webmail) -> list[BaseRoute]:
    """The documents and privacy pages (H4a), what ``webmail_app`` includes in one line."""
    return [*document_routes(web), *privacy_routes(web)]
