"""JSON schemas of the admin API's answers (OpenAPI 3.0 components).

They say what a script may rely on, and the schemathesis test holds every answer to them:
required fields are always present, ``nullable`` fields may be ``null``, more fields may
appear later (``additionalProperties`` stays open).
"""

from __future__ import annotations

from typing import Any

_STRING: dict[str, Any] = {"type": "string"}
_MAYBE_STRING: dict[str, Any] = {"type": "string", "nullable": True}
_INTEGER: dict[str, Any] = {"type": "integer"}
_BOOLEAN: dict[str, Any] = {"type": "boolean"}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
    }


_SPACE_OPTIONAL = (
    "birthplace", "opens_at", "opened_at", "opened_by", "opposed_at", "opposition_reference",
    "closed_at", "closed_by", "deletion_requested_at", "purge_after", "activation_code_expires_at",
)  # fmt: skip

SPACE = _object(
    {
        "account_id": _INTEGER,
        "address": _STRING,
        "status": {"type": "string", "enum": ["created", "active", "opposed", "closed"]},
        "account_state": _STRING,
        "ins": _STRING,
        "ins_oid": _STRING,
        "birth_name": _STRING,
        "given_name": _STRING,
        "birth_date": {"type": "string", "format": "date"},
        "sex": _STRING,
        "created_at": _STRING,
    },
    dict.fromkeys(_SPACE_OPTIONAL, _MAYBE_STRING),
)

ACCOUNT = _object(
    {
        "id": _INTEGER,
        "address": _STRING,
        "kind": _STRING,
        "state": _STRING,
        "created_at": _STRING,
    },
    {"display_name": _MAYBE_STRING},
)

ACCOUNT_STATE = _object({"address": _STRING, "state": _STRING, "changed": _BOOLEAN})

APP_PASSWORDS = _object(
    {
        "app_passwords": {
            "type": "array",
            "items": _object(
                {"id": _INTEGER, "label": _STRING, "created_at": _STRING},
                {"last_used_at": _MAYBE_STRING},
            ),
        }
    }
)

NEW_APP_PASSWORD = _object({"id": _INTEGER, "label": _STRING, "password": _STRING})

ACTIVATION_CODE = _object(
    {"channels": {"type": "array", "items": _STRING}, "expires_at": _STRING},
    {"activation_code": _STRING},
)

JOB_COUNTS = _object({"jobs": {"type": "object", "additionalProperties": _INTEGER}})

RELAY_JOB_SUMMARY = _object(
    {
        "id": _INTEGER,
        "purpose": _STRING,
        "state": _STRING,
        "created": _STRING,
        "age_seconds": _INTEGER,
        "attempts": _INTEGER,
        "recipients": _INTEGER,
        "recipient_states": {"type": "object", "additionalProperties": _INTEGER},
        "recipient_domains": {"type": "array", "items": _STRING},
    },
    {"next_attempt": _MAYBE_STRING, "expires": _MAYBE_STRING, "last_error": _MAYBE_STRING},
)

RELAY_JOBS = _object({"jobs": {"type": "array", "items": RELAY_JOB_SUMMARY}})

RELAY_JOB = _object(
    {
        "id": _INTEGER,
        "purpose": _STRING,
        "state": _STRING,
        "created": _STRING,
        "attempts": _INTEGER,
        "recipients": {
            "type": "array",
            "items": _object(
                {"domain": _STRING, "state": _STRING, "attempts": _INTEGER},
                {
                    "reply_code": {"type": "integer", "nullable": True},
                    "status": _MAYBE_STRING,
                    "last_attempt": _MAYBE_STRING,
                },
            ),
        },
    },
    dict.fromkeys(
        ("next_attempt", "arrival", "expires", "delay_notified", "last_error"), _MAYBE_STRING
    ),
)

BOUNCED = _object({"id": _INTEGER, "failed": _INTEGER, "dsn_sent": _BOOLEAN})

TRUST_SPACE = _object(
    {
        "domains": {"type": "object", "additionalProperties": _INTEGER},
        "anchors": {
            "type": "array",
            "items": _object(
                {
                    "fingerprint": _STRING,
                    "subject": _STRING,
                    "not_after": _STRING,
                    "expired": _BOOLEAN,
                }
            ),
        },
    }
)

_ANCHOR = _object({"fingerprint": _STRING, "subject": _STRING, "not_after": _STRING})

ANCHORS_ADDED = _object(
    {
        "added": {"type": "array", "items": _ANCHOR},
        "already_present": {"type": "array", "items": _ANCHOR},
        "refused": {
            "type": "array",
            "items": _object({"position": _INTEGER, "subject": _STRING, "reason": _STRING}),
        },
    }
)

TRUST_CHECK = _object(
    {"domain": _STRING, "trusted": _BOOLEAN, "sources": {"type": "array", "items": _STRING}}
)

TRUST_IMPORT = _object(
    {
        "dry_run": _BOOLEAN,
        "applied": _BOOLEAN,
        "existing": _INTEGER,
        "entries_read": _INTEGER,
        "pairs": _INTEGER,
        "added": _INTEGER,
        "updated": _INTEGER,
        "removed": _INTEGER,
        "unchanged": _INTEGER,
        "rejected": _INTEGER,
        "summary": {"type": "array", "items": _STRING},
    },
    {"generated_at": _MAYBE_STRING, "problem": _MAYBE_STRING},
)

DIRECTORY_IMPORT = _object(
    {
        "dry_run": _BOOLEAN,
        "read": _INTEGER,
        "added": _INTEGER,
        "changed": _INTEGER,
        "unchanged": _INTEGER,
        "removed": _INTEGER,
        "rejected": _INTEGER,
    }
)

RESPONSES: dict[str, dict[str, Any]] = {
    "Space": SPACE,
    "Account": ACCOUNT,
    "AccountState": ACCOUNT_STATE,
    "AppPasswords": APP_PASSWORDS,
    "NewAppPassword": NEW_APP_PASSWORD,
    "ActivationCode": ACTIVATION_CODE,
    "JobCounts": JOB_COUNTS,
    "RelayJobs": RELAY_JOBS,
    "RelayJob": RELAY_JOB,
    "Bounced": BOUNCED,
    "TrustSpace": TRUST_SPACE,
    "TrustCheck": TRUST_CHECK,
    "TrustImport": TRUST_IMPORT,
    "AnchorsAdded": ANCHORS_ADDED,
    "DirectoryImport": DIRECTORY_IMPORT,
}
"""Component name → schema, for ``openapi_document``."""
