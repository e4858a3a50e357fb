"""Writing from the webmail with attached files, and drafts (issue 17, H4b).

=====  ==================================================  ===================================
GET    ``/webmail/activate`` (and POSTs)                   activation (:mod:`.activation`)
POST   ``/webmail/compose/new``                            a new message: send, or save draft
POST   ``/webmail/compose/conversations/{id}/reply``       a reply: send, or save draft
GET    ``/webmail/drafts``                                 the drafts (IMAP ``Drafts`` folder)
GET    ``/webmail/drafts/{id}``                            resume one in the new-message page
POST   ``/webmail/drafts/{id}/delete``                     delete one
GET    ``/webmail/conversations/{id}/delete``, POST        delete a conversation (to Trash)
GET    ``/webmail/pharmacies?q=``, POST                    find a pharmacy, write to it (C4)
GET    ``/webmail/documents/{id}/send``                    the new-message page with a record
                                                           document attached (H2)
=====  ==================================================  ===================================

These forms are ``multipart/form-data`` (files), so they have their own routes beside the
text-only ``/webmail/new`` and ``/webmail/conversations/{id}/reply`` of :mod:`.app`; the
rules are the same calls: the recipient is judged by the submission rule table
(:meth:`~caducee.gateway.web.reply.Replies.may_write`, :func:`caducee.gateway.submit.
judge_recipient`) and the message is committed by :meth:`~caducee.gateway.web.reply.Replies.
submit` (:func:`caducee.gateway.submit.prepare_submission`), the SMTP submission port's path.
``submit.py`` has no notion of files — it takes the message bytes — so the only addition is
here: the files become parts of the MIME message (:func:`~caducee.gateway.web.reply.
compose_message`).

Attached files: the national app's list only (jpg, jpeg, tiff, png, txt, pdf, rtf, doc),
typed by their extension (the browser's content type is not trusted). Their total is bounded
by :func:`attachment_quota`: what still fits in a message the gateway accepts (``[smtp]
max_message_bytes``, base64 counted) and in one form (``[http] webmail_upload_max_bytes``, the
HTTP listener's bound), less room for the text. The page shows what remains before sending
(the quota less the files kept on a draft); over it, nothing is sent or saved and the page
says "La taille du ou des documents dépasse la limite autorisée.".

A record document sent to a professional ("Envoyer à un professionnel" on a document's page,
H2): the new-message page names it in a hidden ``record`` field and the send reads its bytes
again through the documents pages' path (:func:`caducee.gateway.web.documents.record_file`:
the profile shown, its visibility, the read audited); it is then one more file of the message,
within the same quota and to a recipient judged by the same rule as any new message (C4).
Saved as a draft, it stays on the draft as a file.

Acting as a caregiver (F3, :meth:`~caducee.gateway.web.app.Webmail.acting`): a new message,
a reply and the drafts use the helped person's mailbox (the message is theirs, from their
address, judged by the same rules as if they wrote it); the text ends with the national app's
signature line, "Ce message a été rédigé par <aidant>, l'aidant de <aidé>." (French: it is
read by the professional, as the app writes it); the send is audited (F4, actor the caregiver,
subject the helped person). Deleting a conversation is the helped person's alone: 403, "Cette
action est uniquement disponible pour <nom>.".

Drafts (:mod:`caducee.mailboxes.drafts`) are messages in the IMAP ``Drafts`` folder, so a
mail client sees them too; a draft keeps its files, and a resumed draft lists them with a
box to keep each one. A reply's draft keeps ``In-Reply-To`` and ``References``, so sent
later from the new-message page it still joins its conversation (D1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from caducee.gateway.web.account import account_routes
from caducee.gateway.web.activation import activation_routes
from caducee.gateway.web.correspondents import Pharmacy, find_pharmacies, pharmacy_entry
from caducee.gateway.web.documents import RecordFile, record_file
from caducee.gateway.web.mailbox import files_of, header_addresses, parse, show
from caducee.gateway.web.privacy import ActingFor, refuse_caregiver
from caducee.gateway.web.reply import MAX_REPLY_CHARS, MAX_SUBJECT_CHARS, compose_message
from caducee.gateway.web.security import same_origin
from caducee.gateway.web.sessions import Signed, csrf_matches
from caducee.mailboxes.access.contacts import declare_pharmacy
from caducee.mailboxes.accounts.identity.principal import Principal
from caducee.mailboxes.drafts import (
    DraftEntry,
    delete_draft,
    draft_content,
    find_draft,
    list_drafts,
    save_draft,
)

if TYPE_CHECKING:
    from caducee.gateway.web.app import Webmail

ALLOWED_TYPES = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
    "png": "image/png",
    "txt": "text/plain",
    "pdf": "application/pdf",
    "rtf": "application/rtf",
    "doc": "application/msword",
}
"""The national app's file picker (``jpg, jpeg, tiff, png, txt, pdf, rtf, doc``)."""
MAX_FILES = 10
TEXT_ROOM = 256 * 1024
"""Kept free in a request and a message for the text, the headers and the form's fields."""
MAX_ID = 2**62
TRASH = "Trash"
_NAME = re.compile(r"[^\w .()+-]", re.UNICODE)
CAREGIVER_SIGNATURE = "Ce message a été rédigé par {caregiver}, l'aidant de {helped}."
"""The line the national app appends to a caregiver's message (``messageSignatureByAidant``)."""


def signed_text(text: str, acting: ActingFor) -> str:
    """The text as sent: a caregiver's ends with the signature line (blank line before)."""
    if not acting.caregiver:
        return text
    line = CAREGIVER_SIGNATURE.format(
        caregiver=acting.caregiver_name or "", helped=acting.name or ""
    )
    return f"{text.rstrip()}\n\n{line}" if text.strip() else line


def attachment_quota(max_message_bytes: int, max_body_bytes: int) -> int:
    """The bytes of files one message may carry (see the module documentation).

    Base64 makes 57 bytes 78 (76 characters and CRLF) in the message; the request carries
    them raw.
    """
    in_message = (max_message_bytes - TEXT_ROOM) * 57 // 78
    in_request = max_body_bytes - TEXT_ROOM
    return max(0, min(in_message, in_request))


@dataclass(frozen=True)
class Attached:
    """A file ready to attach: a clean name, the type its extension gives, the bytes."""

    name: str
    content_type: str
    data: bytes


def file_type(name: str) -> str | None:
    """The content type of an allowed file name (by extension), or None (refused)."""
    extension = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return ALLOWED_TYPES.get(extension)


def clean_name(name: str) -> str:
    """A file name safe in a MIME header and a download: no path, no control character."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _NAME.sub("_", "".join(ch for ch in base if ch.isprintable())).strip(" .")
    return cleaned[-120:] or "document"


def _id(value: Any) -> int | None:
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        number = int(value)
        return number if 0 < number < MAX_ID else None
    return None


class ComposePages:
    """New message and reply with files, and drafts, for one webmail."""

    def __init__(self, web: Webmail) -> None:
        self.web = web
        self.gateway = web.gateway
        self.store = web.mailbox.store
        self.quota = attachment_quota(
            web.settings.smtp.max_message_bytes, web.settings.http.webmail_upload_max_bytes
        )
        self.accept = ",".join(f".{extension}" for extension in ALLOWED_TYPES)
        for environment in web.environments.values():  # the reply form of every conversation
            environment.globals["attachment_quota"] = self.quota
            environment.globals["attachment_accept"] = self.accept

    # -- plumbing ---------------------------------------------------------------------------

    @staticmethod
    def _principal(signed: Signed) -> Principal:
        return Principal(signed.account_id, signed.address, signed.kind, "password+totp")

    async def _multipart(self, request: Request) -> tuple[Signed, FormData]:
        """A state change with files: same origin, a live session, its CSRF token (else 403)."""
        from caducee.gateway.web.app import Forbidden, SignInNeeded

        if not same_origin(request):
            raise Forbidden
        signed = await self.web._signed(request)
        if signed is None:
            raise SignInNeeded
        form = await request.form(
            max_files=MAX_FILES, max_fields=20 + MAX_FILES, max_part_size=4 * MAX_REPLY_CHARS
        )
        given = form.get("csrf")
        if not csrf_matches(signed.csrf_token, given if isinstance(given, str) else None):
            raise Forbidden
        return signed, form

    @staticmethod
    def _text(form: FormData, name: str) -> str:
        value = form.get(name)
        return value.strip() if isinstance(value, str) else ""

    async def _uploads(self, form: FormData) -> tuple[list[Attached], str | None]:
        """The files posted (empty inputs skipped); ``bad-type`` on any refused extension."""
        found: list[Attached] = []
        for item in form.getlist("files"):
            if not isinstance(item, UploadFile) or not item.filename:
                continue
            content_type = file_type(item.filename)
            if content_type is None:
                return [], "bad-type"
            data = await item.read(self.quota + 1)
            if len(data) > self.quota:
                return [], "too-big"
            found.append(Attached(clean_name(item.filename), content_type, data))
        return found, None

    def _draft(self, principal: Principal, value: Any) -> DraftEntry | None:
        """The account's draft named by a form or path value; :class:`NotFound` otherwise."""
        from caducee.gateway.web.app import NotFound

        draft_id = _id(value)
        if draft_id is None:
            raise NotFound
        draft = find_draft(self.store, principal, draft_id)
        if draft is None:
            raise NotFound
        return draft

    def _draft_message(self, principal: Principal, draft: DraftEntry) -> EmailMessage:
        from caducee.gateway.web.app import NotFound

        raw = draft_content(self.store, principal, draft)
        if raw is None:
            raise NotFound
        return parse(raw)

    @staticmethod
    def _draft_files(message: EmailMessage | None) -> list[Attached]:
        if message is None:
            return []
        files = []
        for index, part in enumerate(files_of(message)):
            payload = part.get_payload(decode=True)
            name = clean_name(part.get_filename() or f"document-{index + 1}")
            files.append(
                Attached(
                    name,
                    file_type(name) or part.get_content_type(),
                    payload if isinstance(payload, bytes) else b"",
                )
            )
        return files

    def _kept(self, form: FormData, message: EmailMessage | None) -> list[Attached]:
        """The draft's files whose "keep" box is ticked."""
        wanted = {value for value in form.getlist("keep") if isinstance(value, str)}
        return [
            file for index, file in enumerate(self._draft_files(message)) if str(index) in wanted
        ]

    def remaining(self, kept: list[Attached]) -> int:
        return max(0, self.quota - sum(len(file.data) for file in kept))

    # -- the new-message page ---------------------------------------------------------------

    async def _new_page(
        self,
        request: Request,
        signed: Signed,
        *,
        error: str | None,
        chosen: str = "",
        subject: str = "",
        body: str = "",
        draft: DraftEntry | None = None,
        kept: list[Attached] | None = None,
        status: int = 200,
        record: RecordFile | None = None,
    ) -> Response:
        principal, acting = await self.web.acting(request, signed)
        contacts = await self.web.replies.contacts(principal)
        kept = kept or []
        attached = list(kept) + ([_record_attached(record)] if record is not None else [])
        return self.web._render(
            request,
            "new_message.html",
            {
                "contacts": contacts,
                "error": error,
                "chosen": chosen,
                "subject": subject[:MAX_SUBJECT_CHARS],
                "draft": body[:MAX_REPLY_CHARS],
                "draft_id": draft.entry_id if draft is not None else None,
                "kept": [(index, file.name, len(file.data)) for index, file in enumerate(kept)],
                "quota": self.remaining(attached),
                "record": record,
                "sender_name": acting.helped_name or signed.display_name or signed.address,
            },
            signed=signed,
            status=status,
        )

    async def resume(self, request: Request) -> Response:
        """``GET /drafts/{id}``: the draft in the new-message page (recipient, text, files)."""
        signed = await self.web._page_session(request)
        principal, _acting = await self.web.acting(request, signed)
        draft = await run_in_threadpool(self._draft, principal, str(request.path_params["id"]))
        assert draft is not None
        message = await run_in_threadpool(self._draft_message, principal, draft)
        body = message.get_body(preferencelist=("plain",))
        text = ""
        if isinstance(body, EmailMessage):
            try:
                text = str(body.get_content())
            except (LookupError, ValueError):
                text = ""
        to = header_addresses(message, "To")
        return await self._new_page(
            request,
            signed,
            error=None,
            chosen=to[0] if to else "",
            subject=" ".join(str(message.get("Subject", "")).split()),
            body=text.replace("\r\n", "\n").rstrip(),
            draft=draft,
            kept=self._draft_files(message),
        )

    async def new(self, request: Request) -> Response:
        """``POST /compose/new``: send to one contact (judged again), or keep as a draft."""
        signed, form = await self._multipart(request)
        principal, acting = await self.web.acting(request, signed)
        chosen = self._text(form, "to")[:320]
        subject, body = self._text(form, "subject"), self._text(form, "body")
        draft = None
        message = None
        if form.get("draft"):
            draft = await run_in_threadpool(self._draft, principal, form.get("draft"))
            assert draft is not None
            message = await run_in_threadpool(self._draft_message, principal, draft)
        kept = self._kept(form, message)
        uploads, error = await self._uploads(form)
        record = await self._record(request, signed, form)
        files = kept + uploads + ([_record_attached(record)] if record is not None else [])
        if error is None and sum(len(file.data) for file in files) > self.quota:
            error = "too-big"
        saving = form.get("action") == "draft"
        if error is None and not saving:
            if not chosen or not await self.web.replies.may_write(principal, chosen):
                error = "refused"
            elif not subject:
                error = "no-subject"
            elif not body:
                error = "empty"
        if error is None and (len(body) > MAX_REPLY_CHARS or len(subject) > MAX_SUBJECT_CHARS):
            error = "too-long"
        if error is None:
            content = compose_message(
                principal,
                acting.helped_name or signed.display_name,
                chosen,
                subject,
                body if saving else signed_text(body, acting),
                hostname=self.web.settings.gateway.hostname,
                in_reply_to=_header(message, "In-Reply-To"),
                references=_header(message, "References"),
                attachments=[(file.name, file.content_type, file.data) for file in files],
            )
            if len(content) > self.web.settings.smtp.max_message_bytes:
                error = "too-big"
            elif saving:
                await run_in_threadpool(save_draft, self.store, principal, content, draft)
                return RedirectResponse("/webmail/drafts?saved=1", status_code=303)
            else:
                error = await self.web.replies.submit(principal, chosen, content)
                if error is None:
                    await run_in_threadpool(self.web.audit_send, principal, _message_id(content))
                    if draft is not None:
                        await run_in_threadpool(delete_draft, self.store, principal, draft)
                    return RedirectResponse("/webmail/conversations?sent=1", status_code=303)
        return await self._new_page(
            request,
            signed,
            error=error,
            chosen=chosen,
            subject=subject,
            body=body,
            draft=draft,
            kept=kept,
            status=403 if error == "refused" else 422,
            record=record,
        )

    # -- a record document sent to a professional (H2) ---------------------------------------

    async def _record(self, request: Request, signed: Signed, form: FormData) -> RecordFile | None:
        """The record document the form names (hidden ``record`` field), read again now: a
        document no longer shown (withdrawn, another profile, a malformed id) is a 404."""
        from caducee.gateway.web.app import NotFound

        value = form.get("record")
        if not value:
            return None
        found = await record_file(
            self.web, request, signed, value if isinstance(value, str) else ""
        )
        if found is None:
            raise NotFound
        return found

    async def send_document(self, request: Request) -> Response:
        """``GET /documents/{id}/send``: "Envoyer à un professionnel", the new-message page
        with the document attached and the national app's subject and text (the page says
        them in the patient's language)."""
        from caducee.gateway.web.app import NotFound

        signed = await self.web._page_session(request)
        found = await record_file(self.web, request, signed, str(request.path_params["id"]))
        if found is None:
            raise NotFound
        return await self._new_page(request, signed, error=None, record=found)

    # -- reply ------------------------------------------------------------------------------

    async def reply(self, request: Request) -> Response:
        """``POST /compose/conversations/{id}/reply``: the reply with files, or its draft."""
        from caducee.gateway.web.app import NotFound

        signed, form = await self._multipart(request)
        conversation_id = request.path_params["id"]
        if not isinstance(conversation_id, int) or not 0 < conversation_id < MAX_ID:
            raise NotFound
        principal, acting = await self.web.acting(request, signed)
        mailbox = self.web.mailbox
        entries, professional = await run_in_threadpool(
            mailbox.conversation_entries, principal, conversation_id
        )
        if not entries or professional is None:
            raise NotFound
        text = self._text(form, "body")
        received = [entry for entry in entries if not entry.mine]
        last_raw = (
            await run_in_threadpool(mailbox.raw, principal, received[-1]) if received else None
        )
        sender = await run_in_threadpool(mailbox.correspondent_name, professional)
        last = show(received[-1], last_raw, sender) if last_raw is not None else None
        target = await run_in_threadpool(mailbox.reply_target, principal, professional, last)
        state = await self.web.replies.state(principal, target)
        files, error = await self._uploads(form)
        if error is None and sum(len(file.data) for file in files) > self.quota:
            error = "too-big"
        saving = form.get("action") == "draft"
        if error is None and not state.allowed:
            error = "refused"
        elif error is None and not text and not saving:
            error = "empty"
        elif error is None and len(text) > MAX_REPLY_CHARS:
            error = "too-long"
        if error is None and target.reply_address is not None:
            content = compose_message(
                principal,
                acting.helped_name or signed.display_name,
                target.reply_address,
                target.subject,
                text if saving else signed_text(text, acting),
                hostname=self.web.settings.gateway.hostname,
                in_reply_to=target.in_reply_to,
                references=target.references,
                attachments=[(file.name, file.content_type, file.data) for file in files],
            )
            if len(content) > self.web.settings.smtp.max_message_bytes:
                error = "too-big"
            elif saving:
                await run_in_threadpool(save_draft, self.store, principal, content, None)
                return RedirectResponse("/webmail/drafts?saved=1", status_code=303)
            else:
                error = await self.web.replies.submit(principal, target.reply_address, content)
                if error is None:
                    await run_in_threadpool(self.web.audit_send, principal, _message_id(content))
        if error is None:
            return RedirectResponse(
                f"/webmail/conversations/{conversation_id}?sent=1#reply", status_code=303
            )
        messages = await run_in_threadpool(
            self.web._read, signed, entries, professional, principal, acting.helped_name
        )
        return self.web._render(
            request,
            "conversation.html",
            {
                "messages": messages,
                "reply": state,
                "reply_action": f"/webmail/conversations/{conversation_id}/reply",
                "sent": False,
                "error": error,
                "draft": text[:MAX_REPLY_CHARS],
                "acting": acting,
            },
            signed=signed,
            status=403 if error == "refused" else 422,
        )

    # -- drafts -----------------------------------------------------------------------------

    def _listed(self, principal: Principal) -> list[dict[str, Any]]:
        listed = []
        for draft in list_drafts(self.store, principal):
            raw = draft_content(self.store, principal, draft)
            if raw is None:
                continue
            message = parse(raw)
            to = header_addresses(message, "To")
            listed.append(
                {
                    "id": draft.entry_id,
                    "subject": " ".join(str(message.get("Subject", "")).split())[:300],
                    "to": self.web.mailbox.correspondent_name(to[0]) if to else "",
                    "date": draft.saved_at,
                    "files": len(files_of(message)),
                }
            )
        return listed

    async def drafts(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        principal, _acting = await self.web.acting(request, signed)
        listed = await run_in_threadpool(self._listed, principal)
        return self.web._render(
            request,
            "drafts.html",
            {
                "drafts": listed,
                "saved": request.query_params.get("saved") == "1",
                "deleted": request.query_params.get("deleted") == "1",
            },
            signed=signed,
        )

    async def delete(self, request: Request) -> Response:
        signed, _form = await self.web._post(request)
        principal, _acting = await self.web.acting(request, signed)
        draft = await run_in_threadpool(self._draft, principal, str(request.path_params["id"]))
        assert draft is not None
        await run_in_threadpool(delete_draft, self.store, principal, draft)
        return RedirectResponse("/webmail/drafts?deleted=1", status_code=303)


class ConversationPages:
    """Deleting a conversation, choosing a pharmacy (C4)."""

    def __init__(self, web: Webmail) -> None:
        self.web = web
        self.store = web.mailbox.store

    async def _conversation(
        self, request: Request, signed: Signed, principal: Principal
    ) -> tuple[int, list[Any]]:
        from caducee.gateway.web.app import NotFound

        conversation_id = request.path_params["id"]
        if not isinstance(conversation_id, int) or not 0 < conversation_id < MAX_ID:
            raise NotFound
        entries, professional = await run_in_threadpool(
            self.web.mailbox.conversation_entries,
            principal,
            conversation_id,
        )
        if not entries or professional is None:
            raise NotFound
        return conversation_id, entries

    async def confirm_delete(self, request: Request) -> Response:
        """``GET``: "Supprimer cette conversation ?" with the national app's warning."""
        signed = await self.web._page_session(request)
        principal, acting = await self.web.acting(request, signed)
        conversation_id, entries = await self._conversation(request, signed, principal)
        if acting.caregiver:
            return refuse_caregiver(
                self.web, request, signed, acting, f"/webmail/conversations/{conversation_id}"
            )
        name = await run_in_threadpool(
            self.web.mailbox.correspondent_name,
            next((entry.envelope_from for entry in entries if not entry.mine), ""),
        )
        return self.web._render(
            request,
            "conversation_delete.html",
            {"conversation_id": conversation_id, "name": name, "count": len(entries)},
            signed=signed,
        )

    async def delete(self, request: Request) -> Response:
        """Move the conversation's messages (received and sent) to Trash, as IMAP ``MOVE``.

        Trash, not expunged: the national app's call is ``moveToTrashConversation``; the
        messages stay in the mailbox (a mail client still sees them in Trash, the export
        holds them) while the webmail no longer lists them; documents already filed in the
        record are not touched. The conversation row stays, so a new message of the
        professional starts a fresh thread in the list.
        """
        signed, _form = await self.web._post(request)
        principal, acting = await self.web.acting(request, signed)
        conversation_id, entries = await self._conversation(request, signed, principal)
        if acting.caregiver:  # the helped person's alone (the national app's rule)
            return refuse_caregiver(
                self.web, request, signed, acting, f"/webmail/conversations/{conversation_id}"
            )
        by_folder: dict[int, list[int]] = {}
        for entry in entries:
            by_folder.setdefault(entry.folder_id, []).append(entry.uid)

        def move() -> None:
            for folder_id, uids in by_folder.items():
                self.store.copy(principal, folder_id, uids, TRASH, move=True)

        await run_in_threadpool(move)
        return RedirectResponse("/webmail/conversations?deleted=1", status_code=303)

    # -- pharmacies -------------------------------------------------------------------------

    async def pharmacies(self, request: Request) -> Response:
        signed = await self.web._page_session(request)
        text = request.query_params.get("q", "")[:100].strip()

        def search() -> list[Pharmacy]:
            with self.web.gateway.database.reading() as session:
                return find_pharmacies(session, text)

        found = await run_in_threadpool(search) if text else []
        return self.web._render(
            request,
            "pharmacies.html",
            {"query": text, "pharmacies": found, "searched": bool(text)},
            signed=signed,
        )

    async def choose_pharmacy(self, request: Request) -> Response:
        """Declare the pharmacy (C4), after the same check as the search; then write to it."""
        signed, form = await self.web._post(request)
        value = form.get("address")
        address = value.strip()[:320] if isinstance(value, str) else ""

        def declare() -> bool:
            with self.web.gateway.database.transaction() as session:
                entry = pharmacy_entry(session, address)
                if entry is None:
                    return False
                declare_pharmacy(session, signed.account_id, entry.address)
                return True

        if not address or not await run_in_threadpool(declare):
            from caducee.gateway.web.app import NotFound

            raise NotFound
        return RedirectResponse("/webmail/new", status_code=303)


def _record_attached(record: RecordFile) -> Attached:
    """A record document as one file of the message (its name cleaned as any file's)."""
    return Attached(clean_name(record.name), record.content_type, record.data)


def _message_id(content: bytes) -> str:
    """The Message-ID :func:`compose_message` gave ``content`` (an id for the audit trail)."""
    head = content.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line[11:].decode("ascii", "replace").strip()
    return ""


def _header(message: EmailMessage | None, name: str) -> str | None:
    if message is None:
        return None
    value = message.get(name)
    return " ".join(str(value).split()) or None if value is not None else None


def messaging_routes(web: Webmail) -> list[BaseRoute]:
    """The routes of the activation, writing and account pages, under ``/webmail``."""
    pages = ComposePages(web)
    conversations = ConversationPages(web)
    return [
        *activation_routes(web),
        *account_routes(web),
        Route("/conversations/{id:int}/delete", conversations.confirm_delete, methods=["GET"]),
        Route("/conversations/{id:int}/delete", conversations.delete, methods=["POST"]),
        Route("/pharmacies", conversations.pharmacies, methods=["GET"]),
        Route("/pharmacies", conversations.choose_pharmacy, methods=["POST"]),
        Route("/compose/new", pages.new, methods=["POST"]),
        Route("/compose/conversations/{id:int}/reply", pages.reply, methods=["POST"]),
        Route("/drafts", pages.drafts, methods=["GET"]),
        Route("/drafts/{id}", pages.resume, methods=["GET"]),
        Route("/drafts/{id}/delete", pages.delete, methods=["POST"]),
        Route("/documents/{id}/send", pages.send_document, methods=["GET"]),
    ]
