"""D1: the patient's replies join their conversation; E1 patient-choice: offered documents can be
added by the patient (``POST /api/patient/documents/{id}/add``) and by the operator
(``caducee record offered|add``)."""

from __future__ import annotations

import json
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest
from sqlalchemy import select

from caducee.config import load_settings
from caducee.gateway.cli import main as caducee_main
from caducee.gateway.home import open_database
from caducee.gateway.runtime import build_gateway
from caducee.mailboxes.accounts.store import AccountKind, create_account, find_account
from caducee.mailboxes.delivery import Envelope, MailDelivery, Recipient, RecipientRole
from caducee.mailboxes.models import Conversation, ConversationMessage
from caducee.mailboxes.relay.outbound import queue_outbound
from caducee.records.models import DocumentState, RecordDocument
from caducee.storage.audit import AuditEvent
from caducee.storage.blobs import BlobStore
from caducee.storage.db import Database
from caducee.storage.jobs import JobQueue
from tests.harness.reports import Record, add_patient, make_settings, pdf_part, valid_ins

from .conftest import World

PROFESSIONAL = "dr.martin@cabinet.mssante.fr"
REMOTE = "dr.remote@autre-operateur.mssante.fr"


def _mail(sender: str, to: str, message_id: str, *, answers: str | None = None) -> bytes:
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Consultation"
    message["Message-ID"] = message_id
    if answers:
        message["In-Reply-To"] = answers
        message["References"] = answers
    message.set_content("Bonjour\n")
    return message.as_bytes()


class Traffic:
    """A patient and a hosted professional exchanging mail through ``MailDelivery``."""

    def __init__(self, database: Database, blobs: BlobStore) -> None:
        self.database = database
        self.blobs = blobs
        self.queue = JobQueue(database)
        self.delivery = MailDelivery(blobs, self.queue)
        self.patient_id, self.patient, _ = add_patient(database, ins=valid_ins())
        with database.transaction() as session:
            self.professional_id = create_account(
                session, PROFESSIONAL, AccountKind.PROFESSIONAL
            ).id

    def professional_writes(self, message_id: str, *, answers: str | None = None) -> int:
        content = _mail(PROFESSIONAL, self.patient, message_id, answers=answers)
        with self.database.transaction() as session:
            return self.delivery.deliver(
                session,
                Envelope(
                    content=content,
                    direction="inbound",
                    envelope_from=PROFESSIONAL,
                    header_from=PROFESSIONAL,
                    message_id=message_id,
                    thread_ids=(answers,) if answers else (),
                    reply_to=None,
                    ends_exchange=False,
                    sender_is_professional=True,
                    has_attachments=False,
                    recipients=(Recipient(self.patient, self.patient_id, RecipientRole.PATIENT),),
                ),
            ).message_id

    def patient_replies_here(self, message_id: str, answers: str | None) -> int:
        content = _mail(self.patient, PROFESSIONAL, message_id, answers=answers)
        recipient = Recipient(PROFESSIONAL, self.professional_id, RecipientRole.PROFESSIONAL)
        with self.database.transaction() as session:
            return self.delivery.deliver(
                session,
                Envelope(
                    content=content,
                    direction="submitted",
                    envelope_from=self.patient,
                    header_from=self.patient,
                    message_id=message_id,
                    thread_ids=(answers,) if answers else (),
                    reply_to=None,
                    ends_exchange=False,
                    sender_is_professional=False,
                    has_attachments=False,
                    recipients=(recipient,),
                ),
            ).message_id

    def patient_replies_elsewhere(self, message_id: str, answers: str | None) -> None:
        content = _mail(self.patient, REMOTE, message_id, answers=answers)
        with self.database.transaction() as session:
            queue_outbound(
                session,
                self.blobs,
                self.queue,
                envelope_from=self.patient,
                recipients=[REMOTE],
                content=content,
                purpose="submission",
                message_id=message_id,
            )

    def threads(self) -> dict[int, list[tuple[int | None, str | None]]]:
        """conversation → [(stored message, Message-ID)] of this patient, in order."""
        with self.database.transaction() as session:
            rows = session.execute(
                select(
                    ConversationMessage.conversation_id,
                    ConversationMessage.message_id,
                    ConversationMessage.message_id_header,
                )
                .join(Conversation, Conversation.id == ConversationMessage.conversation_id)
                .where(Conversation.patient_account_id == self.patient_id)
                .order_by(ConversationMessage.id)
            ).all()
        found: dict[int, list[tuple[int | None, str | None]]] = {}
        for conversation, message, header in rows:
            found.setdefault(conversation, []).append((message, header))
        return found


@pytest.fixture
def traffic(database: Database, blobs: BlobStore) -> Traffic:
    return Traffic(database, blobs)


def test_d1_patient_reply_delivered_here_joins_its_conversation(traffic: Traffic) -> None:
    first = traffic.professional_writes("<first@cabinet>")
    reply = traffic.patient_replies_here("<reply@patient>", "<first@cabinet>")
    [(conversation, members)] = traffic.threads().items()
    assert members == [(first, "<first@cabinet>"), (reply, "<reply@patient>")]
    again = traffic.professional_writes("<again@cabinet>", answers="<reply@patient>")
    assert traffic.threads() == {conversation: [*members, (again, "<again@cabinet>")]}, (
        "the professional's answer to the reply stays in the same conversation"
    )


def test_d1_patient_reply_relayed_elsewhere_joins_by_its_message_id(traffic: Traffic) -> None:
    first = traffic.professional_writes("<first@cabinet>")
    traffic.patient_replies_elsewhere("<relayed@patient>", "<first@cabinet>")
    [members] = traffic.threads().values()
    assert members == [(first, "<first@cabinet>"), (None, "<relayed@patient>")]


def test_d1_reply_delivered_and_relayed_joins_once(traffic: Traffic) -> None:
    traffic.professional_writes("<first@cabinet>")
    reply = traffic.patient_replies_here("<both@patient>", "<first@cabinet>")
    traffic.patient_replies_elsewhere("<both@patient>", "<first@cabinet>")
    [members] = traffic.threads().values()
    assert [m for m in members if m[1] == "<both@patient>"] == [(reply, "<both@patient>")]


def test_d1_a_reply_joins_only_its_own_patient_s_conversations(
    traffic: Traffic, database: Database, blobs: BlobStore
) -> None:
    traffic.professional_writes("<first@cabinet>")
    unrelated = traffic.patient_replies_here("<new@patient>", None)
    assert all(unrelated not in [m for m, _ in ms] for ms in traffic.threads().values())
    other = Traffic.__new__(Traffic)
    other.database, other.blobs = database, blobs
    other.queue = JobQueue(database)
    other.delivery = MailDelivery(blobs, other.queue)
    other.patient_id, other.patient, _ = add_patient(database, ins=valid_ins())
    other.professional_id = traffic.professional_id
    other.patient_replies_here("<nosy@patient>", "<first@cabinet>")
    other.patient_replies_elsewhere("<nosy2@patient>", "<first@cabinet>")
    assert other.threads() == {}
    [members] = traffic.threads().values()
    assert all(header not in ("<nosy@patient>", "<nosy2@patient>") for _, header in members)


# ---------------------------------------------------------------------------------------------
# E1 patient-choice: adding offered documents


def _offer(record: Record, n1_pdf: bytes, tmp_path: Path, marker: bytes) -> str:
    record.settings = make_settings(tmp_path, filing_policy="patient-choice")
    message_id = record.mail([pdf_part(n1_pdf + marker, "ordonnance.pdf")])
    [document] = record.documents(message_id)
    assert document.state == DocumentState.OFFERED
    return document.public_id


def _state(database: Database, public_id: str) -> str:
    with database.transaction() as session:
        document = session.scalar(
            select(RecordDocument).where(RecordDocument.public_id == public_id)
        )
        assert document is not None
        return document.state


def test_e1_patient_adds_an_offered_document_through_the_api(
    world: World, n1_pdf: bytes, tmp_path: Path
) -> None:
    public_id = _offer(world.record, n1_pdf, tmp_path, b"\n% offered\n")
    listed = world.client.get("/api/patient/documents/offered", auth=world.patient)
    assert listed.status_code == 200
    assert [d["id"] for d in listed.json()["documents"]] == [public_id]

    added = world.client.post(f"/api/patient/documents/{public_id}/add", auth=world.patient)
    assert added.status_code == 200 and added.json() == {"id": public_id, "state": "filed"}
    assert _state(world.database, public_id) == DocumentState.FILED
    with world.database.transaction() as session:
        events = session.scalars(
            select(AuditEvent).where(
                AuditEvent.object_id == public_id, AuditEvent.rule == "E1.patient-choice"
            )
        ).all()
    assert len(events) == 1

    again = world.client.post(f"/api/patient/documents/{public_id}/add", auth=world.patient)
    assert again.status_code == 404
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["status"] == 404
    nothing = world.client.post("/api/patient/documents/nope/add", auth=world.patient)
    assert nothing.status_code == 404
    stranger = world.client.post(f"/api/patient/documents/{public_id}/add", auth=world.labo)
    assert stranger.status_code == 403
    assert world.client.get("/api/patient/documents/offered", auth=world.patient).json() == {
        "documents": []
    }


def test_e1_operator_adds_an_offered_document_with_the_cli(
    demo_home: Path, n1_pdf: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    credentials = json.loads((demo_home / "demo" / "credentials.json").read_text())
    patient = credentials["patient"]["address"]
    gateway = build_gateway(load_settings(demo_home))
    try:
        with gateway.database.transaction() as session:
            account = find_account(session, patient)
            assert account is not None
            account_id = account.id
        record = Record(
            gateway.database, gateway.blobs, gateway.queue, gateway.settings, account_id, patient
        )
        public_id = _offer(record, n1_pdf, tmp_path, b"\n% cli\n")
    finally:
        gateway.close()
    home = str(demo_home)

    assert caducee_main(["record", "offered", patient, "--json", "--home", home]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["id"] == public_id and listed["mime_type"] == "application/pdf"
    assert "ordonnance" not in json.dumps(listed), "no titles or file names"

    assert caducee_main(["record", "add", patient, public_id, "--home", home]) == 0
    assert public_id in capsys.readouterr().out
    assert caducee_main(["record", "add", patient, public_id, "--home", home]) == 1
    assert "no offered document" in capsys.readouterr().err
    database = open_database(load_settings(demo_home))
    try:
        assert _state(database, public_id) == DocumentState.FILED
    finally:
        database.dispose()
