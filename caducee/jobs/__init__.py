"""The life of a message after its commit: job handlers that compose the layers below.

A job's work often spans ``mailboxes`` and ``records``, which may not import each other:
filing reads the record's decisions and then releases the patient's copy in the mailbox.
The handlers that compose them live here, above both (the import contract puts ``jobs``
between ``gateway`` and the domain layers); ``gateway.runtime`` registers them.
"""
