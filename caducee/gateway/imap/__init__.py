"""IMAP for patients and hosted professionals (H1), built on pymap 0.36.7.

pymap gives the protocol engine: connection loop, command parsing, SASL, IDLE
plumbing, the selected-mailbox bookkeeping. This package adds what a health
mail gateway needs on top, and replaces what pymap gets wrong for us; each
module's docstring says which and why, ``docs/imap.md`` has the whole list.

* ``server``   — sockets (STARTTLS and implicit TLS), timeouts, literal limits, graceful stop;
                 :class:`~caducee.gateway.imap.server.ImapListeners` is what ``serve`` runs;
* ``state``    — the command state machine (TLS-only login, ENABLE, NAMESPACE,
                 CONDSTORE, batched FETCH/STORE/SEARCH);
* ``commands`` — parsers pymap lacks (ENABLE, NAMESPACE, MODSEQ, HIGHESTMODSEQ,
                 ``LIST ... RETURN (STATUS (...))``);
* ``sections`` — FETCH sections echoed as the client wrote them (``HEADER.FIELDS (a a)``);
* ``names``    — the mailbox-name codec (modified UTF-7), bounded and strict, in place
                 of pymap's (which loops forever on some names, issue 15);
* ``session``  — login with app passwords and the per-account session over the store;
* ``selected`` — the selected folder (MODSEQ in updates, sequence sets in ranges);
* ``fetch``, ``render`` — FETCH data: sections, ENVELOPE, BODYSTRUCTURE, BINARY;
* ``search``   — SEARCH evaluation with decoded headers and text;
* ``events``   — IDLE wake-ups, the SMTP post-commit hook.

Storage lives in ``caducee.mailboxes.imap_store`` (no SQL here).
"""

from caducee.gateway.imap.server import ImapListeners

__all__ = ["ImapListeners"]
