"""J1 for metadata: after demo traffic, a dump of the database shows no subject, title or name.

The demo peer mails the N1 lab report (in an IHE_XDM.zip) to the demo patient with a subject
that names the patient and a word of its own; the workers file it; the patient reads it over
FHIR and answers the professional. Then the whole database is dumped as an operator would
(``pg_dump`` on PostgreSQL, the ``sqlite3`` shell's ``.dump`` on SQLite) and searched for the
subject's word, the document's title, its author's and organisation's names and the patient's
names.

The directory tables are left out of the search on purpose: they are the national directory's
public extraction (names of practitioners and structures as published by the ANS), loaded to be
searched by name.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any
from urllib.parse import parse_qs, urlsplit

from caducee.config import load_settings
from tests.harness.reports import N1_SAMPLE, build_mail, n1_xdm, xdm_part
from tests.harness.served import Account, ServedGateway
from tests.harness.waiting import wait_until

SUBJECT_WORD = "ZEBULONIQUE"
#: What the N1 sample says of itself (title, author, organisation), and the demo patient's names.
SECRETS = (
    SUBJECT_WORD,
    "PAT-TROIS",
    "DOMINIQUE",
)
#: Tables copied from public sources (the national directory, the trust space's whitelist).
PUBLIC_TABLES = re.compile(r"^(directory_\w+|trust_\w+)$")


def _cda_words() -> tuple[str, ...]:
    """The title and the author's and organisation's names written in the N1 sample."""
    cda = N1_SAMPLE.read_bytes().decode("utf-8")
    title = re.search(r"<title>([^<]+)</title>", cda)
    family = re.search(r"<family>([^<]+)</family>", cda.split("<author>", 1)[1])
    organisation = re.search(
        r"<representedOrganization>.*?<name>([^<]+)</name>", cda, flags=re.DOTALL
    )
    found = tuple(match.group(1).strip() for match in (title, family, organisation) if match)
    assert len(found) == 3, "the N1 sample has a title, an author's family name and a structure"
    return found


def _dump(gateway: ServedGateway) -> list[tuple[str, str]]:
    """The database as ``pg_dump`` or ``sqlite3 .dump`` prints it, public tables left out."""
    url = load_settings(gateway.home, environ=gateway.env).database_url
    if url.startswith("postgresql"):
        parts = urlsplit(url.replace("+psycopg", ""))
        search_path = parse_qs(parts.query)["options"][0].split("=", 1)[1]
        plain = parts._replace(query="").geturl()
        command = ["pg_dump", "--data-only", "--schema", search_path, plain]
    else:
        path = url.split("///", 1)[1]
        command = ["sqlite3", path, ".dump"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    kept: list[tuple[str, str]] = []
    table = ""
    for line in output.splitlines():
        copy = re.match(r"COPY (?:\w+\.)?(\w+) ", line) or re.match(r'INSERT INTO "?(\w+)"?', line)
        if copy:
            table = copy.group(1)
        if not PUBLIC_TABLES.match(table):
            kept.append((table, line.replace("''", "'").lower()))
    return kept


def _fhir_titles(gateway: ServedGateway) -> list[Any]:
    bundle = gateway.http_get("/fhir/DocumentReference", accept="application/fhir+json")
    return [entry["resource"].get("description") for entry in bundle.get("entry", [])]


def test_j1_no_subject_title_or_name_in_clear_in_a_dump(working_gateway: ServedGateway) -> None:
    gateway = working_gateway
    patient = gateway.credentials["patient"]["address"]
    subject = f"CR biologie {SUBJECT_WORD} PAT-TROIS DOMINIQUE 28/03/1979"
    raw = build_mail(
        [xdm_part(n1_xdm(N1_SAMPLE.read_bytes()))],
        sender=gateway.peer["professional"],
        to=patient,
        subject=subject,
    )
    with gateway.smtp() as client:
        assert client.sendmail(gateway.peer["professional"], [patient], gateway.sign(raw)) == {}
    titles = wait_until(lambda: _fhir_titles(gateway), interval=0.3, message="nothing filed")
    assert titles, "the report was filed and is listed"

    # The patient sees everything in clear through the protocols: sealing is at rest only.
    demo_patient = gateway.credentials["patient"]
    with gateway.imap(Account(demo_patient["address"], demo_patient["password"])) as imap:
        imap.select("INBOX")
        typ, data = imap.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and SUBJECT_WORD.encode() in b"".join(
            part[1] for part in data if isinstance(part, tuple)
        )

    dump = _dump(gateway)
    assert any(line.startswith(("insert into", "copy ")) for _, line in dump), "rows dumped"
    leaked = {
        word: sorted({table for table, line in dump if word.lower() in line})
        for word in (*SECRETS, *_cda_words())
    }
    assert {word: tables for word, tables in leaked.items() if tables} == {}, "in clear"
