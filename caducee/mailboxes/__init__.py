"""The mailbox store and, in sub-packages, the concerns around it.

At this level: messages, folders, entries, flags, UIDs, delivery and the IMAP store. Beside it:
``accounts`` (who signs in), ``access`` (who may see and write what), ``notifications``,
``reports`` (DSNs and read receipts queued) and ``relay`` (mail leaving the gateway).
"""
