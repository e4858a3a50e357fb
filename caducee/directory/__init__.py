"""The practitioner directory: professionals, organisations and their mailboxes.

The trust-space rules need to know who may write to a patient (B3), which
mailbox is a pharmacy (C4), and which mailboxes are hosted here (A4). This
package holds that knowledge: the tables of directory entries (mailboxes from
the national ``Extraction_Correspondance_MSSante``) and of practitioners'
activities (from ``PS_LibreAcces``), the streaming importers of both
extractions, the identifier checks (RPPS, ADELI, FINESS, national ids, INS),
the red list, and a search that never shows a red-listed entry. It knows
nothing of sockets: the CLI and the HTTP API in ``caducee.gateway`` call
:mod:`caducee.directory.service`.
"""
