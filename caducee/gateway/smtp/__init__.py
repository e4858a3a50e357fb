"""SMTP: the operators' port (mutual TLS) and, later, submission; one module per stage.

``protocol`` adapts aiosmtpd (enhanced status codes on every reply, a strict
DATA reader); ``connection``, ``mail``, ``rcpt`` and ``data`` each gather the
facts of their stage and ask ``caducee.policies`` for a verdict; ``inbound``
ties the stages to aiosmtpd's hooks; ``listener`` opens the sockets.
"""
