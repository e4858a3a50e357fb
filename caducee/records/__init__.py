"""The patient's document record: what a mailed report contains, read without trusting it.

This package turns the attachments of a message (IHE_XDM.zip, CDA R2, HL7 v2, HPRIM, PDF,
images, text) into documents with their metadata, as pure functions from bytes to values:
no I/O, no database, no logging of content. Bad input never raises; it comes back as typed
problems, so that the caller can keep the message and mark the attachment as not filed
(spec E1, E2, E6). Filing, identity checks against the mailbox (E3) and versions (E4) are
decided by the callers, from what the readers return.
"""
