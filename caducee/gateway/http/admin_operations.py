"""The operator's trust space, directory imports and relay queue in the admin API (A5, K3, C5).

Each operation calls the function its CLI command calls (one way to do each thing):
:func:`caducee.gateway.imports.import_trust` (``trust import``),
:func:`caducee.directory.importer.import_file` (``directory import``) and
:mod:`caducee.gateway.queue_admin` (``queue list|show|retry|bounce|delete``). An import's
body is the file itself (``application/octet-stream``, bounded); ``dry_run=true`` says
what would change and changes nothing; an import that would remove more than
``[lifecycle] import_removal_share`` of the existing rows answers ``409
confirmation-required`` unless ``confirm=true``. Every call is audited with its outcome.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from caducee.directory.anchors import (
    AnchorError,
    AnchorInfo,
    add_anchors,
    list_anchors,
    remove_anchor,
)
from caducee.directory.formats import SourceKind
from caducee.directory.importer import (
    DirectoryImportError,
    ImportCancelled,
    ImportMode,
    import_file,
)
from caducee.directory.trust_models import (
    DomainError,
    TrustDomain,
    is_trusted_domain,
    to_ascii_domain,
)
from caducee.gateway import queue_admin
from caducee.gateway.http.admin_problems import ApiProblem
from caducee.gateway.imports import confirmed_or_within, import_trust
from caducee.gateway.runtime import Gateway
from caducee.mailboxes.accounts.lifecycle import Actor, audit
from caducee.storage.db import utcnow

MAX_UPLOAD = 1 << 30
"""An import file is at most 1 GiB (the national extraction is a few hundred MB)."""
MAX_JOB_ID = 2**62
KINDS = {"mss": SourceKind.MSS_EXTRACTION, "ps": SourceKind.PS_LIBREACCES}
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no", "")


def flag(request: Request, name: str) -> bool:
    """A boolean query parameter (``true``/``false``); 422 otherwise."""
    raw = request.query_params.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ApiProblem(422, "invalid-query", f"{name} is true or false")


def choice(
    request: Request, name: str, allowed: tuple[str, ...], default: str | None
) -> str | None:
    """An enumerated query parameter; 422 when it is none of ``allowed``."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw not in allowed:
        raise ApiProblem(422, "invalid-query", f"{name} is one of {', '.join(allowed)}")
    return raw


def job_id_of(request: Request) -> int:
    raw = str(request.path_params["job_id"])
    if not raw.isdigit() or not 0 < int(raw) < MAX_JOB_ID:
        raise ApiProblem(404, "not-found", "no such relay job")
    return int(raw)


def _anchor_view(info: AnchorInfo) -> dict[str, str]:
    return {
        "fingerprint": info.fingerprint,
        "subject": info.subject,
        "not_after": info.not_after.isoformat(),
    }


FINGERPRINT = re.compile(r"[0-9a-f]{64}")


async def upload(request: Request) -> Path:
    """The request body in a private temporary file (its folder is the caller's to remove)."""
    folder = Path(tempfile.mkdtemp(prefix="caducee-import-"))
    path = folder / "upload"
    size = 0
    try:
        with path.open("wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise ApiProblem(413, "body-too-large", f"at most {MAX_UPLOAD} bytes")
                out.write(chunk)
        if size == 0:
            raise ApiProblem(422, "empty-body", "the body is the file to import")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return path


class OperationsApi:
    """Trust space, directory imports and the relay queue, bound to one gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _run(self, work: Callable[[Session], Any]) -> Any:
        with self.gateway.database.transaction() as session:
            return work(session)

    def _audit(self, actor: Actor, action: str, object_type: str, object_id: str) -> None:
        self._run(
            lambda session: audit(
                session, actor, action, None, object_type=object_type, object_id=object_id
            )
        )

    # -- trust space ---------------------------------------------------------------------

    async def trust(self, request: Request, actor: Actor) -> Response:
        def work(session: Session) -> dict[str, Any]:
            counts = dict(
                session.execute(
                    select(TrustDomain.source, func.count(func.distinct(TrustDomain.domain)))
                    .group_by(TrustDomain.source)
                    .order_by(TrustDomain.source)
                ).all()
            )
            now = utcnow()
            anchors = [
                {
                    "fingerprint": info.fingerprint,
                    "subject": info.subject,
                    "not_after": info.not_after.isoformat(),
                    "expired": info.not_after <= now,
                }
                for info in list_anchors(session)
            ]
            audit(session, actor, "trust.read", None, object_type="trust", object_id="space")
            return {"domains": {str(k): int(v) for k, v in counts.items()}, "anchors": anchors}

        return JSONResponse(await run_in_threadpool(self._run, work))

    async def trust_check(self, request: Request, actor: Actor) -> Response:
        raw = str(request.path_params["domain"])
        try:
            domain = to_ascii_domain(raw)
        except DomainError:
            raise ApiProblem(422, "invalid-domain", "not a valid domain name") from None

        def work(session: Session) -> dict[str, Any]:
            trusted = is_trusted_domain(session, domain)
            sources = sorted(
                set(session.scalars(select(TrustDomain.source).where(TrustDomain.domain == domain)))
            )
            audit(session, actor, "trust.check", None, object_type="trust", object_id=domain)
            return {"domain": domain, "trusted": trusted, "sources": sources}

        return JSONResponse(await run_in_threadpool(self._run, work))

    async def trust_import(self, request: Request, actor: Actor) -> Response:
        dry_run, confirm = flag(request, "dry_run"), flag(request, "confirm")
        share = self.gateway.settings.lifecycle.import_removal_share
        path = await upload(request)
        try:
            outcome = await run_in_threadpool(
                import_trust,
                self.gateway.database,
                path,
                dry_run=dry_run,
                confirm=confirmed_or_within(share, confirm),
            )
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        action = "trust.import.dry-run" if dry_run else "trust.import"
        if not outcome.report.imported:
            raise ApiProblem(
                422, "nothing-imported", "the file gave no usable entry; nothing changed"
            )
        if outcome.cancelled:
            removed, existing = outcome.report.removed, outcome.existing
            raise ApiProblem(
                409,
                "confirmation-required",
                f"this import would remove {removed} of {existing} whitelist domains "
                f"(more than {share:.0%}); nothing changed; call again with confirm=true",
            )
        await run_in_threadpool(self._audit, actor, action, "trust", "whitelist")
        return JSONResponse(outcome.to_dict())

    async def anchor_add(self, request: Request, actor: Actor) -> Response:
        """Add the CA certificates of a PEM body (like ``caducee trust add-anchor``)."""
        path = await upload(request)
        try:
            data = await run_in_threadpool(path.read_bytes)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)

        def work(session: Session) -> dict[str, Any]:
            try:
                report = add_anchors(session, data)
            except AnchorError as error:
                raise ApiProblem(422, "no-certificate", str(error)) from None
            if not report.accepted:
                raise ApiProblem(422, "no-anchor-accepted", "no certificate of the body was kept")
            # one event per anchor added; a call that added none is audited too
            for fingerprint in [info.fingerprint for info in report.added] or ["unchanged"]:
                audit(
                    session, actor, "trust.anchor.add", None,
                    object_type="trust-anchor", object_id=fingerprint,
                )  # fmt: skip
            return {
                "added": [_anchor_view(info) for info in report.added],
                "already_present": [_anchor_view(info) for info in report.already_present],
                "refused": [
                    {
                        "position": item.position,
                        "subject": item.subject or "",
                        "reason": item.reason,
                    }
                    for item in report.refused
                ],
            }

        return JSONResponse(await run_in_threadpool(self._run, work))

    async def anchor_remove(self, request: Request, actor: Actor) -> Response:
        """Remove the anchor with this full SHA-256 fingerprint (never by prefix over HTTP)."""
        fingerprint = str(request.path_params["fingerprint"]).lower()
        if not FINGERPRINT.fullmatch(fingerprint):
            raise ApiProblem(422, "invalid-fingerprint", "64 hexadecimal digits (SHA-256)")

        def work(session: Session) -> None:
            try:
                removed = remove_anchor(session, fingerprint)
            except AnchorError:
                raise ApiProblem(404, "not-found", "no trust anchor has this fingerprint") from None
            audit(
                session, actor, "trust.anchor.remove", None,
                object_type="trust-anchor", object_id=removed.fingerprint,
            )  # fmt: skip

        await run_in_threadpool(self._run, work)
        return Response(status_code=204)

    # -- directory -----------------------------------------------------------------------

    async def directory_import(self, request: Request, actor: Actor) -> Response:
        dry_run, confirm = flag(request, "dry_run"), flag(request, "confirm")
        modes = tuple(mode.value for mode in ImportMode)
        mode = ImportMode(choice(request, "mode", modes, None) or ImportMode.FULL.value)
        kind = choice(request, "kind", tuple(sorted(KINDS)), None)
        settings = self.gateway.settings
        share = settings.lifecycle.import_removal_share
        asked: list[tuple[int, int]] = []

        def check(removed: int, existing: int) -> bool:
            asked.append((removed, existing))
            return confirmed_or_within(share, confirm)(removed, existing)

        path = await upload(request)
        try:
            summary = await run_in_threadpool(
                lambda: import_file(
                    self.gateway.database,
                    path,
                    mode=mode,
                    expected=KINDS[kind] if kind else None,
                    hosted_domains=settings.gateway.hosted_domains,
                    dry_run=dry_run,
                    confirm_removal=check,
                )
            )
        except ImportCancelled:
            removed, existing = asked[-1] if asked else (0, 0)
            raise ApiProblem(
                409,
                "confirmation-required",
                f"this import would remove {removed} of {existing} directory entries "
                f"(more than {share:.0%}); nothing changed; call again with confirm=true",
            ) from None
        except DirectoryImportError as error:
            raise ApiProblem(422, "import-refused", str(error)[:500]) from None
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        action = "directory.import.dry-run" if dry_run else "directory.import"
        await run_in_threadpool(self._audit, actor, action, "directory", str(summary.source))
        return JSONResponse({"dry_run": dry_run, **summary.to_dict()})

    # -- relay queue ---------------------------------------------------------------------

    async def relay_list(self, request: Request, actor: Actor) -> Response:
        include_done = flag(request, "all")

        def work(session: Session) -> list[dict[str, Any]]:
            jobs = queue_admin.list_jobs(session, include_done=include_done)
            audit(session, actor, "queue.list", None, object_type="queue", object_id="relay")
            return jobs

        return JSONResponse({"jobs": await run_in_threadpool(self._run, work)})

    def _job_work(
        self, request: Request, actor: Actor, action: str, do: Callable[[Session, int], Any]
    ) -> Callable[[Session], Any]:
        job_id = job_id_of(request)

        def work(session: Session) -> Any:
            result = do(session, job_id)
            audit(session, actor, action, None, object_type="relay-job", object_id=str(job_id))
            return result

        return work

    async def _job(
        self, request: Request, actor: Actor, action: str, do: Callable[[Session, int], Any]
    ) -> Any:
        try:
            return await run_in_threadpool(self._run, self._job_work(request, actor, action, do))
        except queue_admin.QueueError as error:
            raise ApiProblem(error.status, error.code, str(error)) from None

    async def relay_show(self, request: Request, actor: Actor) -> Response:
        return JSONResponse(await self._job(request, actor, "queue.show", queue_admin.show_job))

    async def relay_retry(self, request: Request, actor: Actor) -> Response:
        def do(session: Session, job_id: int) -> dict[str, Any]:
            queue_admin.retry_job(session, job_id)
            return queue_admin.show_job(session, job_id)

        return JSONResponse(await self._job(request, actor, "queue.retry", do))

    async def relay_bounce(self, request: Request, actor: Actor) -> Response:
        def do(session: Session, job_id: int) -> dict[str, Any]:
            bounced = queue_admin.bounce_job(self.gateway, session, job_id)
            return {"id": job_id, "failed": bounced.failed, "dsn_sent": bounced.dsn}

        return JSONResponse(await self._job(request, actor, "queue.bounce", do))

    async def relay_delete(self, request: Request, actor: Actor) -> Response:
        def do(session: Session, job_id: int) -> int:
            return queue_admin.delete_job(self.gateway, session, job_id)

        await self._job(request, actor, "queue.delete", do)
        return Response(status_code=204)
