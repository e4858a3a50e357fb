"""The record knows no mail table (issue 13): no import of ``mailboxes``, no table named.

The import contract (``lint-imports``) already forbids ``caducee.records`` to import
``caducee.mailboxes``; this test closes the back door the contract cannot see — a table
clause, a ``text()`` query or any string that names a table ``mailboxes`` declares — so that
what filing needs of the mail side keeps coming from the jobs layer as plain values.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import caducee.mailboxes
import caducee.records
from caducee.storage.db import Base

RECORDS = Path(caducee.records.__file__).parent
SQL_VERB = r"(?:from|join|update|into|table)\s+[\"'`]?"


def _mail_tables() -> set[str]:
    for module in pkgutil.walk_packages(caducee.mailboxes.__path__, "caducee.mailboxes."):
        importlib.import_module(module.name)
    return {
        mapper.local_table.name
        for mapper in Base.registry.mappers
        if mapper.class_.__module__.startswith("caducee.mailboxes.")
        and hasattr(mapper.local_table, "name")
    }


def _naming(tables: set[str]) -> re.Pattern[str]:
    """A string that is a table's name, or SQL that reads or writes one."""
    names = "|".join(map(re.escape, sorted(tables)))
    return re.compile(rf"^(?:{names})$|{SQL_VERB}(?:{names})\b", re.IGNORECASE)


def _strings(tree: ast.AST) -> list[str]:
    """String literals that are not docstrings."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_e1_records_names_no_mail_table() -> None:
    tables = _mail_tables()
    assert {"messages", "accounts", "patients", "held_deliveries", "mailbox_entries"} <= tables
    pattern = _naming(tables)
    offences = []
    for path in sorted(RECORDS.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                lightweight = {alias.name for alias in node.names} & {"table", "column", "text"}
                offences += [f"{path.name}: imports sqlalchemy.{name}" for name in lightweight]
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [alias.name for alias in node.names]
                offences += [
                    f"{path.name}: imports {name}"
                    for name in names
                    if name.startswith("caducee.mailboxes") or name.startswith("caducee.jobs")
                ]
        offences += [
            f"{path.name}: names {value!r}" for value in _strings(tree) if pattern.search(value)
        ]
    assert offences == []


def test_e1_the_check_sees_a_shadow_table() -> None:
    """The check above would catch the clauses ``records/models.py`` used to declare."""
    pattern = _naming(_mail_tables())
    source = 'MAIL = table("messages", column("blob_id"))\nq = "SELECT x FROM held_deliveries"\n'
    found = sorted(value for value in _strings(ast.parse(source)) if pattern.search(value))
    assert found == ["SELECT x FROM held_deliveries", "messages"]
