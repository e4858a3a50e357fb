"""Outbound relay to other operators of the trust space (C5) and its DSNs (G4).

* :mod:`.routes`: where a domain's mail goes: a static route from the config,
  else DNS MX (then the domain's own address records, RFC 5321 §5.1);
* :mod:`.client`: one SMTP transaction per route with aiosmtplib: STARTTLS
  required, TLS 1.2+, our client certificate, the peer's certificate verified
  against the trust anchors and required to name a trust-space domain;
* :mod:`.outcomes`: what a reply, a refused connection or a bad certificate
  means for a recipient (delivered, retry, failed) and its status codes;
* :mod:`.handler`: the ``relay`` job handler: per-recipient state, back-off for
  up to ``retry_hours``, the delay DSN (once) and the failure DSN;
* :mod:`.state`: reading and repairing that state for ``caducee queue``.
"""

from caducee.gateway.relay.handler import RelayTiming, make_relay_handler

__all__ = ["RelayTiming", "make_relay_handler"]
