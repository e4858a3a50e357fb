"""Delivery and read reports (DSN, MDN): one builder for every ``multipart/report`` we send.

Pure: builds bytes from values and imports nothing else of Caducée (import contract), so
that the relay's DSNs (``mailboxes.dsn``), the integration receipts (``records.receipts``)
and the read receipts (``mailboxes.receipts``) share one envelope and one set of rules.
"""

from caducee.reports.build import (
    MAX_RECIPIENTS,
    REPORTING_UA_PRODUCT,
    build_report,
    header_block,
    header_text,
    is_report,
    one_line,
    original_recipient,
    receipt_recipients,
)

__all__ = [
    "MAX_RECIPIENTS",
    "REPORTING_UA_PRODUCT",
    "build_report",
    "header_block",
    "header_text",
    "is_report",
    "one_line",
    "original_recipient",
    "receipt_recipients",
]
