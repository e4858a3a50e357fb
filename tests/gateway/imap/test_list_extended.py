"""LIST-EXTENDED (RFC 5258) with stored subscriptions, LIST-STATUS (RFC 5819), bounded patterns.

Byte-exact transcripts over the served gateway (both engines); the scenario follows
imaptest's ``listext`` group, which runs once LIST-EXTENDED is announced.
"""

from __future__ import annotations

import time

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect

from caducee.mailboxes.imap_subscriptions import MAX_SUBSCRIPTIONS, ImapSubscription
from caducee.storage import schema
from caducee.storage.db import Base, Database
from tests.harness.served import Account, ServedGateway

from .transcript import ImapTranscript


def _login(gateway: ServedGateway, account: Account) -> ImapTranscript:
    client = ImapTranscript("127.0.0.1", gateway.ports["imaps"], implicit_tls=gateway.tls_context())
    client.line()
    client.ok(f'LOGIN "{account.address}" "{account.password}"')
    return client


def _untagged(lines: list[bytes]) -> list[bytes]:
    return [line for line in lines if line.startswith(b"* ")]


def _tree(client: ImapTranscript) -> None:
    for name in (
        "b/t1",
        "b/t2/",
        "b/t2/t1",
        "b/t3",
        "b/t4/t5",
        "b/t4/t52",
        "b/t6",
        "b/t7/t7",
        "b/t8/t8",
        "b/t8/t9",
    ):
        client.ok(f"CREATE {name}")
    for name in ("b/t1", "b/t2/t1", "b/t6", "b/t7/t7", "b/t8/t8", "b/t8/t9"):
        client.ok(f"SUBSCRIBE {name}")
    client.ok("DELETE b/t6")


def test_h1_list_extended_capability_and_selection_options(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    try:
        capability = client.ok("CAPABILITY")[0]
        assert b" LIST-EXTENDED " in capability and b" LIST-STATUS " in capability
        _tree(client)
        assert _untagged(client.ok('LIST "" (b/*2 b/t3)')) == [
            b'* LIST (\\HasChildren) "/" b/t2\r\n',
            b'* LIST (\\HasNoChildren) "/" b/t3\r\n',
            b'* LIST (\\HasNoChildren) "/" b/t4/t52\r\n',
        ]
        # A subscription outlives its folder (RFC 3501 §6.3.6): \NonExistent.
        assert _untagged(client.ok('LIST (SUBSCRIBED) "" b/*')) == [
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t1\r\n',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t2/t1\r\n',
            b'* LIST (\\NonExistent \\Subscribed) "/" b/t6\r\n',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t7/t7\r\n',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t8/t8\r\n',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t8/t9\r\n',
        ]
        assert _untagged(
            client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" b/t2% RETURN (CHILDREN)')
        ) == [b'* LIST (\\HasChildren) "/" b/t2 ("CHILDINFO" ("SUBSCRIBED"))\r\n']
        assert _untagged(client.ok('LIST "" b/% RETURN (CHILDREN SUBSCRIBED)')) == [
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t1\r\n',
            b'* LIST (\\HasChildren) "/" b/t2\r\n',
            b'* LIST (\\HasNoChildren) "/" b/t3\r\n',
            b'* LIST (\\HasChildren) "/" b/t4\r\n',
            b'* LIST (\\HasChildren) "/" b/t7\r\n',
            b'* LIST (\\HasChildren) "/" b/t8\r\n',
        ]
        # A subscribed child the pattern matches itself gives its parent no CHILDINFO.
        assert _untagged(client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" b*t7')) == [
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t7/t7\r\n'
        ]
        assert _untagged(client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" b*t8')) == [
            b'* LIST (\\HasChildren) "/" b/t8 ("CHILDINFO" ("SUBSCRIBED"))\r\n',
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t8/t8\r\n',
        ]
        assert _untagged(client.ok('LIST (SUBSCRIBED RECURSIVEMATCH) "" (b/t2 b/t2/t1)')) == [
            b'* LIST (\\HasNoChildren \\Subscribed) "/" b/t2/t1\r\n'
        ]
        assert _untagged(client.ok('LIST (REMOTE) "" %')) == _untagged(client.ok('LIST "" %'))
        assert _untagged(client.ok('LIST (SPECIAL-USE) "" * RETURN (SPECIAL-USE)')) == [
            b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
            b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n',
            b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n',
        ]
        for refused in (
            'LIST (IMAPTEST) "" ""',
            'LIST (RECURSIVEMATCH) "" ""',
            'LIST (RECURSIVEMATCH REMOTE) "" ""',
            'LIST "" "" RETURN (IMAPTEST)',
        ):
            assert client.command(refused)[-1].split(b" ")[1] == b"BAD", refused
    finally:
        client.close()


def test_h1_lsub_and_subscriptions_outlive_folders(
    imap_gateway: ServedGateway, patient: Account
) -> None:
    client = _login(imap_gateway, patient)
    try:
        client.ok("SUBSCRIBE Nulle/Part")  # no such folder: allowed (RFC 3501 §6.3.6)
        assert client.ok('LSUB "" "*"')[:-1] == [
            b'* LSUB (\\HasNoChildren) "/" INBOX\r\n',
            b'* LSUB (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
            b'* LSUB (\\Noselect) "/" Nulle\r\n',
            b'* LSUB (\\HasNoChildren) "/" Nulle/Part\r\n',
            b'* LSUB (\\HasNoChildren \\Sent) "/" Sent\r\n',
            b'* LSUB (\\HasNoChildren \\Trash) "/" Trash\r\n',
        ]
        client.ok("UNSUBSCRIBE INBOX")  # subscribed at creation; unsubscribing sticks
        client.ok("UNSUBSCRIBE Nulle/Part")
        assert client.ok('LSUB "" "*"')[:-1] == [
            b'* LSUB (\\HasNoChildren \\Drafts) "/" Drafts\r\n',
            b'* LSUB (\\HasNoChildren \\Sent) "/" Sent\r\n',
            b'* LSUB (\\HasNoChildren \\Trash) "/" Trash\r\n',
        ]
        assert _untagged(client.ok('LIST "" INBOX RETURN (SUBSCRIBED)')) == [
            b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        ]
    finally:
        client.close()


def test_h1_list_status_after_list_lines(imap_gateway: ServedGateway, patient: Account) -> None:
    client = _login(imap_gateway, patient)
    try:
        client.ok("CREATE Dossier")
        message = b"Subject: x\r\n\r\nTexte.\r\n"
        client.send(f"ap APPEND Dossier {{{len(message)}+}}\r\n".encode() + message + b"\r\n")
        assert client.line().startswith(b"ap OK")
        lines = client.ok('LIST "" (Dossier Trash) RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))')
        assert _untagged(lines) == [
            b'* LIST (\\HasNoChildren) "/" Dossier\r\n',
            b"* STATUS Dossier (MESSAGES 1 UNSEEN 1)\r\n",
            b'* LIST (\\HasNoChildren \\Subscribed \\Trash) "/" Trash\r\n',
            b"* STATUS Trash (MESSAGES 0 UNSEEN 0)\r\n",
        ]
    finally:
        client.close()


def test_h1_list_patterns_are_bounded(imap_gateway: ServedGateway, patient: Account) -> None:
    """Many wildcards against a long name answer at once (pymap's regular expressions
    backtracked for minutes); more than 20 patterns are a BAD; subscriptions are capped."""
    client = _login(imap_gateway, patient)
    try:
        client.ok("CREATE " + "a" * 190)
        started = time.monotonic()
        assert _untagged(client.ok('LIST "" "' + "*a" * 40 + 'b"')) == []
        assert _untagged(client.ok('LSUB "" "' + "%a" * 40 + 'b"')) == []
        assert time.monotonic() - started < 2
        patterns = " ".join(f"p{n}" for n in range(21))
        assert client.command(f'LIST "" ({patterns})')[-1].split(b" ")[1] == b"BAD"
        components = imap_gateway.components()
        try:
            with components.database.transaction() as session:
                session.execute(
                    insert(ImapSubscription),
                    [
                        {"account_id": patient.account_id, "name": f"s{n}"}
                        for n in range(MAX_SUBSCRIPTIONS)
                    ],
                )
        finally:
            components.close()
        assert b"[LIMIT]" in client.command("SUBSCRIBE Encore")[-1]
        client.ok("SUBSCRIBE s1")  # already held: still fine
    finally:
        client.close()


def test_k2_imap_subscriptions_migration_matches_the_model(database: Database) -> None:
    assert ImapSubscription.__tablename__ == "imap_subscriptions"
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    assert [d for d in flat if "imap_subscriptions" in repr(d)] == []


def test_k2_imap_subscriptions_migration_steps_down_and_up(fresh_database_url: str) -> None:
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database, "0026_imap_subscriptions")
        assert "imap_subscriptions" in inspect(database.engine).get_table_names()
        schema.downgrade(database, "0025_caregivers")
        assert "imap_subscriptions" not in inspect(database.engine).get_table_names()
        schema.upgrade(database)
        assert "imap_subscriptions" in inspect(database.engine).get_table_names()
    finally:
        database.dispose()
