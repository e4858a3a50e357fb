"""The decisions: rule tables and pure functions over facts, with no I/O.

A rule reads facts gathered by the gateway and either lets the message go on
or refuses it with an SMTP code, an enhanced status code, a generic text and
its own id (the spec rule it implements). Nothing here imports the rest of the
product, so every rule is tested with plain tables of facts.
"""
