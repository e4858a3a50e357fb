"""The patient's webmail (H2): server-rendered pages on the gateway's HTTP listener.

``serve`` mounts :func:`webmail_routes` beside the APIs: ``/`` redirects to ``/webmail``.
See ``docs/webmail.md`` for what exists and how to try it.
"""

from __future__ import annotations

from caducee.gateway.web.app import webmail_routes

__all__ = ["webmail_routes"]
