"""The webmail's pieces without a browser: session table (K2), session rules, catalogues (H2)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from babel.messages.extract import extract_from_dir
from sqlalchemy import inspect, select

from caducee.gateway.web import i18n
from caducee.gateway.web.sessions import (
    ABSOLUTE,
    IDLE,
    WebSession,
    csrf_matches,
    find_session,
    live_sessions,
    open_session,
    revoke,
)
from caducee.gateway.web.signin import TotpStep, claim_step
from caducee.mailboxes.accounts.store import Account, AccountKind, AccountState, create_account
from caducee.storage import schema
from caducee.storage.db import Base, Database, utcnow

WEB = Path(__file__).parents[3] / "caducee" / "gateway" / "web"


def test_k2_webmail_migration_matches_the_model(database: Database) -> None:
    assert WebSession.__tablename__ == "webmail_sessions"
    assert TotpStep.__tablename__ == "webmail_totp_steps"
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, Base.metadata)
    flat = [d for item in differences for d in (item if isinstance(item, list) else [item])]
    assert [d for d in flat if "webmail_" in repr(d)] == []


def test_k2_webmail_migration_steps_down_and_up(fresh_database_url: str) -> None:
    database = Database(fresh_database_url)
    try:
        schema.upgrade(database, "0016_webmail")
        tables = set(inspect(database.engine).get_table_names())
        assert {"webmail_sessions", "webmail_totp_steps"} <= tables
        schema.downgrade(database, "0015_admin")
        tables = set(inspect(database.engine).get_table_names())
        assert not {"webmail_sessions", "webmail_totp_steps"} & tables
        schema.upgrade(database)
    finally:
        database.dispose()


def test_H2_sessions_keep_a_hash_expire_and_revoke(database: Database) -> None:
    with database.transaction() as session:
        account = create_account(session, "x@patient.test", AccountKind.PATIENT)
        account_id = account.id
        token = open_session(session, account_id, "Browser/1.0")
    with database.transaction() as session:
        row = session.scalars(select(WebSession)).one()
        assert token not in (row.token_hash, row.csrf_token, row.public_id)
        signed = find_session(session, token)
        assert signed is not None and signed.account_id == account_id
        assert csrf_matches(signed.csrf_token, signed.csrf_token)
        assert not csrf_matches(signed.csrf_token, None)
        assert not csrf_matches(signed.csrf_token, signed.csrf_token[:-1] + "x")
        now = utcnow()
        assert find_session(session, token, now + IDLE + timedelta(seconds=1)) is None
        assert find_session(session, token, now + ABSOLUTE + timedelta(seconds=1)) is None
        assert find_session(session, "not-a-token") is None
        assert [s.current for s in live_sessions(session, account_id, signed.session_id)] == [True]
        assert not revoke(session, account_id + 1, signed.public_id), "another account's: no"
        assert revoke(session, account_id, signed.public_id)
        assert find_session(session, token) is None
    with database.transaction() as session:
        token = open_session(session, account_id, None)
        holder = session.get(Account, account_id)
        assert holder is not None
        holder.state = AccountState.SUSPENDED.value
    with database.transaction() as session:
        assert find_session(session, token) is None, "a suspended account's session is over"


def test_H2_language_from_cookie_then_accept_language_then_french() -> None:
    assert i18n.negotiate(None, None) == "fr"
    assert i18n.negotiate(None, "en-GB,en;q=0.9") == "en"
    assert i18n.negotiate(None, "de-DE,en;q=0.5,fr;q=0.8") == "fr"
    assert i18n.negotiate(None, "de, it") == "fr"
    assert i18n.negotiate("en", "fr-FR") == "en"
    assert i18n.negotiate("xx", "en") == "en"


def test_H2_every_text_of_the_pages_has_its_french_translation() -> None:
    french = i18n.load("fr")
    english = i18n.load("en")
    missing = []
    for _file, _line, message, _comments, _context in extract_from_dir(
        str(WEB),
        method_map=[("templates/**.html", "jinja2.ext:babel_extract")],
        options_map={"templates/**.html": {"extensions": "jinja2.ext.i18n"}},
    ):
        if isinstance(message, tuple):
            if message[0] not in french.plurals:
                missing.append(message[0])
            assert message[0] in english.plurals
        elif message not in french.messages:
            missing.append(message)
    assert missing == []
    assert french.gettext("This message does not allow a reply.") == (
        "Ce message n'autorise pas la réponse."
    )
    assert french.gettext("%(name)s ended your exchanges.") == "%(name)s a mis fin à vos échanges."


def test_H2_a_totp_step_is_accepted_once(database: Database) -> None:
    """RFC 6238 §5.2: the same code (or an older one) after a success is refused."""
    now = utcnow()
    with database.transaction() as session:
        account_id = create_account(session, "y@patient.test", AccountKind.PATIENT).id
        assert claim_step(session, account_id, 1000, now)
        assert not claim_step(session, account_id, 1000, now), "replayed"
        assert not claim_step(session, account_id, 999, now), "older"
        assert claim_step(session, account_id, 1001, now)
