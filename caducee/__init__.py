"""Caducée: a secure health messaging gateway.

The package is split by concern, and imports flow one way only:
``gateway`` (the network edges and the CLI) uses ``policies`` (pure decisions),
``mailboxes``, ``records`` and ``directory`` (the domain), which use ``storage``
(database, blobs, encryption, job queue), which reads ``config``.
"""

__version__ = "0.1.0"
